"""gdjax.gradients: every deterministic method against jax.grad ("reverse") on random MLPs in float64, with
tolerances derived from each scheme's error terms; hand-written backprop to 1e-12; pytree structure and
dtypes; evaluation counts; bad input."""

import functools

import chex
import jax
import jax.numpy as jnp
import conftest
import pytest
from jax.flatten_util import ravel_pytree

import gdjax
from gdjax.gradients import available_methods, finite_diff, gradient, method_info, n_params
from gdjax.gradients.backprop import backprop
from gdjax.nn import MLP, Layer

EPS64 = float(jnp.finfo(jnp.float64).eps)
DETERMINISTIC = ("forward", "backprop", "fd-forward", "fd-central", "fd-complex", "fd-loop")
# (sizes, hidden activation, output activation, loss, l2): several sizes and depths, every hidden activation,
# both losses, every output activation, with and without weight decay.
CONFIGS = [
    ((4, 5, 3), "tanh", "softmax", "cross-entropy", 0.1),
    ((3, 5, 4, 3), "relu", "identity", "quadratic", 0.0),
    ((3, 5, 4, 3), "sigmoid", "sigmoid", "cross-entropy", 0.05),
]
N = 8


make_case = functools.partial(conftest.make_case, n=N)


def diagonal_derivatives(f, v):
    """(C_ii, C_iii): 2nd and 3rd derivatives of f along every basis vector e_i at v (nested jvp), (P,) each."""

    def along(i):
        e = (jnp.arange(v.size) == i).astype(v.dtype)
        d1 = lambda u: jax.jvp(f, (u,), (e,))[1]  # noqa: E731
        d2 = lambda u: jax.jvp(d1, (u,), (e,))[1]  # noqa: E731
        return jax.jvp(d2, (v,), (e,))

    return jax.jit(jax.vmap(along))(jnp.arange(v.size))


@functools.lru_cache(maxsize=None)
def reference(config):
    """(cost, params, batch, flat jax.grad, |C|) for a config, computed once per worker."""
    cost, params, batch = make_case(*config)
    g = ravel_pytree(jax.jit(jax.grad(cost))(params, batch))[0]
    return cost, params, batch, g, abs(float(jax.jit(cost)(params, batch)))


@functools.lru_cache(maxsize=None)
def curvature(config):
    """(C_ii, C_iii) of a config's cost along the basis vectors."""
    cost, params, batch = reference(config)[:3]
    v, unravel = ravel_pytree(params)
    return diagonal_derivatives(lambda u: cost(unravel(u), batch), v)


def fd_tolerance(scheme, v, g, c_abs, d2, d3):
    """Per-component bound on |FD - exact| in float64, twice each term of the scheme's error expansion.

    The cost is evaluated with a rounding error delta that we take as 4 ulps of max(1, |C|) (a sum of a few
    dozen float64 terms: measured errors are about one ulp). With the default steps h_i (finite_diff docstring):
      forward:  |err_i| <= h_i/2 |C_ii| + 2 delta / h_i           (truncation O(h) + rounding)
      central:  |err_i| <= h_i^2/6 |C_iii| + delta / h_i          (truncation O(h^2) + rounding)
      complex:  no subtraction, so only rounding of Im C: a few ulps of the largest quantity involved,
                max(|C|, |g|_inf); we allow 16 ulps.
    """
    delta = 4 * EPS64 * max(1.0, c_abs)
    if scheme == "complex":
        return jnp.full_like(g, 16 * EPS64 * max(c_abs, float(jnp.max(jnp.abs(g)))))
    h = finite_diff.default_eps(scheme, jnp.float64) * jnp.maximum(1, jnp.abs(v))
    if scheme == "forward":
        return 2 * (h / 2 * jnp.abs(d2) + 2 * delta / h)
    return 2 * (h**2 / 6 * jnp.abs(d3) + delta / h)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
@pytest.mark.parametrize("method", DETERMINISTIC)
def test_matches_reverse(method, config):
    cost, params, batch, g, c_abs = reference(config)
    if method == "fd-complex" and config[1] == "relu":
        with pytest.raises(ValueError, match="analytic"):
            gradient(cost, method)
        return
    est = gradient(cost, method)
    tree = est(params, batch)
    chex.assert_trees_all_equal_shapes_and_dtypes(tree, params)  # the pytree jax.grad returns
    got = ravel_pytree(tree)[0]
    err = jnp.abs(got - g)
    if method in ("forward", "backprop"):
        # exact methods: the same arithmetic as jax.grad in another order; 1e-12 relative to the largest entry
        assert float(jnp.max(err)) <= 1e-12 * float(jnp.max(jnp.abs(g))), (method, float(jnp.max(err)))
        return
    scheme = "forward" if method == "fd-loop" else method.removeprefix("fd-")
    d2, d3 = curvature(config) if scheme != "complex" else (None, None)
    tol = fd_tolerance(scheme, ravel_pytree(params)[0], g, c_abs, d2, d3)
    worst = float(jnp.max(err / tol))
    assert worst <= 1.0, f"{method}: error reaches {worst:.3g} of its bound"
    # and the bound is not vacuous: a gradient off by 1% of its scale would fail it
    assert float(jnp.max(tol)) < 0.01 * float(jnp.max(jnp.abs(g)))


