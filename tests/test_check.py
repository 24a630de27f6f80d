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


def net1(p, x):
    """One leaf, p = {"w": (4, 3)}: a tanh layer, a fixed readout, sigmoid, mean square."""
    readout = jnp.asarray([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]], p["w"].dtype)
    return jnp.mean(jax.nn.sigmoid(jnp.tanh(x @ p["w"]) @ readout) ** 2)


def full(f, p, *args, grad=None, **opts):
    """A full-mode check with check_grad's options passed as check={...}."""
    return gdjax.check_grad(f, p, *args, grad=grad, check=dict({"mode": "full"}, **opts))


def test_correct_gradient_passes_at_2p_plus_1_evaluations():
    """jax.grad of a smooth net passes, and a full check costs 2P + 1 evaluations (central) or P + 1 (complex
    step) when no entry is near its tolerance. Fails on: extra passes (the old 4P), a tolerance tighter than the
    FD rounding (false alarm), leaves reported under the wrong paths."""
    p, x = params_of(), x_of()
    n = 12 + 3 + 6
    for method, evals in (("fd-central", 2 * n + 1), ("fd-complex", n + 1)):
        report = full(net, p, x, method=method)
        assert report.status == "ok" and report.ok, str(report)
        assert report.evaluations == evals and report.n_params == n
        assert sum(leaf.n_refined for leaf in report.leaves) == 0
    assert [leaf.path for leaf in report.leaves] == ["['dec']['w']", "['enc']['b']", "['enc']['w']"]


@pytest.mark.parametrize("index,factor", [((2, 1), 1.5), ((0, 0), -1.0)])
def test_one_wrong_entry_is_named_with_extra_evaluations_only_there(index, factor):
    """A wrong entry fails in exactly its leaf and index; only entries near or over their tolerance take the 4
    extra evaluations (+ 1 base). Fails on: a check without the index, refinement of every entry."""
    p, x = params_of(), x_of()
    report = full(net, p, x, grad=planted(jax.grad(net), ("enc", "w"), index, factor))
    assert report.status == "failed" and not report.ok
    failing = [leaf for leaf in report.leaves if leaf.status == "failed"]
    assert [leaf.path for leaf in failing] == ["['enc']['w']"]
    assert failing[0].worst_index == index and failing[0].n_fail == 1
    refined = sum(leaf.n_refined for leaf in report.leaves)
    assert 1 <= refined <= 2 and report.evaluations == 2 * 21 + 1 + 4 * refined + 1
    with pytest.raises(AssertionError, match="FAILED") as info:
        report.assert_ok()
    assert "['enc']['w']" in str(info.value) and str(index) in str(info.value)


def _bias_rule(bug):
    """f(p, x) = mean(sigmoid(x @ w + b)^2) with a custom_vjp for the bias: `bug` multiplies its cotangent."""

    @jax.custom_vjp
    def add_bias(z, b):
        return z + b[None, :]

    add_bias.defvjp(lambda z, b: (z + b[None, :], None), lambda _, ct: (ct, bug(jnp.sum(ct, 0))))

    def f(p, x):
        return jnp.mean(jax.nn.sigmoid(add_bias(x @ p["layer"]["w"], p["layer"]["b"])) ** 2)

    return f


def test_custom_vjp_bug_in_a_nested_leaf():
    """jax.grad uses the custom rule, the FD side only the primal: a missing factor is flagged in its leaf only."""
    p = {"layer": {"w": jax.random.normal(K[0], (4, 3)), "b": jax.random.normal(K[1], (3,))}}
    full(_bias_rule(lambda g: g), p, x_of()).assert_ok()
    report = full(_bias_rule(lambda g: 0.5 * g), p, x_of())
    assert {leaf.path: leaf.status for leaf in report.leaves} == {"['layer']['b']": "failed", "['layer']['w']": "ok"}


