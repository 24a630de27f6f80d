"""A researcher's own model: every gradient method, `make_step` and `fit` on params that are not gdjax's MLP.

The leaf policy (`gdjax.gradients._leaves`): only floating array leaves are differentiated, perturbed and
updated; gradients carry None at every other leaf; ints, bools, PRNG keys and functions come back unchanged.
Models: a dict with an int32 step counter and a bool mask, an Equinox MLP, a Flax linen CNN and a Flax NNX
model with dropout (its RNG state passes through). Also `has_aux`, the call contract `est(params, batch,
key=None)` and the clear errors of issue 23 (empty batch, fd-loop under a trace). Gradients are compared in
float64 against `jax.grad` (or `equinox.filter_grad`).
"""

import importlib

import conftest
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax
from gdjax import train
from gdjax.data import Batch
from gdjax.gradients import available_methods, gradient, method_info, n_params

BLACK_BOX = tuple(m for m in available_methods() if not method_info(m).structured)
STRUCTURED = tuple(m for m in available_methods() if method_info(m).structured)
DETERMINISTIC = tuple(m for m in BLACK_BOX if not method_info(m).stochastic)
STOCHASTIC = tuple(m for m in BLACK_BOX if method_info(m).stochastic)
JITTABLE = tuple(m for m in BLACK_BOX if method_info(m).jittable)

# Tolerances of the deterministic methods against jax.grad in float64, from each scheme's error on these
# smooth costs with O(1) derivatives: forward differences truncate at O(h) with h = sqrt(eps_64) ~ 1.5e-8 (times
# a second derivative of O(1)) -> 1e-6; central at O(h^2) with h = cbrt(eps_64) ~ 6e-6 plus rounding
# eps/h ~ 4e-11 -> 1e-8; complex step and autodiff are exact to rounding -> 1e-12.
ATOL = {"reverse": 1e-12, "forward": 1e-12, "fd-complex": 1e-12, "fd-central": 1e-8, "fd-forward": 1e-6}


def _atol(method: str, est) -> float:
    scheme = est.options.get("scheme")
    return ATOL.get(method) or ATOL[f"fd-{scheme}"]


def _need(module: str):
    """Import an optional framework; skip without it only when CI is unset (under CI=true it must be there)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if conftest.IN_CI:
            raise
        pytest.skip(f"{module} is not installed (pip install -e '.[test]'); skipped outside CI only")


def _call(est, params, batch, key=jax.random.key(0)):
    return est(params, batch, key) if est.stochastic else est(params, batch)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])


def _assert_unchanged(before, after):
    """Every non-floating leaf identical (the same object for non-arrays, bit-equal arrays of the same dtype)."""
    b_leaves, b_def = jax.tree_util.tree_flatten(before)
    a_leaves, a_def = jax.tree_util.tree_flatten(after)
    assert a_def == b_def
    changed = 0
    for b, a in zip(b_leaves, a_leaves):
        if gdjax.gradients._leaves.is_differentiable(b):
            continue
        if gdjax.gradients._leaves.is_array(b):
            bb = jax.random.key_data(b) if jnp.issubdtype(b.dtype, jax.dtypes.prng_key) else b
            aa = jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
            changed += not (a.dtype == b.dtype and np.array_equal(np.asarray(aa), np.asarray(bb)))
        else:
            changed += a is not b
    assert changed == 0, f"{changed} non-float leaves changed"


def _none_where_not_differentiated(params, grads):
    """The gradient has params' structure with None exactly at the leaves not differentiated."""
    is_none = lambda x: x is None  # noqa: E731
    g = jax.tree_util.tree_leaves(grads, is_leaf=is_none)
    p = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x: x if gdjax.gradients._leaves.is_differentiable(x) else None, params), is_leaf=is_none)
    assert len(g) == len(p)
    for gi, pi in zip(g, p):
        assert (gi is None) == (pi is None)
        if pi is not None:
            assert gi.shape == pi.shape and gi.dtype == pi.dtype


# --- the dict {"w", "step", "mask"} --------------------------------------------------------------------------


def _dict_params():
    w = jnp.array([[0.3, -0.5], [0.8, 0.2], [-0.4, 0.6]], jnp.float64)
    return {"w": w, "step": jnp.int32(7), "mask": jnp.array([True, True, False])}


