"""The network in difference form: the change of an activation or of the loss when a pre-activation moves by
d, computed without subtracting two nearly equal numbers (layer-aware FD, `gdjax.gradients.structured`).

Each function takes what it needs of the unperturbed values, computed once (`act_prep`, `loss_prep`), and the
change d; `act_transform(name, d)` is the one transcendental of d that `act_diff` needs:
sigmoid `s(z+d) - s(z) = s(z) s(-z) expm1(d) / (1 + s(z) expm1(d))`; tanh `tanh(d) (1 - tanh(z)^2) / (1 +
tanh(z) tanh(d))`; relu `max(d, -z)` for z >= 0, `max(z + d, 0)` else; the loss from the change of the logits
(binary cross-entropy `log1p(s(z) expm1(d))`, categorical `log1p(sum_k softmax(z)_k expm1(d_k))`).

    >>> da = act_diff("tanh", act_prep("tanh", z), d, act_transform("tanh", d))   # tanh(z + d) - tanh(z)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax.costs import Cost


def act_prep(name: str, z):
    """What `act_diff` needs of the unperturbed pre-activation z (computed once, reused for every direction)."""
    if name == "sigmoid":
        return (jax.nn.sigmoid(z), jax.nn.sigmoid(-z))
    if name == "tanh":
        return (jnp.tanh(z), 4.0 * jax.nn.sigmoid(2.0 * z) * jax.nn.sigmoid(-2.0 * z))  # tanh z, 1 - tanh^2 z
    return (z,)


def act_transform(name: str, dz):
    """The one transcendental of the change dz that `act_diff` needs (it depends on dz only)."""
    if name == "sigmoid":
        return jnp.expm1(dz)
    if name == "tanh":
        return jnp.tanh(dz)
    return dz


def act_diff(name: str, prep, dz, t):
    """act(z + dz) - act(z) without cancellation; `prep = act_prep(name, z)`, `t = act_transform(name, dz)`."""
    if name == "sigmoid":
        s, c = prep
        return s * c * t / (1.0 + s * t)
    if name == "tanh":
        th, sech2 = prep
        return t * sech2 / (1.0 + th * t)
    if name == "relu":
        (z,) = prep
        return jnp.where(z >= 0, jnp.maximum(dz, -z), jnp.maximum(z + dz, 0))
    return dz  # identity


def loss_prep(cost: Cost, z, y, axis: int = -1):
    """What `loss_diff` needs of the unperturbed logits z and targets y (outputs along `axis`)."""
    out = cost.net.output
    if cost.loss == "quadratic":
        if out == "sigmoid":
            return (jax.nn.sigmoid(z), jax.nn.sigmoid(-z), jax.nn.sigmoid(z) - y)
        if out == "softmax":
            s = jax.nn.softmax(z, axis=axis)
            return (s, s - y)
        return (z - y,)  # identity output
    if out == "sigmoid":
        return (jax.nn.sigmoid(z),)  # binary cross-entropy
    return (jax.nn.softmax(z, axis=axis),)  # categorical cross-entropy (softmax or identity output)


def loss_diff(cost: Cost, prep, dz, y, axis: int = -1):
    """Per-example change of the loss when the logits move by dz (outputs along `axis`, summed), no cancellation."""
    out = cost.net.output
    if cost.loss == "quadratic":
        if out == "sigmoid":
            s, c, r = prep
            e = jnp.expm1(dz)
            da = s * c * e / (1.0 + s * e)
        elif out == "softmax":
            s, r = prep
            e = jnp.expm1(dz)
            ebar = jnp.sum(s * e, axis=axis, keepdims=True)
            da = s * (e - ebar) / (1.0 + ebar)
        else:
            (r,) = prep
            da = dz
        return jnp.sum(da * (r + 0.5 * da), axis=axis)  # 0.5|a + da - y|^2 - 0.5|a - y|^2
    if out == "sigmoid":
        (s,) = prep
        return jnp.sum(jnp.log1p(s * jnp.expm1(dz)) - y * dz, axis=axis)
    (s,) = prep
    ebar = jnp.sum(s * jnp.expm1(dz), axis=axis)
    return jnp.sum(y, axis=axis) * jnp.log1p(ebar) - jnp.sum(y * dz, axis=axis)
