"""Multi-layer perceptrons as pure functions.

Params are a tuple of `Layer(w, b)` with `w: (n_in, n_out)` and `b: (n_out,)`. A network is described by a
hashable, static `MLP` spec (layer sizes and activation names) with two pure functions, `init` and `apply`:

    >>> net = MLP((784, 30, 10))                      # sigmoid hidden and output units, as in the lecture
    >>> params = net.init(jax.random.key(0))          # ("nielsen": standard normal weights and biases)
    >>> y = net.apply(params, x)                      # x: (784,) -> y: (10,)
    >>> ys = jax.vmap(net.apply, (None, 0))(params, xs)  # xs: (N, 784) -> ys: (N, 10)

`apply` takes one example; batching is `jax.vmap` at the call site. Every function here is analytic in the
parameters for the sigmoid/tanh/identity activations, so complex parameters work (complex-step FD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax import _checks


class Layer(NamedTuple):
    """One dense layer: `w: (n_in, n_out)`, `b: (n_out,)`."""

    w: jax.Array
    b: jax.Array


Params = tuple[Layer, ...]


def sigmoid(z: jax.Array) -> jax.Array:
    """The logistic function 1 / (1 + exp(-z)); works for complex z (complex-step FD)."""
    if jnp.iscomplexobj(z):
        return 1.0 / (1.0 + jnp.exp(-z))
    return jax.nn.sigmoid(z)


def relu(z: jax.Array) -> jax.Array:
    """max(z, 0). Not analytic: complex-step FD refuses networks that use it."""
    return jnp.maximum(z, 0)


def identity(z: jax.Array) -> jax.Array:
    """z unchanged."""
    return z


def softmax(z: jax.Array) -> jax.Array:
    """softmax over the last axis, shifted by the (real part of the) maximum for stability; complex-safe."""
    m = jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=-1, keepdims=True))
    e = jnp.exp(z - m)
    return e / jnp.sum(e, axis=-1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": sigmoid,
    "tanh": jnp.tanh,
    "relu": relu,
    "identity": identity,
}
OUTPUT_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": sigmoid,
    "identity": identity,
    "softmax": softmax,
}
ANALYTIC_ACTIVATIONS = frozenset({"sigmoid", "tanh", "identity", "softmax"})
INIT_SCHEMES = ("nielsen", "lecun", "xavier", "he")
DTYPES = _checks.FLOAT_DTYPES


def _check_sizes(sizes) -> tuple[int, ...]:
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a sequence of layer widths such as (784, 30, 10), got {sizes!r}")
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, e.g. (784, 10); got {sizes!r}")
    for i, n in enumerate(sizes):
        _checks.positive_int(n, f"sizes[{i}]")
    return tuple(int(n) for n in sizes)


@dataclass(frozen=True)
class MLP:
    """A static description of a fully connected network; hashable, so it can be a jit static argument.

    Args:
      sizes: layer widths `(n_0, ..., n_L)`; `n_0` inputs, `n_L` outputs, `L` layers of weights.
      activation: hidden-unit activation, one of `ACTIVATIONS` (sigmoid, tanh, relu, identity).
      output: output activation, one of `OUTPUT_ACTIVATIONS` (sigmoid, identity, softmax).
    """

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    output: str = "sigmoid"

    def __post_init__(self):
        object.__setattr__(self, "sizes", _check_sizes(self.sizes))
        _checks.choice(self.activation, ACTIVATIONS, "activation")
        _checks.choice(self.output, OUTPUT_ACTIVATIONS, "output activation")

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def is_analytic(self) -> bool:
        """True when every activation is complex-analytic (complex-step FD applies)."""
        return self.activation in ANALYTIC_ACTIVATIONS and self.output in ANALYTIC_ACTIVATIONS

    def init(self, key: jax.Array, scheme: str = "nielsen", dtype="float32") -> Params:
        """Random params; see `init_mlp`."""
        return init_mlp(key, self.sizes, scheme=scheme, dtype=dtype)

    def logits(self, params: Params, x: jax.Array) -> jax.Array:
        """Pre-activation of the output layer, `z_L: (n_out,)`, for one example `x: (n_in,)`."""
        return mlp_logits(params, x, self.activation)

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """Network output `a_L: (n_out,)` for one example `x: (n_in,)`."""
        return OUTPUT_ACTIVATIONS[self.output](self.logits(params, x))

    def n_params(self) -> int:
        """Number of weights and biases."""
        return param_count(self.sizes)

    def forward_flops(self, batch_size: int = 1) -> int:
        """Analytic FLOPs of one forward pass over `batch_size` examples; see `forward_flops`."""
        return forward_flops(self.sizes, batch_size)


def init_mlp(key: jax.Array, sizes: Sequence[int], scheme: str = "nielsen", dtype="float32") -> Params:
    """Random MLP params from an explicit PRNG key.

    Schemes (fan_in = n_in of the layer):
      "nielsen": w ~ N(0, 1), b ~ N(0, 1)   (the classic network.py of the lecture)
      "lecun":   w ~ N(0, 1/fan_in), b = 0
      "xavier":  w ~ N(0, 2/(fan_in + fan_out)), b = 0   (Glorot normal)
      "he":      w ~ N(0, 2/fan_in), b = 0

    Args:
      key: a PRNG key, `jax.random.key(seed)`.
      sizes: layer widths `(n_0, ..., n_L)`.
      scheme: one of `INIT_SCHEMES`.
      dtype: float32, float64, complex64 or complex128 (complex params have zero imaginary part).
    Returns:
      `tuple(Layer(w: (n_{l-1}, n_l), b: (n_l,)) for l in 1..L)` of `dtype`.
    """
    key = _checks.prng_key(key)
    sizes = _check_sizes(sizes)
    _checks.choice(scheme, INIT_SCHEMES, "init scheme")
    dt = _checks.float_dtype(dtype)
    real_dt = jnp.finfo(dt).dtype  # float32 for complex64, float64 for complex128
    layers = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        kw, kb = jax.random.split(k)
        std = {"nielsen": 1.0, "lecun": (1 / n_in) ** 0.5, "xavier": (2 / (n_in + n_out)) ** 0.5,
               "he": (2 / n_in) ** 0.5}[scheme]
        w = std * jax.random.normal(kw, (n_in, n_out), real_dt)
        b = jax.random.normal(kb, (n_out,), real_dt) if scheme == "nielsen" else jnp.zeros((n_out,), real_dt)
        layers.append(Layer(w.astype(dt), b.astype(dt)))
    return tuple(layers)


def mlp_logits(params: Params, x: jax.Array, activation: str = "sigmoid") -> jax.Array:
    """Output pre-activation `z_L: (n_out,)` of an MLP for one example `x: (n_in,)`."""
    act = ACTIVATIONS[activation]
    n_in = params[0].w.shape[0]
    if x.ndim != 1 or x.shape[0] != n_in:
        raise ValueError(
            f"x must be one example of shape ({n_in},), got {x.shape}; batch with jax.vmap(net.apply, (None, 0))"
        )
    a = x
    for layer in params[:-1]:
        a = act(a @ layer.w + layer.b)
    return a @ params[-1].w + params[-1].b


def param_count(sizes: Sequence[int]) -> int:
    """Number of weights and biases of an MLP with layer widths `sizes`."""
    sizes = _check_sizes(sizes)
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def forward_flops(sizes: Sequence[int], batch_size: int = 1) -> int:
    """Analytic FLOPs of one forward pass: `batch_size * sum_l (2 n_{l-1} n_l + n_l)`.

    Counts the multiply-adds of the matmuls and the bias adds; activations and the cost are not counted
    (they are O(units), against O(weights) for the matmuls).
    """
    sizes = _check_sizes(sizes)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    return batch_size * sum(2 * n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
