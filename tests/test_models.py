"""gdjax.models: activation and loss objects, the one forward pass, and an activation added in one place.

The central test registers a new activation object at test time (softplus, with its derivative and difference
form) and runs every structured method on it against jax.grad in float64: adding an activation needs
`gdjax/models/activations.py` (here: this test) and nothing else. Tolerances, with h = eps * max(1, |v|):
  backprop: exact up to float64 rounding of a few matmuls: 1e-12 relative to max|g|.
  forward FD (layer-wise, node perturbation): truncation h/2 |C_ii| with |C_ii| = O(1) on this net and no
    cancellation (difference form): eps = 1e-7, h <= 1e-7 * max(1, |v|) ~ 3e-7, asserted below 1e-5 (max|g| + 1).
  central FD: truncation h^2/6 |C_iii|: eps = 1e-4, about 1e-8 max(1, |v|)^2, asserted below 1e-6 (max|g| + 1).
  activity forward gradient (stochastic, unbiased): the mean of M = 1500 estimates against jax.grad, each entry's
    z-score with the variance derived in gdjax.gradients.activity (max |z| < 5 over 39 entries; chi-square
    below 2P, more than 4 standard deviations sqrt(2P) above its mean P).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdjax
from conftest import make_case
from gdjax import nn
from gdjax.data import Batch
from gdjax.gradients import gradient
from gdjax.models import activations
from gdjax.models.activations import ACTIVATIONS, OUTPUT_ACTIVATIONS, Activation
from gdjax.models.losses import LOSSES
from test_activity import derived_variance

SOFTPLUS = Activation(
    "softplus-test", fn=lambda z: jnp.logaddexp(z, 0.0), derivative=lambda z, a: jax.nn.sigmoid(z),
    prep=lambda z: (jax.nn.sigmoid(z),),
    difference=lambda prep, dz: jnp.log1p(prep[0] * jnp.expm1(dz)),  # log((1 + e^{z+d}) / (1 + e^z))
    analytic=False)


@pytest.fixture
def softplus():
    activations.register(SOFTPLUS)
    try:
        yield SOFTPLUS
    finally:
        activations.unregister(SOFTPLUS.name)


def flat(tree):
    return ravel_pytree(tree)[0]


def test_a_registered_activation_runs_every_structured_method(softplus):
    """Catches any consumer that dispatches on the built-in names (an unknown name there raises or falls back to
    another activation's derivative or difference form, and the gradient is wrong by O(1))."""
    cost, params, batch = make_case((3, 4, 3, 2), softplus.name, "sigmoid", "quadratic", 0.05, n=5, seed=2)
    assert cost.net.activation_fn is softplus
    g = flat(jax.jit(jax.grad(cost))(params, batch))  # jitted: one compilation, not one per op
    scale = float(jnp.max(jnp.abs(g))) + 1.0

    backprop = jax.jit(gradient(cost, "backprop"))
    np.testing.assert_allclose(flat(backprop(params, batch)), g, rtol=0, atol=1e-12 * scale)
    for method, options, tol in [("fd-layerwise", {"eps": 1e-7}, 1e-5),
                                 ("fd-layerwise-central", {"eps": 1e-4}, 1e-6),
                                 ("node-perturbation", {"eps": 1e-7}, 1e-5),
                                 ("node-perturbation", {"eps": 1e-4, "scheme": "central"}, 1e-6)]:
        got = flat(gradient(cost, method, **options)(params, batch))
        err = float(jnp.max(jnp.abs(got - g)))
        assert err < tol * scale, (method, options, err)

    m = 1500
    est = gradient(cost, "forward-gradient-activity")
    keys = jax.random.split(jax.random.key(11), m)
    s = jax.jit(jax.vmap(lambda k: flat(est(params, batch, k))))(keys)
    z = (s.mean(0) - g) / jnp.sqrt(derived_variance(cost, params, batch, 1) / m)
    assert float(jnp.max(jnp.abs(z))) < 5 and float(jnp.sum(z**2)) < 2 * g.size, z

    # the analytic flag reaches complex-step FD: softplus here is not written for complex z
    with pytest.raises(ValueError, match="softplus-test"):
        gradient(cost, "fd-complex")


def test_mlp_takes_registered_objects_and_refuses_others(softplus):
    assert gdjax.MLP((3, 2), activation=softplus).activation == softplus.name
    assert gdjax.MLP((3, 2), output=OUTPUT_ACTIVATIONS["softmax"]).output == "softmax"
    stranger = Activation("stranger", jnp.sin)
    with pytest.raises(ValueError, match="not registered.*register"):
        gdjax.MLP((3, 2), activation=stranger)
    with pytest.raises(ValueError, match="already registered"):
        activations.register(Activation(softplus.name, jnp.sin))
    activations.unregister(softplus.name)
    with pytest.raises(ValueError, match="already registered"):  # a name is never rebound (cached programs)
        activations.register(Activation(softplus.name, jnp.sin))
    assert activations.register(softplus) is softplus
    with pytest.raises(ValueError, match="output activation 'softplus-test'"):
        gdjax.MLP((3, 2), output=softplus.name)  # not flagged output=True


def test_registries_behave_like_the_old_tables():
    """`name in ACTIVATIONS`, iteration over names, calling the entry: as the dicts of functions they replace."""
    assert list(nn.ACTIVATIONS) == ["sigmoid", "tanh", "relu", "identity"]
    assert list(nn.OUTPUT_ACTIVATIONS) == ["sigmoid", "identity", "softmax"]
    assert list(gdjax.LOSSES) == ["quadratic", "cross-entropy"] and "quadratic" in gdjax.costs.LOSSES
    assert set(nn.ANALYTIC_ACTIVATIONS) == {"sigmoid", "tanh", "identity", "softmax"}
    z = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(nn.ACTIVATIONS["tanh"](z), np.tanh(np.asarray(z)), rtol=1e-15)
    assert nn.ACTIVATIONS is ACTIVATIONS and gdjax.ACTIVATIONS is ACTIVATIONS


@pytest.mark.parametrize("name", list(ACTIVATIONS))  # every registered hidden activation
def test_activation_vjp_is_jax_derivative(name):
    """`vjp(z, a, r) = r sigma'(z)` equals jax.grad of the function (relu: 1/2 at the tie, as jax.grad)."""
    act = ACTIVATIONS[name]
    z = jnp.array([-2.0, -0.5, 0.0, 0.3, 4.0])
    r = jnp.array([0.7, -1.1, 2.0, 0.5, -0.3])
    want = r * jax.vmap(jax.grad(act.fn))(z)
    # tanh's 1 - a^2 carries an absolute rounding error of a few eps_mach (relative: large where a ~ +-1)
    np.testing.assert_allclose(act.vjp(z, act(z), r), want, rtol=1e-14, atol=4 * 2.3e-16 * 2.0)


def test_activation_defaults_derivative_and_difference():
    """Without a derivative or a difference form, jax.jvp and direct subtraction stand in (and are right)."""
    act = Activation("sin-test", jnp.sin)
    z = jnp.linspace(-2.0, 2.0, 5)
    np.testing.assert_allclose(act.vjp(z, act(z), 2.0 * jnp.ones_like(z)), 2.0 * jnp.cos(z), rtol=1e-14)
    np.testing.assert_allclose(act.diff(act.diff_prep(z), 0.1), jnp.sin(z + 0.1) - jnp.sin(z), rtol=1e-14)
    with pytest.raises(ValueError, match="both prep and difference"):
        Activation("half", jnp.sin, prep=lambda z: (z,))


@pytest.mark.parametrize("out", ["sigmoid", "softmax", "identity"])
@pytest.mark.parametrize("loss", ["quadratic", "cross-entropy"])
def test_output_error_is_the_logits_gradient(out, loss):
    """`Loss.output_error` is dC_x/dz of `Loss.per_example` (jax.grad per example), for every pairing."""
    act, lo = OUTPUT_ACTIVATIONS[out], LOSSES[loss]
    z = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    y = jnp.eye(3)[jnp.array([0, 2, 1, 1])]
    want = jax.vmap(jax.grad(lambda z, y: lo.per_example(z, y, act)))(z, y)
    np.testing.assert_allclose(lo.output_error(z, act(z), y, act), want, rtol=1e-12, atol=1e-15)


def test_states_are_the_forward_pass(key):
    """One forward pass: `states` on a batch gives per layer (a_in, z, a) with a_in of the next = a, the last
    a the vmapped `apply`, the last z the vmapped `logits`."""
    net = gdjax.MLP((4, 5, 3), "tanh", "softmax")
    params = net.init(key, dtype="float64")
    xs = jax.random.uniform(jax.random.key(2), (6, 4), jnp.float64)
    states = net.states(params, xs)
    assert [tuple(s.z.shape) for s in states] == [(6, 5), (6, 3)] and states[0].a_in is xs
    np.testing.assert_array_equal(states[1].a_in, states[0].a)
    np.testing.assert_allclose(states[-1].a, jax.vmap(net.apply, (None, 0))(params, xs), rtol=1e-14)
    np.testing.assert_allclose(states[-1].z, jax.vmap(net.logits, (None, 0))(params, xs), rtol=1e-14)
    with pytest.raises(ValueError, match=r"batch \(N, 4\)"):
        net.states(params, jnp.ones((6, 3)))


@pytest.fixture
def softplus_output():
    act = activations.register(Activation("softplus-out-test", SOFTPLUS.fn, output=True))  # no derivative: jvp
    try:
        yield act
    finally:
        activations.unregister(act.name)


def test_make_cost_checks_the_loss_output_pairing(softplus_output):
    """A new output activation pairs with the quadratic loss (backprop through its jvp-derived derivative) and
    is refused by cross-entropy, which is defined for sigmoid, softmax and identity outputs only."""
    net = gdjax.MLP((3, 2), output=softplus_output.name)
    gdjax.make_cost(net, "quadratic")
    with pytest.raises(ValueError, match="cross-entropy.*sigmoid, softmax, identity"):
        gdjax.make_cost(net, "cross-entropy")
    params = net.init(jax.random.key(0), dtype="float64")
    batch = Batch(jnp.ones((2, 3)), jnp.eye(2))
    g = gradient(gdjax.make_cost(net, "quadratic"), "backprop")(params, batch)
    np.testing.assert_allclose(flat(g), flat(jax.grad(gdjax.make_cost(net, "quadratic"))(params, batch)), rtol=1e-12)
