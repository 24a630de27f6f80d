"""Costs: per-example losses and their average over a batch, C(w, b) = (1/N) sum_x C_x.

    >>> net = MLP((784, 30, 10))
    >>> cost = make_cost(net, "quadratic")            # cost(params, batch) -> scalar
    >>> g = jax.grad(cost)(params, Batch(x, y))        # x: (N, 784), y: (N, 10) one-hot

The per-example function stays reachable as `cost.per_example(params, x, y)` (one example, no batch axis):
node perturbation and the "average over many images" experiment need it.

Losses (`y` is a target vector, one-hot for classification):
  "quadratic":      0.5 * ||a - y||^2, a = the network's output activation
  "cross-entropy":  with a sigmoid output: binary cross-entropy -sum[y log a + (1-y) log(1-a)];
                    with a softmax or identity output: categorical cross-entropy -sum y log softmax(z).
                    Both are computed from the logits z (stable: no log(0), no overflow) and are analytic,
                    so they work with complex parameters (complex-step FD).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.data import Batch, check_batch
from gdjax.nn import MLP, OUTPUT_ACTIVATIONS, Params

LOSSES = ("quadratic", "cross-entropy")


def _stable_shift(z: jax.Array, axis=None, keepdims=False) -> jax.Array:
    """A real, gradient-free shift for exp/log stability; correct for complex z as well."""
    return jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=axis, keepdims=keepdims))


def softplus(z: jax.Array) -> jax.Array:
    """log(1 + exp(z)) without overflow, analytic in z (complex-safe)."""
    m = jax.lax.stop_gradient(jnp.maximum(jnp.real(z), 0))
    return m + jnp.log(jnp.exp(-m) + jnp.exp(z - m))


def logsumexp(z: jax.Array) -> jax.Array:
    """log(sum(exp(z))) over the last axis without overflow, analytic in z (complex-safe)."""
    m = _stable_shift(z, axis=-1)
    return m + jnp.log(jnp.sum(jnp.exp(z - m[..., None]), axis=-1))


def quadratic(a: jax.Array, y: jax.Array) -> jax.Array:
    """0.5 * ||a - y||^2 for one example; a, y: (n_out,) -> scalar. Analytic ((a-y)**2, not |a-y|^2)."""
    return 0.5 * jnp.sum((a - y) ** 2)


def binary_cross_entropy_logits(z: jax.Array, y: jax.Array) -> jax.Array:
    """-sum[y log sigmoid(z) + (1-y) log(1 - sigmoid(z))] = sum[softplus(z) - y z]; z, y: (n_out,)."""
    return jnp.sum(softplus(z) - y * z)


def categorical_cross_entropy_logits(z: jax.Array, y: jax.Array) -> jax.Array:
    """-sum y log softmax(z) = sum(y) logsumexp(z) - y . z; z, y: (n_out,)."""
    return jnp.sum(y) * logsumexp(z) - jnp.sum(y * z)


@dataclass(frozen=True)
class Cost:
    """The dataset cost of an MLP: `cost(params, batch) = mean_x per_example(params, x, y) + l2/2 ||w||^2`.

    Hashable (a jit static argument) and callable. Built by `make_cost`; structured gradient estimators
    (backprop, layer-aware FD, node perturbation) read `net` and `loss` from it.

    Attributes:
      net: the `MLP` spec.
      loss: one of `LOSSES`.
      l2: weight-decay coefficient lambda >= 0 (biases are not decayed).
    """

    net: MLP
    loss: str = "quadratic"
    l2: float = 0.0

    def per_example(self, params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        """The loss C_x of one example: x: (n_in,), y: (n_out,) -> scalar (no L2 term)."""
        z = self.net.logits(params, x)
        if self.loss == "quadratic":
            return quadratic(OUTPUT_ACTIVATIONS[self.net.output](z), y)
        if self.net.output == "sigmoid":
            return binary_cross_entropy_logits(z, y)
        return categorical_cross_entropy_logits(z, y)

    def per_example_batch(self, params: Params, batch: Batch) -> jax.Array:
        """Per-example losses of a batch, `(N,)`."""
        check_batch(batch, net=self.net)
        return jax.vmap(self.per_example, (None, 0, 0))(params, batch.x, batch.y)

    def regulariser(self, params: Params) -> jax.Array:
        """l2/2 * sum of squared weights (0 when l2 == 0)."""
        if self.l2 == 0:
            return jnp.zeros((), params[0].w.dtype)
        return 0.5 * self.l2 * sum(jnp.sum(layer.w**2) for layer in params)

    def __call__(self, params: Params, batch: Batch) -> jax.Array:
        """The scalar cost C(params) averaged over the batch: x: (N, n_in), y: (N, n_out)."""
        return jnp.mean(self.per_example_batch(params, batch)) + self.regulariser(params)


def make_cost(net: MLP, loss: str = "quadratic", l2: float = 0.0) -> Cost:
    """Build `cost(params, batch) -> scalar` for an MLP; see the module docstring for the losses.

    Args:
      net: an `MLP`.
      loss: "quadratic" or "cross-entropy".
      l2: L2 weight-decay coefficient, >= 0.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a gdjax.MLP, got {type(net).__name__}")
    _checks.choice(loss, LOSSES, "loss")
    l2 = _checks.positive_float(l2, "l2", allow_zero=True)
    return Cost(net, loss, l2)


def accuracy(net: MLP, params: Params, batch: Batch) -> jax.Array:
    """Fraction of examples whose largest output matches the largest target entry; scalar in [0, 1]."""
    check_batch(batch, net=net)
    out = jax.vmap(net.apply, (None, 0))(params, batch.x)
    return jnp.mean(jnp.argmax(jnp.real(out), -1) == jnp.argmax(batch.y, -1))
