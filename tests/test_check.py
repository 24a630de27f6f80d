"""gdjax.check_grad: detection (leaf and index named), no false alarm, the error estimate, low precision, bad input.

Tiny pytrees throughout; the same few functions are reused so that their compiled FD programs are reused too.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax.check import GradCheck, LeafCheck

K = jax.random.split(jax.random.key(0), 4)


def net(p, x):
    """A 2-layer tanh/sigmoid net's mean squared output: params {"enc": {"w", "b"}, "dec": {"w"}}, x: (n, 4)."""
    h = jnp.tanh(x @ p["enc"]["w"] + p["enc"]["b"][None, :])
    return jnp.mean(jax.nn.sigmoid(h @ p["dec"]["w"]) ** 2)


def params_of(dtype="float64"):
    return {"enc": {"w": jax.random.normal(K[0], (4, 3), dtype), "b": jax.random.normal(K[1], (3,), dtype)},
            "dec": {"w": jax.random.normal(K[2], (3, 2), dtype)}}


def x_of(dtype="float64"):
    return jax.random.uniform(K[3], (5, 4), dtype)


def planted(grad_fn, path, index, factor):
    """grad_fn with one entry of one leaf multiplied by `factor`."""

    def g(p, x):
        out = grad_fn(p, x)
        out[path[0]][path[1]] = out[path[0]][path[1]].at[index].multiply(factor)
        return out

    return g


@pytest.mark.parametrize("method,evaluations", [("fd-central", 4), ("fd-forward", 2), ("fd-complex", 1)])
def test_correct_gradient_passes(method, evaluations):
    """jax.grad of a smooth net passes with every scheme (no false alarm), and the report counts the FD passes.

    Fails on: a tolerance rule tighter than the FD error (false alarm), a wrong evaluation count (forward:
    2 (P + 1) + 1, central 4P + 1, complex P + 1), leaves reported under the wrong paths.
    """
    p = params_of()
    report = gdjax.check_grad(net, p, x_of(), method=method, mode="full")
    report.assert_ok()
    n = 12 + 3 + 6
    assert report.n_params == n and report.mode == "full" and report.mode_reason == "as asked"
    expected = {"fd-central": 4 * n, "fd-forward": 2 * (n + 1), "fd-complex": n}[method] + 1
    assert report.evaluations == expected
    assert [leaf.path for leaf in report.leaves] == ["['dec']['w']", "['enc']['b']", "['enc']['w']"]
    assert all(leaf.n_fail == 0 and leaf.max_abs_err <= leaf.worst_tol * 10 for leaf in report.leaves)


@pytest.mark.parametrize("index,factor", [((2, 1), 1.5), ((0, 0), -1.0)])
def test_one_wrong_entry_is_named(index, factor):
    """A gradient with one entry wrong fails in exactly that leaf, at that index, with one failing entry.

    Fails on: a check that compares only norms or directions (no index), a worst index from the wrong leaf or
    the wrong unravelling, a tolerance so loose that a 50% error on one entry passes.
    """
    p, x = params_of(), x_of()
    report = gdjax.check_grad(net, p, x, grad=planted(jax.grad(net), ("enc", "w"), index, factor), mode="full")
    assert not report.ok
    failing = [leaf for leaf in report.leaves if not leaf.ok]
    assert [leaf.path for leaf in failing] == ["['enc']['w']"]
    assert failing[0].worst_index == index and failing[0].n_fail == 1
    with pytest.raises(AssertionError, match=r"FAIL") as info:
        report.assert_ok()
    assert "['enc']['w']" in str(info.value) and str(index) in str(info.value)


def _bias_rule(bug):
    """f(p, x) = mean(sigmoid(x @ w + b)^2) with a custom_vjp for the bias: `bug` multiplies its cotangent."""

    @jax.custom_vjp
    def add_bias(z, b):
        return z + b[None, :]

    def fwd(z, b):
        return z + b[None, :], None

    def bwd(_, ct):
        return ct, bug(jnp.sum(ct, 0))

    add_bias.defvjp(fwd, bwd)

    def f(p, x):
        return jnp.mean(jax.nn.sigmoid(add_bias(x @ p["layer"]["w"], p["layer"]["b"])) ** 2)

    return f