@pytest.mark.parametrize("scheme, eps", [("forward", 1e-4), ("central", 1e-3)])
def test_error_order(scheme, eps):
    """With a step large enough that truncation dominates rounding, the error IS the leading Taylor term:
    forward  FD - g_i = h_i/2 C_ii + O(h^2)     (first order)
    central  FD - g_i = h_i^2/6 C_iii + O(h^4)  (second order)
    We require the leading term to predict the error to 1% of its largest value (the next term is a factor
    ~h smaller, the rounding delta/h ~ 1e-12 here)."""
    config = CONFIGS[2]
    cost, params, batch, g, _ = reference(config)
    d2, d3 = curvature(config)
    v = ravel_pytree(params)[0]
    h = eps * jnp.maximum(1, jnp.abs(v))
    h = (v + h) - v  # the step actually taken
    err = ravel_pytree(gradient(cost, f"fd-{scheme}", eps=eps)(params, batch))[0] - g
    predicted = h / 2 * d2 if scheme == "forward" else h**2 / 6 * d3
    assert float(jnp.max(jnp.abs(predicted))) > 1e-3 * eps ** (1 if scheme == "forward" else 2)  # not vacuous
    assert float(jnp.max(jnp.abs(err - predicted))) <= 0.01 * float(jnp.max(jnp.abs(predicted)))


@pytest.mark.parametrize("config", CONFIGS[0:1] + CONFIGS[2:3], ids=lambda c: f"{c[1]}-{c[3]}")
def test_check_grads_on_cost(config):
    """JAX's own numerical check of the cost's derivatives (forward and reverse, second order)."""
    cost, params, batch = make_case(*config)
    jax.test_util.check_grads(jax.jit(lambda p: cost(p, batch)), (params,), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("out", ["sigmoid", "identity", "softmax"])
@pytest.mark.parametrize("loss", ["quadratic", "cross-entropy"])
def test_backprop_equals_jax_grad(act, out, loss):
    """The four equations for every activation x output x loss, with weight decay: 1e-12 relative."""
    cost, params, batch = make_case((4, 5, 4, 3), act, out, loss, 0.03, seed=1)
    ref = jax.grad(cost)(params, batch)  # eager: tiny net, cheaper than compiling
    got = backprop(cost, params, batch)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, ref)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-12 * float(jnp.max(jnp.abs(b))), (act, out, loss)


def test_backprop_relu_tie_matches_jax():
    """At z = 0 exactly jax.grad of max(z, 0) gives 1/2; backprop uses the same convention."""
    cost, params, batch = make_case((3, 4, 2), "relu", "sigmoid", "quadratic", 0.0)
    params = (Layer(jnp.zeros_like(params[0].w), jnp.zeros_like(params[0].b)), params[1])  # every z_1 = 0
    ref = jax.grad(cost)(params, batch)
    got = backprop(cost, params, batch)
    assert float(jnp.max(jnp.abs(ref[0].b))) > 0  # the tie carries gradient: the test is not vacuous
    chex.assert_trees_all_close(got, ref, rtol=1e-12, atol=1e-15)


EPS32 = float(jnp.finfo(jnp.float32).eps)


@functools.lru_cache(maxsize=None)
def float32_reference():
    """A float32 case and, at the very same (float32-rounded) params and batch, its float64 gradient, |C| and
    the diagonal curvature, so that float32 results are judged against the exact value they approximate."""
    cost, p32, b32 = make_case((3, 4, 2), "tanh", "sigmoid", "quadratic", 0.0, dtype="float32")
    up = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
    p64, b64 = up(p32), up(b32)
    c64, g64 = jax.jit(jax.value_and_grad(cost))(p64, b64)  # one compilation, not one per op
    g64 = ravel_pytree(g64)[0]
    v, unravel = ravel_pytree(p64)
    d2, d3 = diagonal_derivatives(lambda u: cost(unravel(u), b64), v)
    return cost, p32, b32, g64, abs(float(c64)), v, d2, d3


