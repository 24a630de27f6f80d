"""Multi-layer perceptrons as pure functions, and THE forward pass every part of the library runs.

Params are a tuple of `Layer(w, b)` with `w: (n_in, n_out)` and `b: (n_out,)`. A network is described by a
hashable, static `MLP` spec (layer sizes and activation names) with two pure functions, `init` and `apply`:

    >>> net = MLP((784, 30, 10))                      # sigmoid hidden and output units, as in the lecture
    >>> params = net.init(jax.random.key(0))          # ("nielsen": standard normal weights and biases)
    >>> y = net.apply(params, x)                      # x: (784,) -> y: (10,)
    >>> ys = jax.vmap(net.apply, (None, 0))(params, xs)  # xs: (N, 784) -> ys: (N, 10)

`apply` takes one example; batching is `jax.vmap` at the call site. Every function here is analytic in the
parameters for the sigmoid/tanh/identity activations, so complex parameters work (complex-step FD).

The protocol "affine layer + elementwise activation" that the structured gradient methods (backprop, layer-aware
FD, node perturbation, the activity-perturbed forward gradient) read, and nothing else:

    net.states(params, x)  -> per layer l = 1..L a `LayerState(a_in, z, a)`:
                              a_in = a_{l-1}: (..., n_{l-1}) (a_0 = x), z = a_in @ w_l + b_l: (..., n_l),
                              a = sigma(z) (the output activation for l = L): (..., n_l)
    net.activation_fn      the hidden layers' `Activation` (fn, vjp, difference form, analytic)
    net.output_fn          the output layer's `Activation`
    layer_grads(params, inputs, deltas, l2)   dC/dw_l, dC/db_l from per-example errors dC_x/dz_l (backprop's BP3-4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.models.activations import ACTIVATIONS, OUTPUT_ACTIVATIONS, Activation


class Layer(NamedTuple):
    """One dense layer: `w: (n_in, n_out)`, `b: (n_out,)`."""

    w: jax.Array
    b: jax.Array


Params = tuple[Layer, ...]


class LayerState(NamedTuple):
    """One layer of the forward pass, for examples on the leading axes: `a_in: (..., n_in)` the layer's input,
    `z = a_in @ w + b: (..., n_out)` its pre-activation, `a = sigma(z): (..., n_out)` its activation."""

    a_in: jax.Array
    z: jax.Array
    a: jax.Array


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


def _activation_name(act, table: dict, what: str) -> str:
    """The registry name of `act` (a name or a registered `Activation` object), or ValueError/TypeError."""
    if isinstance(act, Activation):
        if table.get(act.name) is not act:
            raise ValueError(f"{what} {act!r} is not registered; register it first with "
                             "gdjax.models.activations.register(act), then pass it or its name")
        return act.name
    return _checks.choice(act, table, what)


def _shapes(layers) -> str:
    return ", ".join(f"[w {tuple(w)}, b {tuple(b)}]" for w, b in layers)


def check_params(sizes: tuple[int, ...], params) -> None:
    """Raise ValueError unless `params` is a tuple (or list) of `Layer(w: (n_{l-1}, n_l), b: (n_l,))` for `sizes`.

    Reads only the pytree's structure and its leaves' static shapes: cheap, and valid under jit, vmap (each
    mapped copy has the unmapped shapes) and the FD kernel's perturbed copies.
    """
    want = [((n_in, n_out), (n_out,)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    ok = isinstance(params, tuple | list) and all(isinstance(layer, Layer) for layer in params)
    got = [(jnp.shape(layer.w), jnp.shape(layer.b)) for layer in params] if ok else None
    if got != want:
        got_text = _shapes(got) if ok else f"a {type(params).__name__}"
        raise ValueError(
            f"params must be a tuple of Layer(w, b) matching the network {sizes}: expected {_shapes(want)}; got "
            f"{got_text}. Build them for this network with net.init(key), or make the cost from the network these "
            f"params belong to: gdjax.make_cost(gdjax.MLP(sizes), loss)"
        )


@dataclass(frozen=True)
class MLP:
    """A static description of a fully connected network; hashable, so it can be a jit static argument.

    Args:
      sizes: layer widths `(n_0, ..., n_L)`; `n_0` inputs, `n_L` outputs, `L` layers of weights.
      activation: hidden-unit activation, a name in `ACTIVATIONS` (sigmoid, tanh, relu, identity, and any
        registered with `gdjax.models.activations.register`) or a registered `Activation`; stored as its name.
      output: output activation, a name in `OUTPUT_ACTIVATIONS` (sigmoid, identity, softmax) or such an object.
    """

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    output: str = "sigmoid"

    def __post_init__(self):
        object.__setattr__(self, "sizes", _check_sizes(self.sizes))
        object.__setattr__(self, "activation", _activation_name(self.activation, ACTIVATIONS, "activation"))
        object.__setattr__(self, "output", _activation_name(self.output, OUTPUT_ACTIVATIONS, "output activation"))

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def activation_fn(self) -> Activation:
        """The hidden layers' `Activation` object."""
        return ACTIVATIONS[self.activation]

    @property
    def output_fn(self) -> Activation:
        """The output layer's `Activation` object."""
        return OUTPUT_ACTIVATIONS[self.output]

    @property
    def is_analytic(self) -> bool:
        """True when every activation is complex-analytic (complex-step FD applies)."""
        return self.activation_fn.analytic and self.output_fn.analytic

    def check_params(self, params) -> None:
        """ValueError unless `params` has this network's layer shapes (see `check_params`)."""
        check_params(self.sizes, params)

    def init(self, key: jax.Array, scheme: str = "nielsen", dtype="float32") -> Params:
        """Random params; see `init_mlp`."""
        return init_mlp(key, self.sizes, scheme=scheme, dtype=dtype)

    def states(self, params: Params, x: jax.Array) -> tuple[LayerState, ...]:
        """The forward pass, every layer's `LayerState(a_in, z, a)`; x: `(n_in,)` or `(N, n_in)` (see `forward`)."""
        self.check_params(params)
        return forward(params, x, self.activation_fn, self.output_fn)

    def logits(self, params: Params, x: jax.Array) -> jax.Array:
        """Pre-activation of the output layer, `z_L: (n_out,)`, for one example `x: (n_in,)`."""
        _check_example(x, self.n_in)
        return self.states(params, x)[-1].z

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """Network output `a_L: (n_out,)` for one example `x: (n_in,)`."""
        _check_example(x, self.n_in)
        return self.states(params, x)[-1].a

    def n_params(self) -> int:
        """Number of weights and biases."""
        return param_count(self.sizes)

    def forward_flops(self, batch_size: int = 1) -> int:
        """Analytic FLOPs of one forward pass over `batch_size` examples; see `forward_flops`."""
        return forward_flops(self.sizes, batch_size)


