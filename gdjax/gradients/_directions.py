"""Chunked maps over directions in parameter space, split across devices; shared checks of estimators.

The FD kernel and forward mode both evaluate one scalar per direction (a perturbed cost, a jvp along a basis
vector) for P directions. Doing all P at once (`vmap`) needs P copies of the parameters and activations;
a Python loop pays one dispatch per direction. `map_directions` sits in between: a chunk of `chunk_size`
directions at a time as one batched program (so that, for an MLP, the first layer of all the perturbed
networks becomes ONE matmul `(N, n_in) @ (n_in, chunk * n_hidden)`), the chunks in sequence under `lax.map`
(or `lax.scan` with a carried state), and, given a mesh of several devices, the chunks split across the devices
with `jax.shard_map`.

Directions are taken one pytree leaf at a time (`perturb_stack`): a chunk batches copies of ONE leaf only, so
the other leaves stay unbatched and XLA computes what depends only on them once per chunk, and a chunk costs
copies of a leaf, not of the whole parameter vector. The copies are stacked on the axis before the leaf's
last one (`leaf_axis`): for a weight `(n_in, n_out)` the chunk is `(n_in, chunk, n_out)`, which is already the
`(n_in, chunk * n_out)` matrix the batched matmul needs, so no transpose is made.

    >>> mesh = direction_mesh()                     # 1-D Mesh over the global jax.devices(), axis "directions"
    >>> ys = map_directions(vmapped(lambda ops, i: ops * i), 2.0, jnp.arange(10), chunk_size=4, mesh=mesh)
    >>> ys                                          # (10,) = 2 * arange(10), identical with or without mesh
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import _checks

AXIS = "directions"
# Bytes of perturbed parameters and activations one chunk may hold (any platform): a bound on memory.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
# On a CPU, also bytes of one chunk's stack of perturbed copies. Too narrow a chunk makes the batched first-layer
# matmul narrow (slow per FLOP) and pays the loop's fixed cost per chunk more often; too wide a one moves its
# copies and activations out of the caches. Measured on the 2-core EPYC of this project (1 MiB L2 per core, 32 MiB
# L3; [784, 30, 10], fd-forward, float32, chunks of the 94 KB weight copies, medians of 5-9 interleaved runs, the
# copies kept in a buffer edited in place, `perturb_stack`): N = 10: chunk 22 0.20 s, 32 0.18 s, 48 0.18 s,
# 64 0.18 s, 96 0.20 s; N = 100: chunk 22 1.29 s, 48 1.23 s, 64 1.27 s, 96 1.14 s; at N = 1000 chunks 22 to 64
# were within noise (9.6-11.3 s). 4 MiB gives chunk 44, in the flat part of all three.
# Accelerators have fast memory and want wide chunks to fill their cores: no such limit there.
CACHE_BUDGET = {"cpu": 4 * 2**20}
MAX_CHUNK = 1024


def direction_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D `Mesh` over `devices` (default: the GLOBAL `jax.devices()`, every process), axis "directions".

    The direction axis of `map_directions` is split across this mesh; because it spans the global device list,
    the same program runs unchanged when JAX is initialised multi-process (`jax.distributed.initialize`).

    Args:
      devices: a non-empty sequence of distinct `jax.Device`s, or None for `jax.devices()`.
    Returns:
      `Mesh(devices, ("directions",))`.
    """
    if devices is None:
        devices = jax.devices()
    if isinstance(devices, jax.Device) or not isinstance(devices, Sequence | np.ndarray):
        raise TypeError(f"devices must be a sequence of jax.Device (e.g. jax.devices()), got {devices!r}")
    devices = list(devices)
    if not devices:
        raise ValueError("devices must not be empty; pass None to use every device, jax.devices()")
    for d in devices:
        if not isinstance(d, jax.Device):
            raise TypeError(f"devices must contain jax.Device objects (from jax.devices()), got {d!r}")
    if len({d.id for d in devices}) != len(devices):
        raise ValueError(f"devices must be distinct, got ids {[d.id for d in devices]}")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def resolve_mesh(devices=None, mesh: Mesh | None = None) -> Mesh | None:
    """The mesh to split directions over, or None for a single device.

    `mesh` (any `jax.sharding.Mesh`; directions are split over all its axes) wins over `devices`; with neither,
    every device of `jax.devices()`. One device gives None: no sharding machinery at all.
    """
    if mesh is not None:
        if devices is not None:
            raise ValueError("pass either devices or mesh, not both")
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh (see direction_mesh()), got {type(mesh).__name__}")
    else:
        mesh = direction_mesh(devices)
    return mesh if mesh.size > 1 else None