def dict_cost(p, x):
    """The mask zeroes row 2 of w (its true gradient is exactly 0); the step counter scales the cost."""
    wm = jnp.where(p["mask"][:, None], p["w"], 0.0)
    return (1.0 + 0.1 * p["step"]) * jnp.mean(jnp.tanh(x @ wm) ** 2) + jnp.sum(wm ** 2)


X_DICT = jax.random.uniform(jax.random.key(3), (5, 3), jnp.float64, -1.0, 1.0)


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_dict_with_step_and_mask_every_deterministic_method(method):
    """Before the leaf policy, spsa/forward-gradient returned "gradients" for the int and bool leaves (and
    reverse/fd-central refused the dict); now every method differentiates w only, with None elsewhere."""
    p = _dict_params()
    est = gradient(dict_cost, method)
    g = _call(est, p, X_DICT)
    _none_where_not_differentiated(p, g)
    ref = jax.grad(lambda w: dict_cost({**p, "w": w}, X_DICT))(p["w"])
    np.testing.assert_allclose(np.asarray(g["w"]), np.asarray(ref), rtol=0, atol=_atol(method, est))
    assert np.all(np.asarray(g["w"])[2] == 0.0)  # the masked row: no perturbation of it changes the cost
    _assert_unchanged(_dict_params(), p)  # the call did not touch its argument
    assert n_params(p) == 6  # the 3 x 2 floats: P counts what is differentiated


@pytest.mark.parametrize("method", STOCHASTIC)
def test_dict_stochastic_methods_unbiased_on_the_masked_row(method):
    """spsa returned [1.06, -0.30] for the masked row averaged over 4,000 keys (the int and bool leaves were
    perturbed too); its true gradient is 0. Averaged over K keys, one direction each, every entry g_i has
    variance |grad C|^2 - g_i^2 (spsa) or |grad C|^2 + g_i^2 (forward gradient; module docstring of
    stochastic.py), so the mean of K draws of a masked entry (g_i = 0) has standard deviation |grad C|/sqrt(K);
    5 standard deviations plus the O(eps^2) bias of spsa (negligible in float64) bound it."""
    p = _dict_params()
    est = gradient(dict_cost, method)
    keys = jax.random.split(jax.random.key(11), 4000)
    gs = jax.vmap(lambda k: est(p, X_DICT, k))(keys)
    assert gs["step"] is None and gs["mask"] is None
    true = jax.grad(lambda w: dict_cost({**p, "w": w}, X_DICT))(p["w"])
    sd = float(jnp.linalg.norm(true)) / np.sqrt(len(keys))
    mean = np.asarray(jnp.mean(gs["w"], axis=0))
    np.testing.assert_array_less(np.abs(mean[2]), 5 * sd)                      # the masked row: 0
    np.testing.assert_array_less(np.abs(mean - np.asarray(true)), 5 * np.sqrt(2) * sd)  # unbiased everywhere


@pytest.mark.parametrize("method", JITTABLE)
def test_three_training_steps_leave_step_and_mask_unchanged(method):
    """Three SGD steps through make_step moved the step counter 7 -> 6 and turned the mask all-True; now the
    optimiser covers w only, and every other leaf comes back bit-identical."""
    p = _dict_params()
    opt = optax.sgd(0.1, momentum=0.9)  # a state of its own: it must cover w only
    state = train.init(p, opt, jax.random.key(1))
    assert jax.tree_util.tree_leaves(state.opt_state)[0].shape == (3, 2)
    step = jax.jit(train.make_step(dict_cost, opt, method))
    for _ in range(3):
        state, m = step(state, X_DICT)
    assert int(state.params["step"]) == 7 and state.params["step"].dtype == jnp.int32
    np.testing.assert_array_equal(state.params["mask"], [True, True, False])
    _assert_unchanged(p, state.params)
    assert not np.allclose(state.params["w"], p["w"])  # w did train
    assert np.isfinite(float(m["grad_norm"]))