def test_custom_vjp_bug_in_a_nested_leaf():
    """jax.grad uses the custom rule, the FD side only the primal: a missing factor in one rule is flagged there
    and nowhere else; the correct rule passes. Fails on: FD differentiating through the custom rule (it would
    agree with the bug), or the bug attributed to the wrong leaf."""
    p = {"layer": {"w": jax.random.normal(K[0], (4, 3)), "b": jax.random.normal(K[1], (3,))}}
    gdjax.check_grad(_bias_rule(lambda g: g), p, x_of(), mode="full").assert_ok()
    report = gdjax.check_grad(_bias_rule(lambda g: 0.5 * g), p, x_of(), mode="full")
    assert {leaf.path: leaf.ok for leaf in report.leaves} == {"['layer']['b']": False, "['layer']['w']": True}


def test_float32_only_bug():
    """A rule that overflows only in float32 (sigmoid' as e^-z / (1 + e^-z)^2 at z ~ -120) passes in float64 and
    fails in float32 at the saturated unit, with the NaN entry reported as non-finite. Fails on: NaN gradient
    entries compared as passing (NaN > tol is False), or a check that does not run in the params' dtype."""

    @jax.custom_vjp
    def sig(z):
        return jax.nn.sigmoid(z)

    sig.defvjp(lambda z: (sig(z), z), lambda z, ct: (ct * jnp.exp(-z) / (1 + jnp.exp(-z)) ** 2,))

    def f(p, x):
        return jnp.mean(sig(x @ p["w"] + p["b"][None, :]) ** 2)

    for dtype, ok in (("float64", True), ("float32", False)):
        p = {"w": jax.random.normal(K[0], (4, 3), dtype), "b": jnp.asarray([0.3, -120.0, 0.1], dtype)}
        report = gdjax.check_grad(f, p, x_of(dtype), mode="full")
        assert report.ok is ok, str(report)
    bad = {leaf.path: leaf for leaf in report.leaves}["['b']"]
    assert not bad.ok and bad.worst_index == (1,) and not np.isfinite(bad.worst_err)
    assert report.to_dict()["leaves"][0]["worst_err"] is None  # NaN/inf -> None in JSON


def test_error_estimate_matches_the_actual_fd_error():
    """With truncation dominant (eps = 1e-3 on f = sum sin(3 v)), the estimate from h and h/2 equals the actual
    error of D(h) against the exact derivative 3 cos(3 v) to within 1% (it is exact to O(h^2) relative), and
    Richardson's value is > 100x closer. Oracle: the closed-form derivative, not jax.grad.
    Fails on: a wrong factor r / (r - 1) (central 4/3, forward 2), a wrong step rule (h = eps max(1, |v|)),
    or a Richardson formula of the wrong order."""
    v = jnp.linspace(-2.5, 2.5, 7)
    exact = lambda p: {"v": 3 * jnp.cos(3 * p["v"])}  # noqa: E731

    def f(p):
        return jnp.sum(jnp.sin(3 * p["v"]))

    for method in ("fd-central", "fd-forward"):
        plain = gdjax.check_grad(f, {"v": v}, grad=exact, method=method, eps=1e-3, mode="full")
        rich = gdjax.check_grad(f, {"v": v}, grad=exact, method=method, eps=1e-3, mode="full", richardson=True)
        leaf = plain.leaves[0]
        actual = np.abs(plain.fd["v"] - np.asarray(exact({"v": v})["v"]))
        assert leaf.max_abs_err == pytest.approx(float(actual.max()), rel=1e-12)
        assert leaf.max_fd_err == pytest.approx(leaf.max_abs_err, rel=1e-2), method
        assert rich.leaves[0].max_abs_err < leaf.max_abs_err / 100, method
        assert plain.ok and rich.ok


