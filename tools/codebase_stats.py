"""Codebase shape: import cycles (imports inside functions included), largest module, longest functions.

Imports under ``if TYPE_CHECKING:`` are not counted: they never run.

Usage: ``python tools/codebase_stats.py [package_dir]`` (default ``lepton_spark``). Prints the strongly
connected components of the module import graph with more than one module (each one is a cycle),
the five largest modules by lines and the five longest functions by lines. Standard library only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never executed, so not a dependency)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def imports(tree: ast.AST, name: str, is_pkg: bool, known: set[str]) -> set[str]:
    """Modules of ``known`` imported by module ``name``, at any depth (functions too), at run time."""
    out: set[str] = set()
    for node in _runtime_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:  # attribute imports resolve to their module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "lepton_spark").resolve()
    files = sorted(root.rglob("*.py"))
    names = {module_name(root, f): f for f in files}
    known = set(names)
    graph, sizes, funcs = {}, {}, []
    for name, f in names.items():
        text = f.read_text()
        tree = ast.parse(text)
        graph[name] = imports(tree, name, f.name == "__init__.py", known)
        sizes[name] = len(text.splitlines())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                funcs.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    # a package's __init__ importing its own submodules is not a design cycle: drop parent -> child edges
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = [c for c in sccs(graph) if len(c) > 1]
    print(f"modules: {len(names)}, import edges: {sum(len(v) for v in graph.values())}")
    print(f"import cycles (strongly connected components > 1 module): {len(cycles)}")
    for c in cycles:
        print(f"  {len(c)} modules: {', '.join(c)}")
    print("largest modules (lines):")
    for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  {n:5d}  {name}")
    print("longest functions (lines):")
    for n, name in sorted(funcs, reverse=True)[:5]:
        print(f"  {n:5d}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
