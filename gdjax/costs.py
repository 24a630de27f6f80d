"""Costs: per-example losses and their average over a batch, C(w, b) = (1/N) sum_x C_x.

    >>> net = MLP((784, 30, 10))
    >>> cost = make_cost(net, "quadratic")            # cost(params, batch) -> scalar
    >>> g = jax.grad(cost)(params, Batch(x, y))        # x: (N, 784), y: (N, 10) one-hot

The per-example function stays reachable as `cost.per_example(params, x, y)` (one example, no batch axis):
node perturbation and the "average over many images" experiment need it.

The losses themselves are objects in `gdjax.models.losses` (`LOSSES`: "quadratic", "cross-entropy"; the
per-example cost, its output error and its difference form); their functions are re-exported here
(`quadratic`, `binary_cross_entropy_logits`, `categorical_cross_entropy_logits`, `softplus`, `logsumexp`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.data import Batch, check_batch
from gdjax.models.losses import (  # noqa: F401  (re-exported)
    LOSSES, Loss, binary_cross_entropy_logits, categorical_cross_entropy_logits, logsumexp, quadratic, softplus,
)
from gdjax.models.mlp import MLP, Params


@dataclass(frozen=True)
class Cost:
    """The dataset cost of an MLP: `cost(params, batch) = mean_x per_example(params, x, y) + l2/2 ||w||^2`.

    Hashable (a jit static argument) and callable. Built by `make_cost`; structured gradient estimators
    (backprop, layer-aware FD, node perturbation) read `net`, `loss_fn` and `l2` from it. Params of another
    network are refused (ValueError naming the expected and the given layer shapes) before any work.

    Attributes:
      net: the `MLP` spec.
      loss: a name in `LOSSES`.
      l2: weight-decay coefficient lambda >= 0 (biases are not decayed).
    """

    net: MLP
    loss: str = "quadratic"
    l2: float = 0.0

    @property
    def loss_fn(self) -> Loss:
        """The `Loss` object of `loss`."""
        return LOSSES[self.loss]

    def per_example(self, params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        """The loss C_x of one example: x: (n_in,), y: (n_out,) -> scalar (no L2 term)."""
        return self.loss_fn.per_example(self.net.logits(params, x), y, self.net.output_fn)

    def per_example_batch(self, params: Params, batch: Batch) -> jax.Array:
        """Per-example losses of a batch, `(N,)`."""
        self.net.check_params(params)
        check_batch(batch, net=self.net)
        return jax.vmap(self.per_example, (None, 0, 0))(params, batch.x, batch.y)

    def regulariser(self, params: Params) -> jax.Array:
        """l2/2 * sum of squared weights (0 when l2 == 0)."""
        self.net.check_params(params)
        if self.l2 == 0:
            return jnp.zeros((), params[0].w.dtype)
        return 0.5 * self.l2 * sum(jnp.sum(layer.w**2) for layer in params)

    def __call__(self, params: Params, batch: Batch) -> jax.Array:
        """The scalar cost C(params) averaged over the batch: x: (N, n_in), y: (N, n_out)."""
        return jnp.mean(self.per_example_batch(params, batch)) + self.regulariser(params)


def make_cost(net: MLP, loss: str = "quadratic", l2: float = 0.0) -> Cost:
    """Build `cost(params, batch) -> scalar` for an MLP; see `gdjax.models.losses` for the losses.

    Args:
      net: an `MLP`.
      loss: "quadratic" or "cross-entropy" (a name in `LOSSES`).
      l2: L2 weight-decay coefficient, >= 0.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a gdjax.MLP, got {type(net).__name__}")
    _checks.choice(loss, LOSSES, "loss")
    LOSSES[loss].check_output(net.output)
    l2 = _checks.positive_float(l2, "l2", allow_zero=True)
    return Cost(net, loss, l2)


def require_mlp_cost(cost, method: str) -> Cost:
    """`cost` if it is a `Cost` from `make_cost`, else TypeError: the structured methods read its network."""
    if not isinstance(cost, Cost):
        raise TypeError(
            f"method {method!r} reads the network's structure and needs a cost built by "
            f"gdjax.make_cost(net, loss), got {type(cost).__name__}; for other costs use a black-box method "
            "(fd-forward, fd-central, spsa, forward-gradient)"
        )
    return cost


def accuracy(net: MLP, params: Params, batch: Batch) -> jax.Array:
    """Fraction of examples whose largest output matches the largest target entry; scalar in [0, 1]."""
    check_batch(batch, net=net)
    out = jax.vmap(net.apply, (None, 0))(params, batch.x)
    return jnp.mean(jnp.argmax(jnp.real(out), -1) == jnp.argmax(batch.y, -1))

