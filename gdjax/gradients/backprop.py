"""Backpropagation written by hand from its four equations: the readable reference for `jax.grad`.

For an MLP with z_l = a_{l-1} W_l + b_l, a_l = sigma(z_l) (a_0 = x; the last layer uses the output activation)
and the cost C = (1/N) sum_x C_x + (lambda/2) sum_l ||W_l||^2, with every quantity a row per example
(shapes `(N, n_l)`, the whole batch at once):

  (BP1) output error   delta_L = dC_x/da_L * sigma'(z_L)                                    (N, n_L)
                       (the logits shortcut for cross-entropy: delta_L = sigmoid(z_L) - y for a sigmoid
                       output, sum(y) softmax(z_L) - y for softmax / identity outputs; for a softmax output
                       with the quadratic loss sigma' is the softmax Jacobian: delta = a * (r - <a, r>),
                       r = a - y)
  (BP2) propagation    delta_l = (delta_{l+1} W_{l+1}^T) * sigma'(z_l)                      (N, n_l)
  (BP3) biases         dC/db_l = (1/N) sum_x delta_l                                       (n_l,)
  (BP4) weights        dC/dW_l = (1/N) a_{l-1}^T delta_l  (+ lambda W_l)                   (n_{l-1}, n_l)

(The lecture writes W_l as (n_l, n_{l-1}) acting on columns, dC/dW = delta a^T; gdjax stores W as
(n_in, n_out) acting on rows, hence the transposes.) The network's pieces come from `gdjax.models`: the forward
pass `cost.net.states`, sigma' from the activation object (`Activation.vjp`), BP1 from the loss object
(`Loss.output_error`, with the logits shortcut for cross-entropy), BP3-4 from `models.mlp.layer_grads`.

    >>> g = gradient(cost, "backprop")(params, batch)   # cost from gdjax.make_cost; equals jax.grad(cost)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.costs import Cost, require_mlp_cost
from gdjax.data import check_batch
from gdjax.gradients import _validate
from gdjax.gradients.registry import Estimator, no_count, register
from gdjax.models.activations import ACTIVATIONS
from gdjax.models.mlp import layer_grads


def activation_derivative(name: str, z: jax.Array, a: jax.Array) -> jax.Array:
    """sigma'(z) for the hidden activation `name`, given z and a = sigma(z) (same shape)."""
    return ACTIVATIONS[_checks.choice(name, ACTIVATIONS, "activation")].vjp(z, a, jnp.ones_like(z))


def output_error(cost: Cost, z: jax.Array, a: jax.Array, y: jax.Array) -> jax.Array:
    """(BP1) delta_L = dC_x/dz_L per example: z, a, y of shape (N, n_out) -> (N, n_out)."""
    return cost.loss_fn.output_error(z, a, y, cost.net.output_fn)


def backprop(cost: Cost, params, batch):
    """The gradient of a gdjax cost by the four backprop equations, vectorised over the batch.

    Args:
      cost: a `gdjax.Cost` (from `make_cost`): its net, loss and l2 define the equations.
      params: tuple of `Layer(w: (n_{l-1}, n_l), b: (n_l,))`, floating.
      batch: `Batch(x: (N, n_in), y: (N, n_out))`.
    Returns:
      tuple of `Layer(dC/dw, dC/db)`, same shapes and dtypes as params (as `jax.grad(cost)(params, batch)`).
    """
    check_batch(batch, net=cost.net)
    states = cost.net.states(params, batch.x)  # forward pass, keeping every a_{l-1}, z_l and a_l
    last = states[-1]
    delta = output_error(cost, last.z, last.a, batch.y)  # (BP1)
    deltas = [delta]
    for l in reversed(range(1, len(params))):  # (BP2)
        delta = cost.net.activation_fn.vjp(states[l - 1].z, states[l - 1].a, delta @ params[l].w.T)
        deltas.insert(0, delta)
    return layer_grads(params, [s.a_in for s in states], deltas, cost.l2)  # (BP3), (BP4)


@register("backprop", kind="exact", structured=True,
          summary="hand-written backpropagation (the four equations), vectorised over the batch",
          cost_formula="about 2-3 F (the four equations)", error_order="exact to rounding")
def backprop_method(cost) -> Estimator:
    """`backprop(cost, ...)` as an estimator; needs a cost from `gdjax.make_cost`. About 3 F, like reverse."""
    cost = require_mlp_cost(cost, "backprop")

    def fn(params, batch, key):
        _validate.check_params(params, "backprop")
        return backprop(cost, params, batch)

    return Estimator("backprop", fn, no_count)
