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


def test_interleaved_runs_each_call_once_per_round_in_order():
    """Catches: rounds not interleaved (all repeats of one call, then the next), warm-up calls counted as
    rounds, and a time cap that cuts below `min_rounds`."""
    order = []
    calls = [(lambda: order.append("a"), ()), (lambda: order.append("b"), ())]
    wall, cpu = profiling.interleaved(calls, 3, warm=True)
    assert order == ["a", "b"] * 4  # one warm-up call each, then 3 rounds
    assert [len(w) for w in wall] == [len(c) for c in cpu] == [3, 3] and min(wall[0] + wall[1]) >= 0
    wall, _ = profiling.interleaved([(time.sleep, (0.01,))], 50, max_time=0.005, min_rounds=2)
    assert len(wall[0]) == 2 and min(wall[0]) >= 0.01


def test_round_ratios_are_the_median_of_same_round_ratios_not_the_ratio_of_medians():
    """Catches: ratios of medians (which mix rounds). The numerator was disturbed in round 2 only; per round the
    ratios are 1, 10, 1 (median 1), while median(a) / median(b) would read 10 / 1 = 10."""
    r = profiling.round_ratios([1.0, 10.0, 100.0], [1.0, 1.0, 100.0])
    assert r == {"median": 1.0, "min": 1.0, "max": 10.0, "rounds": 3}
    with pytest.raises(ValueError, match="equally long"):
        profiling.round_ratios([1.0, 2.0], [1.0])


@pytest.mark.parametrize("seconds, text", [
    (53e-6, "53.0 us"), (1.544e-3, "1.54 ms"), (0.5, "500 ms"), (12.49, "12.5 s"), (90, "90.0 s"),
    (840, "14.0 min"), (7560, "2.10 h"), (3 * 86400, "3.00 days"), (1e9, "11,600 days"),
    (None, "-"), (float("nan"), "-"), (float("inf"), "-")])
def test_format_seconds(seconds, text):
    """Catches: a unit boundary off by a factor (600 s -> min, 7200 s -> h, 2 days -> days), digits that are not
    three significant ones, and a missing value printed as a number."""
    assert profiling.format_seconds(seconds) == text


def test_timing_of():
    t = profiling.Timing.of([0.3, 0.1, 0.2], compile_s=1.0)
    assert (t.median_s, t.min_s, t.max_s, t.compile_s, t.times) == (0.2, 0.1, 0.3, 1.0, (0.3, 0.1, 0.2))


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


def _mlp_chunks(unroll):
    """A tiny MLP cost over K = 6 chunks of 4 perturbed copies of its first layer, under lax.scan."""
    x = jnp.ones((16, 8), jnp.float32)
    w1, w2 = jnp.ones((8, 12), jnp.float32) * 0.1, jnp.ones((12, 3), jnp.float32) * 0.1
    pert = jnp.ones((6, 4, 8, 12), jnp.float32) * 1e-3

    def cost(w):
        return jnp.sum(jnp.tanh(jnp.tanh(x @ w) @ w2) ** 2)

    def f(w1, pert):
        def body(carry, p):
            return carry, jax.vmap(lambda d: cost(w1 + d))(p)
        return jax.lax.scan(body, 0.0, pert, unroll=unroll)[1]

    return jax.jit(f), (w1, pert)


def test_loop_flops_counted_with_trip_count():
    """A scan over 6 chunks counts its body 6 times, as the unrolled program does (XLA's raw count has it once:
    fails if trip counts are ignored, or applied to the code outside the loop)."""
    looped, args = _mlp_chunks(unroll=1)
    unrolled, _ = _mlp_chunks(unroll=True)
    counted = profiling.xla_flops(looped, *args)
    raw = profiling.xla_flops(looped, *args, loops=False)
    reference = profiling.xla_flops(unrolled, *args, loops=False)
    if counted is None or reference is None:
        skip_or_fail("this backend's XLA cost analysis reports no FLOPs")
    assert "while" not in profiling.compiled(unrolled, *args).as_text() or reference > 3 * raw
    assert counted == pytest.approx(reference, rel=0.05)
    assert raw < counted / 4  # the body once
    # the analytic count of the 24 forward passes' matmuls is inside both
    matmuls = 24 * 2 * 16 * (8 * 12 + 12 * 3)
    assert matmuls <= counted < 1.5 * matmuls + 24 * 16 * 12 * 4


def test_hlo_flops_of_a_dot():
    """The HLO counter gives 2 m k n for a matmul, as XLA's cost analysis does."""
    exe = profiling.compiled(jnp.matmul, jnp.ones((32, 16)), jnp.ones((16, 8)))
    assert profiling.hlo_flops(exe.as_text()) == pytest.approx(2 * 32 * 16 * 8, rel=0.05)
    assert profiling.hlo_flops("not an HLO module") is None


def test_matmul_reference_shapes():
    """One rate per requested shape, keyed MxKxN (fails if a shape is dropped or timed as a square)."""
    ref = profiling.matmul_reference([(64, 64, 64), (32, 16, 8)], repeats=1)
    assert list(ref) == ["64x64x64", "32x16x8"] and all(v > 1e6 for v in ref.values())


def test_matmul_rate_float64_without_global_x64():
    import warnings

    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent truncation to float32 would warn
        assert profiling.matmul_rate(32, "float64", repeats=1) > 0
        assert not jax.config.jax_enable_x64  # switched on only locally


def test_program_bytes_counts_arguments_outputs_and_temporaries():
    """argument + output (+ temp) bytes of the compiled program, grown with the arguments; None when the
    backend gives no analysis (an executable whose memory_analysis() returns None or raises)."""
    a, b = jnp.ones((64, 32), jnp.float32), jnp.ones((32, 16), jnp.float32)
    small = profiling.program_bytes(jax.jit(jnp.matmul), a, b)
    assert small >= 4 * (64 * 32 + 32 * 16 + 64 * 16)
    assert small == profiling.memory_bytes(jax.jit(jnp.matmul), a, b)["total_bytes"]
    big = profiling.program_bytes(jax.jit(jnp.matmul), jnp.ones((640, 32), jnp.float32), b)
    assert big - small >= 4 * (576 * 32 + 576 * 16)  # 576 more rows of a and of the output

    class NoAnalysis:
        def memory_analysis(self):
            return None

    class Raises:
        def memory_analysis(self):
            raise NotImplementedError

    assert profiling.program_bytes(None, executable=NoAnalysis()) is None
    assert profiling.program_bytes(None, executable=Raises()) is None


def test_device_peak_bytes():
    """The device's peak_bytes_in_use where it keeps statistics (a GPU, faked here); None on the CPU, on a
    device whose statistics lack the peak, and on one that raises."""
    class Device:
        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            if isinstance(self.stats, Exception):
                raise self.stats
            return self.stats

    assert profiling.device_peak_bytes(Device({"peak_bytes_in_use": 123, "bytes_in_use": 7})) == 123
    assert profiling.device_peak_bytes(Device({"bytes_in_use": 7})) is None
    assert profiling.device_peak_bytes(Device(None)) is None
    assert profiling.device_peak_bytes(Device(RuntimeError("no stats"))) is None
    if jax.devices()[0].platform == "cpu":
        assert profiling.device_peak_bytes() is None
        assert profiling.memory_bytes(jax.jit(jnp.sin), jnp.ones(3))["device_peak_bytes"] is None
