"""Losses as objects: one per loss, holding everything the library needs to know about it.

A `Loss` is a per-example cost of the network's logits `z` (the output layer's pre-activation) and target `y`,
given the output activation `out` (an `Activation`), with:

  the per-example cost (`gdjax.costs.Cost`)            `loss.per_example(z, y, out)`          -> scalar
  the output error (backprop's BP1)                   `loss.output_error(z, a, y, out)`      = dC_x/dz, like z
  the difference form (layer-aware FD, node pert.)    `loss.diff(loss.diff_prep(z, y, out, axis), dz, y, out, axis)`
                                                      = C_x(z + dz) - C_x(z), summed over the outputs' `axis`

Losses (`y` a target vector, one-hot for classification):
  "quadratic":      0.5 * ||a - y||^2, a = out(z) the network's output activation (any output activation)
  "cross-entropy":  with a sigmoid output: binary cross-entropy -sum[y log a + (1-y) log(1-a)];
                    with a softmax or identity output: categorical cross-entropy -sum y log softmax(z).
                    Both are computed from the logits z (stable: no log(0), no overflow) and are analytic,
                    so they work with complex parameters (complex-step FD).

A new loss is one `Loss(...)` here, registered in `LOSSES`; `gdjax.make_cost(net, name)` then accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from gdjax.models.activations import Activation, sigmoid, softmax

Array = jax.Array


def _stable_shift(z: Array, axis=None, keepdims=False) -> Array:
    """A real, gradient-free shift for exp/log stability; correct for complex z as well."""
    return jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=axis, keepdims=keepdims))


def softplus(z: Array) -> Array:
    """log(1 + exp(z)) without overflow, analytic in z (complex-safe)."""
    m = jax.lax.stop_gradient(jnp.maximum(jnp.real(z), 0))
    return m + jnp.log(jnp.exp(-m) + jnp.exp(z - m))


def logsumexp(z: Array) -> Array:
    """log(sum(exp(z))) over the last axis without overflow, analytic in z (complex-safe)."""
    m = _stable_shift(z, axis=-1)
    return m + jnp.log(jnp.sum(jnp.exp(z - m[..., None]), axis=-1))


def quadratic(a: Array, y: Array) -> Array:
    """0.5 * ||a - y||^2 for one example; a, y: (n_out,) -> scalar. Analytic ((a-y)**2, not |a-y|^2)."""
    return 0.5 * jnp.sum((a - y) ** 2)


def binary_cross_entropy_logits(z: Array, y: Array) -> Array:
    """-sum[y log sigmoid(z) + (1-y) log(1 - sigmoid(z))] = sum[softplus(z) - y z]; z, y: (n_out,)."""
    return jnp.sum(softplus(z) - y * z)


def categorical_cross_entropy_logits(z: Array, y: Array) -> Array:
    """-sum y log softmax(z) = sum(y) logsumexp(z) - y . z; z, y: (n_out,)."""
    return jnp.sum(y) * logsumexp(z) - jnp.sum(y * z)


@dataclass(frozen=True, eq=False)
class Loss:
    """A per-example loss of the logits; every function takes the output activation `out` it is paired with.

    Fields:
      name: the registry name, e.g. "quadratic".
      per_example: `(z, y, out) -> scalar` for one example, `z, y: (n_out,)`.
      output_error: `(z, a, y, out) -> dC_x/dz`, rows of examples: `z, a = out(z), y: (..., n_out)`.
      prep: `(z, y, out, axis) -> tuple` of what `difference` needs of the unperturbed logits (outputs on `axis`).
      difference: `(prep, dz, y, out, axis) -> C_x(z + dz) - C_x(z)`, summed over `axis`, without subtracting
        nearly equal numbers (the per-example change when the logits move by dz).
      outputs: the output activations (names) the loss is defined for; None: any.
    """

    name: str
    per_example: Callable[[Array, Array, Activation], Array]
    output_error: Callable[[Array, Array, Array, Activation], Array]
    prep: Callable[..., tuple]
    difference: Callable[..., Array]
    outputs: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"Loss({self.name!r})"

    def check_output(self, out: str) -> None:
        """Raise ValueError unless the output activation named `out` pairs with this loss."""
        if self.outputs is not None and out not in self.outputs:
            raise ValueError(f"loss {self.name!r} needs an output activation among {', '.join(self.outputs)}, "
                             f"got {out!r}; use loss 'quadratic' or another output activation")

    def diff_prep(self, z: Array, y: Array, out: Activation, axis: int = -1) -> tuple:
        """What `diff` needs of the unperturbed logits z and targets y (outputs along `axis`), computed once."""
        return self.prep(z, y, out, axis)

    def diff(self, prep: tuple, dz: Array, y: Array, out: Activation, axis: int = -1) -> Array:
        """Per-example change of the loss when the logits move by dz (outputs along `axis`, summed)."""
        return self.difference(prep, dz, y, out, axis)


# --- quadratic: 0.5 ||out(z) - y||^2, through the output activation's own vjp and difference form ------------

def _quadratic_prep(z, y, out, axis):
    return (out.diff_prep(z, axis), out(z, axis) - y)


def _quadratic_difference(prep, dz, y, out, axis):
    p, r = prep
    da = out.diff(p, dz, axis)
    return jnp.sum(da * (r + 0.5 * da), axis=axis)  # 0.5|a + da - y|^2 - 0.5|a - y|^2


QUADRATIC = Loss(
    "quadratic",
    per_example=lambda z, y, out: quadratic(out(z), y),
    output_error=lambda z, a, y, out: out.vjp(z, a, a - y),  # dC_x/da = a - y, through the output activation
    prep=_quadratic_prep, difference=_quadratic_difference)


# --- cross-entropy from the logits: binary for a sigmoid output, categorical for softmax / identity -----------

def _binary(out: Activation) -> bool:
    return out.name == "sigmoid"


def _xent_per_example(z, y, out):
    return binary_cross_entropy_logits(z, y) if _binary(out) else categorical_cross_entropy_logits(z, y)


def _xent_output_error(z, a, y, out):
    # the logits shortcut: sigma' cancels against dC/da
    if _binary(out):
        return sigmoid(z) - y
    return jnp.sum(y, axis=-1, keepdims=True) * softmax(z) - y


def _xent_prep(z, y, out, axis):
    return (jax.nn.sigmoid(z),) if _binary(out) else (jax.nn.softmax(z, axis=axis),)


def _xent_difference(prep, dz, y, out, axis):
    (s,) = prep
    if _binary(out):  # softplus(z + d) - softplus(z) = log1p(s(z) expm1(d))
        return jnp.sum(jnp.log1p(s * jnp.expm1(dz)) - y * dz, axis=axis)
    ebar = jnp.sum(s * jnp.expm1(dz), axis=axis)  # logsumexp(z + d) - logsumexp(z) = log1p(sum softmax(z) expm1(d))
    return jnp.sum(y, axis=axis) * jnp.log1p(ebar) - jnp.sum(y * dz, axis=axis)


CROSS_ENTROPY = Loss("cross-entropy", _xent_per_example, _xent_output_error, _xent_prep, _xent_difference,
                     outputs=("sigmoid", "softmax", "identity"))

LOSSES: dict[str, Loss] = {loss.name: loss for loss in (QUADRATIC, CROSS_ENTROPY)}