def test_float32_only_bug_and_float64_by_default():
    """float32 params are checked in float64 when x64 is on (the report says so); a rule that overflows only in
    float32 (NaN at a saturated unit) fails there, named, with the NaN as a non-finite error; its float64
    params pass. Fails on: NaN compared as passing, the compute dtype not reported."""

    @jax.custom_vjp
    def sig(z):
        return jax.nn.sigmoid(z)

    sig.defvjp(lambda z: (sig(z), z), lambda z, ct: (ct * jnp.exp(-z) / (1 + jnp.exp(-z)) ** 2,))

    def f(p, x):
        return jnp.mean(sig(x @ p["w"] + p["b"][None, :]) ** 2)

    for dtype, status in (("float64", "ok"), ("float32", "failed")):
        p = {"w": jax.random.normal(K[0], (4, 3), dtype), "b": jnp.asarray([0.3, -120.0, 0.1], dtype)}
        report = full(f, p, x_of(dtype))
        assert report.status == status, str(report)
        assert report.compute_dtype == "float64"
    assert "x64 on: float64 by default" in report.compute_note and "float64 by default" in str(report)
    bad = {leaf.path: leaf for leaf in report.leaves}["['b']"]
    assert bad.status == "failed" and bad.worst_index == (1,) and not np.isfinite(bad.worst_err)
    assert report.to_dict()["leaves"][0]["worst_err"] is None


def test_tolerance_rule_is_the_stated_one():
    """The reported tolerance is multiple x estimate + atol + rtol |fd| with the default floors (10 eps of the
    gradient's dtype), an error far below it passes and far above fails, and `multiple` is applied."""
    p = {"s": jnp.asarray(0.4)}

    def f(q):
        return jnp.sin(3 * q["s"]) * jnp.exp(q["s"])

    base = full(f, p, multiple=20.0)
    leaf = base.leaves[0]
    eps = np.finfo(np.float64).eps
    scale = abs(leaf.worst_fd)
    assert leaf.n_refined == 0  # D(h) within half its tight tolerance: no extra evaluation
    assert leaf.worst_tol == pytest.approx(20 * leaf.worst_fd_err + 10 * eps * scale + 10 * eps * scale)
    wide = full(f, p, multiple=40.0)
    assert wide.leaves[0].worst_tol == pytest.approx(40 * leaf.worst_fd_err + 20 * eps * scale)
    fd = float(base.fd["s"])
    assert full(f, p, grad=lambda q: {"s": jnp.asarray(fd + 0.1 * leaf.worst_tol)}, multiple=20.0).ok
    assert full(f, p, grad=lambda q: {"s": jnp.asarray(fd + 1e3 * leaf.worst_tol)}, multiple=20.0).failed


def test_error_estimate_matches_the_actual_fd_error():
    """At a refined entry (a wrong gradient forces refinement) the truncation estimate |D(h) - D(h/2)| / 3 of
    D(h/2) matches its actual error against the closed form 3 cos(3 v) within 2% when truncation dominates
    (eps = 1e-3). Oracle: the closed-form derivative."""
    v = jnp.linspace(-2.5, 2.5, 7)

    def f(p):
        return jnp.sum(jnp.sin(3 * p["v"]))

    exact = np.asarray(3 * jnp.cos(3 * v))
    report = full(f, {"v": v}, grad=lambda p: {"v": 3 * jnp.cos(3 * p["v"]) + 1.0}, eps=1e-3)
    leaf = report.leaves[0]
    assert leaf.n_refined == 7 and leaf.n_fail == 7
    actual = np.abs(report.fd["v"] - exact)
    i = int(np.argmax(actual))
    assert leaf.max_fd_err == pytest.approx(float(actual[i]), rel=2e-2)


