#!/usr/bin/env python
"""The any-cost suite: FD kernel, fd-loop and jax.grad against the objective, and gdjax.check_grad against
torch.autograd.gradcheck, on problems that are not gdjax's MLP (benchmarks/problems/, docs/problems.md).

    python benchmarks/problems.py                       # every problem of the suite (`make bench-problems`)
    python benchmarks/problems.py --problems gmm,ode    # some of them
    python benchmarks/problems.py --tiny --rounds 3     # test sizes: seconds (the smoke test runs this)

Per problem (float64), one `timing` row: the objective (the jitted cost), `fd-forward` (the FD kernel, default
layout), `fd-loop` and `reverse` (`jax.grad`), compiled and warmed first, then timed in the same `--rounds`
interleaved rounds (`gdjax.profiling.interleaved`); each ratio (kernel / (P x objective), kernel / fd-loop,
reverse / objective) is the median of per-round ratios with min and max (`profiling.round_ratios`); XLA FLOPs of
each program (fd-loop: one direction x evaluations), each gradient's error against float64 jax.grad. Then `checker`
rows: `gdjax.check_grad` (full and localising modes) and `torch.autograd.gradcheck` (slow and fast) on the same
objective, the first call of a fresh function and the median of `--repeats` repeated calls. The timing row also
times the FD kernel at fixed chunk widths (`CHUNKS`) in the same rounds (kernel / best fixed width, per round)
and records its plan (`plan_s`: the planning seconds, and their share of one gradient). For the `--localising`
problems (default gmm): a `localising` row (check_grad's localising mode names a 1% error planted at a uniform
entry with |g| >= 1e-2 max|g|, `--seeds` seeds; `--cases` correct checks, each with its own direction key, must
not fail) and a `cache` row (the first full check_grad call of a fresh process with an empty persistent
compilation cache, then of a second process with the same cache). A tool or mode not available is a row with
`absent: true` and the reason, never a number; a run into the committed reference needs torch.

Output: <out>/problems.json (+ .csv). Default <out>: runs/problems-<date>/ (git-ignored).
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the suite is float64 (ADBench's GMM; torch's gradcheck)

import numpy as np  # noqa: E402

import gdjax  # noqa: E402
from gdjax import profiling, results  # noqa: E402
from gdjax.bench import measure  # noqa: E402
from gdjax.bench.problem import flat_numpy, relative_error  # noqa: E402

COMMAND = "problems"
SUITE = importlib.import_module("benchmarks.problems").SUITE
KERNEL, LOOP, REVERSE = "fd-forward", "fd-loop", "reverse"
KEY = {KERNEL: "kernel", LOOP: "loop", REVERSE: "reverse"}  # a method's name in the row's fields
CHECK_MODES = ("full", "directions")  # "directions": check_grad's localising mode (k random directions)
CHUNKS = (1, 4, 16, 64)  # fixed chunk widths timed beside the kernel's measured plan (1: a sequential map)
LOCAL_FACTOR, LOCAL_MIN_REL = 1.01, 1e-2  # localising section: a 1% error at an entry with |g| >= 1e-2 max|g|


def parse_args(argv):
    ap = common.Parser(COMMAND, __doc__, out_name="problems.json")
    ap.add_argument("--problems", default=",".join(SUITE), help=f"comma-separated, from {', '.join(SUITE)}")
    ap.add_argument("--tiny", action="store_true", help="each problem's test sizes (seconds)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (>= 3, default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="repeated calls of each checker (>= 1, default 3)")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out (its rows are absent, with why)")
    ap.add_argument("--seeds", type=int, default=20, help="localising section: planted errors (default 20)")
    ap.add_argument("--cases", type=int, default=200, help="localising section: correct cases (default 200)")
    ap.add_argument("--localising", default="gmm", help="problems of the localising and second-process sections "
                    "(comma-separated; default gmm; 'none' to leave them out)")
    args = ap.parse(argv)
    args.names = tuple(n.strip() for n in args.problems.split(",") if n.strip())
    bad = [n for n in args.names if n not in SUITE]
    if bad or not args.names:
        raise common.UsageError(f"--problems: unknown {', '.join(bad) or '(none given)'}; valid: {', '.join(SUITE)}")
    common.require(args, 3, "rounds")
    common.require(args, 1, "repeats", "seeds", "cases")
    args.local = () if args.localising.strip() == "none" else tuple(
        n.strip() for n in args.localising.split(",") if n.strip())
    bad = [n for n in args.local if n not in args.names]
    if bad:
        raise common.UsageError(f"--localising: {', '.join(bad)} not among --problems ({', '.join(args.names)})")
    common.require_for_reference(args.path, "torch", "the torch gradcheck rows", skipped=args.no_torch)
    return args


def timing_row(prob, rounds: int, log) -> dict:
    """The objective, the FD kernel, fd-loop and reverse in the same interleaved rounds, with their ratios."""
    cost, params, batch = prob.cost, prob.params, prob.batch
    p = prob.n_params
    ref = prob.reference()
    objective, _ = measure._compile(cost, params, batch)
    ests = {m: gdjax.gradient(cost, m) for m in (KERNEL, LOOP, REVERSE)}
    fns = {m: (measure._compile(lambda p_, b, e=e: e(p_, b), params, batch)[0] if e.jittable
               else (lambda p_, b, e=e: e(p_, b))) for m, e in ests.items()}
    plan = ests[KERNEL].plan(params, batch)  # the kernel's measured layout (timed here, before any round)
    fixed = {c: measure._compile(lambda p_, b, e=gdjax.gradient(cost, KERNEL, chunk_size=c): e(p_, b),
                                 params, batch)[0] for c in CHUNKS}
    row = {"section": "timing", "problem": prob.name, "description": prob.description, "P": p,
           "batch_size": prob.batch_size, "dtype": prob.dtype, "rounds": rounds,
           "evaluations_kernel": ests[KERNEL].evaluations(p), "evaluations_loop": ests[LOOP].evaluations(p),
           "options_kernel": ", ".join(f"{k}={v}" for k, v in sorted(ests[KERNEL].options.items())),
           **{k: v for k, v in plan.record().items() if k != "plan_candidates"}, "chunks": list(CHUNKS)}
    outs = {}  # first calls (fd-loop compiles its per-direction programs here): their seconds and errors
    first, _ = profiling.interleaved([(lambda m=m, fn=fn: outs.setdefault(m, fn(params, batch)), ())
                                      for m, fn in fns.items()], 1)
    for (m, out), (t,) in zip(outs.items(), first):
        row[f"first_s_{KEY[m]}"] = t
        row[f"rel_error_{KEY[m]}"] = relative_error(flat_numpy(out), ref)
    calls = [(objective, (params, batch))] + [(fns[m], (params, batch)) for m in (KERNEL, LOOP, REVERSE)]
    calls += [(fixed[c], (params, batch)) for c in CHUNKS]
    wall, _ = profiling.interleaved(calls, rounds, warm=True)
    obj, kernel, loop, rev = wall[:4]
    chunk_times = dict(zip(CHUNKS, wall[4:]))
    best = [min(ts) for ts in zip(*chunk_times.values())]  # per round: the fastest fixed width
    for c, ts in chunk_times.items():
        row.update({f"chunk{c}_s": statistics.median(ts), f"chunk{c}_times_s": list(ts)})
    row["best_chunk"] = min(CHUNKS, key=lambda c: statistics.median(chunk_times[c]))
    row["plan_over_one_gradient"] = plan.planning_s / statistics.median(kernel)
    for key, times in (("objective", obj), ("kernel", kernel), ("loop", loop), ("reverse", rev)):
        row.update({f"{key}_s": statistics.median(times), f"{key}_min_s": min(times), f"{key}_max_s": max(times),
                    f"{key}_times_s": list(times)})
    for key, num, den in (("kernel_over_P_objective", kernel, [p * t for t in obj]),
                          ("kernel_over_loop", kernel, loop), ("reverse_over_objective", rev, obj),
                          ("kernel_over_best_chunk", kernel, best)):
        r = profiling.round_ratios(num, den)
        row.update({key: r["median"], f"{key}_min": r["min"], f"{key}_max": r["max"]})
    row.update(_flops(objective, fns, ests, prob))
    log(f"{prob.name}: kernel / (P x objective) {row['kernel_over_P_objective']:.3g}, kernel / fd-loop "
        f"{row['kernel_over_loop']:.3g}, / best fixed chunk ({row['best_chunk']}) {row['kernel_over_best_chunk']:.3g}, "
        f"reverse / objective {row['reverse_over_objective']:.3g}")
    return row


def _flops(objective, fns, ests, prob) -> dict:
    """XLA FLOPs (loops x trip count) and dot/convolution FLOPs of the objective and each gradient program;
    fd-loop's from its one-direction program x its evaluations (`measure.one_direction_flops`)."""
    out = {"objective_xla_flops": profiling.xla_flops(None, executable=objective, complex_weighted=True),
           "objective_dot_flops": profiling.dot_flops(objective)}
    for m in (KERNEL, REVERSE):
        out[f"{KEY[m]}_xla_flops"] = profiling.xla_flops(None, executable=fns[m], complex_weighted=True)
        out[f"{KEY[m]}_dot_flops"] = profiling.dot_flops(fns[m])
    one = measure.one_direction_flops(prob.cost, prob.params, prob.batch)
    evals = ests[LOOP].evaluations(prob.n_params)
    out["loop_xla_flops"] = None if one is None else evals * one["xla_flops"]
    out["loop_dot_flops"] = None if one is None or one["dot_flops"] is None else evals * one["dot_flops"]
    out["loop_flops_source"] = "one-direction program x evaluations"
    return out


