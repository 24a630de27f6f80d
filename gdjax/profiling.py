"""Measuring a computation: wall time (the one interleaved-rounds timer: warm-up separated, async dispatch
waited for, ratios taken within rounds), XLA's FLOP count and memory footprint of the compiled program (loop
bodies counted with their trip counts), and the machine's matmul rate: the timer, the duration formatter and the
XLA cost statistics live here and nowhere else.

    >>> f = jax.jit(lambda p, b: cost(p, b))
    >>> t = time_fn(f, params, batch, repeats=5)       # Timing(median_s, min_s, max_s, compile_s, times)
    >>> wall, cpu = interleaved([(f, (params, batch)), (g, (params, batch))], rounds=5)   # same rounds, same load
    >>> round_ratios(wall[1], wall[0])                 # {"median", "min", "max", "rounds"} of per-round g / f
    >>> format_seconds(t.median_s)                     # "1.54 ms": the one duration formatter
    >>> xla_flops(f, params, batch)                    # FLOPs XLA counts, while/scan bodies x trip count (or None)
    >>> memory_bytes(f, params, batch)["temp_bytes"]
    >>> program_bytes(f, params, batch)                # argument + output + temp bytes of the program (or None)
    >>> device_peak_bytes()                            # the device's peak bytes in use so far (GPU; None on CPU)
    >>> matmul_rate(1024, "float32") / 1e9             # GFLOP/s of a jitted n x n matmul: the ceiling
    >>> matmul_reference([(1024,) * 3, (2048,) * 3])   # {"1024x1024x1024": FLOP/s, ...}: best of several shapes

No file I/O here; results go through `gdjax.results`.
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax import _checks

__all__ = ["Timing", "time_fn", "interleaved", "round_ratios", "format_seconds", "significant", "compiled", "xla_flops", "hlo_flops",
           "dot_flops", "memory_bytes", "program_bytes", "device_peak_bytes", "matmul_rate", "matmul_reference"]


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

    @classmethod
    def of(cls, times, compile_s: float | None = None) -> "Timing":
        """The statistics of per-call seconds `times` (non-empty)."""
        times = tuple(float(t) for t in times)
        return cls(statistics.median(times), min(times), max(times), compile_s, times)


def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1, max_time: float | None = None) -> Timing:
    """Time `fn(*args)` alone: `warmup` untimed calls (the first one's seconds are `compile_s`), then `repeats`
    timed calls through `interleaved` (the one timer: each call waited for with `jax.block_until_ready`).

    Args:
      fn: any callable returning JAX arrays (or a pytree of them); typically a `jax.jit`-ed function.
      *args: its arguments.
      repeats: timed calls (>= 1); fewer once `max_time` seconds are spent (at least one always runs).
      warmup: warm-up calls before timing (>= 1, so compilation never counts as run time; 0 only when the
        caller has already made the first call itself, e.g. of an ahead-of-time compiled executable).
      max_time: optional budget in seconds for the timed calls.
    Returns:
      a `Timing`.
    Example:
      >>> time_fn(jax.jit(jnp.sin), jnp.ones(1000), repeats=3).median_s
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = _checks.positive_int(repeats, "repeats")
    warmup = _checks.positive_int(warmup, "warmup", minimum=0)
    if max_time is not None:
        max_time = _checks.positive_float(max_time, "max_time")
    compile_s = None
    for i in range(warmup):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        compile_s = time.perf_counter() - t0 if i == 0 else compile_s
    wall, _ = interleaved([(fn, args)], repeats, max_time=max_time)
    return Timing.of(wall[0], compile_s)


def interleaved(calls, rounds: int, *, max_time: float | None = None, min_rounds: int = 1,
                warm: bool = False) -> tuple[list[list[float]], list[list[float]]]:
    """The one interleaved-rounds timer: call each `(fn, args)` of `calls` once per round, in order, so that all
    see the same machine state within a round and their ratios can be taken round by round (`round_ratios`).

    Args:
      calls: a sequence of `(fn, args)`; each call is waited for with `jax.block_until_ready`.
      rounds: rounds to run (>= 1); fewer once `max_time` seconds are spent, but at least `min_rounds`.
      warm: one untimed call of each first (compilation is never timed: compile ahead or warm up).
    Returns:
      (wall seconds, process CPU seconds): one list per call, one entry per round.
    """
    rounds = _checks.positive_int(rounds, "rounds")
    if warm:
        for fn, args in calls:
            jax.block_until_ready(fn(*args))
    wall, cpu = [[] for _ in calls], [[] for _ in calls]
    start = time.perf_counter()
    for _ in range(rounds):
        for (fn, args), w, c in zip(calls, wall, cpu):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*args))
            w.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
        if max_time is not None and len(wall[0]) >= min_rounds and time.perf_counter() - start > max_time:
            break
    return wall, cpu