def float32_fd_tolerance(scheme, v, g, c_abs, d2, d3):
    """Per-component bound on |FD in float32 - exact| from the step rule (`_steps`), as `fd_tolerance` but with
    float32 rounding: each float32 cost value within 8 ulps of max(1, |C|) (a sum of a few dozen terms), the
    steps h_i = eps * max(1, |v_i|) of float32 (forward sqrt(eps32) = 3.5e-4, central cbrt(eps32) = 4.9e-3),
    a factor 2 of slack; the complex step: 32 ulps of max(|C|, |g|) (no cancellation)."""
    delta = 8 * EPS32 * max(1.0, c_abs)
    if scheme == "complex":
        return jnp.full_like(g, 32 * EPS32 * max(c_abs, float(jnp.max(jnp.abs(g)))))
    h = finite_diff.default_eps(scheme, jnp.float32) * jnp.maximum(1, jnp.abs(v))
    if scheme == "forward":
        return 2 * (h / 2 * jnp.abs(d2) + 2 * delta / h)
    return 2 * (h**2 / 6 * jnp.abs(d3) + delta / h)


@pytest.mark.parametrize("method", ["reverse", "forward", "backprop", "fd-forward", "fd-central", "fd-complex"])
def test_float32_accuracy_and_dtypes(method):
    """float32 params: the pytree and dtypes of jax.grad, and the accuracy each method can have in float32.

    Exact methods (reverse, forward, backprop) differ from the exact gradient by float32 rounding only: a few
    dozen rounded operations per entry on an O(1) tiny net, so within 1e-5 of max|g| (about 80 ulps); a wrong
    activation derivative, a dropped term or a float16 intermediate would be off by far more. FD methods within
    the step rule's truncation + rounding bound in float32 (`float32_fd_tolerance`), which is itself checked to be
    tighter than 3% of max|g| for central and complex (so a wrong step or a wrong denominator fails)."""
    cost, p32, b32, g64, c_abs, v, d2, d3 = float32_reference()
    got = gradient(cost, method)(p32, b32)
    ref = jax.eval_shape(jax.grad(cost), p32, b32)  # jax.grad's pytree, shapes and dtypes, without running it
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, ref)
    err = jnp.abs(ravel_pytree(got)[0].astype(jnp.float64) - g64)
    scale = float(jnp.max(jnp.abs(g64)))
    if method_info(method).exact:
        assert float(jnp.max(err)) <= 1e-5 * scale, (method, float(jnp.max(err)) / scale)
        return
    tol = float32_fd_tolerance(method.removeprefix("fd-"), v, g64, c_abs, d2, d3)
    worst = float(jnp.max(err / tol))
    assert worst <= 1.0, f"{method}: float32 error reaches {worst:.3g} of its bound"
    if method != "fd-forward":  # forward's rounding term 4 delta / h is ~3e-3 |C|: loose by nature
        assert float(jnp.max(tol)) < 0.03 * scale


