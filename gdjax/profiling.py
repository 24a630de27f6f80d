"""Measuring a computation: wall time (warm-up separated, async dispatch waited for), XLA's FLOP count and
memory footprint of the compiled program, the machine's matmul rate, and which device ran it.

    >>> f = jax.jit(lambda p, b: cost(p, b))
    >>> t = time_fn(f, params, batch, repeats=5)       # Timing(median_s, min_s, max_s, compile_s, times)
    >>> xla_flops(f, params, batch)                    # FLOPs XLA counts in the compiled program (or None)
    >>> memory_bytes(f, params, batch)["temp_bytes"]
    >>> matmul_rate(1024, "float32") / 1e9             # GFLOP/s of a jitted n x n matmul: the ceiling

No file I/O here; results go through `gdjax.results`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax import _checks

__all__ = ["Timing", "time_fn", "compiled", "xla_flops", "memory_bytes", "matmul_rate", "device_info"]


class Timing(NamedTuple):
    """Wall-clock seconds of one call after warm-up.

    Attributes:
      median_s, min_s, max_s: statistics of `times`.
      compile_s: seconds of the first warm-up call (tracing + compilation + one run), timed separately;
        None when `warmup=0`.
      times: the per-call seconds of every timed repeat.
    """

    median_s: float
    min_s: float
    max_s: float
    compile_s: float | None
    times: tuple[float, ...]


def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1, number: int = 1,
            max_time: float | None = None) -> Timing:
    """Time `fn(*args)`: `warmup` untimed-in-the-statistics calls (the first one's time is `compile_s`),
    then `repeats` timed calls, each waited for with `jax.block_until_ready`.

    Args:
      fn: any callable returning JAX arrays (or a pytree of them); typically a `jax.jit`-ed function.
      *args: its arguments.
      repeats: timed repetitions (>= 1).
      warmup: warm-up calls before timing (>= 1, so compilation never counts as run time; 0 only when the
        caller has already made the first call itself, e.g. of an ahead-of-time compiled executable).
      number: calls per timed repetition (>= 1); each entry of `times` is the mean over them (for tiny
        functions where one call is near the timer's resolution).
      max_time: optional budget in seconds for the timed repeats: stop early once exceeded (at least one
        repeat always runs).
    Returns:
      a `Timing`.
    Example:
      >>> time_fn(jax.jit(jnp.sin), jnp.ones(1000), repeats=3).median_s
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = _checks.positive_int(repeats, "repeats")
    warmup = _checks.positive_int(warmup, "warmup", minimum=0)
    number = _checks.positive_int(number, "number")
    if max_time is not None:
        max_time = _checks.positive_float(max_time, "max_time")
    compile_s = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        if compile_s is None:
            compile_s = time.perf_counter() - t0
    times = []
    spent = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn(*args)
        jax.block_until_ready(out)
        dt = time.perf_counter() - t0
        spent += dt
        times.append(dt / number)
        if max_time is not None and spent > max_time:
            break
    return Timing(statistics.median(times), min(times), max(times), compile_s, tuple(times))


def compiled(fn: Callable, *args):
    """The compiled XLA executable of `fn` for `args` (`fn` jitted here if it has no `.lower`)."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return jitted.lower(*args).compile()


def _first_dict(analysis):
    # cost_analysis() returns a dict (jax >= 0.4.3x) or a list with one dict per program (older versions).
    if isinstance(analysis, dict):
        return analysis
    if isinstance(analysis, list | tuple) and analysis and isinstance(analysis[0], dict):
        return analysis[0]
    return None


def xla_flops(fn: Callable, *args, executable=None) -> float | None:
    """FLOPs of one call of `fn(*args)` as counted by XLA's cost analysis of the compiled program.

    None when the backend gives no count. Caveat: XLA counts a loop body once (a `lax.map`/`scan` over K
    chunks reports about 1/K of the executed FLOPs); compare with the analytic count.

    Args:
      fn: a jitted function (or any jittable one).
      executable: an already compiled executable (`compiled(fn, *args)`) to avoid compiling twice.
    """
    exe = compiled(fn, *args) if executable is None else executable
    try:
        d = _first_dict(exe.cost_analysis())
    except Exception:  # some backends raise NotImplementedError / XlaRuntimeError
        return None
    if not d or "flops" not in d:
        return None
    flops = float(d["flops"])
    return flops if flops >= 0 else None


def memory_bytes(fn: Callable, *args, executable=None) -> dict | None:
    """Memory of the compiled program for `fn(*args)`, from `compiled.memory_analysis()`.

    Returns a dict of ints (None if the backend reports nothing): argument_bytes, output_bytes, temp_bytes,
    alias_bytes, generated_code_bytes, total_bytes (= argument + output + temp - alias, the program's
    footprint) and, where the device keeps statistics (GPUs), device_peak_bytes (`peak_bytes_in_use` of
    the process so far, not of this program alone).
    """
    exe = compiled(fn, *args) if executable is None else executable
    try:
        m = exe.memory_analysis()
    except Exception:
        m = None
    if m is None:
        return None
    out = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "generated_code_bytes": int(m.generated_code_size_in_bytes),
    }
    out["total_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    out["device_peak_bytes"] = _device_peak_bytes()
    return out


def _device_peak_bytes() -> int | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


@contextlib.contextmanager
def _x64_if(needed: bool):
    if needed and not jax.config.jax_enable_x64:
        if hasattr(jax, "enable_x64"):
            with jax.enable_x64(True):
                yield
            return
        jax.config.update("jax_enable_x64", True)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", False)
        return
    yield


def matmul_rate(n: int = 2048, dtype="float32", repeats: int = 5, device=None) -> float:
    """Achieved FLOP/s of a jitted `(n, n) @ (n, n)` matmul (2 n^3 FLOPs), median of `repeats` after warm-up.

    The ceiling FD can approach: its kernel is a batch of matmuls. float64 is measured with x64 switched on
    locally. Example: `matmul_rate(1024, "float64") / 1e9` -> GFLOP/s.
    """
    n = _checks.positive_int(n, "n")
    repeats = _checks.positive_int(repeats, "repeats")
    dt = jnp.dtype(dtype)
    if dt.name not in ("float32", "float64", "bfloat16", "float16"):
        raise TypeError(f"dtype must be a real floating type such as float32 or float64, got {dt.name}")
    with _x64_if(dt.itemsize == 8):
        ka, kb = jax.random.split(jax.random.key(0))
        a = jax.random.normal(ka, (n, n), dt)
        b = jax.random.normal(kb, (n, n), dt)
        if device is not None:
            a, b = jax.device_put(a, device), jax.device_put(b, device)
        mm = jax.jit(jnp.matmul)
        t = time_fn(mm, a, b, repeats=repeats, warmup=2)
    return 2.0 * n**3 / t.median_s


def device_info(device=None) -> dict:
    """Which device runs the computation: platform, device_kind, device_name, device_count, backend and,
    when the device reports it, memory_limit_bytes."""
    dev = jax.devices()[0] if device is None else device
    info = {
        "platform": str(dev.platform),
        "device_kind": str(dev.device_kind),
        "device_name": str(dev),
        "device_count": len(jax.devices(dev.platform)),
        "backend": jax.default_backend(),
        "memory_limit_bytes": None,
    }
    try:
        stats = dev.memory_stats()
    except Exception:
        stats = None
    if stats and "bytes_limit" in stats:
        info["memory_limit_bytes"] = int(stats["bytes_limit"])
    return info
