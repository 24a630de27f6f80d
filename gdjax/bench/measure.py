"""Measuring one point of the benchmark: the forward pass alone, or one gradient method, timed whole or on a
subset of its own program and extrapolated (`gdjax.bench.policy` decides), with XLA FLOPs (loops counted with
their trip counts), memory, and the error against a float64 `jax.grad`. One row (a flat dict) per point. Any
cost: the point's `Problem` (`gdjax.bench.problem`) says what is measured.

    >>> fwd = measure_forward(point, problem, dtype="float32", repeats=3, budget=40.0)
    >>> row, check = measure_method(point, problem, dtype="float32", t_forward=fwd["median_s"],
    ...                             forward_flops=fwd["xla_flops"], reference=problem.reference, key=key,
    ...                             repeats=3, budget=40.0, forward=compiled_cost)

What a row holds (every time is per gradient, after compilation, which is `compile_s`):
  median_s / min_s / max_s, how (`whole` or `extrapolated`), measured_directions / total_directions,
  evaluations (the estimator's count, None for autodiff), xla_flops (of the program timed, complex arithmetic
  in real operations, scaled to the whole gradient when extrapolated; fd-loop: its one-direction program x
  evaluations, `xla_flops_source`), dot_flops (its dots and convolutions only), analytic_flops (evaluations x
  forward FLOPs, for black-box methods), forward_equivalents (xla_flops / the forward pass's) and
  forward_equivalents_dot (dot_flops / the forward pass's: the random number generator not counted),
  over_forward / _min / _max / _rounds (time / forward time, median of per-round ratios, interleaved), memory
  of the compiled program, rel_error and cosine against a float64 `jax.grad` (whole gradients; extrapolated
  ones with `subset_errors`: on spread components, `error_on`; stochastic methods also rel_error_mean /
  rel_error_std and cosine_mean / cosine_std over error_keys keys, with num_directions k). Every time comes from
  `profiling.interleaved`, the one timer. `peak_fraction` is set by
  the sweep, once, against the run's matmul reference.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from gdjax import profiling
from gdjax.bench import policy
from gdjax.bench.config import Point
from gdjax.bench.problem import (Problem, as_mlp_problem, cosine, flat_numpy, relative_error, restrict_cost,
                                 spread_indices)
from gdjax import precision as _precision
from gdjax.gradients import _leaves, gradient, method_info

MIN_RATIO_ROUNDS = 3  # a ratio to the forward pass is reported from at least this many interleaved rounds
ERROR_KEYS = 10  # a stochastic estimator's error: mean and std over this many keys (by default)

__all__ = ["base_row", "measure_forward", "measure_method", "time_parts", "subset_error", "ERROR_KEYS"]


def as_problem(point: Point, problem, params=None, batch=None) -> Problem:
    """`problem` itself when it is a `Problem`; else the lecture's MLP problem of `point.sizes` around the
    (cost, params, batch) given as `problem, params, batch` (the call form of earlier versions)."""
    if isinstance(problem, Problem):
        return problem
    return as_mlp_problem(problem, params, batch, point.sizes)


def base_row(point: Point, dtype: str, problem: Problem | None = None) -> dict:
    """The fields every row has, whatever happens to the measurement. `forward_flops` is the problem's analytic
    count of one cost evaluation (None when it has none: XLA's count of the cost program stands in, see
    `forward_flops_source` in `measure_forward`)."""
    if problem is None:  # a row for a point whose problem could not be built: what the point says
        from gdjax.bench.problem import _mlp_facts

        facts = _mlp_facts(point.sizes, point.batch_size) if point.sizes else {"forward_flops": None}
        from gdjax.nn import param_count

        n_params = param_count(point.sizes) if point.sizes else None
    else:
        facts, n_params = {"forward_flops": problem.forward_flops}, problem.n_params
    return {"id": point.id(dtype), "group": point.group, "sizes": point.label(), "P": n_params,
            "batch_size": point.batch_size, "dtype": dtype, "method": point.method,
            "forward_flops": None if facts["forward_flops"] is None else float(facts["forward_flops"]),
            "status": "ok"}


def _compile(fn, *args):
    """jit + lower + compile `fn` for `args`; returns (executable, seconds spent compiling)."""
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def _stats(exe, scale: float = 1.0) -> dict:
    """XLA FLOPs (loops x trip count; complex arithmetic weighted by its real operations; scaled), the FLOPs of
    its dots and convolutions alone (`dot_flops`: no random number generator, no elementwise work), and memory
    of a compiled program, as row fields."""
    flops = profiling.xla_flops(None, executable=exe, complex_weighted=True)
    dots = profiling.dot_flops(exe)
    mem = profiling.memory_bytes(None, executable=exe) or {}
    out = {"xla_flops": None if flops is None else flops * scale, "xla_flops_raw": flops,
           "dot_flops": None if dots is None else dots * scale, "dot_flops_raw": dots}
    for k in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes", "device_peak_bytes"):
        out[f"memory_{k}"] = mem.get(k)
    return out


def _put_timing(row: dict, timing: profiling.Timing, scale: float) -> None:
    row.update({"median_s": timing.median_s * scale, "min_s": timing.min_s * scale, "max_s": timing.max_s * scale,
                "measured_median_s": timing.median_s, "repeats": len(timing.times), "scale": scale,
                "times": [t * scale for t in timing.times]})


def measure_forward(point: Point, problem, params=None, batch=None, *, dtype: str, repeats: int,
                    budget: float) -> dict:
    """The forward pass alone (the jitted cost on the whole batch): one row. `problem` a `Problem` (or, as in
    earlier versions, the lecture MLP's cost followed by params and batch)."""
    problem = as_problem(point, problem, params, batch)
    cost, params, batch = problem.cost, problem.params, problem.batch
    row = base_row(point, dtype, problem)
    exe, compile_s = _compile(cost, params, batch)
    row.update(_stats(exe))
    row["forward_flops_source"] = "analytic" if row["forward_flops"] is not None else "xla"
    if row["forward_flops"] is None:
        row["forward_flops"] = row["xla_flops"]
    first = profiling.time_fn(exe, params, batch, repeats=1, warmup=1).median_s
    timing = profiling.time_fn(exe, params, batch, repeats=policy.timing_rounds(first, max(repeats, 5)), warmup=0,
                               max_time=budget / 4)
    _put_timing(row, timing, 1.0)
    row.update({"how": "whole", "evaluations": 1.0, "analytic_flops": row["forward_flops"], "compile_s": compile_s,
                "forward_equivalents": 1.0, "forward_equivalents_dot": 1.0 if row.get("dot_flops") else None,
                "rel_error": None, "measured_directions": None,
                "total_directions": None, "options": "", "matmul_precision": _precision.in_force()})
    return row


def measure_method(point: Point, problem, params=None, batch=None, *, dtype: str, t_forward: float,
                   forward_flops: float | None, reference, key, repeats: int, budget: float, history=(),
                   validate: bool = True, options: dict | None = None, forward=None, forward_dot_flops=None,
                   forward_row: dict | None = None, error_keys: int = ERROR_KEYS, skip_over_budget: bool = True,
                   subset_errors: bool = False):
    """One gradient method at one point: (row, validation entry or None).

    Whole when the whole gradient is predicted to fit `budget` seconds (or when the part an extrapolation would
    time covers every direction anyway): predicted by the pilot (`_pilot`: timed
    parts of the method's own program, `est.subset`) where the method has one, else from its evaluation count x
    `t_forward` (and `history`, see `policy.predict_from_count`). Otherwise, when the method has a subset, two
    parts of it (about budget/32 s of directions, and a quarter of those) are timed and extrapolated
    (`policy.extrapolate`, flagged); else skipped (status "skipped", the prediction noted). A whole measurement of a method with a subset is
    validated (when `validate`): the subset an extrapolated point would use is timed too, and the entry
    {method, sizes, P, batch_size, whole_s, extrapolated_s, ratio (medians), ratio_min (best of each),
    ratio_cpu (process CPU time), covered, total} returned.

    A whole gradient is timed in the same rounds as the forward pass (`forward`: its compiled program), so
    that `over_forward` (the median over rounds of time / forward time in that round, at least 3 rounds),
    `over_forward_min` / `over_forward_max` (the spread) and `over_forward_rounds` say what "X forward passes"
    means under the same load.

    Args:
      problem: a `Problem` (or, as in earlier versions, the lecture MLP's cost followed by params and batch).
      t_forward, forward_flops: the forward pass's seconds and XLA FLOPs on the same batch.
      forward_dot_flops: the forward pass's dot/convolution FLOPs (`forward_equivalents_dot`).
      forward: the compiled forward pass `exe(params, batch)` to interleave with a whole gradient, or None.
      forward_row: the forward pass's row (its `forward_flops` fills a problem's analytic count when it has none).
      reference: `reference() -> float64 flat jax.grad` (called only for whole gradients).
      key: PRNG key for stochastic methods.
      history: (P, N, seconds) of this method at earlier points (predicts methods without a subset).
      options: the method's options (e.g. chunk_size), passed to `gdjax.gradient`.
      error_keys: keys a stochastic method's error is averaged over (rel_error_mean / _std, cosine_mean / _std).
      skip_over_budget: a method without a subset predicted over `budget` is skipped (True) or timed whole
        anyway, one call at least (False).
      subset_errors: an extrapolated row also gets the method's error on as many evenly spread components as
        its subset covered (`subset_error`; None for structured methods), instead of no error.
    """
    problem = as_problem(point, problem, params, batch)
    cost, params, batch = problem.cost, problem.params, problem.batch
    est = gradient(cost, point.method, **(options or {}))
    p = problem.n_params
    evals = est.evaluations(p)
    row = base_row(point, dtype, problem)
    if row["forward_flops"] is None and forward_row is not None:
        row["forward_flops"] = forward_row.get("forward_flops")
    row.update({"evaluations": None if evals is None else float(evals), "kind": method_info(point.method).kind,
                "stochastic": est.stochastic,
                "exact": est.exact, "options": ", ".join(f"{k}={v}" for k, v in sorted(est.options.items())),
                "matmul_precision": _precision.in_force(est),
                "analytic_flops": None if evals is None or est.structured or row["forward_flops"] is None
                else float(evals) * row["forward_flops"]})
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
    n_part = None
    if pilot is not None:  # the directions an extrapolation would time
        n_part = policy.subset_directions(pilot["last"]["s"], pilot["last"]["covered"], pilot["total"], budget)
        if n_part >= pilot["total"]:  # a part covering every direction is no extrapolation: the one-chunk part
            n_part = pilot["covered"]
    if (policy.fits_whole(predicted, budget) or (pilot is None and not skip_over_budget)
            or (pilot is not None and n_part >= pilot["total"])):
        n_val = None
        if validate and pilot is not None:  # the directions to validate on, given the first whole call's time
            last = pilot["last"]

            def n_val(first_s):
                return policy.validation_directions(last["s"], last["covered"], pilot["total"], budget, first_s,
                                                    chunk=pilot["covered"])
        check = _measure_whole(row, est, params, batch, key, repeats, budget, reference, forward_flops, evals,
                               program, n_val, forward, cost, error_keys)
        _put_dot_equivalents(row, forward_dot_flops)
        if check is not None:
            check.update(method=point.method, sizes=row["sizes"], P=p, batch_size=point.batch_size)
        return row, check
    if pilot is None:
        row.update({"status": "skipped", "how": None,
                    "note": f"predicted {predicted:.3g} s per gradient, over the --time-budget of {budget:g} s, "
                            f"and this method cannot be timed on a subset of its directions"})
        return row, None
    part = time_parts(est, params, batch, n_part, repeats, budget / 4)
    _put_timing(row, part["timing"], 1.0)
    row.update({"measured_median_s": statistics.median(part["times"]),
                "scale": part["timing"].median_s / statistics.median(part["times"]),
                "subset_times": part["times"], "subset_small_times": part["small_times"]})
    scale = part["total"] / part["covered"][0]
    flops = part["xla_flops"] * scale if part.get("xla_flops") is not None else None
    if not part["jittable"]:
        loop = _stats_unjittable(est, cost, params, batch, evals)
        flops = loop["xla_flops"]
        row.update({k: loop[k] for k in ("dot_flops", "xla_flops_source")})
    row.update({k: v for k, v in part.items() if k.startswith("memory_")})
    if part["jittable"] and part.get("dot_flops") is not None:
        row["dot_flops"] = part["dot_flops"] * scale
    row.update({"how": "extrapolated", "compile_s": part["compile_s"], "xla_flops": flops,
                "measured_directions": part["covered"][0], "total_directions": part["total"],
                "measured_directions_small": part["covered"][1] if len(part["covered"]) > 1 else None,
                "rel_error": None,
                "forward_equivalents": None if flops is None or not forward_flops else flops / forward_flops,
                "note": f"timed on {_covered_text(part)} of {part['total']} directions of the method's own "
                        f"program (fixed cost per call + cost per direction, `policy.extrapolate`)"})
    _put_dot_equivalents(row, forward_dot_flops)
    if subset_errors:
        row.update(subset_error(problem, point.method, options or {}, part["covered"][0], reference, key))
    return row, None


def subset_error(problem: Problem, method: str, options: dict, k: int, reference, key=None) -> dict:
    """The error of `method` on k evenly spread components (`spread_indices`) of the parameters: the method run
    on the cost restricted to them (`restrict_cost`), against the same components of the float64 reference:
    {rel_error, cosine, error_on}. A structured method needs a gdjax MLP cost, which a restricted cost is not:
    rel_error and cosine None, error_on says so. `reference() -> float64 flat jax.grad`; `key` for a stochastic
    method."""
    if method_info(method).structured:
        return {"rel_error": None, "cosine": None, "error_on": "none (structured method, extrapolated)"}
    ref = reference()
    idx = spread_indices(ref.size, k)
    sub_cost, theta0 = restrict_cost(problem.cost, problem.params, idx)
    est = gradient(sub_cost, method, **options)
    args = (theta0, problem.batch) + ((key,) if est.stochastic else ())
    g = flat_numpy(jax.jit(est)(*args))
    return {"rel_error": relative_error(g, ref[idx]), "cosine": cosine(g, ref[idx]),
            "error_on": f"{len(idx)} of {ref.size} components (the method on the cost restricted to them)"}


def _put_dot_equivalents(row: dict, forward_dot_flops) -> None:
    """`forward_equivalents_dot`: the program's dot/convolution FLOPs over the forward pass's (the random number
    generator, elementwise work and reductions not counted), beside `forward_equivalents` (all FLOPs XLA counts,
    the generator's integer operations included)."""
    dots = row.get("dot_flops")
    row["forward_equivalents_dot"] = dots / forward_dot_flops if dots is not None and forward_dot_flops else None


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
    return {"s": profiling.time_fn(fn, params, batch, repeats=1).median_s, "covered": sub.covered,
            "total": sub.total}


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
    wall, _ = profiling.interleaved([(f, (params, batch)) for f in part["fns"]], repeats, max_time=max_time,
                                    warm=True)
    big, small = _big_small(wall)
    return {**part, "timing": _extrapolated(part, big, small), "times": big,
            "small_times": small if small[0] is not None else None}


def _errors_over_keys(fn, params, batch, key, reference, num_directions, n_keys: int = ERROR_KEYS) -> dict:
    """A stochastic gradient's error against the float64 reference over `n_keys` keys split from `key` (one
    draw says little: its spread is of the order of its mean): rel_error_mean / rel_error_std and cosine_mean /
    cosine_std (std with ddof 1; None from one key), error_keys, and k (`num_directions`, the directions
    averaged per gradient) so the row states it."""
    flat = [flat_numpy(fn(params, batch, k)) for k in jax.random.split(key, n_keys)]
    errs, coss = [relative_error(g, reference) for g in flat], [cosine(g, reference) for g in flat]
    spread = statistics.stdev if n_keys > 1 else (lambda _: None)  # one key: no spread to state
    return {"rel_error_mean": statistics.mean(errs), "rel_error_std": spread(errs),
            "cosine_mean": statistics.mean(coss), "cosine_std": spread(coss), "error_keys": n_keys,
            "num_directions": num_directions}


def _round_ratios(whole: list[float], fwd: list[float]) -> dict:
    """`over_forward` = median over rounds of whole / forward in the same round, its min / max and the number of
    rounds; None (the rounds still counted) without forward times or with fewer than MIN_RATIO_ROUNDS rounds
    (a long whole gradient timed fewer times within the budget)."""
    if len(fwd) < MIN_RATIO_ROUNDS:
        return {"over_forward": None, "over_forward_min": None, "over_forward_max": None,
                "over_forward_rounds": len(fwd)}
    r = profiling.round_ratios(whole, fwd)
    return {"over_forward": r["median"], "over_forward_min": r["min"], "over_forward_max": r["max"],
            "over_forward_rounds": r["rounds"]}


def _big_small(times: list[list[float]]) -> tuple[list[float], list]:
    """(the bigger part's times, the smaller part's) from one list per part; Nones when there is one part only
    (then `policy.extrapolate` scales in proportion)."""
    return times[0], times[1] if len(times) > 1 else [None] * len(times[0])


def _extrapolated(part: dict, big: list[float], small: list) -> profiling.Timing:
    """Per-round extrapolations of the whole program from its parts' times (`policy.extrapolate`)."""
    covered, total = part["covered"], part["total"]
    est = [policy.extrapolate(b, covered[0], total, s, covered[1] if len(covered) > 1 else None)
           for b, s in zip(big, small)]
    return profiling.Timing.of(est)


def _measure_whole(row, est, params, batch, key, repeats, budget, reference, forward_flops, evals, program=None,
                   n_val=None, forward=None, cost=None, error_keys=ERROR_KEYS):
    """Time the whole gradient (and its error, from the first call's output). With `n_val(first_s)`, the
    directions to validate on given the first call's seconds (None: no validation), also validate: time the
    parts an extrapolated point would use (`_subset_programs`) and return the validation entry {whole_s,
    extrapolated_s, ratio (of medians), ratio_min (best of each), ratio_cpu (of process CPU seconds, which other
    load disturbs far less than wall time; None when not interleaved), covered, total, counted}.

    A whole call whose first run (after ahead-of-time compilation) took at most a quarter of the budget is timed
    `policy.timing_rounds` times, interleaved with the parts: the whole and its extrapolation see the same load,
    and the same whole calls give the row its time. A longer one is timed while the calls stay within half the
    budget (the first call counts), and its parts after it. `forward` (the compiled forward pass), when given,
    runs in every round beside the whole (at least 3 rounds): `over_forward` is the median of per-round ratios."""
    args = (params, batch, key)
    if est.jittable:
        fn, compile_s = program or _compile(lambda p, b, k: est(p, b, k), *args)
        row.update(_stats(fn))
    else:  # driven from Python (fd-loop): its programs were compiled by the pilot's calls
        fn, compile_s = (lambda p, b, k: est(p, b, k)), None
        row.update(_stats_unjittable(est, cost, params, batch, evals))
    if not est.jittable and (row.get("predicted_s") or 0.0) <= budget / 4:
        # its first whole call also compiles the programs the pilot's parts did not use (its combination step):
        # a warm-up call where the whole is short, so that compilation does not make it look long (a long
        # whole gradient is timed from its first call, where that compilation is a small part)
        jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    cheap = first <= budget / 4
    n_dirs = n_val(first) if n_val is not None else None
    part = _subset_programs(est, params, batch, n_dirs) if n_dirs is not None else None
    sub_args = (params, batch)
    check = None
    fwd_times = []
    if forward is not None:
        jax.block_until_ready(forward(params, batch))  # warm (compiled ahead of time by the caller)
    if cheap:
        calls = [(fn, args)] + ([(f, sub_args) for f in part["fns"]] if part else [])
        calls += [(forward, (params, batch))] if forward is not None else []
        if part:
            for f in part["fns"]:
                jax.block_until_ready(f(*sub_args))  # warm-up (the whole's first call was its own)
        rounds = policy.timing_rounds(first, repeats, part is not None or forward is not None)
        wall, cpu = profiling.interleaved(calls, rounds, max_time=budget / 2,
                                          min_rounds=3 if forward is not None else 1)
        whole = wall[0]
        if forward is not None:
            fwd_times, wall, cpu = wall[-1], wall[:-1], cpu[:-1]
        if part:
            check = _check(part, whole, wall[1:], cpu, budget)
    else:
        whole = [first]  # the first call is the first round; more rounds while they fit half the budget
        calls = [(fn, args)] + ([(forward, (params, batch))] if forward is not None else [])
        if forward is not None:  # the forward pass right after the first whole call too
            fwd_times.append(profiling.time_fn(forward, params, batch, repeats=1, warmup=0).median_s)
        more = min(max(repeats, 3 if forward is not None else 1), int(budget / 2 // first)) - 1
        if more > 0:
            wall, _ = profiling.interleaved(calls, more, max_time=budget / 2 - first)
            whole += wall[0]
            fwd_times += wall[1] if forward is not None else []
        if part:
            wall, _ = profiling.interleaved([(f, sub_args) for f in part["fns"]], min(repeats, 2),
                                            max_time=budget / 8, warm=True)
            check = _check(part, whole, wall, None, budget)
    _put_timing(row, profiling.Timing.of(whole), 1.0)
    row.update(_round_ratios(whole, fwd_times))
    if est.stochastic:
        row.update(_errors_over_keys(fn, params, batch, key, reference(), est.options.get("num_directions"),
                                     error_keys))
    flops = row.get("xla_flops")
    row.update({"how": "whole", "compile_s": compile_s,
                "measured_directions": None, "total_directions": None,
                "rel_error": relative_error(flat_numpy(out), reference()),
                "cosine": cosine(flat_numpy(out), reference()),
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


def _stats_unjittable(est, cost, params, batch, evals) -> dict:
    """A method driven from Python (fd-loop) has no one program: its FLOPs are measured on the program one of its
    directions runs (the cost with one entry of one leaf set, `one_direction_flops`, complex arithmetic
    weighted) times its evaluations (`xla_flops_source` says so)."""
    one = one_direction_flops(cost, params, batch, complex_step=est.options.get("scheme") == "complex")
    flops = None if evals is None or one is None else float(evals) * one["xla_flops"]
    dots = None if evals is None or one is None or one["dot_flops"] is None else float(evals) * one["dot_flops"]
    return {"xla_flops": flops, "xla_flops_raw": None, "dot_flops": dots, "dot_flops_raw": None,
            "xla_flops_source": "one-direction program x evaluations", "memory_argument_bytes": None,
            "memory_output_bytes": None, "memory_temp_bytes": None, "memory_total_bytes": None,
            "memory_device_peak_bytes": None}


def one_direction_flops(cost, params, batch, complex_step: bool = False) -> dict | None:
    """FLOPs of the program one FD direction runs: the cost with one entry of one leaf set (complex when
    `complex_step`), compiled per differentiated leaf; XLA's count (complex weighted) and the dots'/convolutions',
    averaged over the leaves weighted by their sizes: {"xla_flops", "dot_flops"} per direction, None when XLA
    gives no count."""
    diff, static = _leaves.partition(params)
    leaves, treedef = jax.tree_util.tree_flatten(diff)
    total, xla, dots = 0, 0.0, 0.0
    for k, leaf in enumerate(leaves):
        def one(leaves_, batch_, i, t, k=k):
            flat = jnp.ravel(leaves_[k]).astype(t.dtype)
            new = list(leaves_[:k]) + [flat.at[i].set(t).reshape(leaves_[k].shape)] + list(leaves_[k + 1:])
            return cost(_leaves.combine(jax.tree_util.tree_unflatten(treedef, new), static), batch_)

        dtype = jnp.result_type(leaf.dtype, jnp.complex64) if complex_step else leaf.dtype
        exe, _ = _compile(one, leaves, batch, jnp.int32(0), jnp.zeros((), dtype))
        f = profiling.xla_flops(None, executable=exe, complex_weighted=True)
        d = profiling.dot_flops(exe)
        if f is None:
            return None
        total += leaf.size
        xla += leaf.size * f
        dots = None if d is None or dots is None else dots + leaf.size * d
    return {"xla_flops": xla / total, "dot_flops": None if dots is None else dots / total}
