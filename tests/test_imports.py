"""No import circles, and every module imports on its own (with no other newsq module
loaded before it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"newsq": ROOT / "newsq", "newsq.config": ROOT / "config",
           "newsq.tasks": ROOT / "tasks", "newsq.workers": ROOT / "workers"}  # fmt: skip
NOT_IMPORTABLE = ("newsq.store.migrations.",)  # Alembic runs these files, not import


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if "data" in path.relative_to(folder).parts or path.name == "__main__.py":
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *(p for p in parts if p != "__init__")))
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, known: set[str]) -> set[str]:
    """newsq modules ``path`` imports when it runs (anywhere in it: a lazy import
    inside a function still closes a circle), not those for type checkers only."""
    out: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if f"{node.module}.{a.name}" in known)  # fmt: skip
            if node.module in known:
                out.add(node.module)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles() -> None:
    found = modules()
    graph = {name: imports_of(path, set(found)) - {name} for name, path in found.items()}
    # a package's __init__ re-exporting its own modules is not a circle
    for name in graph:
        graph[name] = {m for m in graph[name] if not (m.startswith(name + "."))}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# One interpreter imports the third-party libraries once, then forks a child per newsq
# module: each child starts with no newsq module loaded, so a module that only imports
# because another was imported first fails there, in a second rather than a minute.
_FORKING_IMPORTER = """
import importlib, os, sys
import celery, httpx, lxml.html, redis, sqlalchemy, trafilatura  # noqa: F401
failed = {}
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_every_module_imports_on_its_own() -> None:
    names = sorted(n for n in modules() if not n.startswith(NOT_IMPORTABLE))
    done = subprocess.run([sys.executable, "-c", _FORKING_IMPORTER, *names],
                          capture_output=True, text=True, cwd=ROOT / "tests",
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and not done.stdout, done.stdout + done.stderr[-2000:]


def test_the_importer_reports_a_module_that_fails(tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("raise ImportError('on purpose')\n")
    done = subprocess.run([sys.executable, "-c", _FORKING_IMPORTER, "json", "broken_mod"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.stdout == "broken_mod: ImportError: on purpose\n"