def round_ratios(numerator, denominator) -> dict:
    """Median, min and max of the per-round ratios numerator[i] / denominator[i] (both sides timed in the same
    round by `interleaved`), and the number of rounds: {"median", "min", "max", "rounds"}. The ratio of the
    medians would mix rounds. ValueError for lists of different lengths or empty ones."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"need two equally long non-empty lists of per-round times, got {len(numerator)} and "
                         f"{len(denominator)}")
    r = [a / b for a, b in zip(numerator, denominator)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r), "rounds": len(r)}


def format_seconds(seconds) -> str:
    """The one human-readable duration: three significant digits and a unit, 53.0 us, 1.54 ms, 12.5 s,
    14.0 min, 2.10 h, 9.00 days (thousands separated above 999); None, NaN or inf -> '-'."""
    if seconds is None or not math.isfinite(float(seconds)):
        return "-"
    s = float(seconds)
    for unit, scale, limit in (("us", 1e-6, 1e-3), ("ms", 1e-3, 1.0), ("s", 1.0, 600.0), ("min", 60.0, 7200.0),
                               ("h", 3600.0, 172800.0), ("days", 86400.0, math.inf)):
        if abs(s) < limit:
            return f"{significant(s / scale)} {unit}"


def significant(x: float, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated: 0.0123, 4.46, 4,460."""
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if abs(x) >= 10 ** digits:
        return f"{round(x, digits - 1 - mag):,.0f}"
    return f"{x:.{max(digits - 1 - mag, 0)}f}"


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


def xla_flops(fn: Callable, *args, executable=None, loops: bool = True,
              complex_weighted: bool = False) -> float | None:
    """FLOPs of one call of `fn(*args)` from XLA's cost analysis of the compiled program.

    XLA's `cost_analysis` counts a while loop's body once (a `lax.scan` over K chunks reports about 1/K of the
    executed FLOPs). With `loops=True` the count is corrected: every while body (nested ones too) is counted
    `trip count` times, from the trip counts XLA annotates in the optimised HLO (`hlo_flops`). None when the
    backend gives no count, or when `loops=True` and a loop's trip count is not known.

    Args:
      fn: a jitted function (or any jittable one); ignored when `executable` is given.
      executable: an already compiled executable (`compiled(fn, *args)`) to avoid compiling twice.
      loops: multiply loop bodies by their trip counts (True), or XLA's raw count (False).
      complex_weighted: count complex arithmetic in real operations (`hlo_flops`): XLA counts a complex
        multiply-add as one real one (2 FLOPs), which runs 4 real multiplies and 4 real adds (8 FLOPs).
    """
    exe = compiled(fn, *args) if executable is None else executable
    try:
        d = _first_dict(exe.cost_analysis())
    except Exception:  # some backends raise NotImplementedError / XlaRuntimeError
        return None
    if not d or "flops" not in d or float(d["flops"]) < 0:
        return None
    flops = float(d["flops"])
    if not loops and not complex_weighted:
        return flops
    try:
        text = exe.as_text()
    except Exception:
        return None
    once, counted = hlo_flops(text, loops=False), hlo_flops(text, loops=loops, complex_weighted=complex_weighted)
    if counted is None or once is None:
        return None
    # XLA's own count plus the (trip count - 1) extra passes of every body and the complex operations' weight
    return flops + counted - once


def dot_flops(executable) -> float | None:
    """FLOPs of the dots and convolutions alone of a compiled program (loop bodies x trip count, complex ones
    weighted), from its optimised HLO (`hlo_flops(..., only_dots=True)`): the matmul work, without the random
    number generator's integer operations, elementwise work or reductions. None when not countable."""
    try:
        text = executable.as_text()
    except Exception:
        return None
    return hlo_flops(text, loops=True, complex_weighted=True, only_dots=True)


_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\((?:[^=]|/\*index=\d+\*/)*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?|\w+\[\]) "
                    r"([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"\w+\[([\d,]*)\]")
