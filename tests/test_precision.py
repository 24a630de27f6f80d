"""The matmul precision policy (`gdjax.precision`): every method that is not exact runs its dots and
convolutions at HIGHEST by default, whatever the caller's setting, inside a caller's jit too; `matmul_precision=`
lowers it; exact methods keep the caller's precision; the rounding of a TF32 matmul, emulated on the CPU, raises
the FD error as the error model of docs/estimators.md predicts.

The checks read the lowered program (`jax.jit(est).lower(...).as_text()`): the precision is baked into every
dot_general / convolution at trace time, so the text shows what a GPU would run, although a CPU ignores it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gdjax
from gdjax import precision as _precision
from gdjax.gradients import available_methods, method_info
from gdjax.gradients.registry import n_params

from conftest import make_case

N = 4


def user_cost(params, batch):
    """A cost that is not gdjax's MLP: a dot and a 2-D convolution, neither naming a precision."""
    h = jnp.tanh(jnp.dot(batch["x"], params["w"]))                    # (N, 4)
    img = h.reshape(N, 1, 2, 2)                                        # NCHW
    kernel = params["k"]
    dtype = jnp.result_type(img, kernel)  # fd-complex perturbs one leaf into complex: conv wants one dtype
    c = lax.conv_general_dilated(img.astype(dtype), kernel.astype(dtype), (1, 1), "SAME")  # (N, 1, 2, 2)
    return jnp.mean(c ** 2) + params["scale"] * jnp.sum(h)


def user_problem(dtype="float32"):
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    params = {"w": jax.random.normal(k1, (5, 4), dtype), "k": jax.random.normal(k2, (1, 1, 2, 2), dtype),
              "scale": jnp.asarray(0.1, dtype)}
    return params, {"x": jax.random.uniform(k3, (N, 5), dtype)}


def mlp_problem():
    return make_case((5, 4, 3), "sigmoid", "sigmoid", "quadratic", 0.0, dtype="float32", n=N)


def problem_for(method):
    if method_info(method).structured:
        return mlp_problem()
    return (user_cost, *user_problem())


def lowered(est, params, batch, precision=None):
    """The lowered program of `jax.jit(est)` (traced under the caller's `precision`, None: no setting)."""
    args = (params, batch, jax.random.key(0)) if est.stochastic else (params, batch)

    def text():
        return jax.jit(est).lower(*args).as_text()

    if precision is None:
        return text()
    with jax.default_matmul_precision(precision):
        return text()


def precisions(text):
    ops = _precision.program_precisions(text)
    assert ops, "the program has no dot_general or convolution: the check would be empty"
    return ops


NOT_EXACT = [m for m in available_methods() if not method_info(m).exact]
JITTABLE_NOT_EXACT = [m for m in NOT_EXACT if method_info(m).jittable]
EXACT = [m for m in available_methods() if method_info(m).exact]


def test_the_lists_cover_the_families():
    """The parametrisations below hold the FD kernel, fd-loop, the structured and the stochastic methods."""
    kinds = {method_info(m).kind for m in NOT_EXACT}
    assert kinds == {"fd", "stochastic"}
    assert any(method_info(m).structured for m in NOT_EXACT) and any(not method_info(m).jittable for m in NOT_EXACT)
    assert EXACT


@pytest.mark.parametrize("method", JITTABLE_NOT_EXACT)
def test_every_dot_and_conv_at_highest_by_default(method):
    """Lowered with no setting and under a caller's "bfloat16": every dot_general and convolution (the user's
    jnp.dot and conv_general_dilated, which name none) carries HIGHEST; a bug that lets the caller's setting
    through shows DEFAULT. `est.options` records it."""
    cost, params, batch = problem_for(method)
    est = gdjax.gradient(cost, method)
    assert est.options["matmul_precision"] == "highest" and _precision.in_force(est) == "highest"
    for caller in (None, "bfloat16"):
        ops = precisions(lowered(est, params, batch, caller))
        assert all(p == ("HIGHEST", "HIGHEST") for _, p in ops), (caller, ops)
    if not method_info(method).structured:
        assert {op for op, _ in ops} == {"dot_general", "convolution"}
    if est.subset is not None:  # the part of its program a benchmark times: the same precision
        sub = est.subset(params, batch, 1)
        ops = precisions(jax.jit(sub.fn).lower(params, batch).as_text())
        assert all(p == ("HIGHEST", "HIGHEST") for _, p in ops), ops