def replicated(mesh: Mesh | None):
    """`NamedSharding(mesh, PartitionSpec())` (every device holds all of it), or None without a mesh."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def jit_replicated(fn: Callable, mesh: Mesh | None) -> Callable:
    """`jax.jit(fn)`, its outputs replicated on every device of `mesh` (plain `jax.jit(fn)` without a mesh)."""
    return jax.jit(fn) if mesh is None else jax.jit(fn, out_shardings=replicated(mesh))


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
    """
    limits, covered, total = [], 0, 0
    for length, chunk in zip(lengths, chunks):
        whole = padded_length(length, chunk, n_devices)
        total += whole
        need = n - covered
        if need <= 0:
            limits.append(0)
            continue
        take = max(padded_length(need, chunk, n_devices), min(2 * chunk * n_devices, whole))
        take = min(take, whole)
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
      mesh: a Mesh to split the chunks over (see `resolve_mesh`), or None.
      init: optional `init(operands) -> state`: then the chunks run under `lax.scan` with a state carried from
        chunk to chunk (one per device), and `chunk_fn(operands, state, xs_chunk) -> (state, ys_chunk)`. XLA
        updates the carried state in place, so a state can be a buffer that every chunk edits (`leaf_stack`).
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
        state = None if init is None else _varying(init(ops), mesh)
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


def _varying(state, mesh: Mesh | None):
    """Inside `shard_map`, mark a state built from replicated operands as varying over the mesh (each device
    carries its own), as `lax.scan` requires of a carry that meets per-device directions."""
    if mesh is None:
        return state
    axes = tuple(mesh.axis_names)
    if hasattr(jax.lax, "pcast"):  # jax >= 0.8
        return jax.tree_util.tree_map(lambda a: jax.lax.pcast(a, axes, to="varying"), state)
    return jax.tree_util.tree_map(lambda a: jax.lax.pvary(a, axes), state)


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


def replace_leaf(leaves: list, treedef, k: int, new) -> object:
    """The pytree `treedef` with leaves `leaves`, leaf k replaced by `new`."""
    leaves = list(leaves)
    leaves[k] = new
    return jax.tree_util.tree_unflatten(treedef, leaves)


def memory_budget(platform: str | None = None) -> int:
    """Bytes of copies and activations one chunk may hold (DEFAULT_MEMORY_BUDGET, any platform)."""
    return DEFAULT_MEMORY_BUDGET


def cache_budget(platform: str | None = None) -> int | None:
    """Bytes one chunk's stack of perturbed copies may take on `platform` (default: JAX's default backend),
    None for no limit; see CACHE_BUDGET."""
    return CACHE_BUDGET.get(platform or jax.default_backend())


def default_chunk_size(n_params: int, itemsize: int, activation_bytes: int, n_directions: int,
                       n_devices: int = 1, budget: int | None = None, cache: int | None | str = "auto") -> int:
    """Directions per chunk: the chunk fits the memory budget, and on a CPU its copies fit the cache budget.

    `n_params` is the size of what one direction copies (the perturbed leaf). The largest chunk is the smallest of
      budget // (3 * n_params * itemsize + activation_bytes)   (the copy, a relayout, slack; the activations,
                                                               see `intermediate_bytes`; budget default 256 MiB)
      cache // (n_params * itemsize)                           (cache default `cache_budget()`: 4 MiB on CPU)
      MAX_CHUNK,
    and at least 1. The directions are then split into the fewest chunks of at most that size (a multiple of
    n_devices of them) and the chunk size evened out over them, so that padding wastes less than one direction
    per chunk (23861 directions at a largest chunk of 314 give 76 chunks of 314).
    """
    budget = memory_budget() if budget is None else budget
    cache = cache_budget() if cache == "auto" else cache
    largest = budget // max(3 * n_params * itemsize + activation_bytes, 1)
    if cache is not None:
        largest = min(largest, cache // max(n_params * itemsize, 1))
    largest = int(max(1, min(largest, MAX_CHUNK)))
    n_chunks = -(-n_directions // largest)
    n_chunks = -(-n_chunks // n_devices) * n_devices
    return int(max(1, -(-n_directions // n_chunks)))


# --- shared checks of gradient estimators -------------------------------------------------------------------


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


def intermediate_bytes(cost: Callable, params, batch) -> int:
    """Bytes of every intermediate array of one `cost(params, batch)` call (top-level jaxpr equations).

    An upper bound on the activation memory one perturbed evaluation needs (XLA fuses and frees many of these),
    used to pick a default chunk size from a memory budget.
    """
    jaxpr = jax.make_jaxpr(cost)(params, batch).jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = getattr(var, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * jnp.dtype(aval.dtype).itemsize
    return int(total)
