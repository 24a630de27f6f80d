"""Measuring one point of the benchmark: the forward pass alone, or one gradient method, timed whole or on a
subset of its own program and extrapolated (`gdjax.bench.policy` decides), with XLA FLOPs (loops counted with
their trip counts), memory, and the error against a float64 `jax.grad`. One row (a flat dict) per point.

    >>> fwd = measure_forward(point, cost, params, batch, repeats=3, budget=40.0)
    >>> row, check = measure_method(point, cost, params, batch, t_forward=fwd["median_s"],
    ...                             forward_flops=fwd["xla_flops"], reference=ref, key=key, repeats=3, budget=40.0)

What a row holds (every time is per gradient, after compilation, which is `compile_s`):
  median_s / min_s / max_s, how (`whole` or `extrapolated`), measured_directions / total_directions,
  evaluations (the estimator's count, None for autodiff), xla_flops (of the program timed, scaled to the whole
  gradient when extrapolated), analytic_flops (evaluations x forward FLOPs, for black-box methods),
  forward_equivalents (xla_flops / the forward pass's xla_flops), memory of the compiled program, rel_error
  against a float64 `jax.grad` (whole gradients only). `peak_fraction` is set by the sweep, once, against the
  run's matmul reference.
"""

from __future__ import annotations

import statistics
import time

import jax

from gdjax import profiling
from gdjax.bench import policy
from gdjax.bench.config import Point
from gdjax.bench.problem import flat_numpy, relative_error
from gdjax.gradients import gradient, method_info
from gdjax.nn import MLP, param_count

__all__ = ["base_row", "measure_forward", "measure_method"]


def base_row(point: Point, dtype: str) -> dict:
    """The fields every row has, whatever happens to the measurement."""
    return {"id": point.id(dtype), "group": point.group, "sizes": "-".join(map(str, point.sizes)),
            "P": param_count(point.sizes), "batch_size": point.batch_size, "dtype": dtype, "method": point.method,
            "forward_flops": float(MLP(point.sizes).forward_flops(point.batch_size)), "status": "ok"}


def _compile(fn, *args):
    """jit + lower + compile `fn` for `args`; returns (executable, seconds spent compiling)."""
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def _stats(exe, scale: float = 1.0) -> dict:
    """XLA FLOPs (loops x trip count; scaled) and memory of a compiled program, as row fields."""
    flops = profiling.xla_flops(None, executable=exe)
    mem = profiling.memory_bytes(None, executable=exe) or {}
    out = {"xla_flops": None if flops is None else flops * scale, "xla_flops_raw": flops}
    for k in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes", "device_peak_bytes"):
        out[f"memory_{k}"] = mem.get(k)
    return out