def _timed(call, repeats: int):
    """(the first call's result, `profiling.time_fn`'s Timing): `compile_s` is the first call (compilation
    included), `times` the `repeats` repeated calls."""
    out = []
    return out, profiling.time_fn(lambda: out.append(call()), repeats=repeats)


def _first_and_repeated(base: dict, timing, **info) -> list[dict]:
    """A checker's two rows: its first call and the median of its repeated calls."""
    return [dict(base, call="first", seconds=timing.compile_s, **info),
            dict(base, call="repeated", seconds=timing.median_s, times_s=list(timing.times), **info)]


def check_grad_rows(prob, repeats: int, log) -> list[dict]:
    """gdjax.check_grad in each of CHECK_MODES, a fresh function each (the first call compiles); a mode
    check_grad refuses or silently replaces is recorded absent."""
    rows = []
    base = {"section": "checker", "problem": prob.name, "P": prob.n_params, "tool": "gdjax.check_grad"}
    for mode in CHECK_MODES:
        def f(params, batch):  # a new function object per mode: nothing compiled for it yet
            return prob.cost(params, batch)

        # the localising mode draws random directions: a fixed, stated key
        opts = {"mode": mode, **({"key": jax.random.key(0)} if mode == "directions" else {})}
        try:
            out, t = _timed(lambda: gdjax.check_grad(f, prob.params, prob.batch, **opts), repeats)
        except (ValueError, TypeError) as err:
            rows.append(dict(base, mode=mode, call="first", absent=True,
                             reason=f"check_grad(mode={mode!r}) refused: {common._one_line(err)}"))
            continue
        report = out[0]
        if report.mode != mode:
            rows.append(dict(base, mode=mode, call="first", absent=True,
                             reason=f"check_grad(mode={mode!r}) ran mode {report.mode!r} instead"))
            continue
        rows += _first_and_repeated(base, t, mode=mode, ok=bool(report.ok), evaluations=report.evaluations,
                                    absent=False, key="jax.random.key(0)" if mode == "directions" else None,
                                    num_directions=getattr(report, "num_directions", None))
        log(f"{prob.name}: check_grad {mode}: first {t.compile_s:.3g} s, repeated {t.median_s:.3g} s")
    return rows