def test_tolerance_rule_is_the_stated_one():
    """An error just under the reported tolerance passes and just over fails (one scalar leaf, so the worst
    index is the entry), and tolerance = multiple x estimate + atol + rtol |fd|. Fails on: a different rule than
    the one the report states, or a multiple that is not applied."""
    p = {"s": jnp.asarray(0.4)}

    def f(q):
        return jnp.sin(3 * q["s"]) * jnp.exp(q["s"])

    base = gdjax.check_grad(f, p, mode="full")
    leaf = base.leaves[0]
    stated = base.multiple * leaf.worst_fd_err + base.atol + base.rtol * abs(leaf.worst_fd)
    assert leaf.worst_tol == pytest.approx(stated)
    for frac, ok in ((0.9, True), (1.1, False)):
        g = {"s": jnp.asarray(float(base.fd["s"]) + frac * leaf.worst_tol)}
        assert gdjax.check_grad(f, p, grad=lambda q: g, mode="full").ok is ok
    looser = gdjax.check_grad(f, p, grad=lambda q: {"s": jnp.asarray(float(base.fd["s"]) + 1.1 * leaf.worst_tol)},
                              mode="full", multiple=20.0)
    assert looser.ok


def test_default_step_is_the_kernels():
    """The step factor the report states for float64 central differences is cbrt(eps_m), and passing it to the FD
    kernel explicitly gives its default gradient bit for bit. The report's FD values (both steps from one
    program, `fd_multi_step`) are the kernel's bit for bit with chunks of 4 (the same chunks, under a loop in
    both), and to rounding with the default chunks (8 eps_m |f| / h: XLA may fuse a program differently).
    Fails on: the checker and the kernel drifting apart in their step rule (a step off by a factor 2 moves the
    truncation error by about h^2 |f_xxx| / 2, far from bitwise equal)."""
    p, x = params_of(), x_of()
    report = gdjax.check_grad(net, p, x, mode="full")
    assert report.eps == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    cost = lambda q, b: net(q, b)  # noqa: E731
    a = gdjax.gradient(cost, "fd-central")(p, x)
    b = gdjax.gradient(cost, "fd-central", eps=report.eps)(p, x)
    assert all(np.array_equal(u, w) for u, w in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    bound = 8 * np.finfo(np.float64).eps * max(1.0, abs(report.f_value)) / report.eps
    np.testing.assert_allclose(report.fd["enc"]["w"], np.asarray(a["enc"]["w"]), rtol=0, atol=bound)
    chunked = gdjax.check_grad(net, p, x, mode="full", chunk_size=4)
    a4 = gdjax.gradient(cost, "fd-central", chunk_size=4)(p, x)
    for u, w in zip(jax.tree_util.tree_leaves(chunked.fd), jax.tree_util.tree_leaves(a4)):
        np.testing.assert_array_equal(u, np.asarray(w))


def test_directions_and_auto_modes():
    """Directions: a whole leaf 10% off fails, the correct gradient passes, 4k + 1 evaluations. Auto: a zero
    time budget chooses directions and says why; without a key it refuses; a large budget runs full.
    Fails on: grad . u computed with the wrong directions, auto ignoring its budget, a silent default key."""
    p, x = params_of(), x_of()
    key = jax.random.key(3)
    ok = gdjax.check_grad(net, p, x, mode="directions", num_directions=6, key=key)
    assert ok.ok and ok.mode == "directions" and ok.evaluations == 4 * 6 + 1 and ok.num_directions == 6
    assert ok.fd.shape == (6,) and ok.grad.shape == (6,) and ok.leaves[0].path == "<6 random directions>"

    def scaled(q, y):
        g = jax.grad(net)(q, y)
        g["dec"]["w"] = 1.1 * g["dec"]["w"]
        return g

    assert not gdjax.check_grad(net, p, x, grad=scaled, mode="directions", num_directions=6, key=key).ok
    auto = gdjax.check_grad(net, p, x, mode="auto", time_budget=1e-12, num_directions=6, key=key)
    assert auto.mode == "directions" and "> time_budget" in auto.mode_reason
    with pytest.raises(ValueError, match="key"):
        gdjax.check_grad(net, p, x, mode="auto", time_budget=1e-12)
    assert gdjax.check_grad(net, p, x, time_budget=1e3).mode == "full"


def net1(p, x):
    """One leaf, p = {"w": (4, 3)}: a tanh layer, a fixed readout, sigmoid, mean square."""
    readout = jnp.asarray([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]], p["w"].dtype)
    return jnp.mean(jax.nn.sigmoid(jnp.tanh(x @ p["w"]) @ readout) ** 2)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision(dtype):
    """bfloat16 / float16 params: the correct gradient passes with steps from their own eps (no false alarm);
    compute_dtype="float32" evaluates the FD side in float32 (a far tighter estimate) and a sign flip of the
    largest entry is caught there (bfloat16). Fails on: float32 steps used on 16-bit params (rounding swamps the
    difference), or compute_dtype ignored."""
    p, x = {"w": params_of(dtype)["enc"]["w"]}, x_of(dtype)
    own = gdjax.check_grad(net1, p, x, mode="full")
    assert own.ok and own.compute_dtype == dtype, str(own)
    assert own.eps == pytest.approx(float(jnp.finfo(dtype).eps) ** (1 / 3))
    if dtype == "float16":
        return
    hi = gdjax.check_grad(net1, p, x, mode="full", compute_dtype="float32")
    assert hi.ok and hi.compute_dtype == "float32", str(hi)
    assert hi.leaves[0].max_fd_err < own.leaves[0].max_fd_err / 10
    g = np.abs(np.asarray(jax.grad(net1)(p, x)["w"], np.float32))
    index = tuple(int(i) for i in np.unravel_index(np.argmax(g), g.shape))

    def flipped(q, y):
        return {"w": jax.grad(net1)(q, y)["w"].at[index].multiply(-1)}

    bad = gdjax.check_grad(net1, p, x, grad=flipped, mode="full", compute_dtype="float32")
    assert not bad.ok and bad.leaves[0].worst_index == index


