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
from gdjax.gradients import _precision, gradient, method_info
from gdjax.nn import MLP, param_count

__all__ = ["base_row", "measure_forward", "measure_method", "time_parts"]


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


def _put_timing(row: dict, timing: profiling.Timing, scale: float) -> None:
    row.update({"median_s": timing.median_s * scale, "min_s": timing.min_s * scale, "max_s": timing.max_s * scale,
                "measured_median_s": timing.median_s, "repeats": len(timing.times), "scale": scale,
                "times": [t * scale for t in timing.times]})


def measure_forward(point: Point, cost, params, batch, *, dtype: str, repeats: int, budget: float) -> dict:
    """The forward pass alone (the jitted cost on the whole batch): one row."""
    row = base_row(point, dtype)
    exe, compile_s = _compile(cost, params, batch)
    row.update(_stats(exe))
    first = profiling.time_fn(exe, params, batch, repeats=1, warmup=1).median_s
    timing = profiling.time_fn(exe, params, batch, repeats=policy.timing_rounds(first, max(repeats, 5)), warmup=0,
                               max_time=budget / 4)
    _put_timing(row, timing, 1.0)
    row.update({"how": "whole", "evaluations": 1.0, "analytic_flops": row["forward_flops"], "compile_s": compile_s,
                "forward_equivalents": 1.0, "rel_error": None, "measured_directions": None,
                "total_directions": None, "options": "", "matmul_precision": _precision.in_force()})
    return row


def measure_method(point: Point, cost, params, batch, *, dtype: str, t_forward: float, forward_flops: float | None,
                   reference, key, repeats: int, budget: float, history=(), validate: bool = True,
                   options: dict | None = None):
    """One gradient method at one point: (row, validation entry or None).

    Whole when the whole gradient is predicted to fit `budget` seconds: predicted by the pilot (`_pilot`: timed
    parts of the method's own program, `est.subset`) where the method has one, else from its evaluation count x
    `t_forward` (and `history`, see `policy.predict_from_count`). Otherwise, when the method has a subset, two
    parts of it (about budget/32 s of directions, and a quarter of those) are timed and extrapolated
    (`policy.extrapolate`, flagged); else skipped (status "skipped", the prediction noted). A whole measurement of a method with a subset is
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
                "matmul_precision": _precision.in_force(est),
                "analytic_flops": None if evals is None or est.structured else float(evals) * row["forward_flops"]})
    key = key if est.stochastic else None
    pilot = _pilot(est, params, batch, budget) if est.subset is not None else None
    program = None
    if pilot is not None:
        predicted = pilot["predicted"]
    else:  # no subset: compile first, and predict from the program's own FLOPs where XLA counts them
        if est.jittable:
            program = _compile(lambda p_, b, k: est(p_, b, k), params, batch, key)
        flops = profiling.xla_flops(None, executable=program[0]) if program else None
        fe = flops / forward_flops if flops and forward_flops else None
        predicted = policy.predict_from_count(evals, t_forward, est.exact, history, p, point.batch_size, fe)
    row["predicted_s"] = predicted
    if policy.fits_whole(predicted, budget):
        n_val = None
        if validate and pilot is not None:  # the directions to validate on, given the first whole call's time
            last = pilot["last"]

            def n_val(first_s):
                return policy.validation_directions(last["s"], last["covered"], pilot["total"], budget, first_s,
                                                    chunk=pilot["covered"])
        check = _measure_whole(row, est, params, batch, key, repeats, budget, reference, forward_flops, evals,
                               program, n_val)
        if check is not None:
            check.update(method=point.method, sizes=row["sizes"], P=p, batch_size=point.batch_size)
        return row, check
    if pilot is None:
        row.update({"status": "skipped", "how": None,
                    "note": f"predicted {predicted:.3g} s per gradient, over the --time-budget of {budget:g} s, "
                            f"and this method cannot be timed on a subset of its directions"})
        return row, None
    n = policy.subset_directions(pilot["last"]["s"], pilot["last"]["covered"], pilot["total"], budget)
    part = time_parts(est, params, batch, n, repeats, budget / 4)
    _put_timing(row, part["timing"], 1.0)
    row.update({"measured_median_s": statistics.median(part["times"]),
                "scale": part["timing"].median_s / statistics.median(part["times"]),
                "subset_times": part["times"], "subset_small_times": part["small_times"]})
    scale = part["total"] / part["covered"][0]
    flops = part["xla_flops"] * scale if part.get("xla_flops") is not None else None
    if not part["jittable"] and evals is not None and forward_flops is not None:
        flops = float(evals) * forward_flops
    row.update({k: v for k, v in part.items() if k.startswith("memory_")})
    row.update({"how": "extrapolated", "compile_s": part["compile_s"], "xla_flops": flops,
                "measured_directions": part["covered"][0], "total_directions": part["total"],
                "measured_directions_small": part["covered"][1] if len(part["covered"]) > 1 else None,
                "rel_error": None,
                "forward_equivalents": None if flops is None or not forward_flops else flops / forward_flops,
                "note": f"timed on {_covered_text(part)} of {part['total']} directions of the method's own "
                        f"program (fixed cost per call + cost per direction, `policy.extrapolate`)"})
    return row, None


def _covered_text(part: dict) -> str:
    return " and ".join(str(c) for c in part["covered"])


def _pilot(est, params, batch, budget: float) -> dict:
    """Timed calls of a one-chunk subset and of parts `policy.PILOT_GROWTH` times larger, until the directions,
    not a call's fixed cost, set the time (`policy.pilot_grows`): {s, covered, total} of the one chunk, `last`
    ({s, covered} of the largest part), and `predicted`, the whole gradient's seconds from the one chunk and the
    largest part (`policy.extrapolate`: a call's fixed cost counted once, not total / covered times)."""
    chunk = _time_subset(est, params, batch, 1)
    last = _time_subset(est, params, batch, policy.PILOT_GROWTH * chunk["covered"])
    while policy.pilot_grows(chunk["s"], last["s"], last["covered"], last["total"], budget):
        last = _time_subset(est, params, batch, policy.PILOT_GROWTH * last["covered"])
    return {**chunk, "last": last, "predicted": policy.extrapolate(last["s"], last["covered"], last["total"],
                                                                   chunk["s"], chunk["covered"])}


def _time_subset(est, params, batch, n_directions: int) -> dict:
    """One timed call (after its compilation and a warm-up call) of the method's own program on its first
    `n_directions`: {s, covered, total}."""
    sub = est.subset(params, batch, n_directions)
    fn = jax.jit(sub.fn) if sub.jittable else sub.fn
    jax.block_until_ready(fn(params, batch))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, batch))
    return {"s": time.perf_counter() - t0, "covered": sub.covered, "total": sub.total}


