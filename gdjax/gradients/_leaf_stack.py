"""The carried buffer of perturbed copies of one leaf: a chunk's directions, edited in place from chunk to chunk.

Directions are taken one pytree leaf at a time: a chunk batches copies of ONE leaf only, so the other leaves
stay unbatched and XLA computes what depends only on them once per chunk, and a chunk costs copies of a leaf,
not of the whole parameter vector. The copies are stacked on the axis before the leaf's last one (`leaf_axis`):
for a weight `(n_in, n_out)` the chunk is `(n_in, chunk, n_out)`, which is already the `(n_in, chunk * n_out)`
matrix the batched matmul needs, so no transpose is made.

    >>> state = leaf_stack(w, 4, leaf_axis(w.ndim))                  # 4 unmodified copies of w
    >>> state = perturb_stack(w, state, idx, values, leaf_axis(w.ndim))  # copy j: w.ravel()[idx[j]] = values[j]
    >>> stack = fresh_stack(w, idx, values, leaf_axis(w.ndim))           # the same copies, written afresh

`perturb_stack` carries one buffer from chunk to chunk (2c scattered entries per chunk); `fresh_stack` writes the
c copies of every chunk anew (c copies of the leaf per chunk, but no buffer in the loop's carry). Which is faster
depends on the cost and the platform: the FD kernel's plan (`_plan.py`) measures both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def leaf_axis(ndim: int) -> int:
    """Where a chunk of copies of an `ndim`-d leaf is stacked: before its last axis (0 for scalars, vectors)."""
    return max(ndim - 1, 0)


class LeafStack(NamedTuple):
    """A buffer of c copies of a leaf stacked on `axis` (`leaf_stack`), and the flat indices `prev: (c,)` that the
    last chunk changed (copy j at prev[j]); carried from chunk to chunk by `map_directions(init=...)`."""

    stack: jax.Array
    prev: jax.Array


def _stack_coords(leaf_shape, size: int, idx: jax.Array, axis: int) -> tuple:
    """Scatter coordinates into a stack: copy j (on `axis`), entry `idx[j]` of the leaf (-1 read as 0)."""
    coords = list(jnp.unravel_index(jnp.clip(idx, 0, size - 1), leaf_shape)) if len(leaf_shape) else []
    coords.insert(axis, jnp.arange(idx.shape[0]))
    return tuple(coords)


def leaf_stack(leaf: jax.Array, c: int, axis: int, dtype=None) -> LeafStack:
    """The initial state of `perturb_stack`: c unmodified copies of `leaf` (shape S, c inserted at `axis`)."""
    dtype = jnp.result_type(leaf.dtype, dtype) if dtype is not None else leaf.dtype
    shape = list(leaf.shape)
    shape.insert(axis, c)
    stack = jnp.broadcast_to(jnp.expand_dims(leaf.astype(dtype), axis), shape)
    return LeafStack(stack, jnp.zeros((c,), jnp.int32))


def perturb_stack(leaf: jax.Array, state: LeafStack, idx: jax.Array, values: jax.Array, axis: int) -> LeafStack:
    """The copies of the next chunk, made from the last chunk's by editing 2c entries, never by copying the leaf.

    Restores the entries the last chunk set (`state.prev`) to the leaf's values, then sets copy j's entry
    `leaf.ravel()[idx[j]] = values[j]` (an index < 0 leaves its copy unchanged: the forward scheme's base point).
    The copies are what a fresh stack would hold; as the state of a `lax.scan` the buffer is updated in place,
    so a chunk costs 2c scattered entries instead of writing c copies of the leaf (for the lecture net's 94 KB
    weight copies at N = 10, that write was most of the time).

    Args:
      leaf: array of shape S, the unperturbed values.
      state: the `LeafStack` of the last chunk (or `leaf_stack(leaf, c, axis, dtype)`).
      idx: (c,) int32 flat indices into the leaf; values: (c,) new values (cast to the stack's dtype).
    Returns:
      the new `LeafStack`; its `stack` has shape S with c inserted at `axis`.
    """
    flat = jnp.ravel(leaf).astype(state.stack.dtype)
    size = flat.shape[0]
    restored = state.stack.at[_stack_coords(leaf.shape, size, state.prev, axis)].set(
        flat[jnp.clip(state.prev, 0, size - 1)], indices_are_sorted=False, unique_indices=True)
    new = jnp.where(idx >= 0, values.astype(flat.dtype), flat[jnp.clip(idx, 0, size - 1)])
    stack = restored.at[_stack_coords(leaf.shape, size, idx, axis)].set(new, indices_are_sorted=False,
                                                                       unique_indices=True)
    return LeafStack(stack, idx.astype(jnp.int32))


def fresh_stack(leaf: jax.Array, idx: jax.Array, values: jax.Array, axis: int, dtype=None) -> jax.Array:
    """c fresh copies of `leaf` stacked on `axis`, copy j with `leaf.ravel()[idx[j]] = values[j]` (an index < 0
    leaves its copy unchanged): what `perturb_stack` holds after the same chunk, without a carried buffer.

    Args: leaf (shape S); idx (c,) int32; values (c,); dtype: the copies' dtype (default: leaf's, promoted
    with `dtype`, e.g. complex for the complex step). Returns: shape S with c inserted at `axis`.
    """
    stack = leaf_stack(leaf, idx.shape[0], axis, dtype).stack
    flat = jnp.ravel(leaf).astype(stack.dtype)
    size = flat.shape[0]
    new = jnp.where(idx >= 0, values.astype(flat.dtype), flat[jnp.clip(idx, 0, size - 1)])
    return stack.at[_stack_coords(leaf.shape, size, idx, axis)].set(new, indices_are_sorted=False,
                                                                    unique_indices=True)


def replace_leaf(leaves: list, treedef, k: int, new) -> object:
    """The pytree `treedef` with leaves `leaves`, leaf k replaced by `new`."""
    leaves = list(leaves)
    leaves[k] = new
    return jax.tree_util.tree_unflatten(treedef, leaves)
