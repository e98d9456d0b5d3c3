"""Import structure, read with ast (nothing is imported): no import circles among newsrec's
modules, and every import left inside a function of serve/, runs/ or model/ says why.

An edge goes from a module to the project module an import names: `from a.b import c` is a.b.c
when that is a module, else a.b. The package __init__ files an import also runs are no edge: a
sibling reached through its package while the package initialises is no circle Python trips on,
and a name taken from the package itself (`from newsrec_cli.mind import x`) is an edge to it.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imports inside functions are kept there only for torch, the graph libraries and optional
# extras; in these packages each such line carries a comment saying which.
EXPLAINED = ("newsrec_cli.serve", "newsrec_cli.runs", "newsrec_cli.model")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the project module imported
    line: int
    in_function: bool
    commented: bool  # a comment on the import's first line


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(modules: dict[str, Path], source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = source.split(".")
            if modules[source].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" for alias in node.names]
    out = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def project_imports(root: Path, package: str) -> list[Import]:
    """Every import of a project module in `root/package`, outside `if TYPE_CHECKING:` blocks."""
    modules = {module_name(root, p): p for p in sorted((root / package).rglob("*.py"))}
    found: list[Import] = []
    for source, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()

        def walk(node: ast.AST, in_function: bool, source: str = source, lines: list[str] = lines) -> None:
            for child in ast.iter_child_nodes(node):
                if _type_checking(child):
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    commented = "#" in lines[child.lineno - 1]
                    for target in _targets(modules, source, child):
                        found.append(Import(source, target, child.lineno, in_function, commented))
                nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                walk(child, in_function or nested)

        walk(ast.parse(text, filename=str(path)), False)
    return found


def cycles(imports: list[Import]) -> list[list[str]]:
    """The import circles: each strongly connected set of modules (Tarjan), as a path round it."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.source != imp.target:
            graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(_round(graph, set(members)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _round(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest path from the first member back to itself inside the set."""
    start = min(members)
    came: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, set()) & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return [*reversed(path), start]
            if w not in came:
                came[w] = v
                queue.append(w)
    raise AssertionError(f"no path round {sorted(members)}")


@cache
def _newsrec() -> tuple[Import, ...]:
    return tuple(project_imports(ROOT, "newsrec_cli"))


def _circles(imports: list[Import]) -> str:
    return "; ".join(" -> ".join(c) for c in cycles(imports))


def test_no_import_circle_at_module_level() -> None:
    module_level = [i for i in _newsrec() if not i.in_function]
    circles = _circles(module_level)
    assert not circles, f"import circles: {circles}"


def test_no_import_circle_through_serve_runs_model_even_inside_functions() -> None:
    # An import moved into a function hides a circle without breaking it (serve's engine -> export
    # -> popularity -> redis_sums -> engine was one).
    inside = [c for c in cycles(list(_newsrec())) if any(m.startswith(EXPLAINED) for m in c)]
    assert not inside, "import circles: " + "; ".join(" -> ".join(c) for c in inside)


def _third_party_silent(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom) and "#" not in lines[inner.lineno - 1]:
                        out.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    return sorted(set(out))


def test_every_import_left_in_a_function_of_serve_runs_model_says_why() -> None:
    # torch, onnxruntime, redis ... too: each stays in its function for a reason worth a comment
    silent = [
        s
        for p in ("newsrec_cli/serve", "newsrec_cli/runs", "newsrec_cli/model")
        for s in _third_party_silent(p)
    ]
    assert not silent, f"imports inside functions with no comment saying why: {silent}"


def test_the_checks_find_a_circle_and_a_silent_import(tmp_path: Path) -> None:
    """Control: a two-module circle (one side inside a function) and an uncommented lazy import."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\n\nA = 1\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import A\n\n    return A\n\n\nB = 2\n")
    (package / "c.py").write_text("from . import a\n")
    imports = project_imports(tmp_path, "pkg")
    assert cycles(imports) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert cycles([i for i in imports if not i.in_function]) == []
    assert [(i.source, i.line, i.commented) for i in imports if i.in_function] == [("pkg.b", 2, False)]
    (package / "b.py").write_text("from pkg.a import A\n\nB = 2\n")
    assert cycles(project_imports(tmp_path, "pkg")) == [["pkg.a", "pkg.b", "pkg.a"]]
