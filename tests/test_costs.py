"""gdjax.costs: per-example values and gradients against NumPy written here, batch means, L2, accuracy,
complex-step safety, bad input and retracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax.costs import Cost, accuracy, make_cost
from gdjax.data import Batch, one_hot
from gdjax.nn import MLP, Layer

# (hidden activation, output activation, loss): the lecture's network and the cross-entropy pairings.
CASES = [
    ("sigmoid", "sigmoid", "quadratic"),
    ("sigmoid", "sigmoid", "cross-entropy"),  # binary cross-entropy on sigmoid outputs
    ("tanh", "softmax", "cross-entropy"),  # categorical cross-entropy on softmax outputs
    ("tanh", "identity", "cross-entropy"),  # categorical cross-entropy on logits
    ("tanh", "identity", "quadratic"),
]
SIZES = (5, 4, 3)


def np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def np_softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


NP_ACT = {"sigmoid": np_sigmoid, "tanh": np.tanh, "identity": lambda z: z, "softmax": np_softmax}
NP_DACT = {"sigmoid": lambda z: np_sigmoid(z) * (1 - np_sigmoid(z)), "tanh": lambda z: 1 - np.tanh(z) ** 2}


def np_params(params):
    return [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in params]


def np_forward(params, x, activation, output):
    """Activations a_0..a_L and pre-activations z_1..z_L of one example, in float64 NumPy."""
    acts, zs = [np.asarray(x, np.float64)], []
    for i, (w, b) in enumerate(params):
        zs.append(acts[-1] @ w + b)
        acts.append(NP_ACT[output if i == len(params) - 1 else activation](zs[-1]))
    return acts, zs


def np_loss(params, x, y, activation, output, loss):
    """The per-example loss, written from its textbook definition."""
    acts, _ = np_forward(params, x, activation, output)
    a = acts[-1]
    if loss == "quadratic":
        return 0.5 * np.sum((a - y) ** 2)
    if output == "sigmoid":
        return -np.sum(y * np.log(a) + (1 - y) * np.log(1 - a))
    p = a if output == "softmax" else np_softmax(a)
    return -np.sum(y * np.log(p))


def np_backprop(params, x, y, activation, output, loss):
    """dC_x/dw, dC_x/db for one example by the four backprop equations (Nielsen ch. 2), float64."""
    acts, zs = np_forward(params, x, activation, output)
    a, z = acts[-1], zs[-1]
    if loss == "quadratic":
        dadz = NP_DACT["sigmoid"](z) if output == "sigmoid" else np.ones_like(z)
        assert output in ("sigmoid", "identity")
        delta = (a - y) * dadz
    elif output == "sigmoid":
        delta = a - y  # BCE with sigmoid: the sigma' cancels
    else:
        delta = np_softmax(z) * y.sum() - y  # CCE with softmax (or on logits)
    grads = [None] * len(params)
    for l in range(len(params) - 1, -1, -1):
        grads[l] = (np.outer(acts[l], delta), delta)
        if l > 0:
            delta = (params[l][0] @ delta) * NP_DACT[activation](zs[l - 1])
    return grads


def make_problem(key, activation, output, n=6, dtype="float64"):
    net = MLP(SIZES, activation=activation, output=output)
    params = net.init(key, scheme="nielsen", dtype=dtype)
    rng = np.random.default_rng(0)  # data from NumPy: no XLA compile of random draws per shape
    x = jnp.asarray(rng.uniform(size=(n, SIZES[0])).astype(dtype))
    y = one_hot(rng.integers(0, SIZES[-1], n), SIZES[-1], dtype)
    return net, params, Batch(x, y)


@pytest.mark.parametrize("activation, output, loss", CASES)
def test_per_example_and_batch_cost_match_numpy(key, activation, output, loss):
    net, params, batch = make_problem(key, activation, output)
    cost = make_cost(net, loss)
    p = np_params(params)
    expected = [np_loss(p, x, y, activation, output, loss) for x, y in zip(np.asarray(batch.x), np.asarray(batch.y))]
    singles = [cost.per_example(params, batch.x[i], batch.y[i]) for i in range(batch.x.shape[0])]
    np.testing.assert_allclose(singles, expected, rtol=1e-12)  # float64, a handful of ops: ~1e-15 expected
    np.testing.assert_allclose(cost.per_example_batch(params, batch), expected, rtol=1e-12)
    np.testing.assert_allclose(cost(params, batch), np.mean(singles), rtol=1e-13)  # batch mean = mean of singles
    assert cost(params, batch).shape == ()


@pytest.mark.parametrize("activation, output, loss", CASES)
def test_grad_matches_numpy_backprop(key, activation, output, loss):
    net, params, batch = make_problem(key, activation, output)
    l2 = 0.03
    cost = make_cost(net, loss, l2=l2)
    p = np_params(params)
    per_ex = [np_backprop(p, x, y, activation, output, loss) for x, y in zip(np.asarray(batch.x), np.asarray(batch.y))]
    g = jax.grad(cost)(params, batch)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)
    for l, layer in enumerate(g):
        gw = np.mean([e[l][0] for e in per_ex], axis=0) + l2 * p[l][0]  # L2 decays weights, not biases
        gb = np.mean([e[l][1] for e in per_ex], axis=0)
        # Relative (norm-wise) 1e-10: float64 rounding through ~100 flops is ~1e-14, so 1e-10 flags any real error.
        for got, want in ((layer.w, gw), (layer.b, gb)):
            assert np.linalg.norm(np.asarray(got) - want) <= 1e-10 * np.linalg.norm(want)


def test_grad_check_grads(key):
    """JAX's own numerical gradient check (central differences in float64) agrees with reverse mode."""
    net, params, batch = make_problem(key, "tanh", "softmax", n=3)
    cost = make_cost(net, "cross-entropy", l2=0.01)
    jax.test_util.check_grads(jax.jit(lambda p: cost(p, batch)), (params,), order=1, modes=("rev",))