@pytest.mark.parametrize("method,option,expected", [
    ("fd-forward", "tensorfloat32", "HIGH"), ("fd-central", "bfloat16", "DEFAULT"),
    ("fd-layerwise", "tensorfloat32", "HIGH"), ("spsa", "high", "HIGH")])
def test_the_option_lowers_it(method, option, expected):
    """`matmul_precision=` sets every dot and conv to the asked precision (JAX lowers "tensorfloat32" as HIGH,
    "bfloat16" as DEFAULT), also under a caller's "highest"."""
    cost, params, batch = problem_for(method)
    est = gdjax.gradient(cost, method, matmul_precision=option)
    assert est.options["matmul_precision"] == option
    for caller in (None, "highest"):
        assert all(p == (expected, expected) for _, p in precisions(lowered(est, params, batch, caller)))


def recording(cost):
    """`cost` that records JAX's matmul precision in force each time it is traced (or run eagerly)."""
    seen = []

    def f(params, batch):
        seen.append(_precision.current())
        return cost(params, batch)

    return f, seen


@pytest.mark.parametrize("method", [m for m in NOT_EXACT if not method_info(m).structured])
def test_every_trace_of_the_cost_at_highest(method):
    """Every black-box method that is not exact, fd-loop (driven from Python, not jittable) included: every
    trace of the cost happens under "highest", even when called under a caller's "tensorfloat32"; with the
    option, under it. (Structured methods evaluate the network themselves, not the cost: their dots are checked
    in the lowered program, test_every_dot_and_conv_at_highest_by_default.)"""
    cost, params, batch = problem_for(method)
    f, seen = recording(cost)
    key = jax.random.key(0) if method_info(method).stochastic else None
    with jax.default_matmul_precision("tensorfloat32"):
        gdjax.gradient(f, method)(params, batch, key)
    assert seen and set(seen) == {"highest"}, seen
    if not method_info(method).jittable:  # the jittable ones: test_the_option_lowers_it
        seen.clear()
        gdjax.gradient(f, method, matmul_precision="bfloat16")(params, batch, key)
        assert seen and set(seen) == {"bfloat16"}, seen


@pytest.mark.parametrize("method", EXACT)
def test_exact_methods_keep_the_callers_precision(method):
    """reverse / forward / backprop: the caller's setting (none: DEFAULT; "highest": HIGHEST), recorded as
    None (`in_force` then reads JAX's setting); `matmul_precision=` still applies."""
    cost, params, batch = problem_for(method)
    est = gdjax.gradient(cost, method)
    assert est.options["matmul_precision"] is None
    assert {p for _, p in precisions(lowered(est, params, batch))} == {("DEFAULT", "DEFAULT")}
    assert {p for _, p in precisions(lowered(est, params, batch, "highest"))} == {("HIGHEST", "HIGHEST")}
    assert _precision.in_force(est) == "default"
    with jax.default_matmul_precision("tensorfloat32"):
        assert _precision.in_force(est) == "tensorfloat32"
    est = gdjax.gradient(cost, method, matmul_precision="highest")
    assert {p for _, p in precisions(lowered(est, params, batch, "bfloat16"))} == {("HIGHEST", "HIGHEST")}