def _time_with_output(fn, args, repeats: int, budget: float, predicted: float):
    """Time `fn(*args)` and keep one output (for the error). The first call is a warm-up when the call is
    predicted to take at most a quarter of the budget, else it is the first timed call (a jitted program is
    compiled ahead of time and fd-loop's per-direction programs by its pilot, so what a long first call adds is
    negligible beside it); more calls follow, up to `repeats` timed ones, while their total stays within half
    the budget. Returns (Timing, output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    if predicted <= budget / 4:
        return profiling.time_fn(fn, *args, repeats=repeats, warmup=0, max_time=budget / 2), out
    times = [first]
    while len(times) < repeats and sum(times) + statistics.median(times) <= budget / 2:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return profiling.Timing(statistics.median(times), min(times), max(times), None, tuple(times)), out


def _put_timing(row: dict, timing: profiling.Timing, scale: float) -> None:
    row.update({"median_s": timing.median_s * scale, "min_s": timing.min_s * scale, "max_s": timing.max_s * scale,
                "measured_median_s": timing.median_s, "repeats": len(timing.times), "scale": scale,
                "times": [t * scale for t in timing.times]})


def measure_forward(point: Point, cost, params, batch, *, dtype: str, repeats: int, budget: float) -> dict:
    """The forward pass alone (the jitted cost on the whole batch): one row."""
    row = base_row(point, dtype)
    exe, compile_s = _compile(cost, params, batch)
    row.update(_stats(exe))
    timing = profiling.time_fn(exe, params, batch, repeats=max(repeats, 5), warmup=1, max_time=budget / 4)
    _put_timing(row, timing, 1.0)
    row.update({"how": "whole", "evaluations": 1.0, "analytic_flops": row["forward_flops"], "compile_s": compile_s,
                "forward_equivalents": 1.0, "rel_error": None, "measured_directions": None,
                "total_directions": None, "options": ""})
    return row


def measure_method(point: Point, cost, params, batch, *, dtype: str, t_forward: float, forward_flops: float | None,
                   reference, key, repeats: int, budget: float, history=(), validate: bool = True,
                   options: dict | None = None):
    """One gradient method at one point: (row, validation entry or None).

    Whole when the whole gradient is predicted to fit `budget` seconds: predicted from one timed call of a
    one-chunk subset of the method's own program (`est.subset`) where the method has one, else from its
    evaluation count x `t_forward` (and `history`, see `policy.predict_from_count`). Otherwise, when the method
    has a subset, timed on about budget/32 seconds of its directions and scaled by total / covered (flagged);
    else skipped (status "skipped", the prediction noted). A whole measurement of a method with a subset is
    validated (when `validate`): the subset an extrapolated point would use is timed too, and the entry
    {method, sizes, P, batch_size, whole_s, extrapolated_s, ratio (medians), ratio_min (best of each),
    ratio_cpu (process CPU time), covered, total} returned.

    Args:
      t_forward, forward_flops: the forward pass's seconds and XLA FLOPs on the same batch.
      reference: `reference() -> float64 flat jax.grad` (called only for whole gradients).
      key: PRNG key for stochastic methods.
      history: (P, N, seconds) of this method at earlier points (predicts methods without a subset).
      options: the method's options (e.g. chunk_size), passed to `gdjax.gradient`.
    """
    est = gradient(cost, point.method, **(options or {}))
    p = param_count(point.sizes)
    evals = est.evaluations(p)
    row = base_row(point, dtype)
    row.update({"evaluations": None if evals is None else float(evals), "kind": method_info(point.method).kind,
                "stochastic": est.stochastic,
                "exact": est.exact, "options": ", ".join(f"{k}={v}" for k, v in sorted(est.options.items())),
                "analytic_flops": None if evals is None or est.structured else float(evals) * row["forward_flops"]})
    key = key if est.stochastic else None
    pilot = _pilot(est, params, batch) if est.subset is not None else None
    program = None
    if pilot is not None:
        predicted = policy.predict_from_pilot(pilot["s"], pilot["covered"], pilot["total"])
    else:  # no subset: compile first, and predict from the program's own FLOPs where XLA counts them
        if est.jittable:
            program = _compile(lambda p_, b, k: est(p_, b, k), params, batch, key)
        flops = profiling.xla_flops(None, executable=program[0]) if program else None
        fe = flops / forward_flops if flops and forward_flops else None
        predicted = policy.predict_from_count(evals, t_forward, est.exact, history, p, point.batch_size, fe)
    row["predicted_s"] = predicted
    if policy.fits_whole(predicted, budget):
        whole_fn = _measure_whole(row, est, params, batch, key, repeats, budget, reference, forward_flops, evals,
                                  program)
        check = None
        if validate and pilot is not None:
            n_val = policy.validation_directions(pilot["s"], pilot["covered"], pilot["total"], budget,
                                                 row["median_s"])
            if n_val is not None:
                check = _validate(row, est, whole_fn, (params, batch, key), n_val, repeats, budget)
                check.update(method=point.method, sizes=row["sizes"], P=p, batch_size=point.batch_size)
        return row, check
    if pilot is None:
        row.update({"status": "skipped", "how": None,
                    "note": f"predicted {predicted:.3g} s per gradient, over the --time-budget of {budget:g} s, "
                            f"and this method cannot be timed on a subset of its directions"})
        return row, None
    n = policy.subset_directions(pilot["s"], pilot["covered"], pilot["total"], budget)
    part = _measure_subset(est, params, batch, n, repeats, budget)
    scale = part["total"] / part["covered"]
    _put_timing(row, part["timing"], scale)
    flops = part["xla_flops"] * scale if part.get("xla_flops") is not None else None
    if not part["jittable"] and evals is not None and forward_flops is not None:
        flops = float(evals) * forward_flops
    row.update({k: v for k, v in part.items() if k.startswith("memory_")})
    row.update({"how": "extrapolated", "compile_s": part["compile_s"], "xla_flops": flops,
                "measured_directions": part["covered"], "total_directions": part["total"], "rel_error": None,
                "forward_equivalents": None if flops is None or not forward_flops else flops / forward_flops,
                "note": f"timed on {part['covered']} of {part['total']} directions of the method's own program, "
                        f"scaled by {scale:.4g}"})
    return row, None


def _pilot(est, params, batch) -> dict:
    """One timed call of a one-chunk subset (after its compilation and a warm-up): {s, covered, total}."""
    sub = est.subset(params, batch, 1)
    fn = jax.jit(sub.fn) if sub.jittable else sub.fn
    jax.block_until_ready(fn(params, batch))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, batch))
    return {"s": time.perf_counter() - t0, "covered": sub.covered, "total": sub.total}


def _measure_subset(est, params, batch, n_directions: int, repeats: int, budget: float) -> dict:
    """Time the method's own program on its first `n_directions` (rounded up to whole chunks)."""
    sub = est.subset(params, batch, n_directions)
    out = {"covered": sub.covered, "total": sub.total, "jittable": sub.jittable, "compile_s": None}
    fn = sub.fn
    if sub.jittable:
        fn, out["compile_s"] = _compile(sub.fn, params, batch)
        out.update(_stats(fn))
    timing = profiling.time_fn(fn, params, batch, repeats=repeats, warmup=1, max_time=budget / 4)
    scale = sub.total / sub.covered
    out.update(timing=timing, median_s=timing.median_s * scale, min_s=timing.min_s * scale)
    return out