def test_default_step_is_the_kernels():
    """The check's step is the FD kernel's default (cbrt(eps_m) for float64) and its FD values are the kernel's
    (`gdjax.gradient(cost, "fd-central")`) to rounding (8 eps |f| / h). Fails on: the checker and the kernel
    drifting apart in their step rule."""
    p, x = params_of(), x_of()
    report = full(net, p, x)
    assert report.eps == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    a = gdjax.gradient(lambda q, b: net(q, b), "fd-central")(p, x)
    bound = 8 * np.finfo(np.float64).eps * max(1.0, abs(report.f_value)) / report.eps
    np.testing.assert_allclose(report.fd["enc"]["w"], np.asarray(a["enc"]["w"]), rtol=0, atol=bound)


def _counting(f):
    """f that records every evaluation (a debug callback runs once per vmapped point)."""
    calls = []

    def g(p, *a):
        jax.debug.callback(lambda _: calls.append(1), jax.tree_util.tree_leaves(p)[0].ravel()[0])
        return f(p, *a)

    return g, calls


def _depths(n, bad):
    """Sets halved by group testing on [0, n) to reach the entries `bad` (each halving tests 2 halves)."""
    halved = set()
    for i in bad:
        lo, hi = 0, n
        while hi - lo > 1:
            halved.add((lo, hi))
            mid = lo + (hi - lo) // 2
            lo, hi = (lo, mid) if i < mid else (mid, hi)
    return len(halved)


@pytest.mark.parametrize("bad", [[(3, 5)], [(0, 1), (6, 2)]])
def test_localising_mode_names_planted_errors_at_the_predicted_cost(bad):
    """Directions mode with group testing names one and two planted 1% errors (float64) at their indices, and
    spends exactly 1 + 4k + 8 x (sets halved) + 4m + 1 evaluations, counted by the cost itself (+ 1: jax.grad's
    own forward pass). Fails on: a search that tests more than the halves of failing sets, or names the wrong
    entries."""
    w = jax.random.normal(K[0], (8, 8))
    x = jax.random.normal(K[1], (6, 8))

    def f(p, x):
        return jnp.mean(jnp.tanh(x @ p["w"]) ** 2)

    def wrong(p, x):
        g = jax.grad(f)(p, x)["w"]
        for i in bad:
            g = g.at[i].multiply(1.01)
        return {"w": g}

    counted, calls = _counting(f)
    k = 8
    report = gdjax.check_grad(counted, {"w": w}, x, grad=wrong, check={"mode": "directions", "num_directions": k})
    assert report.status == "failed"
    assert sorted(e.index for e in report.named) == sorted(bad)
    assert all(e.status == "failed" and e.path == "['w']" for e in report.named)
    flat = [i * 8 + j for i, j in bad]
    predicted = 1 + 4 * k + 8 * _depths(64, flat) + 4 * len(bad) + 1
    assert report.evaluations == predicted
    assert len(calls) == predicted  # jax.grad(counted) is not called: grad= is given


def test_localising_mode_no_false_alarm_and_auto_falls_back():
    """Correct gradients pass the directions mode over several keys (float64 compute, float32 params too);
    auto never raises for time: with a tiny budget it runs the localising mode with the fixed default key and
    says so; with a large one it runs full."""
    p, x = params_of(), x_of()
    for seed in range(5):
        r = gdjax.check_grad(net, p, x, check={"mode": "directions", "key": jax.random.key(seed)})
        assert r.status == "ok", str(r)
        assert r.evaluations == 1 + 4 * 16
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p)
    assert gdjax.check_grad(net, p32, x_of("float32"), check={"mode": "directions"}).status == "ok"
    auto = gdjax.check_grad(net, p, x, check={"time_budget": 1e-12})
    assert auto.mode == "directions" and "exceeds time_budget" in auto.mode_reason
    assert "jax.random.key(0)" in auto.key_note
    assert gdjax.check_grad(net, p, x, check={"time_budget": 1e3}).mode == "full"