def test_the_jit_cache_key_holds_the_precision():
    """One jitted function called under two precisions retraces (the cache key includes JAX's setting) and
    keeps both programs; an FD estimator called under two caller settings traces its cost once (its own
    context is the same both times) and returns the same numbers."""
    params, batch = user_problem()
    f, seen = recording(user_cost)
    jitted = jax.jit(f)
    hi, lo = _precision.at_precision(jitted, "highest"), _precision.at_precision(jitted, "bfloat16")
    hi(params, batch), lo(params, batch), hi(params, batch), lo(params, batch)
    assert seen == ["highest", "bfloat16"]
    f, seen = recording(user_cost)
    est = gdjax.gradient(f, "fd-forward")
    g1 = est(params, batch)
    traces = len(seen)
    with jax.default_matmul_precision("bfloat16"):
        g2 = est(params, batch)
        assert len(seen) == traces  # a cache hit: the estimator's own context is the same
        g3 = jax.jit(est)(params, batch)  # inside a caller's jit: the inner program (HIGHEST) is reused
    assert seen == ["highest"] * traces, seen
    for a, b in ((g1, g2), (g1, g3)):
        jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_an_explicit_precision_is_kept():
    """A dot whose code names `precision=lax.Precision.DEFAULT` keeps it (gdjax does not rewrite the caller's
    program; docs/estimators.md says so); the dots that name none are at HIGHEST."""
    params, batch = user_problem()

    def cost(params, batch):
        return user_cost(params, batch) + jnp.sum(jnp.dot(batch["x"], params["w"], precision=lax.Precision.DEFAULT))

    ops = precisions(lowered(gdjax.gradient(cost, "fd-forward"), params, batch))
    kept = ops.count(("dot_general", ("DEFAULT", "DEFAULT")))  # one per copy of the cost in the program
    assert kept >= 1 and sum(p == ("HIGHEST", "HIGHEST") for _, p in ops) == 2 * kept == len(ops) - kept


def test_bad_option_fails_before_any_work():
    """A precision JAX does not know: ValueError naming the option and the valid names; nothing is traced."""
    f, seen = recording(user_cost)
    with pytest.raises(ValueError, match="matmul_precision.*highest"):
        gdjax.gradient(f, "fd-forward", matmul_precision="fp8")
    with pytest.raises(TypeError, match="its options: none.*matmul_precision"):
        gdjax.gradient(f, "reverse", matmul_precison="highest")
    assert seen == []


def test_program_precisions_parses_both_forms():
    """dot_general prints `precision = [A, B]`, convolution `precision_config = [#stablehlo<precision A>, ...]`;
    an op without a precision gives ()."""
    text = "\n".join([
        "%0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0], precision = [HIGHEST, HIGH] : (t) -> t",
        "%1 = stablehlo.convolution(%c, %d) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {stride"
        " = [1, 1]} {batch_group_count = 1 : i64, precision_config = [#stablehlo<precision DEFAULT>, "
        "#stablehlo<precision HIGHEST>]} : (t, t) -> t",
        "%2 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (t) -> t",
        "%3 = stablehlo.add %a, %b : t"])
    assert _precision.program_precisions(text) == [("dot_general", ("HIGHEST", "HIGH")),
                                                   ("convolution", ("DEFAULT", "HIGHEST")), ("dot_general", ())]


# --- emulated TF32: the FD error rises as the error model predicts ----------------------------------------------

def tf32_inputs(a):
    """A matmul input as a TF32 matmul reads it (10-bit mantissa) unless the precision in force at trace time
    is the highest: what an Ampere GPU does by default, emulated on the CPU."""
    if _precision.current() in ("highest", "float32"):
        return a
    return lax.reduce_precision(a, exponent_bits=8, mantissa_bits=10)


def lecture_cost(params, batch, inputs=tf32_inputs):
    """The lecture's net (sigmoid units, quadratic cost) on a dict of params, every matmul's inputs through
    `inputs` (default `tf32_inputs`: the emulation; the identity gives the plain float32 cost)."""
    def mm(a, w):
        return jnp.dot(inputs(a), inputs(w))

    a1 = jax.nn.sigmoid(mm(batch["x"], params["w1"]) + params["b1"][None])
    out = jax.nn.sigmoid(mm(a1, params["w2"]) + params["b2"][None])
    return 0.5 * jnp.mean(jnp.sum((out - batch["y"]) ** 2, axis=-1))