def torch_rows(mod, prob, repeats: int, no_torch: bool, log) -> list[dict]:
    """torch.autograd.gradcheck slow and fast mode on the problem written in PyTorch (first call and the
    median of `repeats` repeated ones), after checking that the torch objective and its gradient equal the JAX
    ones; absent rows with the reason when torch is not available."""
    base = {"section": "checker", "problem": prob.name, "P": prob.n_params, "tool": "torch.autograd.gradcheck"}
    try:
        if no_torch:
            raise ImportError("left out with --no-torch")
        f, inputs = mod.torch_cost(prob)
    except ImportError as err:
        log(f"{prob.name}: torch rows absent ({common._one_line(err)})")
        return [dict(base, mode=m, call=c, absent=True, reason=common._one_line(err))
                for m in ("slow", "fast") for c in ("first", "repeated")]
    torch = sys.modules["torch"]  # imported by torch_cost
    value = f(*inputs)
    grads = torch.autograd.grad(value, inputs)
    same = {"torch": torch.__version__,
            "torch_value_rel_diff": abs(float(value.detach()) - float(prob.cost(prob.params, prob.batch)))
            / max(abs(float(value.detach())), 1e-300),
            "torch_grad_rel_error": relative_error(np.concatenate([g.detach().numpy().ravel() for g in grads]),
                                                   prob.reference())}
    rows = []
    for mode in ("slow", "fast"):
        ok, t = _timed(lambda: torch.autograd.gradcheck(f, inputs, fast_mode=mode == "fast", raise_exception=False),
                       repeats)
        rows += _first_and_repeated(dict(base, mode=mode), t, ok=bool(ok[0]), absent=False, **same)
        log(f"{prob.name}: torch gradcheck {mode}: first {t.compile_s:.3g} s, repeated {t.median_s:.3g} s")
    return rows


