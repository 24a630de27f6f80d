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
(n_in, n_out) acting on rows, hence the transposes.) sigma' for each activation, in terms of z and a = sigma(z):
sigmoid a(1 - a), tanh 1 - a^2, identity 1, relu 1 for z > 0, 0 for z < 0 and 1/2 at z = 0 (jax.grad's
convention for max(z, 0) at the tie, so the two agree everywhere).

    >>> g = gradient(cost, "backprop")(params, batch)   # cost from gdjax.make_cost; equals jax.grad(cost)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax.costs import Cost
from gdjax.data import check_batch
from gdjax.gradients import _validate
from gdjax.gradients.registry import Estimator, no_count, register
from gdjax.nn import ACTIVATIONS, OUTPUT_ACTIVATIONS, Layer, sigmoid, softmax


def activation_derivative(name: str, z: jax.Array, a: jax.Array) -> jax.Array:
    """sigma'(z) for a hidden activation `name`, given z and a = sigma(z) (same shape)."""
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a**2
    if name == "identity":
        return jnp.ones_like(z)
    if name == "relu":
        return jnp.where(z > 0, 1.0, jnp.where(z == 0, 0.5, 0.0)).astype(z.dtype)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def output_error(cost: Cost, z: jax.Array, a: jax.Array, y: jax.Array) -> jax.Array:
    """(BP1) delta_L = dC_x/dz_L per example: z, a, y of shape (N, n_out) -> (N, n_out)."""
    out = cost.net.output
    if cost.loss == "cross-entropy":  # the logits shortcut: sigma' cancels against dC/da
        if out == "sigmoid":
            return sigmoid(z) - y
        return jnp.sum(y, axis=-1, keepdims=True) * softmax(z) - y
    r = a - y  # dC_x/da_L for the quadratic loss 0.5 ||a - y||^2
    if out == "sigmoid":
        return r * a * (1 - a)
    if out == "identity":
        return r
    return a * (r - jnp.sum(a * r, axis=-1, keepdims=True))  # softmax Jacobian (diag(a) - a a^T) r


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
    x, y = batch
    n = x.shape[0]
    act = ACTIVATIONS[cost.net.activation]
    # forward pass, keeping every z_l and a_l
    a_s, z_s = [x], []
    for l, layer in enumerate(params):
        z = a_s[-1] @ layer.w + layer.b[None, :]
        z_s.append(z)
        a_s.append(OUTPUT_ACTIVATIONS[cost.net.output](z) if l == len(params) - 1 else act(z))
    # backward pass
    delta = output_error(cost, z_s[-1], a_s[-1], y) / n  # (BP1), with the 1/N of the mean folded in
    grads = [None] * len(params)
    for l in reversed(range(len(params))):
        w = params[l].w
        dw = a_s[l].T @ delta  # (BP4)
        if cost.l2:
            dw = dw + cost.l2 * w
        grads[l] = Layer(dw.astype(w.dtype), jnp.sum(delta, axis=0).astype(params[l].b.dtype))  # (BP3)
        if l > 0:
            delta = (delta @ w.T) * activation_derivative(cost.net.activation, z_s[l - 1], a_s[l])  # (BP2)
    return tuple(grads)


@register("backprop", kind="exact", structured=True,
          summary="hand-written backpropagation (the four equations), vectorised over the batch")
def backprop_method(cost) -> Estimator:
    """`backprop(cost, ...)` as an estimator; needs a cost from `gdjax.make_cost`. About 3 F, like reverse."""
    if not isinstance(cost, Cost):
        raise TypeError(
            f"method 'backprop' needs a cost built by gdjax.make_cost (it reads the network's layers, activation "
            f"and loss), got {type(cost).__name__}; for any other cost use a black-box method such as 'reverse' "
            f"or 'fd-central'"
        )

    def fn(params, batch, key):
        _validate.check_params(params, "backprop")
        return backprop(cost, params, batch)

    return Estimator("backprop", fn, no_count)
