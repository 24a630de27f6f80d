"""Shared fixtures. Tests run on the CPU in float64 unless a test asks for float32 explicitly."""

import importlib.util
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

import gdjax
from gdjax.data import Batch, one_hot
from gdjax.nn import MLP

jax.config.update("jax_enable_x64", True)  # gradient tests compare in float64 (dtype is explicit elsewhere)
jax.config.update("jax_numpy_rank_promotion", "raise")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# JAX's persistent compilation cache, so that a second pytest process loads the programs the first compiled
# (compile time only: no result depends on it). Opt out with GDJAX_COMPILATION_CACHE=off, or point it elsewhere
# with GDJAX_COMPILATION_CACHE=/path.
_CACHE = os.environ.get("GDJAX_COMPILATION_CACHE", "")
if _CACHE.lower() not in ("0", "off", "no", "false"):
    gdjax.enable_compilation_cache(_CACHE or Path(tempfile.gettempdir()) / f"gdjax-jax-cache-{os.getuid()}",
                                   min_compile_seconds=1.0)
ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str):
    """Import a script of the repository (e.g. "benchmarks/fd_kernel.py") as a module, to call its functions."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_case(sizes, act, out, loss, l2, dtype="float64", seed=0, n=8):
    """A random MLP problem for gradient tests: (cost, params, batch) with n examples x ~ U[0, 1], cyclic labels."""
    net = MLP(sizes, act, out)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = net.init(k1, dtype=dtype)
    x = jax.random.uniform(k2, (n, sizes[0]), jax.numpy.dtype(dtype))
    y = one_hot(np.arange(n) % sizes[-1], sizes[-1], dtype)
    return gdjax.make_cost(net, loss, l2), params, Batch(x, y)


def skip_or_fail(reason: str):
    """Skip a test that needs an optional resource, but fail under CI=true where the resource must exist."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(f"{reason} (skipped outside CI only)")


@pytest.fixture
def key():
    return jax.random.key(0)
