"""gdjax.gradients.activity: the activity-perturbed forward gradient is unbiased, with the variance derived in
its docstring, and refuses bad input like the other stochastic methods.

The oracle is independent of the estimator: the per-example errors `delta_l(x) = dC_x/dz_l` are the reverse-mode
Jacobian of `cost.per_example_batch` (N,) with respect to the bias b_l (a bias shift is a pre-activation shift
for every example, and C_x sees only its own), and the layer inputs come from an explicit forward pass here.
The derived per-entry variance of one estimate with k tangents per example and layer is
    Var[dW_l[j, i]] = 1/(k N^2) sum_x a_j(x)^2 (|delta_l(x)|^2 + delta_i(x)^2),  Var[db_l[i]]: the same with a_j = 1.

Statistics (float64, fixed seeds, M independent keys): each entry's error of the mean over M estimates is
compared with its predicted standard error sqrt(Var / M). With P entries, the sum of the squared z-scores is
chi-square with P degrees of freedom (CLT over M); we assert it lies in [0.5 P, 1.6 P] (P = 53: beyond 3 standard
deviations sqrt(2P) on either side) and every |z| < 5. The sample variance of each entry is compared with the
derived one with its own standard error sqrt((m4 - s^4) / M) (m4: the sample fourth central moment): every
|z| < 5 and the summed variance within 6% (4 of its standard errors at M = 4000).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from conftest import make_case
from gdjax.gradients import gradient, method_info
from gdjax.nn import ACTIVATIONS, Layer

M = 4000
CASES = {
    "sigmoid-quadratic-l2": ((6, 5, 3), "sigmoid", "sigmoid", "quadratic", 0.1),
    "relu-softmax-xent": ((6, 5, 3), "relu", "softmax", "cross-entropy", 0.0),
}


@functools.lru_cache(maxsize=None)
def problem(case):
    sizes, act, out, loss, l2 = CASES[case]
    cost, params, batch = make_case(sizes, act, out, loss, l2, n=7, seed=3)
    return cost, params, batch


def derived_variance(cost, params, batch, k):
    """The docstring's per-entry variance, flat like ravel_pytree(params), from the reverse-mode oracle.
    Jitted: one compilation instead of one per op."""
    @jax.jit
    def variance(params, batch):
        def per_example(biases):
            p = tuple(Layer(layer.w, b) for layer, b in zip(params, biases))
            return cost.per_example_batch(p, batch)

        deltas = jax.jacrev(per_example)(tuple(layer.b for layer in params))  # per layer (N, n_l)
        a, n, var = batch.x, batch.x.shape[0], []
        for l, (layer, d) in enumerate(zip(params, deltas)):
            per_unit = jnp.sum(d**2, axis=1, keepdims=True) + d**2  # (N, n_l): |delta|^2 + delta_i^2
            var.append(Layer((a**2).T @ per_unit / (k * n**2), jnp.sum(per_unit, 0) / (k * n**2)))
            a = ACTIVATIONS[cost.net.activation](a @ layer.w + layer.b[None, :])
        return ravel_pytree(tuple(var))[0]

    return variance(params, batch)


def draw(est, params, batch, n, seed):
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.jit(jax.vmap(lambda k: ravel_pytree(est(params, batch, k))[0]))(keys)


@pytest.mark.parametrize("case, k", [("sigmoid-quadratic-l2", 1), ("relu-softmax-xent", 1),
                                     ("sigmoid-quadratic-l2", 3)])
def test_unbiased_with_the_derived_variance(case, k):
    """Catches: a biased estimate (a missing l2 term, a wrong 1/k or 1/N, the outer product transposed), tangents
    shared across examples or layers or the wrong distribution (the variance differs), a wrong formula."""
    cost, params, batch = problem(case)
    g = ravel_pytree(jax.jit(jax.grad(cost))(params, batch))[0]
    var = derived_variance(cost, params, batch, k)
    s = draw(gradient(cost, "forward-gradient-activity", num_directions=k), params, batch, M, seed=5 + k)
    p = g.size
    assert p == 53 and s.shape == (M, p)

    dead_ok, chi2, z_max, zv_max, ratio = (float(v) for v in statistics(s, g, var))
    assert dead_ok
    assert 0.5 * p < chi2 < 1.6 * p and z_max < 5, (chi2, z_max)
    assert zv_max < 5, zv_max
    assert abs(ratio - 1) < 0.04, ratio


@jax.jit  # one compilation per shape instead of one per op
def statistics(s, g, var):
    """test_unbiased_with_the_derived_variance's statistics of the (M, P) draws s against the gradient g and the
    derived variance var: (dead entries exactly 0, chi-square of the mean's z-scores, max |z|, max |z| of the
    sample variances, summed sample variance / summed derived variance)."""
    m = s.shape[0]
    live = var > 0  # a weight from a relu unit dead on every example: its estimate and gradient are exactly 0
    dead_ok = jnp.all(jnp.where(live, True, (s == 0).all(0) & (g == 0)))
    var = jnp.where(live, var, 1.0)
    z = (s.mean(0) - g) / jnp.sqrt(var / m)

    c = s - s.mean(0)[None, :]
    s2, m4 = jnp.mean(c**2, 0), jnp.mean(c**4, 0)
    zv = jnp.where(live, (s2 - var) / jnp.sqrt(jnp.where(live, m4 - s2**2, 1.0) / m), 0.0)
    ratio = s2.sum() / jnp.sum(jnp.where(live, var, 0.0))
    return dead_ok, jnp.sum(z**2), jnp.max(jnp.abs(z)), jnp.max(jnp.abs(zv)), ratio


def test_variance_counts_units_not_weights():
    """The point of the method: on a wide first layer its summed variance is far below the weight forward
    gradient's (|grad C|^2 (P + 1)); catches an estimator that perturbs all weights at once."""
    cost, params, batch = make_case((40, 8, 3), "sigmoid", "sigmoid", "quadratic", 0.0, n=7, seed=4)
    s = draw(gradient(cost, "forward-gradient-activity"), params, batch, 400, seed=1)
    g = ravel_pytree(jax.grad(cost)(params, batch))[0]
    weight_fg = float(g @ g) * (g.size + 1)
    assert float(jnp.var(s, 0).sum()) < weight_fg / 20