def test_mixed_dtype_params_keep_their_dtypes():
    cost, params, batch = make_case((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0)
    params = (Layer(params[0].w.astype(jnp.float32), params[0].b), params[1])
    ref = jax.grad(cost)(params, batch)
    for method in ("fd-central", "fd-complex", "forward"):
        chex.assert_trees_all_equal_shapes_and_dtypes(gradient(cost, method)(params, batch), ref)


def test_evaluation_counts():
    """FD counts are the directions the kernel evaluates (a wrong plan length would fail); autodiff and backprop
    make no cost evaluations and say so with None (a guessed constant such as 3.0 would fail)."""
    cost, params, batch = make_case((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0)
    P = n_params(params)
    assert P == MLP((3, 4, 2)).n_params() == 26
    expected = {"fd-forward": P + 1, "fd-central": 2 * P, "fd-complex": P, "reverse": None, "backprop": None,
                "forward": None}
    for method, count in expected.items():
        assert gradient(cost, method).evaluations(P) == count, method
    for scheme, count in [("forward", P + 1), ("central", 2 * P), ("complex", P)]:
        assert gradient(cost, "fd-loop", scheme=scheme).evaluations(P) == count
        # the count is the number of directions the kernel actually evaluates (leaf by leaf, base on the first)
        plans = [jax.eval_shape(lambda a, k=k: finite_diff.leaf_plan(a, scheme, 1e-3, scheme == "forward" and k == 0),
                                leaf) for k, leaf in enumerate(jax.tree_util.tree_leaves(params))]
        assert sum(pl.idx.shape[0] for pl in plans) == count


def test_registry_lists_methods_with_capabilities():
    """Capabilities come from the registry entry and reach the built estimator (a builder forgetting one, or
    method_info disagreeing with the estimator, would fail)."""
    names = available_methods()
    for m in ("reverse", "forward", "backprop", "fd-forward", "fd-central", "fd-complex", "fd-loop"):
        assert m in names
    assert method_info("backprop").structured and not method_info("fd-central").structured
    assert method_info("fd-loop").kind == "fd" and method_info("forward").kind == "exact"
    cost = make_case(*CONFIGS[0])[0]
    expected = {  # method: (exact, jittable, subset)
        "reverse": (True, True, False), "backprop": (True, True, False), "forward": (True, True, True),
        "fd-forward": (False, True, True), "fd-central": (False, True, True), "fd-complex": (False, True, True),
        "fd-loop": (False, False, True),
    }
    for method, (exact, jittable, subset) in expected.items():
        info, est = method_info(method), gradient(cost, method)
        assert (info.exact, info.jittable, info.subset, info.stochastic) == (exact, jittable, subset, False), method
        assert (est.exact, est.jittable, est.subset is not None, est.stochastic) == (exact, jittable, subset, False)
        assert est.structured == info.structured


@pytest.mark.parametrize("method", ["fd-forward", "fd-central", "forward", "fd-loop"])
def test_subset_runs_the_methods_own_directions(method):
    """`subset` evaluates the first directions of the whole program in whole chunks: its values are the
    whole gradient's (a subset that perturbed other directions, or another step, would fail), covered counts
    whole chunks (>= asked), total the padded directions of the whole program (an unpadded count would fail)."""
    cost, params, batch = make_case((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0)
    opts = {} if method == "fd-loop" else {"chunk_size": 3}
    est = gradient(cost, method, **opts)
    sub = est.subset(params, batch, 5)
    chunk = opts.get("chunk_size", 1)
    assert sub.covered >= 5 and sub.covered % chunk == 0 and sub.jittable == (method != "fd-loop")
    lengths = {"fd-forward": [13, 4, 8, 2], "fd-central": [24, 8, 16, 4], "forward": [12, 4, 8, 2],
               "fd-loop": [13, 4, 8, 2]}[method]  # per leaf: (3, 4) w, (4,) b, (4, 2) w, (2,) b
    # each leaf in chunks of min(chunk, its directions), padded to whole chunks
    assert sub.total == sum(-(-n // min(chunk, n)) * min(chunk, n) for n in lengths)
    values = jnp.asarray(sub.fn(params, batch))
    assert values.shape == (min(sub.covered, lengths[0]),)
    w0 = ravel_pytree(params)[0][:12]
    g0 = ravel_pytree(jax.grad(cost)(params, batch))[0][:12]
    if method == "forward":  # the jvps along the first basis vectors are the gradient's first entries
        chex.assert_trees_all_close(values, g0[:values.shape[0]], rtol=1e-12)
        return
    c0 = cost(params, batch)
    scheme = "central" if method == "fd-central" else "forward"
    h = finite_diff.default_eps(scheme, jnp.float64) * jnp.maximum(1, jnp.abs(w0))
    if scheme == "forward":  # the base point first, then C(v + h e_i)
        assert float(values[0]) == pytest.approx(float(c0), rel=1e-14)
        chex.assert_trees_all_close((values[1:] - c0) / h[:values.shape[0] - 1], g0[:values.shape[0] - 1],
                                    atol=1e-6)
    else:
        chex.assert_trees_all_close(values - c0, h[:values.shape[0]] * g0[:values.shape[0]], atol=1e-8)


def test_generic_cost_for_black_box_methods():
    """Black-box methods take any cost(params, batch) -> scalar, params any pytree (a dict here)."""
    params = {"a": jnp.array([0.3, -1.2]), "b": jnp.array(0.7)}
    batch = jnp.array([1.0, 2.0, 3.0])
    cost = lambda p, x: jnp.mean(jnp.sin(p["a"][0] * x) + p["a"][1] ** 2 * x + jnp.exp(p["b"] * x))  # noqa: E731
    ref = jax.grad(cost)(params, batch)
    for method in ("forward", "fd-complex", "fd-forward", "fd-loop"):
        got = gradient(cost, method)(params, batch)
        chex.assert_trees_all_close(got, ref, rtol=2e-6 if method in ("fd-forward", "fd-loop") else 1e-9)


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny():
    return make_case((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0)


def test_unknown_method_lists_valid(tiny):
    with pytest.raises(ValueError, match="fd-central") as e:
        gradient(tiny[0], "fd-centre")
    assert "backprop" in str(e.value) and "fd-loop" in str(e.value)


@pytest.mark.parametrize("method", ["fd-forward", "fd-central", "fd-complex", "fd-loop"])
@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_eps_value(tiny, method, eps):
    with pytest.raises(ValueError, match="eps"):
        gradient(tiny[0], method, eps=eps)


@pytest.mark.parametrize("eps", ["1e-3", True, [1e-3]])
def test_bad_eps_type(tiny, eps):
    with pytest.raises(TypeError, match="eps"):
        gradient(tiny[0], "fd-central", eps=eps)


def test_eps_below_machine_epsilon(tiny):
    cost, params, batch = tiny
    with pytest.raises(ValueError, match="machine epsilon"):
        gradient(cost, "fd-forward", eps=1e-17)(params, batch)


@pytest.mark.parametrize("method", ["fd-forward", "fd-central", "fd-complex", "forward"])
@pytest.mark.parametrize("chunk, exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError),
                                        ("8", TypeError)])
def test_bad_chunk_size(tiny, method, chunk, exc):
    with pytest.raises(exc, match="chunk_size"):
        gradient(tiny[0], method, chunk_size=chunk)


@pytest.mark.parametrize("method", ["reverse"] + list(DETERMINISTIC))
def test_integer_params_refused(tiny, method):
    """Params with no floating leaf: nothing to differentiate (the leaf policy), one ValueError naming params."""
    cost, params, batch = tiny
    iparams = jax.tree_util.tree_map(lambda a: jnp.round(a).astype(jnp.int32), params)
    with pytest.raises(ValueError, match="params has no leaf to differentiate.*float"):
        gradient(cost, method)(iparams, batch)


def test_backprop_needs_gdjax_cost(tiny):
    cost, params, batch = tiny
    with pytest.raises(TypeError, match="make_cost"):
        gradient(lambda p, b: cost(p, b), "backprop")


@pytest.mark.parametrize("method, opts", [("fd-complex", {}), ("fd-loop", {"scheme": "complex"})])
def test_complex_step_refuses_relu(method, opts):
    cost = gdjax.make_cost(MLP((3, 4, 2), "relu"), "quadratic")
    with pytest.raises(ValueError, match="relu"):
        gradient(cost, method, **opts)


def test_complex_step_refuses_cost_dropping_imaginary_part(tiny):
    cost, params, batch = tiny
    with pytest.raises(ValueError, match="imaginary"):
        gradient(lambda p, b: jnp.real(cost(p, b)), "fd-complex")(params, batch)


@pytest.mark.parametrize("method", [m for m in ("reverse",) + DETERMINISTIC if m != "backprop"])
def test_non_scalar_cost_refused(tiny, method):
    """(backprop only takes gdjax costs, which are scalar: see test_backprop_needs_gdjax_cost.)"""
    cost, params, batch = tiny
    per_example = lambda p, b: cost.per_example_batch(p, b)  # noqa: E731  (N,) instead of a scalar
    with pytest.raises(ValueError, match="scalar"):
        gradient(per_example, method)(params, batch)


def test_bad_scheme_and_unknown_option(tiny):
    """An unknown option names the method and its valid options (not a builder's internal signature)."""
    with pytest.raises(ValueError, match="scheme"):
        gradient(tiny[0], "fd-loop", scheme="backward")
    with pytest.raises(TypeError, match=r"'fd-forward' got unknown option\(s\) epsilon; its options: eps, chunk_size"):
        gradient(tiny[0], "fd-forward", epsilon=1e-3)
    with pytest.raises(TypeError, match="'backprop' got unknown option.*its options: none"):
        gradient(tiny[0], "backprop", eps=1e-3)
    with pytest.raises(TypeError, match="its options: scheme, eps"):
        gradient(tiny[0], "fd-loop", chunk_size=4)


def test_complex_step_refuses_cost_without_complex_parameters():
    """A cost that cannot be traced with complex parameters (lax.conv of a real input) gets one clear
    TypeError saying so and naming fd-central, not JAX's dtype error from inside the kernel."""
    def conv_cost(w, x):
        return jnp.sum(jax.lax.conv(x[None, None], w[None, None], (1, 1), "SAME") ** 2)

    w, x = jnp.ones((3, 3)), jnp.ones((5, 5))
    with pytest.raises(TypeError, match="complex step needs a cost that accepts complex parameters.*fd-central"):
        gradient(conv_cost, "fd-complex")(w, x)
    chex.assert_trees_all_close(gradient(conv_cost, "fd-central")(w, x), jax.grad(conv_cost)(w, x), rtol=1e-6)