def _planted(cost, path, index, factor):
    """jax.grad of `cost` with the entry `index` of the leaf at `path` multiplied by `factor`."""
    def grad(params, batch):
        g = jax.grad(cost)(params, batch)
        return jax.tree_util.tree_map_with_path(
            lambda p, x: x.at[index].multiply(factor) if jax.tree_util.keystr(p) == path else x, g)
    return grad


def _uniform_entry(rng, grad_tree, min_rel: float):
    """(leaf path, index): uniform over the entries of every leaf with |g_i| >= min_rel max|g|."""
    flat = [(jax.tree_util.keystr(p), np.abs(np.asarray(g, np.float64)))
            for p, g in jax.tree_util.tree_leaves_with_path(grad_tree)]
    top = max(float(g.max()) for _, g in flat)
    cands = [(path, idx) for path, g in flat for idx in zip(*np.nonzero(g >= min_rel * top))]
    path, idx = cands[rng.integers(len(cands))]
    return path, tuple(int(i) for i in idx)


def localising_row(prob, seeds: int, cases: int, log) -> dict:
    """check_grad's localising mode (`mode="directions"`) on the problem: a 1% error planted at one entry per
    seed (uniform over the entries with |g_i| >= 1e-2 max|g|) must be failed and named (that entry, and only it);
    `cases` checks of the correct gradient (a different direction key each) must not fail."""
    f = prob.cost
    ref = jax.grad(f)(prob.params, prob.batch)
    named, evals = 0, []
    for seed in range(seeds):
        path, index = _uniform_entry(np.random.default_rng([seed, 24]), ref, LOCAL_MIN_REL)
        report = gdjax.check_grad(f, prob.params, prob.batch, grad=_planted(f, path, index, LOCAL_FACTOR),
                                  check={"mode": "directions", "key": jax.random.key(seed)})
        named += bool(report.failed) and [(e.path, tuple(e.index)) for e in report.named
                                          if e.status == "failed"] == [(path, index)]
        evals.append(report.evaluations)
    statuses = [gdjax.check_grad(f, prob.params, prob.batch,
                                 check={"mode": "directions", "key": jax.random.key(10_000 + c)}).status
                for c in range(cases)]
    row = {"section": "localising", "problem": prob.name, "P": prob.n_params, "seeds": seeds, "named": named,
           "factor": LOCAL_FACTOR, "min_rel": LOCAL_MIN_REL, "evaluations_median": float(np.median(evals)),
           "correct_cases": cases, "false_alarms": sum(s == "failed" for s in statuses),
           "not_ok": sum(s != "ok" for s in statuses)}
    log(f"{prob.name}: localising named {named}/{seeds}, {row['false_alarms']}/{cases} false alarms")
    return row