def test_has_aux_and_keyword_arguments_reach_f():
    """has_aux=True as in jax.grad; key= reaches f when f names it (the dropout mask depends on it), so a
    gradient computed with another key fails; eps= likewise when f names it. Fails on: check_grad swallowing
    an argument meant for f."""

    def loss(p, x, *, key, eps=0.0):
        mask = jax.random.bernoulli(key, 0.5, x.shape).astype(x.dtype)
        out = jnp.mean(jnp.tanh((x * mask) @ p["w"]) ** 2) + eps * jnp.sum(p["w"] ** 2)
        return out, {"kept": jnp.sum(mask)}

    p, x = {"w": params_of()["enc"]["w"]}, x_of()
    k1, k2 = jax.random.key(1), jax.random.key(2)
    ok = gdjax.check_grad(loss, p, x, key=k1, eps=0.5, has_aux=True, check={"mode": "full"})
    assert ok.status == "ok", str(ok)
    other = lambda q, x, key, eps: jax.grad(loss, has_aux=True)(q, x, key=k2, eps=eps)  # noqa: E731
    assert gdjax.check_grad(loss, p, x, key=k1, eps=0.5, has_aux=True, grad=other, check={"mode": "full"}).failed
    no_eps = lambda q, x, key, eps: jax.grad(loss, has_aux=True)(q, x, key=key, eps=0.0)  # noqa: E731
    assert gdjax.check_grad(loss, p, x, key=k1, eps=0.5, has_aux=True, grad=no_eps, check={"mode": "full"}).failed


def test_ambiguous_and_misrouted_arguments_are_refused():
    """An option name f could also take (f has **kwargs) is refused with both fixes; a keyword f does not take
    is refused before any work; an option given twice is refused; legacy option keywords still work where f
    does not take them; tuple output without has_aux names has_aux."""
    p, x = {"w": jnp.ones(3)}, jnp.ones(3)

    def g(q, x, **kw):
        return jnp.sum(q["w"] * x)

    with pytest.raises(ValueError, match=r"key= is ambiguous.*check=\{'key'.*functools.partial"):
        gdjax.check_grad(g, p, x, key=jax.random.key(0))
    with pytest.raises(TypeError, match="does not accept the keyword argument 'scale'"):
        gdjax.check_grad(lambda q, x: jnp.sum(q["w"] * x), p, x, scale=2.0)
    with pytest.raises(ValueError, match="given twice"):
        gdjax.check_grad(lambda q, x: jnp.sum(q["w"] * x), p, x, mode="full", check={"mode": "full"})
    with pytest.raises(ValueError, match="unknown option"):
        gdjax.check_grad(lambda q, x: jnp.sum(q["w"] * x), p, x, check={"modes": "full"})
    legacy = gdjax.check_grad(lambda q, x: jnp.sum(q["w"] ** 2 * x), p, x, mode="full")
    assert legacy.mode == "full" and legacy.ok
    with pytest.raises(ValueError, match="has_aux=True"):
        gdjax.check_grad(lambda q: (jnp.sum(q["w"]), 1.0), p)

    def h(q, grad):
        return jnp.sum(q["w"]) * grad

    with pytest.raises(ValueError, match="grad= is check_grad's own argument"):
        gdjax.check_grad(h, p, grad=lambda q, grad: q)


