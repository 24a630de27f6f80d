"""The house's two rules, read from the source: the package's import graph has no cycle, and no module imports
a module of a higher layer (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first; a module may import its own layer (acyclically) and the layers below it. Prefixes match a module
# and its submodules. The package itself (gdjax/__init__.py, the public API) and the CLI sit on top.
LAYERS = (
    ("base", ("gdjax._checks", "gdjax._cli_args", "gdjax.provenance", "gdjax.results", "gdjax.sharding",
              "gdjax.distributed", "gdjax.launch", "gdjax.profiling", "gdjax.landscapes",
              "gdjax.precision", "gdjax.gradients._leaves")),
    ("models", ("gdjax.models", "gdjax.nn", "gdjax.data", "gdjax.costs")),
    ("gradients", ("gdjax.gradients",)),
    ("check", ("gdjax.check",)),
    ("training", ("gdjax.step", "gdjax.train", "gdjax.fit", "gdjax.checkpoint")),
    ("bench", ("gdjax.bench",)),
    ("pages", ("gdjax.plotting", "gdjax.report")),
    ("top", ("gdjax", "gdjax.cli")),
)


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    mods = {}
    for path in (root / "gdjax").rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return mods


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """Module -> the gdjax modules it imports (anywhere in the file, function bodies included).

    `from gdjax.x import y` is an edge to `gdjax.x.y` when that is a module, else to `gdjax.x`."""
    mods = _modules(root)
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix matching `module`; KeyError for a module in no layer."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise KeyError(module)
    return best[0]


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_upwards():
    graph = import_graph()
    unplaced = sorted(m for m in graph if _safe_layer(m) is None)
    assert not unplaced, f"modules in no layer of LAYERS (place them, and in docs/architecture.md): {unplaced}"
    upward = sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
                    for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))
    assert upward == []


def _safe_layer(module):
    try:
        return layer_of(module)
    except KeyError:
        return None


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_cycle_finder_on_planted_graphs(edges, expected):
    """The checker itself: a planted two- and three-module cycle are found, an acyclic graph passes."""
    assert cycles(edges) == expected


def test_graph_reads_function_level_and_relative_imports(tmp_path):
    """An import inside a function body and a relative import both count (fails if only top-level imports or
    absolute ones were read, the way the fit <-> train cycle once hid)."""
    pkg = tmp_path / "gdjax"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from gdjax import b\n")
    (pkg / "b.py").write_text("from . import a\n")
    graph = import_graph(tmp_path)
    assert graph["gdjax.a"] == {"gdjax.b"} and graph["gdjax.b"] == {"gdjax.a"}
    assert cycles(graph) == [["gdjax.a", "gdjax.b"]]
