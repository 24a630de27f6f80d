"""Argument validation shared by the library: each check raises a ValueError/TypeError that names the
argument and says how to fix it, so bad input never turns into a silent NaN or a deep XLA traceback."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def choice(value: str, valid: Iterable[str], name: str) -> str:
    """Return `value` if it is one of `valid`, else raise a ValueError listing the valid names."""
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def positive_int(value, name: str, *, minimum: int = 1) -> int:
    """Return `value` as an int if it is an integer >= minimum (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def positive_float(value, name: str, *, allow_zero: bool = False) -> float:
    """Return `value` as a float if it is finite and > 0 (or >= 0 with allow_zero)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


FLOAT_DTYPES = ("float32", "float64", "complex64", "complex128")  # what params and data may hold


def float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """Return `dtype` as a NumPy dtype if it is one of `FLOAT_DTYPES` (a floating or complex type), else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}") from None
    if dt.name not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be one of {', '.join(FLOAT_DTYPES)} (a floating or complex type), got {dt.name}")
    return dt


def prng_key(key, name: str = "key") -> jax.Array:
    """Return `key` if it is a JAX PRNG key (typed `jax.random.key` or raw uint32[2]), else raise TypeError."""
    if isinstance(key, jax.Array | np.ndarray):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise TypeError(
        f"{name} must be a single PRNG key such as jax.random.key(0) (or jax.random.PRNGKey(0)), "
        f"got {type(key).__name__}{getattr(key, 'shape', '')}"
    )
