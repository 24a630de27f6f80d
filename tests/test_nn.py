"""gdjax.nn: shapes, dtypes, init statistics, forward pass against NumPy, analytic counts, bad input, no retracing."""

import math

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import nn
from gdjax.nn import MLP, Layer, forward_flops, init_mlp, param_count

SIZES = [(3, 2), (5, 4, 3), (8, 6, 5, 4), (1, 1)]


NP_ACT = {  # NumPy twins of the built-in activations (an activation registered later is tested in test_models)
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "identity": lambda z: z,
    "softmax": lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum(),
}


def np_act(name, z):
    return NP_ACT[name](z)


def np_forward(params, x, activation, output):
    a = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(params):
        z = a @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        a = np_act(output if i == len(params) - 1 else activation, z)
    return a


# Layer shapes are shared between tests on purpose: every new shape costs an XLA compile of the random draws.
@pytest.mark.parametrize(
    "sizes, dtype", [((5, 4, 3), "float64"), ((5, 4, 3, 2), "complex128"), ((3, 2), "float32"), ((1, 1), "float64")]
)
def test_init_and_apply_shapes_and_dtypes(key, sizes, dtype):
    net = MLP(sizes)
    params = net.init(key, dtype=dtype)
    assert isinstance(params, tuple) and len(params) == len(sizes) - 1
    for layer, n_in, n_out in zip(params, sizes[:-1], sizes[1:]):
        assert isinstance(layer, Layer)
        chex.assert_shape(layer.w, (n_in, n_out))
        chex.assert_shape(layer.b, (n_out,))
        assert layer.w.dtype == layer.b.dtype == jnp.dtype(dtype)
        if jnp.iscomplexobj(layer.w):
            assert np.all(np.imag(layer.w) == 0) and np.all(np.imag(layer.b) == 0)
    x = jnp.linspace(0, 1, sizes[0], dtype=jnp.dtype(dtype))
    y = net.apply(params, x)
    chex.assert_shape(y, (sizes[-1],))
    assert y.dtype == jnp.dtype(dtype)
    ys = jax.vmap(net.apply, (None, 0))(params, jnp.stack([x, 1 - x, x**2]))
    chex.assert_shape(ys, (3, sizes[-1]))
    np.testing.assert_allclose(ys[0], y, rtol=1e-6)  # vmap row == single example (float32 rounding at most)


def test_param_count_matches_the_params(key):
    for sizes in SIZES + [(784, 30, 10), (1024, 1024, 10)]:
        shapes = jax.eval_shape(lambda k, sizes=sizes: init_mlp(k, sizes), key)  # shapes only, nothing drawn
        n = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
        assert param_count(sizes) == n == MLP(sizes).n_params()
    assert param_count((784, 30, 10)) == 784 * 30 + 30 + 30 * 10 + 10  # the lecture's 23860


def test_forward_flops_formula():
    # (3, 4, 2): layer 1: 3*4 multiply-adds (2 flops each) + 4 bias adds; layer 2: 4*2 multiply-adds + 2 adds.
    assert forward_flops((3, 4, 2)) == (2 * 3 * 4 + 4) + (2 * 4 * 2 + 2)
    assert forward_flops((3, 4, 2), batch_size=7) == 7 * forward_flops((3, 4, 2))
    assert MLP((784, 30, 10)).forward_flops(10) == 10 * (2 * 784 * 30 + 30 + 2 * 30 * 10 + 10)


def test_init_is_deterministic_and_keyed(key):
    a, b = init_mlp(key, (5, 4, 3), dtype="float64"), init_mlp(key, (5, 4, 3), dtype="float64")
    chex.assert_trees_all_equal(a, b)
    c = init_mlp(jax.random.key(1), (5, 4, 3), dtype="float64")
    assert not np.allclose(a[0].w, c[0].w)
    # the layers draw from different keys: same-shape layers are not copies of each other
    d = init_mlp(key, (1, 1, 1, 1), dtype="float64")
    assert len({(float(w[0, 0]), float(b[0])) for w, b in d}) == 3


# Init statistics: a 400 x 300 layer gives n = 120000 weights. The sample mean of n N(0, s^2) draws has standard
# error s / sqrt(n), the sample std has standard error ~ s / sqrt(2 n); we allow 5 standard errors (a false
# failure has probability ~ 1e-6). 5 SE of the std is 1% of s, so lecun (s = 0.0500) and xavier (s = 0.0535)
# are told apart.
N_IN, N_OUT = 400, 300
EXPECTED_STD = {
    "nielsen": 1.0,
    "lecun": math.sqrt(1 / N_IN),
    "xavier": math.sqrt(2 / (N_IN + N_OUT)),
    "he": math.sqrt(2 / N_IN),
}


@pytest.mark.parametrize("scheme", nn.INIT_SCHEMES)
def test_init_statistics(key, scheme):
    (layer,) = init_mlp(key, (N_IN, N_OUT), scheme=scheme, dtype="float64")
    w, b = np.asarray(layer.w), np.asarray(layer.b)
    s, n = EXPECTED_STD[scheme], w.size
    assert abs(w.mean()) < 5 * s / math.sqrt(n)
    assert abs(w.std() - s) < 5 * s / math.sqrt(2 * n)
    if scheme == "nielsen":  # biases N(0, 1) too, 300 of them
        assert abs(b.mean()) < 5 / math.sqrt(b.size)
        assert abs(b.std() - 1) < 5 / math.sqrt(2 * b.size)
    else:
        assert np.all(b == 0)


