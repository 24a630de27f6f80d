"""Meshes and shardings over the GLOBAL devices: one mesh helper, replicate / shard / gather, the jitted
program whose outputs are replicated.

One code path serves one device, several local devices and several processes: every mesh here is laid over
the global `jax.devices()` (all processes' devices once `gdjax.distributed.initialize` has run), so a function
jitted with shardings on that mesh computes its share of the work on each device and, with a replicated
output, hands every process the same result.

    >>> mesh = device_mesh(axis_name="batch")            # 1-D mesh over every device of every process
    >>> batch = shard_batch(batch, mesh)                 # every process passes the same full batch
    >>> params = replicate(params, mesh)
    >>> grads = jax.jit(jax.grad(cost))(params, batch)   # XLA all-reduces the per-device partial sums
    >>> local = gather(grads)                            # numpy arrays, identical on every process

The gradient estimators split their directions over such a mesh (`resolve_mesh`, `jit_replicated`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import _checks

DIRECTIONS = "directions"  # the axis the gradient estimators split their directions over
BATCH = "batch"  # the axis data parallelism splits examples over

__all__ = ["BATCH", "DIRECTIONS", "check_all_reduce", "device_mesh", "direction_mesh", "gather", "jit_replicated",
           "replicate", "replicated", "resolve_mesh", "shard_batch"]


def device_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = BATCH) -> Mesh:
    """A 1-D `Mesh` over `devices` (default: the GLOBAL `jax.devices()`, every process's), one axis `axis_name`.

    Because it spans the global device list, the same program runs unchanged when JAX is initialised
    multi-process. Data parallelism uses axis "batch" (default), the estimators' directions "directions".

    Args:
      devices: a non-empty sequence of distinct `jax.Device`s, or None for `jax.devices()`.
      axis_name: the mesh axis name.
    Returns:
      `Mesh(devices, (axis_name,))`.
    Example:
      >>> device_mesh().shape        # {'batch': jax.device_count()}
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
    if not isinstance(axis_name, str) or not axis_name:
        raise TypeError(f"axis_name must be a non-empty string such as 'batch', got {axis_name!r}")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def direction_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """`device_mesh(devices, "directions")`: the mesh the FD kernel and forward mode split directions over."""
    return device_mesh(devices, DIRECTIONS)


def resolve_mesh(devices=None, mesh: Mesh | None = None) -> Mesh | None:
    """The mesh an estimator splits its directions over, or None for a single device.

    `mesh` (any `jax.sharding.Mesh`; directions are split over all its axes) wins over `devices`; with neither,
    every device of `jax.devices()`. One device gives None: no sharding machinery at all.
    """
    if mesh is not None:
        if devices is not None:
            raise ValueError("pass either devices or mesh, not both")
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh (see gdjax.sharding.device_mesh), got "
                            f"{type(mesh).__name__}")
    else:
        mesh = direction_mesh(devices)
    return mesh if mesh.size > 1 else None


def replicated(mesh: Mesh | None):
    """`NamedSharding(mesh, PartitionSpec())` (every device holds all of it), or None without a mesh."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def jit_replicated(fn: Callable, mesh: Mesh | None) -> Callable:
    """`jax.jit(fn)` with its outputs replicated on every device of `mesh` (plain `jax.jit(fn)` without one)."""
    return jax.jit(fn) if mesh is None else jax.jit(fn, out_shardings=replicated(mesh))


def varying(tree, mesh: Mesh | None):
    """Inside `shard_map` over `mesh`, mark values built from replicated operands as varying over the mesh
    (each device holds its own), as `lax.scan` requires of a carry that meets per-device values."""
    if mesh is None:
        return tree
    axes = tuple(mesh.axis_names)
    if hasattr(jax.lax, "pcast"):  # jax >= 0.8
        return jax.tree_util.tree_map(lambda a: jax.lax.pcast(a, axes, to="varying"), tree)
    return jax.tree_util.tree_map(lambda a: jax.lax.pvary(a, axes), tree)


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. gdjax.sharding.device_mesh()), got "
                        f"{type(mesh).__name__}")
    return mesh


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    """A global jax.Array of `value` (the same host value on every process) laid out by `sharding`."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.device_put(value, sharding)  # already global: let XLA move it
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(value), sharding)  # typed PRNG keys travel as their raw data
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_batch(batch, mesh: Mesh, axis_name: str | None = None):
    """Split the leading (example) axis of every leaf of `batch` across the devices of `mesh`.

    Every process passes the same full batch (e.g. loaded with the same seed); each device keeps its slice.
    Args:
      batch: a pytree (e.g. `Batch(x: (N, n_in), y: (N, n_out))`); N must be divisible by the mesh size.
      mesh: a 1-D mesh (from `device_mesh`).
      axis_name: the mesh axis to shard over (default: the mesh's only axis).
    Returns:
      the same pytree of global `jax.Array`s, sharded as `PartitionSpec(axis_name)`.
    Example:
      >>> batch = shard_batch(Batch(x, y), device_mesh())
    """
    mesh = _check_mesh(mesh)
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"axis_name is needed for a mesh with several axes {mesh.axis_names}")
        axis_name = mesh.axis_names[0]
    _checks.choice(axis_name, mesh.axis_names, "mesh axis")
    n_dev = mesh.shape[axis_name]
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    if not leaves:
        raise ValueError("batch has no arrays to shard")
    out = []
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0 or shape[0] % n_dev:
            raise ValueError(
                f"the batch size (leading axis of shape {shape}) must be a positive multiple of the {n_dev} "
                f"devices on mesh axis {axis_name!r}; drop or pad examples, or use fewer devices"
            )
        out.append(_global_array(leaf, sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


def replicate(tree, mesh: Mesh):
    """Place a full copy of every leaf of `tree` (e.g. params) on every device of `mesh`; same pytree back."""
    sharding = replicated(_check_mesh(mesh))
    return jax.tree_util.tree_map(lambda leaf: _global_array(leaf, sharding), tree)


def gather(tree):
    """Every leaf as a host numpy array holding the full value, on every process (a collective when needed).

    Replicated leaves are read from a local copy; leaves split across processes are all-gathered
    (`jax.experimental.multihost_utils.process_allgather`), so every process must call this together.
    """
    from jax.experimental import multihost_utils

    def one(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def check_all_reduce(mesh: Mesh | None = None) -> int:
    """Sum a 1 held by each device of `mesh` (default: `device_mesh()`) with one jitted reduction; returns the
    sum, the device count, on every process, or raises ValueError when the collectives disagree."""
    mesh = device_mesh() if mesh is None else _check_mesh(mesh)
    ones = shard_batch(np.ones((mesh.size,), np.int32), mesh)
    total = int(gather(jit_replicated(jnp.sum, mesh)(ones)))
    if total != mesh.size:
        raise ValueError(f"an all-reduce over {mesh.size} devices returned {total}: the collectives are broken")
    return total
