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


# --- capabilities, never names: nothing outside gdjax/gradients/ looks at a method's name -----------------------

# every module of the library outside gdjax/gradients/ (the scripts under benchmarks/ configure methods by name,
# and tests/ name them to test them)
SCANNED = ("gdjax",)
SLICERS = ("startswith", "endswith", "removeprefix", "removesuffix", "partition", "split")


def _constants(node) -> list[str]:
    """The string constants of `node` itself or of a tuple / list / set literal."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def name_checks(source: str, names, where: str = "<source>") -> list[str]:
    """Where `source` looks at a gradient method's name: a comparison (==, !=, in, not in) with a string literal
    that is a registered method name (`names`) or a part of one tested against something called `method`;
    `.startswith("fd")`-style calls on a method name; a slice of a method name (`method[3:]`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            literal = [c for op in operands for c in _constants(op)]
            text = ast.unparse(node)
            if any(c in names for c in literal):
                found.append(f"{line}: {text}")
            elif any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and "method" in text and any(
                    c and any(c in n for n in names) for c in literal):
                found.append(f"{line}: {text}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SLICERS:
            args = [c for a in node.args for c in _constants(a)]
            if "method" in ast.unparse(node.func.value) and any(c and any(c in n for n in names) for c in args):
                found.append(f"{line}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            if "method" in ast.unparse(node.value):
                found.append(f"{line}: {ast.unparse(node)}")
    return found


def test_nothing_outside_gradients_looks_at_a_method_name():
    """Callers decide from a method's registry entry (capabilities, scheme, theory), never from its name:
    no module outside gdjax/gradients/ compares a method name with a literal or slices it (docs/architecture.md)."""
    import gdjax

    names = set(gdjax.available_methods())
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("gdjax", "gradients"):
                continue
            found += name_checks(path.read_text(), names, str(rel))
    assert found == []


@pytest.mark.parametrize("code, flagged", [
    ('if o["method"] == "fd-central":\n    pass\n', True),
    ('if m in ("fd-forward", "fd-central"):\n    pass\n', True),
    ('x = "fd-loop" != r["method"]\n', True),
    ('scheme = o["method"][3:]\n', True),
    ('ok = method.startswith("fd")\n', True),
    ('ok = "fd" in method\n', True),
    ('if r["method"] == FORWARD_PASS:\n    pass\n', False),  # a benchmark's own row, not a method
    ('if scheme == "complex":\n    pass\n', False),
    ('ok = line.startswith("#")\n', False),
    ('est = gdjax.gradient(cost, "fd-central")\n', False),  # choosing a method by name is what names are for
])
def test_name_check_scanner_on_planted_code(code, flagged):
    """The scanner itself: each planted name check is found, code that only names or chooses a method is not."""
    names = {"fd-forward", "fd-central", "fd-complex", "fd-loop", "reverse"}
    assert bool(name_checks(code, names)) is flagged


# --- a black-box estimator is one module plus its test (docs/architecture.md, "Where new things go") -------------

def toy_central(cost, *, eps=None):
    """A black-box central-difference estimator written from scratch: `(C(v + h e_i) - C(v - h e_i)) / 2h` with the
    step rule h_i = eps * max(1, |v_i|), one vmapped direction per parameter."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from gdjax.gradients import Estimator

    def fn(params, batch, key):
        flat, unravel = ravel_pytree(params)
        h = (eps if eps is not None else float(jnp.finfo(flat.dtype).eps) ** (1 / 3)) * jnp.maximum(1.0, jnp.abs(flat))

        def one(i):
            e = jnp.zeros_like(flat).at[i].set(h[i])
            return (cost(unravel(flat + e), batch) - cost(unravel(flat - e), batch)) / (2 * h[i])

        return unravel(jax.vmap(one)(jnp.arange(flat.size)))

    return Estimator("toy-central", fn, lambda n_params: 2.0 * n_params, options={"eps": eps})


@pytest.fixture
def toy_registered(monkeypatch):
    """`toy_central` registered as "toy-central" for one test (the registry restored afterwards, so that no other
    test sees it)."""
    from gdjax.gradients import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("toy-central", kind="fd", summary="a test's own central differences", cost_formula="2P",
                      evaluations=registry.count_per_direction("central"), error_order="O(h^2), h ~ eps_m^(1/3)",
                      label="toy", scheme="central")(toy_central)
    return "toy-central"


def test_a_registered_black_box_estimator_appears_everywhere_unchanged(toy_registered):
    """Registered in one call, the toy estimator is a gradient method (float64, against jax.grad), in `gdjax
    bench`'s default method list and its plan, in the docs' methods table with its cost formula and error order,
    and accepted by check_grad (deterministic FD, central scheme), which also catches a planted bug with it."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gdjax
    from gdjax.bench import analysis, config
    from gdjax.check import check_methods
    from gdjax.report import benchmarks as report_benchmarks

    name = toy_registered
    # conftest enables x64: the comparison is in float64
    params = {"w": jnp.array([[0.3, -1.2], [0.7, 2.0]], jnp.float64), "b": jnp.array([0.1, -0.4], jnp.float64)}
    batch = jnp.array([[1.0, 2.0], [-0.5, 0.25]], jnp.float64)

    def cost(p, x):
        return jnp.mean(jnp.tanh(x @ p["w"] + p["b"][None, :]) ** 2)

    g = gdjax.gradient(cost, name)(params, batch)
    want = jax.grad(cost)(params, batch)
    # central differences at h ~ eps_m^(1/3) = 6e-6: truncation h^2 |C'''| / 6 and rounding eps_m |C| / h both
    # ~ 1e-11 for this O(1) cost; 1e-8 leaves room and still fails on any wrong sign, index or step
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=1e-8, atol=1e-8)
    assert gdjax.gradient(cost, name).evaluations(6) == 12.0

    # gdjax bench: every registered method by default, and its points in the plan
    cfg = config.BenchConfig(sizes=((4, 3, 2),), million=False)
    assert name in cfg.methods
    assert any(p.method == name for p in config.plan(cfg))
    assert config.BenchConfig(sizes=((4, 3, 2),), methods=(name,), million=False).methods == (name,)

    # the docs' methods table: its registry entry's cost formula and error order, after the exact methods
    rows = [{"group": "sweep", "sizes": analysis.LECTURE, "method": m, "median_s": t, "dtype": "float64",
             "batch_size": 8, "rel_error": e, "extrapolated": False}
            for m, t, e in ((name, 2.0, 3e-10), (gdjax.gradients.reference_method(), 1.0, 1e-16))]
    text = report_benchmarks.fd_vs_grad_methods({"rows": rows})
    toy_line = next(line for line in text.splitlines() if f"`{name}`" in line)
    assert "| 2P |" in toy_line and "O(h^2), h ~ eps_m^(1/3)" in toy_line
    assert text.index("`reverse`") < text.index(f"`{name}`")
    assert report_benchmarks._label(name) == f"`{name}` (toy)"

    # check_grad takes it by capability (deterministic black-box FD, central scheme)
    assert name in check_methods()
    report = gdjax.check_grad(cost, params, batch, check={"method": name, "mode": "full"})
    assert report.status == "ok" and report.method == name

    def bad_grad(p, x):
        gr = jax.grad(cost)(p, x)
        return {**gr, "b": gr["b"].at[1].multiply(1.01)}

    assert gdjax.check_grad(cost, params, batch, grad=bad_grad, check={"method": name, "mode": "full"}).status == \
        "failed"


def test_check_grad_refuses_methods_by_capability():
    """check_grad offers exactly the deterministic black-box FD methods of a fixed scheme of order >= 2; a
    first-order one is refused for its O(h) error, a stochastic or structured one for what it is."""
    import jax.numpy as jnp

    import gdjax
    from gdjax.check._core import check_methods

    offered = check_methods()
    for m in offered:
        info = gdjax.method_info(m)
        assert info.kind == "fd" and info.deterministic and not info.structured and info.order >= 2
    assert "fd-central" in offered and "fd-complex" in offered
    p = {"w": jnp.ones(3)}

    def f(q):
        return jnp.sum(q["w"] ** 2)

    for m in gdjax.available_methods():
        if m in offered:
            continue
        match = "first-order" if gdjax.method_info(m).order == 1 else "deterministic FD method"
        with pytest.raises(ValueError, match=match):
            gdjax.check_grad(f, p, check={"method": m, "mode": "full"})


def test_every_registered_method_states_its_theory():
    """Each entry carries a cost formula and an error order for the docs; where it has a count, the count equals
    its built estimator's `evaluations(P)` (on a small MLP cost, with the entry's default options)."""
    import gdjax
    from gdjax.nn import param_count

    sizes = (4, 3, 2)
    cost = gdjax.make_cost(gdjax.MLP(sizes))
    P = param_count(sizes)
    for m in gdjax.available_methods():
        info = gdjax.method_info(m)
        assert info.cost_formula != "-" and info.error_order != "-", m
        if info.evaluations is None:
            continue
        est = gdjax.gradient(cost, m)
        assert info.evaluations(P, sizes) == est.evaluations(P), m
    assert gdjax.gradients.reference_method() == "reverse"


def test_a_module_dropped_into_the_package_registers_itself(tmp_path, monkeypatch):
    """What makes an estimator one module: `gradients` imports every public module of its folder
    (`registry.import_modules`), so a module holding a builder and its `register` call joins the registry with
    no import line elsewhere. Run on a planted package; and every public module of gdjax/gradients/ is imported."""
    import sys

    from gdjax.gradients import registry

    pkg = tmp_path / "planted_estimators"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_private.py").write_text("raise RuntimeError('a private module is not imported')\n")
    (pkg / "toy.py").write_text(
        "from gdjax.gradients.registry import Estimator, no_count, register\n\n\n"
        "@register('planted-toy', kind='exact', summary='a planted module', cost_formula='1 F', error_order='none')\n"
        "def toy(cost):\n"
        "    return Estimator('planted-toy', lambda params, batch, key: params, no_count)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    import planted_estimators

    assert registry.import_modules("planted_estimators", planted_estimators.__path__) == ("toy",)
    assert "planted-toy" in registry.available_methods()
    assert registry.method_info("planted-toy").cost_formula == "1 F"
    for name in [m for m in sys.modules if m.startswith("planted_estimators")]:
        del sys.modules[name]  # the planted package is gone with tmp_path
    public = sorted(p.stem for p in (ROOT / "gdjax" / "gradients").glob("*.py") if not p.stem.startswith("_"))
    assert public and [m for m in public if f"gdjax.gradients.{m}" not in sys.modules] == []