_CACHE_PROBE = """
import sys, time, jax
jax.config.update("jax_enable_x64", True)
import gdjax, importlib
gdjax.enable_compilation_cache(sys.argv[1], min_compile_seconds=0.0)
prob = importlib.import_module("benchmarks.problems." + sys.argv[2]).{factory}()
t0 = time.perf_counter()
gdjax.check_grad(prob.cost, prob.params, prob.batch, check={{"mode": "full"}})
print(time.perf_counter() - t0)
"""


def cache_row(name: str, prob, tiny: bool, log) -> dict:
    """The persistent compilation cache: the first check_grad call (full mode) of a fresh process with an empty
    cache folder, then of a second fresh process with the same folder; their ratio."""
    code = _CACHE_PROBE.format(factory="tiny" if tiny else "make")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as cache:
        secs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code, cache, name], cwd=root, capture_output=True,
                                 text=True, check=True)
            secs.append(float(out.stdout.strip().splitlines()[-1]))
    row = {"section": "cache", "problem": prob.name, "module": name, "first_process_s": secs[0], "second_process_s": secs[1],
           "speedup": secs[0] / secs[1]}
    log(f"{name}: first check_grad call, fresh cache {secs[0]:.3g} s, second process {secs[1]:.3g} s")
    return row


def add_checker_ratios(rows: list[dict]) -> None:
    """On every present check_grad row: torch slow mode's seconds (same problem, same call) / its seconds."""
    torch_slow = {(r["problem"], r["call"]): r["seconds"] for r in rows
                  if r.get("tool") == "torch.autograd.gradcheck" and r.get("mode") == "slow" and not r["absent"]}
    for r in rows:
        if r.get("tool") == "gdjax.check_grad" and not r["absent"]:
            slow = torch_slow.get((r["problem"], r["call"]))
            r["torch_slow_over_this"] = None if slow is None else slow / r["seconds"]


def run(args) -> int:
    load_start = common.load_average()
    log = print
    rows = []
    for name in args.names:
        mod = importlib.import_module(f"benchmarks.problems.{name}")
        prob = mod.tiny() if args.tiny else mod.make(seed=args.seed)  # the test or the benchmark's sizes
        log(f"{name}: {prob.description or prob.name}: P = {prob.n_params}")
        rows.append(timing_row(prob, args.rounds, log))
        rows += check_grad_rows(prob, args.repeats, log)
        rows += torch_rows(mod, prob, args.repeats, args.no_torch, log)
        if name in args.local:
            rows.append(localising_row(prob, args.seeds, args.cases, log))
            rows.append(cache_row(name, prob, args.tiny, log))
    add_checker_ratios(rows)
    config = {"problems": list(args.names), "tiny": args.tiny, "rounds": args.rounds, "repeats": args.repeats,
              "seed": args.seed, "kernel": KERNEL, "loop": LOOP, "check_modes": list(CHECK_MODES),
              "chunks": list(CHUNKS), "localising": list(args.local), "seeds": args.seeds, "cases": args.cases,
              "localising_factor": LOCAL_FACTOR, "localising_min_rel": LOCAL_MIN_REL}
    path = results.save_results(args.path, rows, meta=common.meta(load_start, benchmark=COMMAND), config=config)
    return common.wrote(path, results.csv_path(path))


def main(argv=None) -> int:
    return common.run_main(COMMAND, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
