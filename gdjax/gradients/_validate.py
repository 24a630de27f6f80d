"""Checks shared by the gradient estimators: params, the batch, the cost's output, the call, the common options.

Each raises a ValueError/TypeError naming the argument and the fix, before any work.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.gradients import _leaves


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
    if isinstance(out, tuple | list):
        raise ValueError(
            f"cost must return a scalar (method {method!r}), got a {type(out).__name__} of {len(out)}; if it "
            f"returns (loss, aux), build the estimator with gradient(cost, {method!r}, has_aux=True)"
        )
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


def check_aux_cost(cost: Callable, params, batch, method: str) -> None:
    """With `has_aux=True`: raise ValueError unless `cost(params, batch)` returns `(scalar, aux)` (abstractly)."""
    out = jax.eval_shape(cost, params, batch)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        got = f"a {type(out).__name__} of {len(out)}" if isinstance(out, tuple | list) else \
            f"{getattr(out, 'shape', type(out).__name__)}"
        raise ValueError(
            f"with has_aux=True the cost must return a pair (scalar loss, aux) (method {method!r}), got {got}; "
            f"return (loss, aux), or drop has_aux"
        )
    loss = out[0]
    if not isinstance(loss, jax.ShapeDtypeStruct) or loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.inexact):
        raise ValueError(
            f"with has_aux=True the first element of the cost's output must be a floating scalar (method "
            f"{method!r}), got {getattr(loss, 'shape', type(loss).__name__)} {getattr(loss, 'dtype', '')}"
        )


def check_differentiable(params, method: str, name: str = "params", *, where: str | None = None) -> None:
    """Raise ValueError unless `params` holds at least one inexact (floating) array leaf (the leaf policy).

    `where` names the caller in the message (default: "method '<method>'")."""
    if _leaves.n_differentiable(params) == 0:
        where = where or f"method {method!r}"
        raise ValueError(
            f"{name} has no leaf to differentiate ({where}): only floating-point array leaves are differentiated"
            f" ({_leaves.describe_static(params)}); give the parameters as float arrays, e.g. "
            f"jnp.asarray(x, jnp.float32)"
        )


def check_batch(batch, method: str, name: str = "batch") -> None:
    """Raise ValueError when `batch` is empty: an array leaf with a zero-length leading (example) axis.

    A cost averaged over no examples is NaN (or 0), never a gradient. A batch without array leaves is fine.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = getattr(leaf, "shape", None)
        if isinstance(shape, tuple) and len(shape) >= 1 and shape[0] == 0:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has no examples (shape {shape}, method {method!r}): a cost "
                f"over an empty batch is NaN or 0, not a gradient; pass at least one example"
            )


def check_not_traced(params, batch, method: str) -> None:
    """Raise TypeError when `params` or `batch` is traced (under jax.jit, vmap, lax.scan): `method` is driven from
    Python, one dispatch per direction, and cannot run inside a traced function."""
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((params, batch))):
        raise TypeError(
            f"method {method!r} is driven from Python (one jitted call per direction) and cannot run under "
            f"jax.jit, jax.vmap or inside lax.scan; use 'fd-forward' (the same finite differences, one program) "
            f"there, or call {method!r} outside the traced function"
        )
