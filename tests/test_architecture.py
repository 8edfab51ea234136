"""The backend's packages depend on each other in one direction only, and so do the modules
inside each package: the graphs of `from ..<package>` and of `from .<module>` imports
(module level and inside functions alike, TYPE_CHECKING blocks included) have no cycle."""
import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[1] / "backend"


def _module_name(path: Path) -> tuple[str, ...]:
    """backend/models/roles/sd.py -> ("models", "roles", "sd"); a package's __init__ is the package."""
    parts = path.relative_to(BACKEND).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_module(name: tuple[str, ...]) -> bool:
    return BACKEND.joinpath(*name).with_suffix(".py").is_file() or BACKEND.joinpath(*name).is_dir()


def _imports(path: Path) -> list[tuple[str, ...]]:
    """The backend modules a file imports relatively (`from .x import y`, `from . import x`,
    `from ..pkg.x import y`, at any depth), by name from the backend's root: a name that is
    no module (an attribute) stands for the module it is read from."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[:len(package) - (node.level - 1)]
        stem = base + tuple(node.module.split(".")) if node.module else base
        for name in [stem + (a.name,) for a in node.names] if not node.module else [stem]:
            while name and not _is_module(name):
                name = name[:-1]
            if name and name != here:
                out.append(name)
    return out


def _backend_files() -> list[Path]:
    return [p for p in BACKEND.rglob("*.py") if len(p.relative_to(BACKEND).parts) >= 2]


def _package_graph() -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages it imports (top-level modules such
    as protocol, atomic and the CLI are not packages)."""
    graph: dict[str, set[str]] = {}
    for path in _backend_files():
        package = _module_name(path)[0]
        for target in _imports(path):
            if (BACKEND / target[0]).is_dir() and target[0] != package:
                graph.setdefault(package, set()).add(target[0])
    return graph


def _module_graph() -> dict[str, set[str]]:
    """package.module (nested packages included: models.roles.sd) -> the modules of the same
    top-level package it imports."""
    graph: dict[str, set[str]] = {}
    for path in _backend_files():
        here = _module_name(path)
        for target in _imports(path):
            if target[0] == here[0]:
                graph.setdefault(".".join(here), set()).add(".".join(target))
    return graph


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", " -> ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_cycles_inside_a_backend_package():
    _assert_acyclic(_module_graph())


def test_no_cycles_between_backend_packages():
    graph = _package_graph()
    _assert_acyclic(graph)
    # the layering docs/architecture.md describes, bottom first
    assert "eval" not in graph["pipeline"] and "perf" not in graph["pipeline"]
    assert graph.get("geometry", set()) == set()
    # guidance asks the job through its own interface (guidance/base.Conditioning): it neither
    # imports the pipeline nor types against it (the graph counts TYPE_CHECKING imports too)
    assert "pipeline" not in graph["guidance"]


MAX_LINES = 80


def test_no_backend_function_is_longer_than_80_lines():
    """A function (or method) from its def to its last line, decorators and docstring
    included: longer ones are split into named steps."""
    long = []
    for path in BACKEND.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(BACKEND)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_the_addon_reads_no_attribute_blender_6_removes():
    # Material.use_nodes: deprecated since Blender 5.0 (every material has a node tree),
    # removed in 6.0, where reading it raises.
    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("*.py"), *(root / "operators").glob("*.py"), *(root / "panels").glob("*.py"),
               root / "tools" / "blender_driver.py"]
    assert [str(p.relative_to(root)) for p in sources if ".use_nodes" in p.read_text()] == []


def test_the_addon_declares_no_preset_mode_or_weight_list_of_its_own():
    """Presets, modes and prompt modalities come from the backend (backend/job.py, the
    preset files): no add-on module writes a preset's name, nor a list of two or more modes
    or modalities, as literals."""
    from backend.job import MODALITIES, MODES
    from backend.pipeline.preset_files import preset_names

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*root.glob("*.py"), *(root / "operators").glob("*.py"), *(root / "panels").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in preset_names():
                found.append(f"{path.name}:{node.lineno} preset {node.value!r}")
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                for kind, names in (("modes", MODES), ("modalities", MODALITIES)):
                    if len(words & set(names)) >= 2:
                        found.append(f"{path.name}:{node.lineno} {kind} {sorted(words & set(names))}")
    assert found == []


def test_the_errors_a_job_can_end_with_are_caught_without_importing_torch():
    """backend/errors.py holds them all; the server's job module catches them from there."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import sys, backend.errors, backend.server.jobs; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