def test_fit_on_the_dict_keeps_its_int_and_bool_leaves(tmp_path):
    p = _dict_params()
    cost = lambda q, b: dict_cost(q, b.x) + 0.0 * jnp.sum(b.y)  # noqa: E731  (fit takes a Batch)
    data = Batch(jax.random.uniform(jax.random.key(4), (12, 3), jnp.float64), jnp.zeros((12, 1)))
    res = train.fit(cost, optax.sgd(0.05), p, data, epochs=3, batch_size=4, key=jax.random.key(2),
                    method="spsa", progress=False, checkpoint_path=tmp_path / "ck.npz")
    _assert_unchanged(p, res.params)
    assert res.history[-1]["train_cost"] < res.history[0]["train_cost"]
    # resuming restores the dict, its int and bool leaves included
    more = train.fit(cost, optax.sgd(0.05), p, data, epochs=4, batch_size=4, key=jax.random.key(2),
                     method="spsa", progress=False, checkpoint_path=tmp_path / "ck.npz", resume=True)
    assert more.start_epoch == 3
    _assert_unchanged(p, more.params)


def test_spsa_mixed_float_dtypes_and_int_leaf():
    """A float32 leaf, a float64 leaf and an int leaf: one ravel over the floats only, dtypes kept."""
    p = {"a": jnp.ones((2,), jnp.float32), "b": jnp.ones((3,), jnp.float64), "n": jnp.int32(3)}
    cost = lambda q, x: jnp.sum(q["a"] ** 2) + jnp.sum(q["b"] * x) * q["n"]  # noqa: E731
    g = gradient(cost, "spsa")(p, jnp.ones(3), jax.random.key(0))
    assert g["a"].dtype == jnp.float32 and g["b"].dtype == jnp.float64 and g["n"] is None


def test_no_float_leaf_is_refused_naming_params():
    with pytest.raises(ValueError, match="params has no leaf to differentiate.*'step'"):
        gradient(dict_cost, "spsa")({"step": jnp.int32(7)}, X_DICT, jax.random.key(0))
    with pytest.raises(ValueError, match="params has no leaf to differentiate"):
        train.init({"step": jnp.int32(7)}, optax.sgd(1.0), jax.random.key(0))


# --- has_aux, the call contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", BLACK_BOX)
def test_has_aux_every_black_box_method(method):
    """`has_aux=True`, as jax.grad: (grads, aux), aux from the cost at the unperturbed params."""
    p = _dict_params()

    def cost_aux(q, x):
        c = dict_cost(q, x)
        return c, {"loss": c, "pred": jnp.tanh(x @ q["w"])}

    est = gradient(cost_aux, method, has_aux=True)
    g, aux = _call(est, p, X_DICT)
    plain = _call(gradient(dict_cost, method), p, X_DICT)
    np.testing.assert_array_equal(np.asarray(g["w"]), np.asarray(plain["w"]))
    np.testing.assert_allclose(float(aux["loss"]), float(dict_cost(p, X_DICT)), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(aux["pred"]), np.asarray(jnp.tanh(X_DICT @ p["w"])), rtol=1e-15)


