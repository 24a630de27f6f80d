"""gdjax.profiling: timing statistics, XLA FLOP counts, memory analysis, matmul rate."""

import time

import jax
import jax.numpy as jnp
import pytest

from conftest import skip_or_fail
from gdjax import profiling


def test_time_fn_separates_compile_and_orders_stats():
    calls = []

    def slow_first(x):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)  # stands in for compilation
        return x + 1

    t = profiling.time_fn(slow_first, jnp.ones(3), repeats=4, warmup=1)
    assert len(calls) == 5 and len(t.times) == 4
    assert t.compile_s >= 0.05 > t.max_s
    assert 0 < t.min_s <= t.median_s <= t.max_s


def test_time_fn_measures_sleep_and_budget():
    t = profiling.time_fn(lambda: time.sleep(0.01), repeats=50, max_time=0.03)
    assert 2 <= len(t.times) <= 5  # stopped by the budget, not after 50
    assert t.median_s >= 0.01


def test_time_fn_validates():
    with pytest.raises(ValueError, match="repeats"):
        profiling.time_fn(jnp.sin, 1.0, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        profiling.time_fn(jnp.sin, 1.0, warmup=-1)
    assert profiling.time_fn(jnp.sin, 1.0, warmup=0, repeats=1).compile_s is None  # caller warmed up itself
    with pytest.raises(TypeError, match="fn must be callable"):
        profiling.time_fn(3)


def test_xla_flops_of_matmul():
    a = jnp.ones((32, 16), jnp.float32)
    b = jnp.ones((16, 8), jnp.float32)
    flops = profiling.xla_flops(jax.jit(jnp.matmul), a, b)
    if flops is None:
        skip_or_fail("this backend's XLA cost analysis reports no FLOPs")
    assert flops == pytest.approx(2 * 32 * 16 * 8, rel=0.05)
    # a plain function is jitted for the analysis
    assert profiling.xla_flops(jnp.matmul, a, b) == flops


def test_memory_bytes_of_matmul():
    a = jnp.ones((64, 32), jnp.float32)
    b = jnp.ones((32, 16), jnp.float32)
    m = profiling.memory_bytes(jax.jit(jnp.matmul), a, b)
    assert m is not None
    assert m["argument_bytes"] == 4 * (64 * 32 + 32 * 16)
    assert m["output_bytes"] == 4 * 64 * 16
    assert m["total_bytes"] >= m["argument_bytes"] + m["output_bytes"] - m["alias_bytes"]


def test_matmul_rate_positive_and_dtypes():
    r32 = profiling.matmul_rate(64, "float32", repeats=2)
    r64 = profiling.matmul_rate(64, "float64", repeats=2)
    assert r32 > 1e6 and r64 > 1e6  # any machine does a 64^3 matmul faster than 1 MFLOP/s
    with pytest.raises(TypeError, match="floating"):
        profiling.matmul_rate(8, "int32")
    with pytest.raises(ValueError, match="n must"):
        profiling.matmul_rate(0)


def test_device_info():
    info = profiling.device_info()
    assert info["platform"] == jax.devices()[0].platform
    assert info["device_count"] >= 1
    assert isinstance(info["device_kind"], str) and info["device_kind"]


def test_matmul_rate_float64_without_global_x64():
    import warnings

    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent truncation to float32 would warn
        assert profiling.matmul_rate(32, "float64", repeats=1) > 0
        assert not jax.config.jax_enable_x64  # switched on only locally