_COMPLEX = re.compile(r"^\(?c(?:64|128)\[")
# real operations per complex one: multiply (a+bi)(c+di) = 4 multiplies + 2 adds; a dot's multiply-add 4 + 4
# (XLA counts 2); divide by the textbook formula 6 multiplies + 3 adds + 2 divides; add / subtract / negate 2
_COMPLEX_WEIGHT = {"dot": 4.0, "convolution": 4.0, "multiply": 6.0, "divide": 11.0, "add": 2.0, "subtract": 2.0,
                   "negate": 2.0}
_TRANSCENDENTAL = {"exponential", "exponential-minus-one", "log", "log-plus-one", "tanh", "logistic", "sqrt",
                   "rsqrt", "cbrt", "power", "sine", "cosine", "tan", "atan2", "erf"}
_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "compare",
                "select", "clamp", "remainder", "sign", "floor", "ceil", "round-nearest-afz", "round-nearest-even",
                "and", "or", "xor", "not", "real", "imag", "complex", "atan2"}


def _elements(shape_text: str) -> int:
    m = _SHAPE.match(shape_text)
    if not m:
        return 0
    return math.prod(int(d) for d in m.group(1).split(",") if d) if m.group(1) else 1


def hlo_flops(text: str, loops: bool = True, complex_weighted: bool = False,
              only_dots: bool = False) -> float | None:
    """FLOPs of an optimised HLO module (`compiled.as_text()`), counted from its instructions.

    dot: 2 x output elements x contracted size; elementwise arithmetic: one per output element (transcendental
    functions are not FLOPs, as in XLA's cost analysis); reduce and scatter: one per input / update element;
    fusions, calls and loop bodies: their computation's count. With `loops=True` a while body counts `n` times
    for its `known_trip_count` n (None when a loop has none); with `loops=False`, once, as XLA's
    `cost_analysis` does. Used by `xla_flops` for the loop correction; the absolute count is close to XLA's.
    convolution: 2 x output elements x kernel window x input features per group. `complex_weighted`: an
    instruction with a complex result counts its real operations (`_COMPLEX_WEIGHT`: a dot's multiply-add 4x,
    a multiply 6x, ...; XLA counts each as one real operation). `only_dots`: dots and convolutions only.
    """
    comps: dict[str, list] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            m = _COMP.match(line)
            if m and "->" in line:
                current = comps.setdefault(m.group(1), [])
                entry = m.group(1) if line.startswith("ENTRY") else entry
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _INSTR.match(line)
        if m:
            current.append(m.groups())
    if entry is None:
        return None
    memo: dict[str, float | None] = {}

    def total(name):
        if name not in memo:
            memo[name] = None  # recursion guard
            memo[name] = _computation_flops(comps.get(name, []), total, loops, complex_weighted, only_dots)
        return memo[name]

    return total(entry)


def _conv_flops(shape: str, rest: str, shapes: dict) -> float:
    """2 x output elements x (kernel window x input features per group), from the kernel's shape and dim_labels."""
    operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    labels = re.search(r"dim_labels=\w+_(\w+)->", rest)
    dims = _SHAPE.match(shapes.get(operands[1], "")) if len(operands) > 1 else None
    if labels is None or dims is None:
        return 0.0
    kernel = [int(d) for d in dims.group(1).split(",") if d]
    per_output = math.prod(d for d, c in zip(kernel, labels.group(1)) if c != "o")  # window x input features
    return 2.0 * _elements(shape) * per_output