def test_l2_term_value(key):
    net, params, batch = make_problem(key, "sigmoid", "sigmoid")
    l2 = 0.25
    plain, decayed = make_cost(net, "quadratic"), make_cost(net, "quadratic", l2=l2)
    expected = 0.5 * l2 * sum(np.sum(np.asarray(w) ** 2) for w, _ in params)
    np.testing.assert_allclose(decayed.regulariser(params), expected, rtol=1e-13)
    np.testing.assert_allclose(decayed(params, batch) - plain(params, batch), expected, rtol=1e-12)
    assert float(plain.regulariser(params)) == 0.0


def test_accuracy_on_a_known_network():
    # An identity network (w = I, b = 0, identity output) predicts class argmax(x); x = one-hot of `pred`.
    net = MLP((4, 4), output="identity")
    params = (Layer(jnp.eye(4), jnp.zeros(4)),)
    pred = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    truth = np.array([0, 1, 2, 3, 0, 0, 0, 0])  # right at indices 0-3 and 7
    acc = accuracy(net, params, Batch(one_hot(pred, 4), one_hot(truth, 4)))
    assert float(acc) == np.mean(pred == truth) == 5 / 8


def test_accuracy_matches_numpy(key):
    net, params, batch = make_problem(key, "tanh", "softmax", n=50)
    acts = [np_forward(np_params(params), x, "tanh", "softmax")[0][-1] for x in np.asarray(batch.x)]
    expected = np.mean(np.argmax(acts, -1) == np.argmax(np.asarray(batch.y), -1))
    # accuracy is a mean of booleans in the default float dtype: equal up to float32 rounding (1 example = 0.02)
    assert float(accuracy(net, params, batch)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("activation, output, loss", CASES)
def test_complex_params_give_the_same_cost_and_complex_step_derivative(key, activation, output, loss):
    """Costs are analytic: complex params with zero imaginary part give the real cost, and the complex step
    Im C(p + i h e) / h (h = 1e-20, no subtractive cancellation) equals the directional derivative of jax.grad."""
    net, params, batch = make_problem(key, activation, output)
    cost = make_cost(net, loss, l2=0.01)
    cparams = jax.tree_util.tree_map(lambda a: a.astype(jnp.complex128), params)
    c = cost(cparams, batch)
    np.testing.assert_allclose(np.real(c), cost(params, batch), rtol=1e-13)
    np.testing.assert_allclose(np.imag(c), 0, atol=1e-15)

    direction = jax.tree_util.tree_map(jnp.ones_like, params)
    h = 1e-20
    stepped = jax.tree_util.tree_map(lambda p, d: p + 1j * h * d, cparams, direction)
    cs = np.imag(cost(stepped, batch)) / h
    g = jax.grad(cost)(params, batch)
    dd = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(cs, dd, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cost_dtype_follows_params(key, dtype):
    net, params, batch = make_problem(key, "sigmoid", "sigmoid", dtype=dtype)
    for loss in ("quadratic", "cross-entropy"):
        assert make_cost(net, loss)(params, batch).dtype == jnp.dtype(dtype)


def test_cross_entropy_is_stable_for_saturated_outputs():
    # Huge logits: a naive log(sigmoid) or log(softmax) gives inf/nan; the logit forms stay finite and exact.
    net = MLP((1, 2), output="softmax")
    params = (Layer(jnp.array([[800.0, -800.0]]), jnp.zeros(2)),)
    batch = Batch(jnp.ones((1, 1)), jnp.array([[0.0, 1.0]]))
    c = make_cost(net, "cross-entropy")(params, batch)
    np.testing.assert_allclose(c, 1600.0, rtol=1e-12)  # -log softmax(z)_1 = logsumexp(z) - z_1 = 800 + 800
    net_s = MLP((1, 2), output="sigmoid")
    c = make_cost(net_s, "cross-entropy")(params, batch)
    # y = (0, 1): softplus(800) - 0 + softplus(-800) - (-800) = 800 + 800 (up to e^-800)
    np.testing.assert_allclose(c, 1600.0, rtol=1e-12)
    for leaf in jax.tree_util.tree_leaves(jax.grad(make_cost(net_s, "cross-entropy"))(params, batch)):
        assert np.all(np.isfinite(leaf))


def test_jit_cost_and_grad_do_not_retrace(key):
    net, params, batch = make_problem(key, "sigmoid", "sigmoid")
    cost = make_cost(net, "quadratic")
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def value_and_grad(p, b):
        return jax.value_and_grad(cost)(p, b)

    v1, _ = value_and_grad(params, batch)
    params2 = jax.tree_util.tree_map(lambda a: a * 0.5, params)
    v2, _ = value_and_grad(params2, Batch(batch.x * 0.5, batch.y))  # new values, same shapes: cached
    assert v1 != v2
    # Cost is hashable: it can be a static argument of jit.
    assert hash(cost) == hash(make_cost(MLP(SIZES), "quadratic"))
    f = jax.jit(lambda c, p, b: c(p, b), static_argnums=0)
    np.testing.assert_allclose(f(cost, params, batch), v1, rtol=1e-14)


# --- bad input ------------------------------------------------------------------------------------------------


def test_bad_cost_arguments(key):
    net = MLP(SIZES)
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid: quadratic, cross-entropy"):
        make_cost(net, "hinge")
    with pytest.raises(TypeError, match="net must be a gdjax.MLP"):
        make_cost(SIZES, "quadratic")
    with pytest.raises(ValueError, match="l2 must be finite and >= 0"):
        make_cost(net, "quadratic", l2=-1.0)
    with pytest.raises(TypeError, match="l2 must be a real number"):
        make_cost(net, "quadratic", l2="0.1")
    assert isinstance(make_cost(net), Cost)


def test_bad_batches(key):
    net, params, batch = make_problem(key, "sigmoid", "sigmoid", n=4)
    cost = make_cost(net, "quadratic")
    with pytest.raises(TypeError, match="batch must be a gdjax.Batch"):
        cost(params, (batch.x, batch.y))
    with pytest.raises(ValueError, match=r"batch.x must have shape \(N, 5\)"):
        cost(params, Batch(jnp.ones((4, 6)), batch.y))  # wrong trailing size
    with pytest.raises(ValueError, match=r"batch.y must have shape \(4, 3\)"):
        cost(params, Batch(batch.x, jnp.ones((4, 2))))
    with pytest.raises(ValueError, match=r"batch.y must have shape \(4, 3\).*one_hot"):
        cost(params, Batch(batch.x, jnp.arange(4)))  # integer labels instead of one-hot
    with pytest.raises(ValueError, match=r"batch.x must have shape \(N, 5\)"):
        accuracy(net, params, Batch(jnp.ones((4, 7)), batch.y))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        one_hot(np.array([0, 3]), 3)  # labels out of range are refused before they reach a cost



def test_params_of_another_network_are_refused(key):
    """Params of a different MLP are refused by the cost with a ValueError naming the expected and the given layer
    shapes and the fix, before any work: called directly, under jit, grad, vmap and the FD kernel's vmapped
    perturbed copies (the check reads static shapes only, so it holds under every transformation). Without it, a
    (3, 5, 2) network's params run through a (3, 4, 2) cost with no error at all (the forward pass takes its
    shapes from the params) and give a cost and gradient of the wrong network."""
    import gdjax

    cost = make_cost(MLP((3, 4, 2)), "quadratic")
    other = MLP((3, 5, 2)).init(key, dtype="float64")
    batch = Batch(jnp.ones((2, 3)), jnp.eye(2))
    match = (r"expected \[w \(3, 4\), b \(4,\)\], \[w \(4, 2\), b \(2,\)\]; "
             r"got \[w \(3, 5\), b \(5,\)\], \[w \(5, 2\), b \(2,\)\].*net.init\(key\)")
    calls = {
        "direct": lambda p: cost(p, batch),
        "jit": lambda p: jax.jit(cost)(p, batch),
        "grad": lambda p: jax.grad(cost)(p, batch),
        "vmap": lambda p: jax.vmap(cost, (0, None))(jax.tree_util.tree_map(lambda a: a[None], p), batch),
        "fd-forward": lambda p: gdjax.gradient(cost, "fd-forward")(p, batch),
        "per_example": lambda p: cost.per_example(p, batch.x[0], batch.y[0]),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=match):
            call(other)
    with pytest.raises(ValueError, match=r"got \[w \(3, 4\), b \(4,\)\]$|got \[w \(3, 4\), b \(4,\)\]\."):
        cost((Layer(jnp.ones((3, 4)), jnp.ones(4)),), batch)  # a layer missing
    with pytest.raises(ValueError, match="got a dict"):
        cost({"w": jnp.ones((3, 4))}, batch)
    # the right shapes pass every path, also vmapped over a stack of params (each copy has the unmapped shapes)
    good = cost.net.init(key, dtype="float64")
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), good)
    np.testing.assert_allclose(jax.vmap(cost, (0, None))(stacked, batch)[0], cost(good, batch), rtol=1e-14)