def test_capabilities_and_count():
    """Catches a registration that a benchmark would mis-read (not stochastic, not structured, a made-up count)."""
    info = method_info("forward-gradient-activity")
    assert info.kind == "stochastic" and info.structured and info.stochastic and info.jittable and not info.exact
    cost, params, _ = problem("sigmoid-quadratic-l2")
    est = gradient(cost, "forward-gradient-activity", num_directions=4)
    assert est.stochastic and est.structured and est.evaluations(53) is None  # measured, like forward-gradient


def test_trains_inside_a_jitted_step():
    """Catches an estimator that cannot be traced inside gdjax.train's jitted step (Python checks on values)."""
    import optax

    from gdjax import train

    cost, params, batch = problem("relu-softmax-xent")
    opt = optax.sgd(0.5)
    step = jax.jit(train.make_step(cost, opt, method="forward-gradient-activity", num_directions=2))
    state = train.init(params, opt, jax.random.key(0))
    for _ in range(3):
        state, m = step(state, batch)
    assert int(state.step) == 3 and np.isfinite(float(m["cost"]))


def test_bad_input():
    """The same errors as the other stochastic methods: missing key, bad num_directions, non-gdjax cost, params
    that do not fit the cost's network."""
    cost, params, batch = problem("sigmoid-quadratic-l2")
    est = gradient(cost, "forward-gradient-activity")
    with pytest.raises(TypeError, match="key"):
        est(params, batch)
    with pytest.raises(ValueError, match="num_directions"):
        gradient(cost, "forward-gradient-activity", num_directions=0)
    with pytest.raises(TypeError, match="num_directions"):
        gradient(cost, "forward-gradient-activity", num_directions=1.5)
    with pytest.raises(TypeError, match="make_cost"):
        gradient(lambda p, b: jnp.sum(p[0].w), "forward-gradient-activity")
    with pytest.raises(ValueError, match="params"):
        est(params[:1], batch, jax.random.key(0))
    with pytest.raises(TypeError, match="batch"):
        est(params, (batch.x, batch.y), jax.random.key(0))