def test_leaf_policy_dict_with_int_bool_key_leaves_and_an_equinox_module():
    """Only floating leaves are checked; an int step, a bool mask and a PRNG key pass through unchanged and are
    named in the report; an Equinox MLP (activation functions as fields) is checked directly."""
    import equinox as eqx  # the test extra
    p = {"w": params_of()["enc"]["w"], "step": jnp.int32(7), "mask": jnp.asarray([True, True, False, True]),
         "rng": jax.random.key(3)}

    def f(q, x):
        return jnp.mean(jnp.tanh((x * q["mask"][None, :]) @ q["w"]) ** 2) * (1.0 + 0.0 * q["step"])

    before = jax.tree_util.tree_map(lambda a: a, p)
    r = full(f, p, x_of())
    assert r.ok and r.n_params == 12 and [leaf.path for leaf in r.leaves] == ["['w']"]
    assert "['step'] int32" in r.passed_through and "['mask'] bool" in r.passed_through
    assert int(p["step"]) == 7 and np.array_equal(p["mask"], before["mask"])
    model = eqx.nn.MLP(4, 2, 3, 1, activation=jax.nn.tanh, key=jax.random.key(0))

    def loss(m, x):
        return jnp.mean(jax.vmap(m)(x) ** 2)

    r = full(loss, model, x_of())
    assert r.ok and r.n_params == 4 * 3 + 3 + 3 * 2 + 2, str(r)
    assert "passed through" in r.passed_through


def _relu_net(leaky):
    act = (lambda z: jnp.where(z > 0, z, 0.1 * z)) if leaky else jax.nn.relu

    def f(p, x):
        h = act(x @ p["w1"] + p["b1"][None, :])
        return jnp.mean((h @ p["w2"] + p["b2"][None, :] - 1.0) ** 2)

    return f


RELU, LEAKY = _relu_net(False), _relu_net(True)


def _kmeans(p, x):
    """k-means cost: mean over points of the squared distance to the nearest centre (a `min`: kinks at ties)."""
    d = jnp.sum((x[:, None, :] - p["c"][None, :, :]) ** 2, -1)
    return jnp.mean(jnp.min(d, axis=1))


def _maxpool(p, x):
    """A 1-D conv (zero bias) then max-pool over windows of 2 and a mean square."""
    z = x @ p["w"]  # (n, 8)
    pooled = jnp.max(z.reshape(z.shape[0], 4, 2), axis=-1)
    return jnp.mean(pooled**2)


@pytest.mark.parametrize("case", ["relu", "leaky", "kmeans", "maxpool"])
def test_kinks_are_reported_never_failed(case):
    """Correct gradients of costs with kinks, float32 params, zero biases, with an all-zero input row (every
    unit sits exactly on its kink for it) / tied k-means centres / tied pooled values: no failure over seeds,
    and where a step crosses a kink the entry is a kink with its two one-sided slopes, g one of them.
    In float32 compute (large steps) entries whose slopes change inside the step are inconclusive, never
    failed. A gradient off by 1 at a kink entry still fails. Fails on: a kink reported as a failure (the old false
    alarm) or as ok, or a wrong gradient hidden as a kink."""
    statuses, kinks = [], []
    f = {"relu": RELU, "leaky": LEAKY, "kmeans": _kmeans, "maxpool": _maxpool}[case]
    for seed in range(3):
        k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
        if case in ("relu", "leaky"):
            p = {"w1": jax.random.normal(k1, (4, 6), "float32"), "b1": jnp.zeros(6, "float32"),
                 "w2": jax.random.normal(k2, (6, 2), "float32"), "b2": jnp.zeros(2, "float32")}
            x = jnp.concatenate([jnp.zeros((1, 4)), jax.random.normal(k3, (7, 4))]).astype("float32")
        elif case == "kmeans":
            c = jax.random.normal(k1, (3, 2), "float32")
            p = {"c": c.at[1].set(c[0])}  # two tied centres
            x = jax.random.normal(k2, (10, 2), "float32")
        else:
            w = jax.random.normal(k1, (3, 8), "float32")
            p = {"w": w.at[:, 1].set(w[:, 0])}  # tied pooled pairs
            x = jax.random.normal(k2, (5, 3), "float32")
        r = full(f, p, x)
        statuses.append(r.status)
        if case in ("relu", "leaky"):  # float32 steps (x64 off): kinks inside the step, never a failure
            statuses.append(full(f, p, x, compute_dtype="params").status)
        kinks += [(leaf.path, kk) for leaf in r.leaves for kk in leaf.kinks]
    assert "failed" not in statuses, statuses
    if case in ("relu", "leaky"):  # jax's relu'(0) is one side's slope; min / max split ties (the central value)
        assert kinks and all(path == "['b1']" for path, _ in kinks), statuses
    for _, (index, g, fw, bw) in kinks:
        assert min(abs(g - fw), abs(g - bw)) <= 1e-5 * max(1.0, abs(fw), abs(bw)) or min(fw, bw) <= g <= max(fw, bw)
        assert abs(fw - bw) > 1e-6
    if not kinks:
        return
    path, (index, g, fw, bw) = kinks[0]
    bumped = full(f, p, x, grad=lambda q, x: _bump(jax.grad(f)(q, x), path, index, 1.0 + abs(fw) + abs(bw)))
    assert bumped.failed, str(bumped)