def _subset_programs(est, params, batch, n_directions: int) -> dict:
    """The method's own program on its first `n_directions` (rounded up to whole chunks) and, where it can be
    smaller, on a quarter of those (for `policy.extrapolate`): {fns, covered (one count per program), total,
    jittable, compile_s (both compilations; None when driven from Python), XLA FLOPs and memory of the bigger}."""
    big = est.subset(params, batch, n_directions)
    subs = [big]
    small = est.subset(params, batch, max(1, big.covered // 4))
    if small.covered < big.covered:
        subs.append(small)
    out = {"fns": [], "covered": [s.covered for s in subs], "total": big.total, "jittable": big.jittable,
           "compile_s": 0.0 if big.jittable else None}
    for i, sub in enumerate(subs):
        fn = sub.fn
        if sub.jittable:
            fn, seconds = _compile(sub.fn, params, batch)
            out["compile_s"] += seconds
            if i == 0:
                out.update(_stats(fn))
        out["fns"].append(fn)
    return out


def time_parts(est, params, batch, n_directions: int, repeats: int, max_time: float) -> dict:
    """Time the method's own program on its first `n_directions` and on a quarter of those
    (`_subset_programs`), interleaved, `repeats` rounds (fewer past `max_time` s), and extrapolate each round
    to the whole gradient (`policy.extrapolate`). Returns the `_subset_programs` dict plus timing (a
    `profiling.Timing` of the extrapolations), times and small_times (the parts' seconds; None without a
    smaller part)."""
    part = _subset_programs(est, params, batch, n_directions)
    wall, _ = _rounds([(f, (params, batch)) for f in part["fns"]], repeats, max_time, warm=True)
    big, small = _big_small(wall)
    return {**part, "timing": _extrapolated(part, big, small), "times": big,
            "small_times": small if small[0] is not None else None}


def _rounds(calls, rounds: int, max_time: float, warm: bool) -> tuple[list[list[float]], list[list[float]]]:
    """Call each `(fn, args)` of `calls` once per round, interleaved, so that all see the same load: `rounds`
    rounds, fewer once `max_time` seconds are spent (at least one). `warm`: one untimed call of each first.
    Returns (wall seconds, process CPU seconds), one list per call."""
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
        if time.perf_counter() - start > max_time:
            break
    return wall, cpu


def _big_small(times: list[list[float]]) -> tuple[list[float], list]:
    """(the bigger part's times, the smaller part's) from one list per part; Nones when there is one part only
    (then `policy.extrapolate` scales in proportion)."""
    return times[0], times[1] if len(times) > 1 else [None] * len(times[0])


def _extrapolated(part: dict, big: list[float], small: list) -> profiling.Timing:
    """Per-round extrapolations of the whole program from its parts' times (`policy.extrapolate`)."""
    covered, total = part["covered"], part["total"]
    est = [policy.extrapolate(b, covered[0], total, s, covered[1] if len(covered) > 1 else None)
           for b, s in zip(big, small)]
    return profiling.Timing(statistics.median(est), min(est), max(est), None, tuple(est))


def _measure_whole(row, est, params, batch, key, repeats, budget, reference, forward_flops, evals, program=None,
                   n_val=None):
    """Time the whole gradient (and its error, from the first call's output). With `n_val(first_s)`, the
    directions to validate on given the first call's seconds (None: no validation), also validate: time the
    parts an extrapolated point would use (`_subset_programs`) and return the validation entry {whole_s,
    extrapolated_s, ratio (of medians), ratio_min (best of each), ratio_cpu (of process CPU seconds, which other
    load disturbs far less than wall time; None when not interleaved), covered, total, counted}.

    A whole call whose first run (after ahead-of-time compilation) took at most a quarter of the budget is timed
    `policy.timing_rounds` times, interleaved with the parts: the whole and its extrapolation see the same load,
    and the same whole calls give the row its time. A longer one is timed while the calls stay within half the
    budget (the first call counts), and its parts after it."""
    args = (params, batch, key)
    if est.jittable:
        fn, compile_s = program or _compile(lambda p, b, k: est(p, b, k), *args)
        row.update(_stats(fn))
    else:  # driven from Python (fd-loop): its programs were compiled by the pilot's calls
        fn, compile_s = (lambda p, b, k: est(p, b, k)), None
        row.update(_stats_unjittable(evals, forward_flops))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    cheap = first <= budget / 4
    n_dirs = n_val(first) if n_val is not None else None
    part = _subset_programs(est, params, batch, n_dirs) if n_dirs is not None else None
    sub_args = (params, batch)
    check = None
    if cheap:
        calls = [(fn, args)] + ([(f, sub_args) for f in part["fns"]] if part else [])
        if part:
            for f in part["fns"]:
                jax.block_until_ready(f(*sub_args))  # warm-up (the whole's first call was its own)
        wall, cpu = _rounds(calls, policy.timing_rounds(first, repeats, part is not None), budget / 2, warm=False)
        whole = wall[0]
        if part:
            check = _check(part, whole, wall[1:], cpu, budget)
    else:
        whole = [first]
        while len(whole) < repeats and sum(whole) + statistics.median(whole) <= budget / 2:
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            whole.append(time.perf_counter() - t0)
        if part:
            wall, _ = _rounds([(f, sub_args) for f in part["fns"]], min(repeats, 2), budget / 8, warm=True)
            check = _check(part, whole, wall, None, budget)
    _put_timing(row, profiling.Timing(statistics.median(whole), min(whole), max(whole), None, tuple(whole)), 1.0)
    flops = row.get("xla_flops")
    row.update({"how": "whole", "compile_s": compile_s,
                "measured_directions": None, "total_directions": None,
                "rel_error": relative_error(flat_numpy(out), reference()),
                "forward_equivalents": None if flops is None or not forward_flops else flops / forward_flops})
    return check


def _check(part: dict, whole: list[float], parts: list[list[float]], cpu, budget: float) -> dict:
    """The validation entry from the whole's times and its parts' (per round when interleaved); `counted`:
    whether it counts toward the validation target (`policy.counts_for_target`)."""
    big, small = _big_small(parts)
    ext = _extrapolated(part, big, small)
    best = _extrapolated(part, [min(big)], [min(small) if small[0] is not None else None])
    ratio_cpu = None
    if cpu is not None:
        ratio_cpu = _extrapolated(part, *_big_small(cpu[1:])).median_s / statistics.median(cpu[0])
    w = statistics.median(whole)
    return {"whole_s": w, "extrapolated_s": ext.median_s, "ratio": ext.median_s / w,
            "ratio_min": best.median_s / min(whole), "ratio_cpu": ratio_cpu, "covered": part["covered"][0],
            "total": part["total"], "counted": policy.counts_for_target(w, budget)}


def _stats_unjittable(evals, forward_flops) -> dict:
    """A method driven from Python has no one program: its FLOPs are its evaluations x the forward pass's."""
    flops = None if evals is None or forward_flops is None else float(evals) * forward_flops
    return {"xla_flops": flops, "xla_flops_raw": None, "memory_argument_bytes": None, "memory_output_bytes": None,
            "memory_temp_bytes": None, "memory_total_bytes": None, "memory_device_peak_bytes": None}
