"""Activations as objects: one per activation, holding everything the library needs to know about it.

An `Activation` is the function, its derivative, its difference form (for layer-aware FD and node perturbation)
and whether it is complex-analytic (for complex-step FD). The registries map names to objects, so the string API
(`MLP(sizes, activation="tanh")`) reads them, and every consumer takes what it needs from the object:

  the forward pass (`gdjax.models.mlp.forward`)        `act(z)`
  backprop (BP2, `gdjax.gradients.backprop`)           `act.vjp(z, a, r)`         = r * sigma'(z)
  the difference form (`gdjax.gradients.structured`)  `act.diff(act.diff_prep(z), dz)` = sigma(z + dz) - sigma(z)
  complex-step FD (`gdjax.gradients.finite_diff`)     `act.analytic`

Adding an activation is this file only: define the object and register it (or register it from your own code):

    >>> softplus = Activation("softplus", fn=lambda z: jnp.logaddexp(z, 0.0), derivative=lambda z, a: jax.nn.sigmoid(z),
    ...                       analytic=False)
    >>> register(softplus)                           # now MLP(sizes, activation="softplus") works everywhere
    >>> net = MLP((784, 30, 10), activation="softplus")

`derivative` and the difference form are optional: without a derivative, sigma'(z) comes from `jax.jvp` of `fn`;
without a difference form, `sigma(z + dz) - sigma(z)` is computed directly, which in float32 loses
`log10(|sigma| / |d sigma|)` digits of a small change (give `prep`/`difference` for full precision). Hidden
activations are elementwise; an output activation may act on the last axis (softmax), and then implements
`vjp` and the difference form along an `axis` itself (see `Softmax`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise activation `a = sigma(z)`, hashable by identity; an `MLP` names it, the registry maps back.

    Fields (what a newcomer fills in):
      name: the registry name, e.g. "sigmoid".
      fn: `z -> sigma(z)`, elementwise, any shape; complex-safe if `analytic`.
      derivative: `(z, a) -> sigma'(z)` elementwise (`a = sigma(z)` given, e.g. sigmoid's `a (1 - a)`); None:
        from `jax.jvp(fn)` (same shape as z). At a kink, use jax.grad's convention so backprop equals it.
      analytic: True if `fn` is complex-analytic and written for complex z (complex-step FD applies).
      prep, difference: the difference form, `difference(prep(z), dz) = sigma(z + dz) - sigma(z)` without
        subtracting nearly equal numbers; `prep(z)` is a tuple of arrays of z's shape, computed once for many dz
        (the arrays broadcast against dz). None: `prep(z) = (z,)`, `difference = sigma(z + dz) - sigma(z)`.
      output: whether the activation may be the output layer's (`OUTPUT_ACTIVATIONS`).
    """

    name: str
    fn: Callable[[Array], Array]
    derivative: Callable[[Array, Array], Array] | None = None
    analytic: bool = False
    prep: Callable[[Array], tuple] | None = None
    difference: Callable[[tuple, Array], Array] | None = None
    output: bool = False

    elementwise = True  # hidden layers need elementwise activations ("affine layer + elementwise activation")

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Activation name must be a non-empty string, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"Activation {self.name!r}: fn must be callable z -> sigma(z), got {self.fn!r}")
        if (self.prep is None) != (self.difference is None):
            raise ValueError(f"Activation {self.name!r}: give both prep and difference (the difference form) or "
                             "neither (then sigma(z + dz) - sigma(z) is computed directly)")

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def __call__(self, z: Array, axis: int = -1) -> Array:
        """`sigma(z)`, elementwise (`axis` is for activations over an axis, such as softmax)."""
        return self.fn(z)

    def vjp(self, z: Array, a: Array, r: Array, axis: int = -1) -> Array:
        """`r * sigma'(z)`: a cotangent r of a = sigma(z) pulled back to z (backprop's BP1/BP2); all one shape."""
        if self.derivative is not None:
            return r * self.derivative(z, a)
        return r * jax.jvp(self.fn, (z,), (jnp.ones_like(z),))[1]

    def diff_prep(self, z: Array, axis: int = -1) -> tuple:
        """What `diff` needs of the unperturbed pre-activation z (computed once, reused for every change)."""
        return (z,) if self.prep is None else self.prep(z)

    def diff(self, prep: tuple, dz: Array, axis: int = -1) -> Array:
        """`sigma(z + dz) - sigma(z)` from `prep = diff_prep(z)` and the change dz (broadcasting with prep)."""
        if self.difference is None:
            (z,) = prep
            return self.fn(z + dz) - self.fn(z)
        return self.difference(prep, dz)


# --- the built-in activations --------------------------------------------------------------------------------

def sigmoid(z: Array) -> Array:
    """The logistic function 1 / (1 + exp(-z)); works for complex z (complex-step FD)."""
    if jnp.iscomplexobj(z):
        return 1.0 / (1.0 + jnp.exp(-z))
    return jax.nn.sigmoid(z)


def relu(z: Array) -> Array:
    """max(z, 0). Not analytic: complex-step FD refuses networks that use it."""
    return jnp.maximum(z, 0)


def identity(z: Array) -> Array:
    """z unchanged."""
    return z


