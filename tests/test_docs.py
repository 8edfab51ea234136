"""The docs stay true to the repository: the README is short and names the two commands, the
architecture page names every module, every relative link lands on a file, and the preset
figures the README and docs/performance.md print are the recorded estimates."""
import json
import re
from pathlib import Path

from backend.pipeline.preset_files import preset_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
ESTIMATES = ROOT / "backend" / "pipeline" / "preset_estimates.json"


def test_the_readme_is_short_and_names_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert "make test" in text and "make demo" in text


def _modules() -> list[str]:
    """Every source file a developer may meet: the backend, the add-on, the tools. An empty
    __init__.py only marks a package and has nothing to describe."""
    found = [*ROOT.glob("backend/**/*.py"), *ROOT.glob("operators/*.py"), *ROOT.glob("panels/*.py"),
             *ROOT.glob("*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("tools/*.sh"), *ROOT.glob("tools/**/*.mjs")]
    return sorted(str(p.relative_to(ROOT)) for p in found
                  if "node_modules" not in p.parts and not (p.name == "__init__.py" and not p.read_text().strip()))


def test_every_module_is_named_in_the_architecture_page():
    page = (DOCS / "architecture.md").read_text()
    modules = _modules()
    assert len(modules) > 100  # the globs found the repository
    assert [m for m in modules if f"`{m}`" not in page] == []


def _links(path: Path) -> list[str]:
    """The targets of a Markdown file's inline links, without anchors; web addresses left out."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_every_relative_link_points_at_a_file():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 5
    broken = [f"{p.relative_to(ROOT)}: {t}" for p in pages for t in _links(p) if not (p.parent / t).exists()]
    assert broken == []


def test_the_link_reader_finds_links_and_skips_web_addresses(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("[a](docs/a.md) [b](b.md#part) [c](https://docs.ray.io) [d](#here)")
    assert _links(page) == ["docs/a.md", "b.md"]


def _row(text: str, preset: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {preset} |")]
    assert rows, f"no table row for {preset}"
    return rows[0]


def test_preset_figures_are_the_recorded_estimates():
    """README's presets table (seconds, minutes, peak GB) and performance.md's current table
    (total, peak) print what `bench --estimate --record` wrote, rounded."""
    readme, perf = README.read_text(), (DOCS / "performance.md").read_text()
    estimates = json.loads(ESTIMATES.read_text())
    assert set(estimates) == set(preset_names())  # every preset file recorded
    for preset, e in estimates.items():
        seconds, peak = f"{e['estimate_s']:.0f} s", f"{e['peak_gb']:.2f} GB"
        minutes = e["estimate_s"] / 60
        minutes = f"({minutes:.1f} min)" if minutes < 10 else f"({minutes:.0f} min)"
        row = _row(readme, preset)
        assert seconds in row and minutes in row and peak in row, row
        row = _row(perf, preset)
        assert seconds in row and peak in row, row