def test_compute_dtype_float64_with_x64_off():
    """compute_dtype="float64" works where the user's configuration has 64-bit types off (it enables them for the
    FD side only): the estimate is below 1e-9, which float32 FD cannot reach (its rounding term alone is
    eps_32 |f| / h ~ 2e-5 |f|). Fails on: the cast silently giving float32, or the user's setting left changed."""
    with jax.enable_x64(False):
        p, x = {"w": params_of("float32")["enc"]["w"]}, x_of("float32")
        f64 = gdjax.check_grad(net1, p, x, mode="full", compute_dtype="float64")
        assert jnp.zeros(1).dtype == jnp.float32  # the user's setting is restored
    assert f64.ok and f64.compute_dtype == "float64", str(f64)
    assert f64.leaves[0].max_fd_err < 1e-9


def test_fd_complex_needs_a_complex_safe_f():
    """fd-complex refuses, naming the fix, an f that raises on complex params or drops their imaginary part."""
    p = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="fd-complex.*fd-central"):
        gdjax.check_grad(lambda q: jnp.sum(jax.lax.erf(q["w"])), p, method="fd-complex", mode="full")
    with pytest.raises(ValueError, match="imaginary part is lost.*fd-central"):
        gdjax.check_grad(lambda q: jnp.sum(jnp.real(q["w"]) ** 2), p, method="fd-complex", mode="full")


