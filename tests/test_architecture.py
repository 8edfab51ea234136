"""The backend's packages depend on each other in one direction only, and so do the modules
inside each package: the graphs of `from ..<package>` and of `from .<module>` imports
(module level and inside functions alike, TYPE_CHECKING blocks included) have no cycle."""
import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[1] / "backend"


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in BACKEND.rglob("*.py"):
        rel = path.relative_to(BACKEND).parts
        if len(rel) < 2:  # top-level modules (protocol, atomic, CLI) are not packages
            continue
        package = rel[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                target = node.module.split(".")[0]
                if (BACKEND / target).is_dir() and target != package:
                    graph.setdefault(package, set()).add(target)
    return graph


def _module_graph() -> dict[str, set[str]]:
    """package.module -> the modules of the same package it imports (`from .x import`,
    `from . import x`)."""
    graph: dict[str, set[str]] = {}
    for path in BACKEND.rglob("*.py"):
        rel = path.relative_to(BACKEND).parts
        if len(rel) < 2:
            continue
        here = f"{rel[0]}.{path.stem}"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                graph.setdefault(here, set()).update(f"{rel[0]}.{n}" for n in names if f"{rel[0]}.{n}" != here)
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


def test_the_errors_a_job_can_end_with_are_caught_without_importing_torch():
    """backend/errors.py holds them all; the server's job module catches them from there."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import sys, backend.errors, backend.server.jobs; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