def spacing(a):
    """The distance between neighbouring numbers of a 10-bit mantissa at a: 2^(floor(log2|a|) - 10) <= 2 u |a|."""
    return 2.0 ** (jnp.floor(jnp.log2(jnp.abs(a))) - 10)


def quantisation_variance(delta, s):
    """E[(round(a + delta) - round(a) - delta)^2] for an input a at a uniform position within its spacing s:
    f (s - f) with f = |delta| mod s (about |delta| s when |delta| << s: the rounded input moves by 0 or s)."""
    f = jnp.mod(jnp.abs(delta), s)
    return f * (s - f)


def predicted_tf32_error(params, batch, g, float32_abs_error):
    """The error model's relative FD error with TF32 matmul inputs (docs/estimators.md): the float32 error plus,
    per direction i, the quantisation of every matmul input the step moves, sum_a (dC/da)^2 f(s - f) / h_i^2,
    added in quadrature. Moving inputs: the weight itself (w1, w2; a bias is added after the matmul) and, for
    the first layer's weights and biases, the hidden activations a1[n, j] that feed the second matmul, moved by
    sigmoid'(z[n, j]) x[n, l] h (w1[l, j]) or sigmoid'(z[n, j]) h (b1[j]). Everything in float64."""
    total, norm = (float(v) for v in _tf32_variance_and_norm(params, batch, g))
    return float(np.sqrt(float32_abs_error ** 2 + total)) / norm


@jax.jit  # one program instead of ~60 op-by-op dispatches (each compiled on first use)
def _tf32_variance_and_norm(params, batch, g):
    """predicted_tf32_error's sum of the per-direction variances and |g|, as float64 scalars."""
    h_factor = float(np.sqrt(np.finfo(np.float32).eps))  # fd-forward's default step, h = sqrt(eps) max(1, |v|)
    h = {k: h_factor * jnp.maximum(1.0, jnp.abs(v)) for k, v in params.items()}
    var = {k: jnp.zeros_like(v) for k, v in params.items()}
    for k in ("w1", "w2"):
        var[k] += g[k] ** 2 * quantisation_variance(h[k], spacing(params[k])) / h[k] ** 2
    x, n = batch["x"], batch["x"].shape[0]
    a1 = jax.nn.sigmoid(x @ params["w1"] + params["b1"][None])
    slope = a1 * (1 - a1)

    def top(a, y):  # one example's cost as a function of its hidden activations
        return 0.5 * jnp.sum((jax.nn.sigmoid(a @ params["w2"] + params["b2"]) - y) ** 2)

    dc_da = jax.vmap(jax.grad(top))(a1, batch["y"]) / n              # (N, h1): dC/da1[n, j] of the batch mean
    s_a = spacing(a1)
    move_w1 = slope[:, None, :] * x[:, :, None] * h["w1"][None]     # (N, n_in, h1)
    var["w1"] += jnp.sum(dc_da[:, None, :] ** 2 * quantisation_variance(move_w1, s_a[:, None, :]), 0) / h["w1"] ** 2
    var["b1"] += jnp.sum(dc_da ** 2 * quantisation_variance(slope * h["b1"][None], s_a), 0) / h["b1"] ** 2
    total = sum(jnp.sum(v) for v in var.values())
    return total, jnp.sqrt(sum(jnp.sum(v ** 2) for v in g.values()))


