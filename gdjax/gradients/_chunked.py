"""The chunked map over directions in parameter space, split across the devices of a mesh.

The FD kernel and forward mode both evaluate one scalar per direction (a perturbed cost, a jvp along a basis
vector) for P directions. Doing all P at once (`vmap`) needs P copies of the parameters and activations;
a Python loop pays one dispatch per direction. `map_directions` sits in between: a chunk of `chunk_size`
directions at a time as one batched program (so that, for an MLP, the first layer of all the perturbed
networks becomes ONE matmul `(N, n_in) @ (n_in, chunk * n_hidden)`), the chunks in sequence under `lax.map`
(or `lax.scan` with a carried state), and, given a mesh of several devices, the chunks split across the devices
with `jax.shard_map`.

    >>> ys = map_directions(vmapped(lambda ops, i: ops * i), 2.0, jnp.arange(10), chunk_size=4, mesh=mesh)
    >>> ys                                          # (10,) = 2 * arange(10), identical with or without mesh
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from gdjax import _checks
from gdjax.sharding import varying


def padded_length(n: int, chunk_size: int, n_devices: int = 1) -> int:
    """`n` rounded up to a multiple of `chunk_size * n_devices` (directions are padded to whole chunks)."""
    step = chunk_size * n_devices
    return -(-n // step) * step


def prefix(lengths: list[int], chunks: list[int], n: int, n_devices: int = 1) -> tuple[list[int], int, int]:
    """How many directions of each leaf a program over its first `n` directions (leaf after leaf) evaluates.

    Each leaf's directions are `lengths[k]`, run in chunks of `chunks[k]` (per device). A leaf's prefix is whole
    chunks times the device count, and at least two chunks where the leaf has two, so that the chunks still
    run under the whole program's loop (one chunk alone runs without a loop).
    Returns:
      (limits, covered, total): per-leaf counts (0: skipped; a leaf's full length when the prefix reaches its
      end), covered = their padded sum (>= n), total = the padded directions of the whole program.
    Example:
      >>> prefix([13, 4], [3, 3], 5)       # ([6, 0], 6, 21)
    """
    limits, covered, total = [], 0, 0
    for length, chunk in zip(lengths, chunks):
        whole = padded_length(length, chunk, n_devices)
        total += whole
        need = n - covered
        if need <= 0:
            limits.append(0)
            continue
        take = min(max(padded_length(need, chunk, n_devices), 2 * chunk * n_devices), whole)
        limits.append(min(take, length))
        covered += take
    return limits, covered, total


def vmapped(fn: Callable) -> Callable:
    """A chunk function from a per-direction one: `chunk_fn(ops, xs) = vmap(fn, (None, 0))(ops, xs)`."""
    return jax.vmap(fn, in_axes=(None, 0))


def map_directions(chunk_fn: Callable, operands, xs, chunk_size: int, mesh: Mesh | None = None,
                   init: Callable | None = None):
    """`ys[i]` for every direction `xs[i]`: `chunk_fn` on `chunk_size` directions at a time, chunks in sequence.

    `operands` are shared by every direction (replicated across devices): the parameters and the batch, so
    that XLA batches the directions into the weights and keeps the data unbatched. The direction axis is padded
    with copies of `xs[0]` to whole chunks (times the device count); the padding is computed and dropped. With
    the same `chunk_size`, every chunk holds the same directions with or without a mesh, so the sharded result
    equals the single-device one.

    Args:
      chunk_fn: `chunk_fn(operands, xs_chunk) -> ys_chunk`, a chunk of directions (leading axis chunk_size)
        to their values (same leading axis); `vmapped(fn)` makes one from a per-direction `fn(operands, x)`.
      operands: any pytree of arrays, shared.
      xs: pytree of arrays with a common leading axis of length n >= 1 (the directions).
      chunk_size: directions per chunk (per device), >= 1.
      mesh: a Mesh to split the chunks over (see `gdjax.sharding.resolve_mesh`), or None.
      init: optional `init(operands) -> state`: then the chunks run under `lax.scan` with a state carried from
        chunk to chunk (one per device), and `chunk_fn(operands, state, xs_chunk) -> (state, ys_chunk)`. XLA
        updates the carried state in place, so a state can be a buffer that every chunk edits
        (`_leaf_stack.perturb_stack`).
    Returns:
      pytree like `chunk_fn`'s output with a leading axis n.
    """
    chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    leaves = jax.tree_util.tree_leaves(xs)
    n = int(leaves[0].shape[0])
    n_dev = 1 if mesh is None else mesh.size
    n_pad = padded_length(n, chunk_size, n_dev)

    def pad(a):
        if n_pad == n:
            return a
        return jnp.concatenate([a, jnp.broadcast_to(a[:1], (n_pad - n, *a.shape[1:]))])

    def local(ops, xs_local):
        m = jax.tree_util.tree_leaves(xs_local)[0].shape[0]
        state = None if init is None else varying(init(ops), mesh)
        if m == chunk_size:  # one chunk: no loop
            return chunk_fn(ops, xs_local) if init is None else chunk_fn(ops, state, xs_local)[1]
        chunks = jax.tree_util.tree_map(lambda a: a.reshape(m // chunk_size, chunk_size, *a.shape[1:]), xs_local)
        if init is None:
            ys = jax.lax.map(lambda c: chunk_fn(ops, c), chunks)
        else:
            ys = jax.lax.scan(lambda st, c: chunk_fn(ops, st, c), state, chunks)[1]
        return jax.tree_util.tree_map(lambda y: y.reshape(m, *y.shape[2:]), ys)

    xs = jax.tree_util.tree_map(pad, xs)
    if mesh is None:
        ys = local(operands, xs)
    else:
        spec = PartitionSpec(tuple(mesh.axis_names))
        ys = jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), spec), out_specs=spec)(operands, xs)
    return jax.tree_util.tree_map(lambda y: y[:n], ys)
