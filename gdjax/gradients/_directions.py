"""Chunked maps over directions in parameter space, split across devices; shared checks of estimators.

The FD kernel and forward mode both evaluate one scalar per direction (a perturbed cost, a jvp along a basis
vector) for P directions. Doing all P at once (`vmap`) needs P copies of the parameters and activations;
a Python loop pays one dispatch per direction. `map_directions` sits in between: `chunk_size` directions at a
time under `vmap` (so XLA sees one big batched program: for an MLP, the first layer of all the perturbed
networks becomes ONE matmul `(N, n_in) @ (n_in, chunk * n_hidden)`), the chunks in sequence under `lax.map`,
and, given a mesh of several devices, the chunks split across the devices with `jax.shard_map`.

    >>> mesh = direction_mesh()                     # 1-D Mesh over the global jax.devices(), axis "directions"
    >>> ys = map_directions(lambda ops, i: ops * i, 2.0, jnp.arange(10), chunk_size=4, mesh=mesh)
    >>> ys                                          # (10,) = 2 * arange(10), identical with or without mesh
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import _checks

AXIS = "directions"
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of perturbed parameters and activations held at once
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


def padded_length(n: int, chunk_size: int, n_devices: int = 1) -> int:
    """`n` rounded up to a multiple of `chunk_size * n_devices` (directions are padded to whole chunks)."""
    step = chunk_size * n_devices
    return -(-n // step) * step


def map_directions(fn: Callable, operands, xs, chunk_size: int, mesh: Mesh | None = None):
    """`ys[i] = fn(operands, xs[i])` for every i: `chunk_size` at a time under vmap, chunks under lax.map.

    `operands` are shared by every direction (vmap in_axes None, replicated across devices): the parameters
    and the batch, so that XLA batches the directions into the weights and keeps the data unbatched.
    The direction axis is padded with copies of `xs[0]` to whole chunks (times the device count); the padding is
    computed and dropped. With the same `chunk_size`, every chunk holds the same directions with or without
    a mesh, so the sharded result equals the single-device one.

    Args:
      fn: `fn(operands, x) -> pytree of arrays` for one direction `x` (a pytree slice of `xs`).
      operands: any pytree of arrays, shared.
      xs: pytree of arrays with a common leading axis of length n >= 1 (the directions).
      chunk_size: directions per vmapped chunk (per device), >= 1.
      mesh: a Mesh to split the chunks over (see `resolve_mesh`), or None.
    Returns:
      pytree like `fn`'s output with a leading axis n.
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
        batched = jax.vmap(fn, in_axes=(None, 0))
        if m == chunk_size:  # one chunk: no loop
            return batched(ops, xs_local)
        chunks = jax.tree_util.tree_map(lambda a: a.reshape(m // chunk_size, chunk_size, *a.shape[1:]), xs_local)
        ys = jax.lax.map(lambda c: batched(ops, c), chunks)
        return jax.tree_util.tree_map(lambda y: y.reshape(m, *y.shape[2:]), ys)

    xs = jax.tree_util.tree_map(pad, xs)
    if mesh is None:
        ys = local(operands, xs)
    else:
        spec = PartitionSpec(tuple(mesh.axis_names))
        ys = jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), spec), out_specs=spec)(operands, xs)
    return jax.tree_util.tree_map(lambda y: y[:n], ys)


def default_chunk_size(n_params: int, itemsize: int, activation_bytes: int, n_directions: int,
                       n_devices: int = 1, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Directions per chunk so that one chunk's perturbed params and activations fit in `budget` bytes.

    per-direction bytes = 3 * n_params * itemsize + activation_bytes; chunk = budget // that, clipped to
    [1, min(MAX_CHUNK, directions per device)].
    """
    per_direction = 3 * n_params * itemsize + activation_bytes
    chunk = max(1, budget // max(per_direction, 1))
    per_device = -(-n_directions // n_devices)
    return int(max(1, min(chunk, MAX_CHUNK, per_device)))


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
