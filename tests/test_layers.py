"""Imports point one way: core ← data ← clip ← prior / decoder / upsamplers ← unclip ← flows, with
bench/ and tests/ on top of them all.

Every import of every module in those packages is read with ast, those inside functions included:
- a module imports nothing from a later layer, and the three stages do not import each other;
- no modules import each other, directly or round a longer loop;
- Prefect is imported only in flows/, MLflow only by the tracking and registry modules and the
  pyfunc model that serves the cascade.

`from pkg import name` is an import of `pkg.name` where that is a module, else of `pkg` itself
(its __init__); a package's __init__ running before its submodules is not counted as an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (("core",), ("data",), ("clip",), ("prior", "decoder", "upsamplers"), ("unclip",), ("flows",))
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
RANK |= {"bench": len(LAYERS), "tests": len(LAYERS)}  # on top of everything; not read here
ONLY_IN = {
    "prefect": ("flows.",),
    "mlflow": ("core.tracking", "core.registry", "unclip.serving", "unclip.serving_model"),
}


def module_files() -> dict[str, Path]:
    files = {}
    for package in (p for layer in LAYERS for p in layer):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(module: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported name, line) for every import statement in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append((name if name in modules else base, node.lineno))
    return found


def import_graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int]]]]:
    files = module_files()
    return files, {module: imports_of(module, path, set(files)) for module, path in files.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def test_no_layer_imports_a_later_one():
    files, graph = import_graph()
    wrong = [f"{files[m].relative_to(ROOT)}:{line} imports {name}"
             for m, names in graph.items() for name, line in names
             if top(name) in RANK and top(name) != top(m) and RANK[top(name)] >= RANK[top(m)]]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_prefect_and_mlflow_stay_in_their_modules():
    files, graph = import_graph()
    wrong = [f"{files[m].relative_to(ROOT)}:{line} imports {name}"
             for m, names in graph.items() for name, line in names
             if top(name) in ONLY_IN and not any(m == a or m.startswith(a) for a in ONLY_IN[top(name)])]
    assert not wrong, "imports outside their modules:\n" + "\n".join(wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles():
    _, graph = import_graph()
    edges = {m: {name for name, _ in names if name in graph and name != m} for m, names in graph.items()}
    found = cycles(edges)
    assert not found, f"modules that import each other: {found}"


def test_the_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