def test_has_aux_errors():
    p = _dict_params()
    with pytest.raises(ValueError, match="has_aux=True"):  # a tuple without has_aux: the fix is named
        gradient(lambda q, x: (dict_cost(q, x), 1.0), "fd-central")(p, X_DICT)
    with pytest.raises(ValueError, match="with has_aux=True the cost must return a pair"):
        gradient(dict_cost, "reverse", has_aux=True)(p, X_DICT)
    with pytest.raises(ValueError, match="first element.*floating scalar"):
        gradient(lambda q, x: (x, 1.0), "spsa", has_aux=True)(p, X_DICT, jax.random.key(0))
    cost, params, batch = conftest.make_case((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0)
    for method in STRUCTURED:
        with pytest.raises(ValueError, match="has_aux=True is for black-box methods"):
            gradient(cost, method, has_aux=True)


@pytest.mark.parametrize("method", ["reverse", "fd-central"])
def test_deterministic_estimator_refuses_a_third_argument(method):
    """`est(params, x, y)` took y as a key and failed with "missing 1 required positional argument"."""
    p = _dict_params()
    est = gradient(dict_cost, method)
    with pytest.raises(TypeError, match=f"{method!r} is deterministic.*put extra data into the batch"):
        est(p, X_DICT, X_DICT)
    with pytest.raises(TypeError, match="unexpected keyword argument.*mask.*close over it"):
        est(p, X_DICT, mask=X_DICT)
    with pytest.raises(TypeError, match="takes est\\(params, batch, key=None\\)"):
        est(p, X_DICT, jax.random.key(0), jax.random.key(1))
    # a PRNG key (positional or keyword) is accepted and ignored, so that every method is called alike
    np.testing.assert_array_equal(est(p, X_DICT, jax.random.key(0))["w"], est(p, X_DICT, key=jax.random.key(1))["w"])


def test_stochastic_estimator_takes_key_by_keyword():
    est = gradient(dict_cost, "spsa")
    p = _dict_params()
    np.testing.assert_array_equal(est(p, X_DICT, key=jax.random.key(5))["w"], est(p, X_DICT, jax.random.key(5))["w"])
    with pytest.raises(TypeError, match="stochastic and needs a PRNG key"):
        est(p, X_DICT)


# --- the clear errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", available_methods())
def test_empty_batch_refused_by_every_method(method):
    """An empty batch: fd-central and node-perturbation returned NaN, reverse zeros."""
    cost, params, _ = conftest.make_case((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0)
    empty = Batch(jnp.zeros((0, 3)), jnp.zeros((0, 2)))
    est = gradient(cost, method)
    with pytest.raises(ValueError, match=r"batch\.x has no examples.*at least one example"):
        _call(est, params, empty)


def test_batch_without_arrays_is_fine():
    g = gradient(lambda q, b: jnp.sum(q["w"] ** 2) * b["scale"], "fd-central")({"w": jnp.ones(2)}, {"scale": 2.0})
    np.testing.assert_allclose(g["w"], [4.0, 4.0], rtol=1e-9)


def test_fd_loop_under_jit_or_scan_is_refused():
    """fd-loop under jax.jit or lax.scan raised JAX's TracerArrayConversionError."""
    p = _dict_params()
    est = gradient(dict_cost, "fd-loop")
    with pytest.raises(TypeError, match="'fd-loop' is driven from Python.*use 'fd-forward'"):
        jax.jit(est)(p, X_DICT)
    with pytest.raises(TypeError, match="'fd-loop' is driven from Python"):
        jax.lax.scan(lambda c, x: (c, est(p, x)["w"]), 0.0, X_DICT[None])


# --- Equinox -------------------------------------------------------------------------------------------------


def _eqx_case():
    eqx = _need("equinox")
    model = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.tanh, key=jax.random.key(0))
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    x = jax.random.uniform(jax.random.key(1), (6, 3), jnp.float64)
    y = jax.random.uniform(jax.random.key(2), (6, 2), jnp.float64)

    def cost(m, b):
        return jnp.mean((jax.vmap(m)(b.x) - b.y) ** 2)

    return eqx, model, cost, Batch(x, y)


@pytest.mark.parametrize("method", BLACK_BOX)
def test_equinox_mlp_every_method(method):
    """An Equinox module (its activations are function leaves) passed directly: gradient(...) failed inside
    finite_diff.py with "Error interpreting argument ... as an abstract array"."""
    eqx, model, cost, batch = _eqx_case()
    est = gradient(cost, method)
    g = _call(est, model, batch)
    ref = eqx.filter_grad(cost)(model, batch)
    _none_where_not_differentiated(model, g)
    assert g.activation is None and jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(ref)
    if est.stochastic:
        assert np.all(np.isfinite(_flat(g)))
    else:
        np.testing.assert_allclose(_flat(g), _flat(ref), rtol=0, atol=_atol(method, est))


def test_equinox_make_step_and_fit():
    """fit on an Equinox module failed with "zeros_like requires ndarray"."""
    eqx, model, cost, batch = _eqx_case()
    opt = optax.adam(1e-2)
    state = train.init(model, opt, jax.random.key(0))
    step = eqx.filter_jit(train.make_step(cost, opt, "fd-central"))
    for _ in range(3):
        state, _ = step(state, batch)
    assert state.params.activation is model.activation
    res = train.fit(cost, opt, model, batch, epochs=3, batch_size=3, key=jax.random.key(1), method="reverse",
                    progress=False)
    _assert_unchanged(model, res.params)
    assert res.history[-1]["train_cost"] < res.history[0]["train_cost"]


# --- Flax linen ----------------------------------------------------------------------------------------------


def _linen_case():
    nn = _need("flax.linen")

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):  # x: (N, 5, 5, 1)
            x = nn.relu(nn.Conv(2, (3, 3), param_dtype=jnp.float64, dtype=jnp.float64)(x))
            return nn.Dense(2, param_dtype=jnp.float64, dtype=jnp.float64)(x.reshape(x.shape[0], -1))

    net = CNN()
    x = jax.random.uniform(jax.random.key(1), (4, 5, 5, 1), jnp.float64)
    y = jax.random.uniform(jax.random.key(2), (4, 2), jnp.float64)
    params = net.init(jax.random.key(0), x)["params"]

    def cost(p, b):
        return jnp.mean((net.apply({"params": p}, b.x) - b.y) ** 2)

    return params, cost, Batch(x, y)


