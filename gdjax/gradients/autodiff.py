"""Reverse mode: `jax.grad` of the cost, the baseline every other estimator is measured against."""

from __future__ import annotations

import jax

from gdjax.gradients.registry import Estimator, register


@register("reverse", kind="exact", summary="jax.grad (reverse-mode autodiff, backpropagation by XLA)")
def reverse(cost, **options) -> Estimator:
    """`jax.grad(cost)`; costs about 2-3 forward passes whatever the parameter count."""
    if options:
        raise TypeError(f"method 'reverse' takes no options, got {sorted(options)}")
    grad = jax.grad(cost)
    return Estimator("reverse", lambda params, batch, key: grad(params, batch), lambda n: 3.0)