def _bump(g, path, index, delta):
    name = path[2:-2]
    g = dict(g)
    g[name] = g[name].at[index].add(delta)
    return g


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_never_ok_for_the_wrong_reason(dtype):
    """16-bit params and gradients: a doubled entry at the largest |g| fails on every seed; a 30% error at a
    uniformly drawn entry is failed or inconclusive on every seed, never ok; a correct gradient never fails.
    Fails on: a tolerance above |g| reported as ok (the bfloat16 silent pass)."""
    for seed in range(3):
        k1, k2 = jax.random.split(jax.random.key(seed))
        p = {"w": jax.random.normal(k1, (4, 3), dtype)}
        x = jax.random.uniform(k2, (5, 4), dtype)
        g = np.abs(np.asarray(jax.grad(net1)(p, x)["w"], np.float32))
        big = tuple(int(i) for i in np.unravel_index(np.argmax(g), g.shape))
        any_idx = tuple(int(i) for i in np.unravel_index(np.random.default_rng(seed).integers(12), g.shape))
        doubled = full(net1, p, x, grad=lambda q, x: {"w": jax.grad(net1)(q, x)["w"].at[big].multiply(2)})
        assert doubled.failed and doubled.leaves[0].worst_index == big, str(doubled)
        off = full(net1, p, x, grad=lambda q, x: {"w": jax.grad(net1)(q, x)["w"].at[any_idx].multiply(1.3)})
        assert off.status in ("failed", "inconclusive"), str(off)
        correct = full(net1, p, x)
        assert correct.status in ("ok", "inconclusive"), str(correct)
        if correct.status == "inconclusive":
            assert any("gradient under test is" in fix for fix in correct.fixes)


def test_float32_one_percent_error_is_named_and_no_false_alarm():
    """float32 params (P = 72), checked in float64 by default: a 1% error at an entry with |g| above 1% of the
    largest is failed and named on every seed; correct gradients give no failure and no inconclusive."""
    def f(q, x):
        return jnp.mean(jnp.tanh(jnp.tanh(x @ q["w"]) @ q["v"]) ** 2)

    fails = 0
    for seed in range(4):
        k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
        p = {"w": jax.random.normal(k1, (8, 6), "float32") / 3, "v": jax.random.normal(k2, (6, 4), "float32") / 3}
        x = jax.random.normal(k3, (10, 8), "float32")
        correct = full(f, p, x)
        fails += correct.status != "ok"
        g = np.abs(np.asarray(jax.grad(f)(p, x)["w"]))
        ok_idx = np.flatnonzero(g.ravel() > 0.01 * g.max())
        i = tuple(int(t) for t in np.unravel_index(np.random.default_rng(seed).choice(ok_idx), g.shape))
        r = full(f, p, x, grad=lambda q, x: {**jax.grad(f)(q, x), "w": jax.grad(f)(q, x)["w"].at[i].multiply(1.01)})
        bad = [leaf for leaf in r.leaves if leaf.status == "failed"]
        assert r.failed and [b.path for b in bad] == ["['w']"] and bad[0].worst_index == i, str(r)
    assert fails == 0