def _computation_flops(instrs, total, loops, weighted=False, only_dots=False):
    shapes = {name: shape for name, shape, _, _ in instrs}
    flops = 0.0
    for name, shape, op, rest in instrs:
        w = _COMPLEX_WEIGHT.get(op, 2.0) if weighted and _COMPLEX.match(shape) else 1.0
        if only_dots and op not in ("dot", "convolution", "while", "fusion", "call", "conditional"):
            continue
        if op == "convolution":
            flops += w * _conv_flops(shape, rest, shapes)
        elif op == "dot":
            operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
            dims = _SHAPE.match(shapes.get(operands[0], "")) if operands else None
            contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
            if dims is None or contract is None:
                continue
            lhs = [int(d) for d in dims.group(1).split(",") if d]
            k = math.prod(lhs[int(i)] for i in contract.group(1).split(",") if i)
            flops += w * 2.0 * _elements(shape) * k
        elif op in _ELEMENTWISE:
            flops += w * _elements(shape)
        elif op in ("reduce", "scatter"):
            operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
            idx = 0 if op == "reduce" else 2
            if len(operands) > idx:
                src = shapes.get(operands[idx], "")
                flops += (2.0 if weighted and _COMPLEX.match(src) else 1.0) * _elements(src)
        elif op == "while":
            body = re.search(r"body=%([\w.\-]+)", rest)
            trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
            if loops and trip is None:
                return None
            inner = total(body.group(1)) if body else 0.0
            if inner is None:
                return None
            flops += inner * (int(trip.group(1)) if loops else 1)
        else:
            for called in re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", rest):
                if op in ("reduce", "scatter", "map", "sort", "reduce-window", "select-and-scatter"):
                    break
                inner = total(called)
                if inner is None:
                    return None
                flops += inner
    return flops


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
    out["device_peak_bytes"] = device_peak_bytes()
    return out


def program_bytes(fn: Callable, *args, executable=None) -> int | None:
    """Bytes the compiled program of `fn(*args)` needs on its device: arguments + outputs + temporaries (less
    what outputs alias arguments), from XLA's `memory_analysis()` (`memory_bytes(...)["total_bytes"]`); None
    where the backend reports no analysis. A static figure, the same on every platform; the device's own peak
    while it runs is `device_peak_bytes`.

    Example: `program_bytes(jax.jit(jnp.matmul), a, b)` -> a.nbytes + b.nbytes + the output's bytes (+ temps).
    """
    mem = memory_bytes(fn, *args, executable=executable)
    return None if mem is None else mem["total_bytes"]


def device_peak_bytes(device=None) -> int | None:
    """The most bytes `device` (default: `jax.devices()[0]`) has held at once since the process started:
    `device.memory_stats()["peak_bytes_in_use"]` (GPUs, TPUs). None where the device keeps no statistics (the
    CPU). The peak of the process so far, not of one program: measure the biggest program last, or read it
    in a fresh process, to attribute it."""
    try:
        stats = (jax.devices()[0] if device is None else device).memory_stats()
    except Exception:  # a backend without statistics may raise instead of returning None
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


def matmul_rate(n: int = 2048, dtype="float32", repeats: int = 5, device=None, shape=None) -> float:
    """Achieved FLOP/s of a jitted `(n, n) @ (n, n)` matmul (2 n^3 FLOPs), median of `repeats` after warm-up;
    `shape=(m, k, n)` times `(m, k) @ (k, n)` instead (2 m k n FLOPs).

    The ceiling FD can approach: its kernel is a batch of matmuls. float64 is measured with x64 switched on
    locally. Example: `matmul_rate(1024, "float64") / 1e9` -> GFLOP/s.
    """
    n = _checks.positive_int(n, "n")
    m, k, n = (n, n, n) if shape is None else (_checks.positive_int(d, "shape") for d in shape)
    repeats = _checks.positive_int(repeats, "repeats")
    dt = jnp.dtype(dtype)
    if dt.name not in ("float32", "float64", "bfloat16", "float16"):
        raise TypeError(f"dtype must be a real floating type such as float32 or float64, got {dt.name}")
    with _x64_if(dt.itemsize == 8):
        ka, kb = jax.random.split(jax.random.key(0))
        a = jax.random.normal(ka, (m, k), dt)
        b = jax.random.normal(kb, (k, n), dt)
        if device is not None:
            a, b = jax.device_put(a, device), jax.device_put(b, device)
        mm = jax.jit(jnp.matmul)
        t = time_fn(mm, a, b, repeats=repeats, warmup=2)
    return 2.0 * m * k * n / t.median_s


def matmul_reference(shapes, dtype="float32", repeats: int = 3, device=None) -> dict[str, float]:
    """Matmul rates of several shapes, FLOP/s by "MxKxN": e.g. 1024^3, 2048^3 and the FD kernel's own batched
    first-layer matmul (N x n_in x chunk*h1). The reference of a run is the best of them (`max(d.values())`)."""
    out = {}
    for shape in shapes:
        m, k, n = (int(d) for d in shape)
        out[f"{m}x{k}x{n}"] = matmul_rate(n, dtype, repeats=repeats, device=device, shape=(m, k, n))
    return out