@pytest.mark.parametrize("method", BLACK_BOX)
def test_flax_linen_cnn_every_method(method):
    params, cost, batch = _linen_case()
    if method == "fd-complex":
        with pytest.raises((TypeError, ValueError), match="complex"):  # refused, whichever way flax casts
            gradient(cost, method)(params, batch)  # lax.conv of a real input with complex weights
        return
    est = gradient(cost, method)
    g = _call(est, params, batch)
    ref = jax.grad(cost)(params, batch)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(ref)
    if est.stochastic:
        assert np.all(np.isfinite(_flat(g)))
    else:
        # relu: a forward step that crosses a kink errs by up to |h * slope jump|; the inputs are random, so
        # none sits within h ~ 1.5e-8 of a kink here (checked by the exact methods agreeing to 1e-12)
        np.testing.assert_allclose(_flat(g), _flat(ref), rtol=0, atol=_atol(method, est))


def test_flax_linen_fit():
    params, cost, batch = _linen_case()
    res = train.fit(cost, optax.sgd(0.1), params, batch, epochs=2, batch_size=4, key=jax.random.key(0),
                    method="fd-forward", progress=False)
    assert res.history[-1]["train_cost"] < res.history[0]["train_cost"]


# --- Flax NNX with dropout -----------------------------------------------------------------------------------


def _nnx_case():
    nnx = _need("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, param_dtype=jnp.float64, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.l2 = nnx.Linear(4, 2, param_dtype=jnp.float64, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(jnp.tanh(self.l1(x))))

    graphdef, state = nnx.split(Net(nnx.Rngs(0, dropout=1)))
    x = jax.random.uniform(jax.random.key(1), (6, 3), jnp.float64)
    y = jax.random.uniform(jax.random.key(2), (6, 2), jnp.float64)

    def cost(s, b):
        # as a user writes it: nnx.merge shares the state's variables and dropout counts its calls in them, so
        # this cost writes into its argument; gdjax hands costs a rebuilt pytree, so the state passed in never
        # changes and the same state gives the same dropout mask
        return jnp.mean((nnx.merge(graphdef, s)(b.x) - b.y) ** 2)

    return state, cost, Batch(x, y)


@pytest.mark.parametrize("method", BLACK_BOX)
def test_flax_nnx_dropout_every_method(method):
    """An NNX state with a dropout RNG key: spsa stopped with "Cannot determine dtype of key<fry>"."""
    state, cost, batch = _nnx_case()
    est = gradient(cost, method)
    g = _call(est, state, batch)
    _none_where_not_differentiated(state, g)
    _assert_unchanged(_nnx_case()[0], state)  # the RNG count and key of the state passed in: untouched
    ref = jax.grad(gdjax.gradients._leaves.restrict(cost, gdjax.gradients._leaves.partition(state)[1]))(
        gdjax.gradients._leaves.partition(state)[0], batch)
    if est.stochastic:
        assert np.all(np.isfinite(_flat(g)))
    else:
        np.testing.assert_allclose(_flat(g), _flat(ref), rtol=0, atol=_atol(method, est))


def test_flax_nnx_make_step_and_fit_pass_the_rng_state_through():
    state, cost, batch = _nnx_case()
    opt = optax.sgd(0.1)
    ts = train.init(state, opt, jax.random.key(0))
    step = jax.jit(train.make_step(cost, opt, "spsa"))
    for _ in range(3):
        ts, _ = step(ts, batch)
    _assert_unchanged(state, ts.params)
    res = train.fit(cost, opt, state, batch, epochs=2, batch_size=3, key=jax.random.key(1), method="fd-central",
                    progress=False)
    _assert_unchanged(state, res.params)
    assert res.history[-1]["train_cost"] < res.history[0]["train_cost"]