def _check_example(x, n_in: int) -> None:
    if jnp.ndim(x) != 1 or jnp.shape(x)[0] != n_in:
        raise ValueError(
            f"x must be one example of shape ({n_in},), got {jnp.shape(x)}; batch with jax.vmap(net.apply, (None, 0))"
        )


def forward(params: Params, x: jax.Array, activation: Activation, output: Activation) -> tuple[LayerState, ...]:
    """The forward pass of an MLP, keeping every layer's input, pre-activation and activation.

    Args:
      params: tuple of `Layer(w: (n_{l-1}, n_l), b: (n_l,))`, l = 1..L.
      x: one example `(n_0,)` or a batch `(N, n_0)`.
      activation: the hidden layers' `Activation` (l < L); output: the output layer's (l = L; softmax acts on
        the last axis).
    Returns:
      L `LayerState(a_in: (..., n_{l-1}), z: (..., n_l), a: (..., n_l))`, `...` = x's leading axes.
    Example:
      >>> s = forward(params, xs, ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS["softmax"])
      >>> s[-1].a           # (N, n_L) the network's outputs; s[-1].z the logits; s[0].a_in is xs
    """
    if jnp.ndim(x) not in (1, 2) or jnp.shape(x)[-1] != params[0].w.shape[0]:
        raise ValueError(f"x must be one example ({params[0].w.shape[0]},) or a batch (N, {params[0].w.shape[0]}), "
                         f"got {jnp.shape(x)}")
    states = []
    a = x
    for l, layer in enumerate(params):
        z = a @ layer.w + (layer.b if jnp.ndim(a) == 1 else layer.b[None, :])
        states.append(LayerState(a, z, output(z) if l == len(params) - 1 else activation(z)))
        a = states[-1].a
    return tuple(states)


def layer_grads(params: Params, inputs, deltas, l2: float = 0.0) -> Params:
    """The gradient of a batch-mean cost from the per-example errors of every layer (backprop's BP3 and BP4).

    Args:
      params: tuple of `Layer(w: (n_in, n_out), b: (n_out,))`.
      inputs: per layer, its input activations `a_in: (N, n_in)` (`LayerState.a_in`).
      deltas: per layer, the (exact or estimated) per-example errors `dC_x/dz: (N, n_out)`.
      l2: the weight decay of the cost, `l2/2 sum ||w||^2` (biases not decayed).
    Returns:
      tuple of `Layer(a_in^T delta / N + l2 w, mean_x delta)`, dtypes as params.
    """
    grads = []
    for layer, a, delta in zip(params, inputs, deltas):
        gw = a.T @ delta / a.shape[0]
        if l2:
            gw = gw + l2 * layer.w
        grads.append(Layer(gw.astype(layer.w.dtype), jnp.mean(delta, axis=0).astype(layer.b.dtype)))
    return tuple(grads)


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
    _check_example(x, params[0].w.shape[0])
    return forward(params, x, ACTIVATIONS[activation], OUTPUT_ACTIVATIONS["identity"])[-1].z


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