@pytest.mark.parametrize("case,error,match", [
    ("non-scalar", ValueError, "scalar"),
    ("integer leaf", TypeError, r"\['n'\].*int"),
    ("grad structure", ValueError, "structure"),
    ("grad shape", ValueError, r"\['w'\].*shape"),
    ("non-finite", ValueError, "finite"),
    ("mode", ValueError, "mode"),
    ("compute_dtype", ValueError, "less precise"),
    ("directions without key", ValueError, "key"),
])
def test_bad_input(case, error, match):
    """Each bad input is refused before any FD work with an error naming the argument (and the leaf's path)."""
    p = {"w": jnp.ones(3)}
    f = lambda q: jnp.sum(q["w"] ** 2)  # noqa: E731
    kwargs = {"mode": "full"}
    if case == "non-scalar":
        f = lambda q: q["w"] ** 2  # noqa: E731
    elif case == "integer leaf":
        p = {"w": jnp.ones(3), "n": jnp.arange(3)}
    elif case == "grad structure":
        kwargs["grad"] = lambda q: (q["w"],)
    elif case == "grad shape":
        kwargs["grad"] = lambda q: {"w": jnp.ones(4)}
    elif case == "non-finite":
        f = lambda q: jnp.sum(jnp.log(q["w"] - 1))  # noqa: E731
    elif case == "mode":
        kwargs["mode"] = "everything"
    elif case == "compute_dtype":
        kwargs["compute_dtype"] = "float32"
    elif case == "directions without key":
        kwargs["mode"] = "directions"
    with pytest.raises(error, match=match):
        gdjax.check_grad(f, p, **kwargs)


def test_report_is_json_and_a_table():
    """to_dict() is JSON-able with every field the docs list; str() has the header and one row per leaf."""
    report = gdjax.check_grad(net, params_of(), x_of(), mode="full")
    d = json.loads(json.dumps(report.to_dict()))
    assert {"ok", "mode", "mode_reason", "method", "eps", "evaluations", "seconds", "leaves"} <= set(d)
    assert set(d["leaves"][0]) == set(LeafCheck.__dataclass_fields__) and set(d) == set(
        GradCheck.__dataclass_fields__) - {"fd", "grad"}
    assert {"path", "shape", "max_abs_err", "max_rel_err", "worst_index", "worst_fd_err", "worst_tol", "ok"} <= set(
        d["leaves"][0])
    text = str(report).splitlines()
    assert text[0].startswith("gradient check ok") and "worst index" in text[2] and len(text) == 3 + 3
    assert report.seconds > 0


def test_repeated_check_compiles_nothing_new():
    """A second check of the same f and shapes reuses the compiled FD programs: f is traced far fewer times
    (only by jax.grad's eager call and the checks). Fails on: estimators rebuilt (and recompiled) per call."""
    traces = []

    def f(p, x):
        traces.append(1)
        return net(p, x)

    p, x = params_of(), x_of()
    gdjax.check_grad(f, p, x, mode="full")
    first = len(traces)
    gdjax.check_grad(f, p, x, mode="full")
    assert len(traces) - first < first / 2, (first, len(traces) - first)


def test_custom_jvp_rule_checked_with_the_kernels_options():
    """A custom_jvp with a wrong derivative (softplus' = sigmoid(2x) instead of sigmoid(x)) fails at every entry
    of the leaf it feeds; the correct rule passes; chunk_size reaches the kernel (chunks of 2 give the same FD
    values as the default to rounding; chunk_size=0 is refused by the kernel). Fails on: the FD side
    differentiating through the rule, or options dropped on the way to the kernel."""

    def make(slope):
        @jax.custom_jvp
        def softplus(z):
            return jnp.logaddexp(z, 0.0)

        softplus.defjvp(lambda primals, tangents: (softplus(primals[0]),
                                                    jax.nn.sigmoid(slope * primals[0]) * tangents[0]))
        return lambda p, x: jnp.mean(softplus(x @ p["w"]) ** 2)

    p, x = {"w": params_of()["enc"]["w"]}, x_of()
    good = gdjax.check_grad(make(1.0), p, x, mode="full")
    chunked = gdjax.check_grad(make(1.0), p, x, mode="full", chunk_size=2)
    bad = gdjax.check_grad(make(2.0), p, x, mode="full")
    assert good.ok and chunked.ok and not bad.ok and bad.leaves[0].n_fail == 12
    np.testing.assert_allclose(chunked.fd["w"], good.fd["w"], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size"):  # refused by the kernel's own option check
        gdjax.check_grad(make(1.0), p, x, mode="full", chunk_size=0)
