"""Datasets as `Batch(x, y)`: x `(N, n_in)` floats in [0, 1], y `(N, n_classes)` one-hot."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Batch(NamedTuple):
    """A batch of examples: `x: (N, n_in)`, `y: (N, n_out)` (one-hot targets for classification)."""

    x: jax.Array
    y: jax.Array


def one_hot(labels, n_classes: int, dtype="float32") -> jax.Array:
    """Integer labels `(N,)` in [0, n_classes) -> one-hot `(N, n_classes)`; out-of-range labels raise ValueError."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}) for n_classes={n_classes}, got range [{labels.min()}, {labels.max()}]"
        )
    return jnp.asarray(np.eye(n_classes, dtype=dtype)[labels])