def test_emulated_tf32_error_rises_as_predicted():
    """[784, 30, 10], N = 10, float32 params: fd-forward under the default policy equals the plain float32 FD
    gradient bit for bit (the emulation is off at HIGHEST); under matmul_precision="tensorfloat32" its error
    against a float64 jax.grad rises, and the rise is the model's within 2x (the model is statistical: each
    direction's rounding position is treated as uniform, and the two quantisations of a first-layer weight as
    independent). The rise must be large (> 5x) for the test to mean anything."""
    n = 10
    k = jax.random.split(jax.random.key(0), 6)
    params = {"w1": jax.random.normal(k[0], (784, 30), jnp.float32), "b1": jax.random.normal(k[1], (30,), jnp.float32),
              "w2": jax.random.normal(k[2], (30, 10), jnp.float32), "b2": jax.random.normal(k[3], (10,), jnp.float32)}
    batch = {"x": jax.random.uniform(k[4], (n, 784), jnp.float32),
             "y": jax.nn.one_hot(jnp.arange(n) % 10, 10, dtype=jnp.float32)}
    p64, b64 = (jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), t) for t in (params, batch))
    with jax.default_matmul_precision("highest"):
        g = jax.jit(jax.grad(lecture_cost))(p64, b64)  # one compilation, not one per op

    err = jax.jit(lambda d: jnp.sqrt(sum(jnp.sum((d[key].astype(jnp.float64) - g[key]) ** 2) for key in g)))

    def abs_error(est):
        return float(err(est(params, batch)))

    norm = float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in g.values())))
    default = gdjax.gradient(lecture_cost, "fd-forward")
    plain = gdjax.gradient(lambda p, b: lecture_cost(p, b, inputs=lambda a: a), "fd-forward")
    e32 = abs_error(default)
    assert e32 == abs_error(plain)  # falls back to the float32 figure: the same numbers as the plain cost
    e_tf32 = abs_error(gdjax.gradient(lecture_cost, "fd-forward", matmul_precision="tensorfloat32"))
    measured = e_tf32 / e32
    predicted = predicted_tf32_error(p64, b64, g, e32) / (e32 / norm)
    print(f"emulated TF32 at [784, 30, 10], N = {n}: float32 rel. error {e32 / norm:.3g}, TF32 {e_tf32 / norm:.3g}, "
          f"rise x{measured:.3g}, model x{predicted:.3g}")
    assert measured > 5.0, measured
    assert 0.5 < measured / predicted < 2.0, (measured, predicted)
    assert n_params(params) == 23_860


# --- the records ----------------------------------------------------------------------------------------------

def test_the_precision_is_recorded():
    """Every results meta carries gdjax's default and JAX's setting; a benchmark row carries the precision its
    method ran at (the option given, the policy's "highest", or for an exact method and the forward pass the
    caller's JAX setting, "default" when unset)."""
    from gdjax import results
    from gdjax.bench.config import FORWARD_PASS, Point
    from gdjax.bench.measure import measure_forward, measure_method
    from gdjax.bench.problem import make_problem, reference_gradient, sub_batch

    env = results.environment()
    assert env["matmul_precision"] == "highest" and env["jax_default_matmul_precision"] is None
    with jax.default_matmul_precision("tensorfloat32"):
        assert results.environment()["jax_default_matmul_precision"] == "tensorfloat32"
    sizes, n = (4, 3, 2), 8
    cost, params, batch = make_problem(sizes, n, "float32")
    b = sub_batch(batch, n)
    fwd = measure_forward(Point("t", sizes, n, FORWARD_PASS), cost, params, b, dtype="float32", repeats=1, budget=1.0)
    assert fwd["matmul_precision"] == "default"
    kw = dict(dtype="float32", t_forward=fwd["median_s"], forward_flops=fwd["xla_flops_raw"], key=None, repeats=1,
              budget=1.0, validate=False, reference=lambda: reference_gradient(cost, params, b))
    got = {}
    for method, options in (("fd-forward", {"matmul_precision": "tensorfloat32"}), ("reverse", None)):
        row, _ = measure_method(Point("t", sizes, n, method), cost, params, b, options=options, **kw)
        got[method] = row["matmul_precision"]
    assert got == {"fd-forward": "tensorfloat32", "reverse": "default"}  # "highest": in_force(est), tested above
