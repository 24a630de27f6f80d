"""Checks shared by the gradient estimators: params, the cost's output, the common options."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gdjax import _checks


def check_params(params, method: str, *, allow_complex: bool = False) -> None:
    """Raise TypeError unless every leaf of `params` is a floating (optionally complex) array."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"params must contain at least one array (method {method!r}), got {params!r}")
    for leaf in leaves:
        dt = jnp.result_type(leaf)
        ok = jnp.issubdtype(dt, jnp.floating) or (allow_complex and jnp.issubdtype(dt, jnp.complexfloating))
        if not ok:
            kinds = "floating or complex" if allow_complex else "real floating (float32/float64)"
            raise TypeError(
                f"params must be {kinds} arrays for method {method!r}, got a leaf of dtype {dt}; "
                f"cast them, e.g. jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)"
            )


def check_scalar_cost(cost: Callable, params, batch, method: str) -> jax.ShapeDtypeStruct:
    """Trace `cost(params, batch)` abstractly (`jax.eval_shape`, no FLOPs) and raise ValueError unless scalar."""
    out = jax.eval_shape(cost, params, batch)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"cost must return a scalar (method {method!r}), got {shape}; reduce it, e.g. with jnp.mean over the batch"
        )
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise ValueError(f"cost must return a floating scalar (method {method!r}), got dtype {out.dtype}")
    return out


def eps_option(eps) -> float | None:
    """The `eps` option: None (the default step) or a finite float > 0."""
    return None if eps is None else _checks.positive_float(eps, "eps")


def chunk_option(chunk_size) -> int | None:
    """The `chunk_size` option: None (the budget default) or an integer >= 1."""
    return None if chunk_size is None else _checks.positive_int(chunk_size, "chunk_size")