def softmax(z: Array, axis: int = -1) -> Array:
    """softmax over `axis`, shifted by the (real part of the) maximum for stability; complex-safe."""
    m = jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=axis, keepdims=True))
    e = jnp.exp(z - m)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def _sigmoid_difference(prep, dz):
    s, c = prep  # s(z), s(-z): s(z + d) - s(z) = s(z) s(-z) expm1(d) / (1 + s(z) expm1(d))
    t = jnp.expm1(dz)
    return s * c * t / (1.0 + s * t)


def _tanh_difference(prep, dz):
    th, sech2 = prep  # tanh(z + d) - tanh(z) = tanh(d) (1 - tanh(z)^2) / (1 + tanh(z) tanh(d))
    t = jnp.tanh(dz)
    return t * sech2 / (1.0 + th * t)


def _relu_difference(prep, dz):
    (z,) = prep  # exact: max(d, -z) for z >= 0, max(z + d, 0) else
    return jnp.where(z >= 0, jnp.maximum(dz, -z), jnp.maximum(z + dz, 0))


SIGMOID = Activation(
    "sigmoid", sigmoid, derivative=lambda z, a: a * (1 - a), analytic=True, output=True,
    prep=lambda z: (jax.nn.sigmoid(z), jax.nn.sigmoid(-z)), difference=_sigmoid_difference)
TANH = Activation(
    "tanh", jnp.tanh, derivative=lambda z, a: 1 - a**2, analytic=True,
    # (tanh z, 1 - tanh^2 z), the latter as 4 s(2z) s(-2z) (no cancellation for large |z|)
    prep=lambda z: (jnp.tanh(z), 4.0 * jax.nn.sigmoid(2.0 * z) * jax.nn.sigmoid(-2.0 * z)),
    difference=_tanh_difference)
RELU = Activation(
    "relu", relu, analytic=False,
    # 1 for z > 0, 0 for z < 0, 1/2 at z = 0: jax.grad's convention for max(z, 0) at the tie
    derivative=lambda z, a: jnp.where(z > 0, 1.0, jnp.where(z == 0, 0.5, 0.0)).astype(z.dtype),
    prep=lambda z: (z,), difference=_relu_difference)
IDENTITY = Activation(
    "identity", identity, derivative=lambda z, a: jnp.ones_like(z), analytic=True, output=True,
    prep=lambda z: (z,), difference=lambda prep, dz: dz)


@dataclass(frozen=True, eq=False)
class Softmax(Activation):
    """softmax over an axis: an output activation only (not elementwise), with its Jacobian and difference form."""

    elementwise = False

    def __call__(self, z: Array, axis: int = -1) -> Array:
        return softmax(z, axis)

    def vjp(self, z: Array, a: Array, r: Array, axis: int = -1) -> Array:
        """`(diag(a) - a a^T) r` along `axis`, the softmax Jacobian (symmetric) applied to r."""
        return a * (r - jnp.sum(a * r, axis=axis, keepdims=True))

    def diff_prep(self, z: Array, axis: int = -1) -> tuple:
        return (jax.nn.softmax(z, axis=axis),)

    def diff(self, prep: tuple, dz: Array, axis: int = -1) -> Array:
        """`softmax(z + d) - softmax(z) = s (e - <s, e>) / (1 + <s, e>)`, `e = expm1(d)`, no cancellation."""
        (s,) = prep
        e = jnp.expm1(dz)
        ebar = jnp.sum(s * e, axis=axis, keepdims=True)
        return s * (e - ebar) / (1.0 + ebar)


SOFTMAX = Softmax("softmax", softmax, analytic=True, output=True)


# --- the registries -----------------------------------------------------------------------------------------

ACTIVATIONS: dict[str, Activation] = {}          # hidden-layer activations (elementwise), by name
OUTPUT_ACTIVATIONS: dict[str, Activation] = {}   # output-layer activations, by name


_BOUND: dict[str, Activation] = {}  # every name ever registered and its object (kept by `unregister`)


def register(act: Activation) -> Activation:
    """Add `act` to the registries by its name: `ACTIVATIONS` if elementwise, `OUTPUT_ACTIVATIONS` if `act.output`.

    A name belongs to one object for the life of the process: registering another object under a name already
    used (even if unregistered since) raises ValueError, because compiled programs are cached by the network's
    activation names and a replacement could silently run the old one. Returns `act`.
    """
    if not isinstance(act, Activation):
        raise TypeError(f"register takes an Activation (gdjax.models.activations.Activation), got {type(act).__name__}")
    if _BOUND.get(act.name, act) is not act:
        raise ValueError(f"an activation named {act.name!r} is already registered; choose another name")
    _BOUND[act.name] = act
    if act.elementwise:
        ACTIVATIONS[act.name] = act
    if act.output:
        OUTPUT_ACTIVATIONS[act.name] = act
    return act


def unregister(name: str) -> None:
    """Remove the activation `name` from the registries (for tests that register one temporarily); the name
    stays bound to its object (`register` accepts that same object again, no other)."""
    ACTIVATIONS.pop(name, None)
    OUTPUT_ACTIVATIONS.pop(name, None)


for _act in (SIGMOID, TANH, RELU, IDENTITY, SOFTMAX):
    register(_act)



class _Analytic(Set):
    """The names of the registered analytic activations (a live view of the registries)."""

    def _names(self) -> list[str]:
        return [n for n, a in {**ACTIVATIONS, **OUTPUT_ACTIVATIONS}.items() if a.analytic]

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"ANALYTIC_ACTIVATIONS({self._names()})"


ANALYTIC_ACTIVATIONS = _Analytic()