def _measure_whole(row, est, params, batch, key, repeats, budget, reference, forward_flops, evals, program=None):
    args = (params, batch, key)
    if est.jittable:
        fn, compile_s = program or _compile(lambda p, b, k: est(p, b, k), *args)
        row.update(_stats(fn))
    else:  # driven from Python (fd-loop): its programs were compiled by the pilot's calls
        fn, compile_s = (lambda p, b, k: est(p, b, k)), None
        row.update(_stats_unjittable(evals, forward_flops))
    timing, out = _time_with_output(fn, args, repeats, budget, row["predicted_s"])
    _put_timing(row, timing, 1.0)
    flops = row.get("xla_flops")
    row.update({"how": "whole", "compile_s": compile_s,
                "measured_directions": None, "total_directions": None,
                "rel_error": relative_error(flat_numpy(out), reference()),
                "forward_equivalents": None if flops is None or not forward_flops else flops / forward_flops})
    return fn


def _validate(row, est, whole_fn, args, n_directions: int, repeats: int, budget: float) -> dict:
    """Time the subset an extrapolated point would use beside the whole gradient: {whole_s, extrapolated_s,
    ratio (of medians), ratio_min (best call of each), ratio_cpu (of the process CPU seconds, which other load
    on the machine disturbs far less than wall time; None when not interleaved), covered, total}.

    When a whole call is cheap (a quarter of the budget), whole and subset calls alternate, `repeats` rounds
    (at least 3), so that both see the same load; otherwise the subset is timed after the whole measurement."""
    sub = est.subset(args[0], args[1], n_directions)
    fn = _compile(sub.fn, args[0], args[1])[0] if sub.jittable else sub.fn
    scale = sub.total / sub.covered
    jax.block_until_ready(fn(args[0], args[1]))  # warm-up
    cpu = None
    if row["median_s"] <= budget / 4:
        whole, part, cpu_whole, cpu_part = [], [], [], []
        for _ in range(max(repeats, 3)):
            for f, a, wall, cpu_s in ((whole_fn, args, whole, cpu_whole), (fn, args[:2], part, cpu_part)):
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(*a))
                wall.append(time.perf_counter() - t0)
                cpu_s.append(time.process_time() - c0)
        cpu = statistics.median(cpu_part) * scale / statistics.median(cpu_whole)
    else:
        whole = list(row.get("times") or [row["median_s"]])
        part = list(profiling.time_fn(fn, args[0], args[1], repeats=min(repeats, 2), warmup=0,
                                      max_time=budget / 8).times)
    w, e = statistics.median(whole), statistics.median(part) * scale
    return {"whole_s": w, "extrapolated_s": e, "ratio": e / w, "ratio_min": min(part) * scale / min(whole),
            "ratio_cpu": cpu, "covered": sub.covered, "total": sub.total}


def _stats_unjittable(evals, forward_flops) -> dict:
    """A method driven from Python has no one program: its FLOPs are its evaluations x the forward pass's."""
    flops = None if evals is None or forward_flops is None else float(evals) * forward_flops
    return {"xla_flops": flops, "xla_flops_raw": None, "memory_argument_bytes": None, "memory_output_bytes": None,
            "memory_temp_bytes": None, "memory_total_bytes": None, "memory_device_peak_bytes": None}