def test_tf32_like_cost_is_inconclusive():
    """A cost that rounds its matmul inputs to a 10-bit mantissa (TF32 emulated with lax.reduce_precision) is
    reported inconclusive with the resolution fix, not ok (its FD is noise) and not failed (the rule is right).
    Fails on: a step below the cost's resolution read as a zero derivative (a false failure)."""

    def tf32(a):
        return jax.lax.reduce_precision(a, exponent_bits=8, mantissa_bits=10)

    def f(p, x):
        return jnp.mean(jnp.tanh(tf32(x) @ tf32(p["w"])) ** 2)

    p, x = {"w": params_of()["enc"]["w"]}, x_of()
    r = full(f, p, x)
    assert r.status == "inconclusive", str(r)
    assert any("resolves less than" in fix for fix in r.fixes)


def test_matmul_precision_and_x64_off():
    """matmul_precision is reported (and validated); with x64 off float32 params are checked in float32, the
    report saying how to turn x64 on; compute_dtype='float64' still works there."""
    p, x = {"w": params_of()["enc"]["w"]}, x_of()
    assert full(net1, p, x, matmul_precision="default").matmul_precision == "default"
    with pytest.raises(ValueError, match="matmul_precision"):
        full(net1, p, x, matmul_precision="fast")
    with jax.enable_x64(False):
        p32, x32 = {"w": params_of("float32")["enc"]["w"]}, x_of("float32")
        r = full(net1, p32, x32)
        f64 = full(net1, p32, x32, compute_dtype="float64")
        assert jnp.zeros(1).dtype == jnp.float32
    assert r.compute_dtype == "float32" and "jax_enable_x64" in r.compute_note and r.status != "failed"
    assert f64.compute_dtype == "float64" and f64.ok


@pytest.mark.parametrize("case,error,match", [
    ("non-scalar", ValueError, "scalar"),
    ("no float leaf", ValueError, "no inexact"),
    ("complex leaf", TypeError, r"\['z'\].*complex"),
    ("grad structure", ValueError, "structure"),
    ("grad shape", ValueError, r"\['w'\].*shape"),
    ("non-finite", ValueError, "finite"),
    ("mode", ValueError, "mode"),
    ("fd-forward", ValueError, "fd-central"),
    ("compute_dtype", ValueError, "less precise"),
    ("check type", TypeError, "check must be a dict"),
])
def test_bad_input(case, error, match):
    """Each bad input is refused before any FD work with an error naming the argument (and the leaf's path)."""
    p = {"w": jnp.ones(3)}
    f = lambda q: jnp.sum(q["w"] ** 2)  # noqa: E731
    opts, grad, check = {"mode": "full"}, None, None
    if case == "non-scalar":
        f = lambda q: q["w"] ** 2  # noqa: E731
    elif case == "no float leaf":
        p = {"n": jnp.arange(3)}
    elif case == "complex leaf":
        p = {"w": jnp.ones(3), "z": jnp.ones(2, jnp.complex128)}
        f = lambda q: jnp.sum(q["w"] ** 2) + jnp.sum(jnp.abs(q["z"]))  # noqa: E731
    elif case == "grad structure":
        grad = lambda q: (q["w"],)  # noqa: E731
    elif case == "grad shape":
        grad = lambda q: {"w": jnp.ones(4)}  # noqa: E731
    elif case == "non-finite":
        f = lambda q: jnp.sum(jnp.log(q["w"] - 1))  # noqa: E731
    elif case == "mode":
        opts["mode"] = "everything"
    elif case == "fd-forward":
        opts["method"] = "fd-forward"
    elif case == "compute_dtype":
        opts["compute_dtype"] = "float32"
    elif case == "check type":
        check = "full"
    with pytest.raises(error, match=match):
        gdjax.check_grad(f, p, grad=grad, check=check if case == "check type" else opts)