@pytest.mark.parametrize("activation", sorted(set(nn.ACTIVATIONS) & set(NP_ACT)))
@pytest.mark.parametrize("output", sorted(set(nn.OUTPUT_ACTIVATIONS) & set(NP_ACT)))
def test_apply_matches_numpy(key, activation, output):
    net = MLP((5, 4, 3), activation=activation, output=output)
    params = net.init(key, scheme="nielsen", dtype="float64")
    x = jnp.asarray(np.random.default_rng(0).uniform(size=5))
    np.testing.assert_allclose(net.apply(params, x), np_forward(params, x, activation, output), rtol=1e-12)
    assert net.is_analytic == (activation != "relu")


def test_softmax_is_stable_for_large_logits():
    z = jnp.array([1000.0, 999.0, -1000.0])
    p = nn.softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, np_act("softmax", np.asarray(z)), rtol=1e-12)


def test_complex_params_give_the_real_output(key):
    net = MLP((5, 4, 3), activation="tanh", output="softmax")
    params = net.init(key, dtype="float64")  # complex params: the float64 draws cast, as init does
    cparams = jax.tree_util.tree_map(lambda a: a.astype(jnp.complex128), params)
    x = jnp.linspace(0, 1, 5)
    y, yc = net.apply(params, x), net.apply(cparams, x.astype(jnp.complex128))
    np.testing.assert_allclose(np.real(yc), y, rtol=1e-13)
    np.testing.assert_allclose(np.imag(yc), 0, atol=1e-15)


def test_spec_is_hashable_static():
    assert hash(MLP((3, 4, 2))) == hash(MLP([3, 4, 2])) and MLP((3, 4, 2)) == MLP([3, 4, 2])
    assert MLP((3, 4, 2)) != MLP((3, 4, 2), activation="tanh")


def test_jit_apply_does_not_retrace(key):
    net = MLP((5, 4, 3))
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(params, xs):
        return jax.vmap(net.apply, (None, 0))(params, xs)

    p1, p2 = net.init(key), net.init(jax.random.key(1))
    y1 = forward(p1, jnp.ones((7, 5), jnp.float32))
    y2 = forward(p2, jnp.zeros((7, 5), jnp.float32))  # new values, same shapes: must hit the cache
    assert y1.shape == y2.shape == (7, 3)
    assert not np.allclose(y1, y2)


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, exc, match",
    [
        ((), ValueError, "at least an input and an output"),
        ((5,), ValueError, "at least an input and an output"),
        ((5, 0, 3), ValueError, r"sizes\[1\]"),
        ((5, -2), ValueError, r"sizes\[1\]"),
        ((5, 2.5), TypeError, r"sizes\[1\]"),
        ((5, True), TypeError, r"sizes\[1\]"),
        ("784,30", TypeError, "sequence of layer widths"),
        (784, TypeError, "sequence of layer widths"),
    ],
)
def test_bad_sizes(key, sizes, exc, match):
    with pytest.raises(exc, match=match):
        MLP(sizes)
    with pytest.raises(exc, match=match):
        init_mlp(key, sizes)
    with pytest.raises(exc, match=match):
        param_count(sizes)


def test_unknown_names_list_the_valid_ones(key):
    with pytest.raises(ValueError, match="activation 'gelu'.*sigmoid, tanh, relu, identity"):
        MLP((3, 2), activation="gelu")
    with pytest.raises(ValueError, match="output activation 'relu'.*sigmoid, identity, softmax"):
        MLP((3, 2), output="relu")
    with pytest.raises(ValueError, match="init scheme 'kaiming'.*nielsen, lecun, xavier, he"):
        init_mlp(key, (3, 2), scheme="kaiming")
    with pytest.raises(TypeError, match="dtype must be one of"):
        init_mlp(key, (3, 2), dtype="int32")
    with pytest.raises(TypeError, match="dtype must be one of"):
        init_mlp(key, (3, 2), dtype="not-a-dtype")


@pytest.mark.parametrize("bad", [0, None, "key", np.zeros(3, np.uint32), "split"])
def test_key_must_be_a_prng_key(key, bad):
    if isinstance(bad, str) and bad == "split":
        bad = jax.random.split(key, 2)  # a batch of keys is not one key
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        init_mlp(bad, (3, 2))


def test_legacy_uint32_key_is_accepted():
    params = init_mlp(jax.random.PRNGKey(0), (5, 4, 3))
    assert params[0].w.shape == (5, 4)


def test_x_with_wrong_trailing_size(key):
    net = MLP((5, 4, 3))
    params = net.init(key)
    with pytest.raises(ValueError, match=r"x must be one example of shape \(5,\)"):
        net.apply(params, jnp.ones(4))
    with pytest.raises(ValueError, match="jax.vmap"):
        net.apply(params, jnp.ones((2, 5)))  # a batch passed where one example is expected
    with pytest.raises(TypeError, match="batch_size"):
        forward_flops((3, 2), batch_size=1.5)
