"""gdjax.gradients.stochastic: SPSA and the forward gradient are unbiased, with the variance they should have.

With g = grad C (P entries) and one random direction per estimate:
  SPSA (Rademacher v):        g_hat_i = g_i + sum_{j != i} g_j v_i v_j,   Var[g_hat_i] = |g|^2 - g_i^2
                              (plus an O(eps^2) bias: eps = 6e-6 in float64, negligible here)
  forward gradient (v ~ N(0, I)):  Var[g_hat_i] = sum_{j != i} g_j^2 + 3 g_i^2 - g_i^2 = |g|^2 + g_i^2
so V = sum_i Var_i = (P - 1)|g|^2 (SPSA) or (P + 1)|g|^2 (forward gradient), and averaging k directions per
estimate and K estimates gives E|mean - g|^2 = V / (k K). The net has P = 108 parameters, so |mean - g|^2 is a
sum of ~P comparable terms and concentrates: |mean - g| / sqrt(V / (k K)) has a relative spread of about
1/sqrt(2P) = 0.07; we assert it lies in [0.7, 1.3] (> 4 spreads) at K and at 4K (independent samples), and
that the error at 4K is half the error at K within [0.35, 0.7]: the 1/sqrt(K) rate. Fixed seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdjax
from gdjax.data import Batch, one_hot
from gdjax.gradients import gradient, method_info, n_params
from gdjax.nn import MLP

K = 400
VARIANCE = {"spsa": lambda g2, p: (p - 1) * g2, "forward-gradient": lambda g2, p: (p + 1) * g2}


@functools.lru_cache(maxsize=None)
def problem():
    net = MLP((8, 8, 4), "tanh", "sigmoid")
    k1, k2 = jax.random.split(jax.random.key(7))
    params = net.init(k1, scheme="xavier", dtype="float64")
    x = jax.random.uniform(k2, (10, 8), jnp.float64)
    batch = Batch(x, one_hot(np.arange(10) % 4, 4, "float64"))
    cost = gdjax.make_cost(net, "quadratic")
    g = ravel_pytree(jax.grad(cost)(params, batch))[0]
    return cost, params, batch, g


def draw(est, params, batch, n, seed):
    """n estimates, flattened, from n independent keys (one vmapped, jitted program)."""
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.jit(jax.vmap(lambda k: ravel_pytree(est(params, batch, k))[0]))(keys)


@pytest.mark.parametrize("method", ["spsa", "forward-gradient"])
@pytest.mark.parametrize("k", [1, 4])
def test_unbiased_with_the_expected_variance(method, k):
    cost, params, batch, g = problem()
    p = g.size
    assert p == 108
    v = VARIANCE[method](float(g @ g), p) / k  # sum of the per-entry variances of one estimate
    samples = draw(gradient(cost, method, num_directions=k), params, batch, 5 * K, seed=11 + k)
    first, rest = samples[:K], samples[K:]  # independent: K and 4K estimates
    e_k = float(jnp.linalg.norm(first.mean(0) - g)) / np.sqrt(v / K)
    e_4k = float(jnp.linalg.norm(rest.mean(0) - g)) / np.sqrt(v / (4 * K))
    assert 0.7 < e_k < 1.3 and 0.7 < e_4k < 1.3, (e_k, e_4k)
    ratio = float(jnp.linalg.norm(rest.mean(0) - g) / jnp.linalg.norm(first.mean(0) - g))
    assert 0.35 < ratio < 0.7, ratio  # the error halves when K quadruples
    # the per-entry variances themselves: their sum within 10% (relative spread ~ sqrt(2 / (5K P)) ~ 0.3%,
    # times the fourth-moment factor of these heavy-tailed products)
    total_var = float(jnp.sum(jnp.var(samples, axis=0)))
    assert abs(total_var / v - 1) < 0.1, total_var / v


def blackbox():
    """A cost that is not an MLP: a quadratic form of a dict of arrays (central differences are exact on it)."""
    a = jax.random.normal(jax.random.key(1), (5, 5), jnp.float64)
    a = a @ a.T + jnp.eye(5)

    def cost(params, batch):
        u = jnp.concatenate([params["u"], params["w"].ravel()])
        return 0.5 * u @ a @ u + batch @ u

    params = {"u": jnp.arange(1.0, 2.0, 0.5, dtype=jnp.float64), "w": jnp.ones((1, 3), jnp.float64)}
    return cost, params, jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float64)


def test_one_direction_is_the_documented_formula():
    """k = 1: SPSA = (C(v + eps d) - C(v - eps d)) / (2 eps) d, forward gradient = (g . d) d, with the documented
    draws (a Rademacher / normal (1, P) array from the key); any pytree cost; same key -> same estimate."""
    cost, params, batch = blackbox()
    flat, unravel = ravel_pytree(params)
    g = ravel_pytree(jax.grad(cost)(params, batch))[0]
    key = jax.random.key(3)
    spsa = gradient(cost, "spsa", eps=1e-3)
    d = jax.random.rademacher(key, (1, flat.size), dtype=jnp.int8).astype(flat.dtype)[0]
    slope = (cost(unravel(flat + 1e-3 * d), batch) - cost(unravel(flat - 1e-3 * d), batch)) / 2e-3
    np.testing.assert_allclose(ravel_pytree(spsa(params, batch, key))[0], slope * d, rtol=1e-12)
    np.testing.assert_allclose(slope, g @ d, rtol=1e-9)  # exact on a quadratic, up to rounding
    fg = gradient(cost, "forward-gradient")
    d = jax.random.normal(key, (1, flat.size), flat.dtype)[0]
    np.testing.assert_allclose(ravel_pytree(fg(params, batch, key))[0], (g @ d) * d, rtol=1e-12)
    for est in (spsa, fg):
        a = ravel_pytree(est(params, batch, key))[0]
        assert jnp.array_equal(a, ravel_pytree(est(params, batch, jax.random.key(3)))[0])
        assert not jnp.allclose(a, ravel_pytree(est(params, batch, jax.random.key(4)))[0])
        out = est(params, batch, key)
        assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(params)


def test_evaluation_counts_and_registry():
    cost, params, _, _ = problem()
    p = n_params(params)
    for k in (1, 3):
        assert gradient(cost, "spsa", num_directions=k).evaluations(p) == 2 * k
        # a jvp is not a cost evaluation: no count (measured by the benchmarks from XLA's FLOPs instead)
        assert gradient(cost, "forward-gradient", num_directions=k).evaluations(p) is None
    for method in ("spsa", "forward-gradient"):
        info = method_info(method)
        assert info.kind == "stochastic" and not info.structured and info.stochastic and not info.exact
        assert gradient(cost, method).stochastic and gradient(cost, method).subset is None


@pytest.mark.parametrize("method", ["spsa", "forward-gradient"])
def test_bad_input(method):
    cost, params, batch, _ = problem()
    est = gradient(cost, method)
    with pytest.raises(TypeError, match="key"):
        est(params, batch)
    with pytest.raises(TypeError, match="key"):
        est(params, batch, 0)
    with pytest.raises(ValueError, match="num_directions"):
        gradient(cost, method, num_directions=0)
    with pytest.raises(TypeError, match="num_directions"):
        gradient(cost, method, num_directions=2.5)
    with pytest.raises(TypeError, match="num_directions"):
        gradient(cost, method, num_directions=True)
    with pytest.raises(TypeError):
        gradient(cost, method, directions=3)  # unknown option
    ints = jax.tree_util.tree_map(lambda a: a.astype(jnp.int32), params)
    with pytest.raises(ValueError, match="params has no leaf to differentiate.*float"):  # the leaf policy
        est(ints, batch, jax.random.key(0))


def test_spsa_bad_eps():
    cost = problem()[0]
    for bad in (0.0, -1e-3, float("inf")):
        with pytest.raises(ValueError, match="eps"):
            gradient(cost, "spsa", eps=bad)
    with pytest.raises(TypeError, match="eps"):
        gradient(cost, "spsa", eps="1e-3")