def test_report_is_json_and_a_table():
    """to_dict() is JSON-able with every field; str() has the header, the passed-through line, the rule, the
    table (one row per leaf); assert_ok(allow=...) takes only kinks / inconclusive."""
    report = full(net, params_of(), x_of())
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d) == set(GradCheck.__dataclass_fields__) - {"fd", "grad"}
    assert set(d["leaves"][0]) == set(LeafCheck.__dataclass_fields__)
    text = str(report).splitlines()
    assert text[0].startswith("gradient check ok") and text[1].startswith("params:") and len(text) == 4 + 3
    with pytest.raises(ValueError, match="allow"):
        report.assert_ok(allow=("failed",))


def test_repeated_check_compiles_nothing_new():
    """A second check of the same f and shapes reuses the compiled programs: f is traced far fewer times."""
    traces = []

    def f(p, x):
        traces.append(1)
        return net(p, x)

    p, x = params_of(), x_of()
    full(f, p, x)
    first = len(traces)
    full(f, p, x)
    assert len(traces) - first < first / 2, (first, len(traces) - first)


def test_enable_compilation_cache(tmp_path):
    """One call sets JAX's persistent cache directory (created) and threshold; the previous settings are put
    back here so that no other test depends on it."""
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    try:
        path = gdjax.enable_compilation_cache(tmp_path / "cache", min_compile_seconds=2.0)
        assert jax.config.jax_compilation_cache_dir == path and (tmp_path / "cache").is_dir()
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
        with pytest.raises(ValueError, match="min_compile_seconds"):
            gdjax.enable_compilation_cache(tmp_path, min_compile_seconds=-1)
    finally:
        jax.config.update("jax_compilation_cache_dir", old[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def test_flax_nnx_state_with_rng_leaves():
    """A Flax NNX model's state (a Linear and a Dropout with its RNG key and counter) is checked directly: the
    floating leaves are checked, the key and counter pass through and are named in the report."""
    from flax import nnx  # the test extra

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(4, 3, rngs=rngs, param_dtype=jnp.float64)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.drop(jnp.tanh(self.lin(x)))

    model = Model(nnx.Rngs(0, dropout=1))
    model.eval()
    graphdef, state = nnx.split(model)

    def loss(state, x):
        return jnp.mean(nnx.merge(graphdef, state)(x) ** 2)

    r = full(loss, state, x_of())
    assert r.ok and r.n_params == 4 * 3 + 3, str(r)
    assert "key" in r.passed_through and "count" in r.passed_through


def test_conftest_turns_the_persistent_cache_on_unless_opted_out():
    """tests/conftest.py enables JAX's persistent compilation cache for this suite unless
    GDJAX_COMPILATION_CACHE=off."""
    import os

    off = os.environ.get("GDJAX_COMPILATION_CACHE", "").lower() in ("0", "off", "no", "false")
    assert bool(jax.config.jax_compilation_cache_dir) != off


def test_float64_default_falls_back_to_the_params_dtype_with_a_note():
    """A float32 cost that mixes dtypes strictly (lax.conv of float32 inputs with float64 weights raises): the
    float64 default does not stop the check, it runs in float32 and says why (fails if the default raised, or
    fell back silently); the fallback never reads "failed" on a correct rule."""
    from jax import lax

    assert jax.config.jax_enable_x64, "tests/conftest.py turns x64 on: the float64 default is what is checked"
    x = jnp.ones((2, 1, 6, 6), jnp.float32)

    def f(p, x):
        return jnp.sum(jnp.tanh(lax.conv_general_dilated(x, p["k"], (1, 1), "VALID")) ** 2)

    p = {"k": jax.random.normal(jax.random.key(0), (2, 1, 3, 3), jnp.float32)}
    report = gdjax.check_grad(f, p, x)
    assert report.status in ("ok", "inconclusive"), str(report)
    assert "checked in float32" in str(report) and "pass its inputs in float64" in str(report)
