"""gdjax.sharding on one device: the mesh helper and its checks, resolve_mesh, shard / replicate / gather.
(Several devices and processes: test_distributed.py and test_finite_diff.py's sharded test.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax import sharding


def test_device_mesh_and_its_checks():
    """One helper for every mesh: the axis name asked for, the global devices by default; bad devices refused
    with the argument named (a mesh over nothing, or over the same device twice, would fail later and deep)."""
    mesh = sharding.device_mesh()
    assert mesh.axis_names == (sharding.BATCH,) and mesh.size == len(jax.devices())
    assert sharding.direction_mesh().axis_names == (sharding.DIRECTIONS,)
    assert gdjax.direction_mesh().axis_names == (sharding.DIRECTIONS,)  # the public alias
    assert sharding.resolve_mesh(jax.devices()[:1]) is None  # one device: no sharding at all
    with pytest.raises(ValueError, match="devices must not be empty"):
        sharding.device_mesh([])
    with pytest.raises(ValueError, match="distinct"):
        sharding.device_mesh([jax.devices()[0]] * 2)
    with pytest.raises(TypeError, match="sequence of jax.Device"):
        sharding.device_mesh(jax.devices()[0])
    with pytest.raises(TypeError, match="axis_name"):
        sharding.device_mesh(axis_name="")
    with pytest.raises(ValueError, match="either devices or mesh"):
        sharding.resolve_mesh(jax.devices(), mesh)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        sharding.resolve_mesh(mesh="data")


def test_jit_replicated_and_all_reduce_on_one_device():
    """Without a mesh `jit_replicated` is plain jit; with one its outputs are replicated; the all-reduce check
    returns the device count (a broken reduction would not)."""
    f = sharding.jit_replicated(lambda x: x * 2, None)
    np.testing.assert_array_equal(f(jnp.arange(3)), [0, 2, 4])
    mesh = sharding.device_mesh()
    out = sharding.jit_replicated(lambda x: x + 1, mesh)(jnp.arange(3))
    assert out.sharding.is_fully_replicated
    assert sharding.check_all_reduce(mesh) == mesh.size


def test_shard_batch_and_replicate_on_one_device():
    import jax.numpy as jnp

    mesh = sharding.device_mesh()
    batch = gdjax.Batch(jnp.arange(12.0).reshape(6, 2), jnp.ones((6, 3)))
    sharded = sharding.shard_batch(batch, mesh)
    assert isinstance(sharded, gdjax.Batch) and sharded.x.shape == (6, 2)
    np.testing.assert_array_equal(sharding.gather(sharded.x), np.asarray(batch.x))
    with pytest.raises(TypeError, match="Mesh"):
        sharding.shard_batch(batch, "mesh")
    with pytest.raises(ValueError, match="multiple of"):
        sharding.shard_batch(gdjax.Batch(jnp.zeros(()), jnp.zeros(())), mesh)
