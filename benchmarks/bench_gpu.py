#!/usr/bin/env python3
"""`make bench-gpu`: the FD-vs-`jax.grad` benchmark on one NVIDIA GPU, time-boxed (8 minutes with compilation).

    PYTHONPATH=. python3 benchmarks/bench_gpu.py            # on the GPU machine, with ITS python and jax
    python3 benchmarks/bench_gpu.py --allow-cpu --tiny      # the same plan on the CPU, tiny sizes (the test)

Runs with the interpreter it is started with (a GPU image's own jax with CUDA). Four steps, each with its share of
the wall-clock budget (`--budget-s`, default 480 s, `budget_plan`); a step starts no point after its deadline and
lists what it left out:
  1. precision (40%): `fd-forward` and `fd-central` at full float32 ("highest") and TF32, beside `jax.grad`, time
     and error against float64 `jax.grad`, at [784, 30, 10], N = 1000, then at the largest [784, h, 10] predicted
     to fit a point's budget (`largest_fitting`); rows record precision, memory, device peak:
     `precision_tradeoff.json`;
  2. quick (20%): `gdjax bench`'s default sweep (10 s per point): `fd_vs_grad.json`;
  3. kernel (15%): whole `fd-forward` and `fd-loop` gradients and the matmul reference at N = 10, 1000, 10000:
     `kernel_vs_loop.json`;
  4. full (the rest): as much of the full sweep as fits: `fd_vs_grad_full.json` (`--resume` continues it).
A point predicted over its budget is timed on part of its directions and extrapolated, as in `gdjax bench`.
Writes `benchmarks/results/gpu/` (or `--out`). Without a GPU: one line, exit 0 (`--require-gpu`: 3).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # PYTHONPATH=. is enough, but run from anywhere too
    sys.path.insert(0, str(ROOT))

BUDGET_S = 480.0
NS = (10, 1000, 10_000)
SHARES = (("precision", 0.40), ("quick", 0.20), ("kernel", 0.15), ("full", 0.25))  # of the budget, in order
PRECISIONS = ("highest", "tensorfloat32")  # full float32 (gdjax's default) and TF32 (the GPU's own default)
# the precision step's (method, matmul_precision) points at each net: jax.grad at JAX's default, then FD at each
POINTS = [("reverse", None)] + [(m, p) for m in ("fd-forward", "fd-central") for p in PRECISIONS]
PRECISION_N = 1000
WIDTHS = (100, 300, 1000, 3000, 10_000)  # candidates [784, h, 10] for the largest net that fits


def parse_args(argv):
    from gdjax.bench.args import OneLineParser

    ap = OneLineParser(prog="bench_gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"), help="output folder")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock seconds for everything (480)")
    ap.add_argument("--allow-cpu", action="store_true", help="run the plan on the CPU (tests)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and budgets (tests)")
    ap.add_argument("--require-gpu", action="store_true", help="exit 3 (not 0) when there is no GPU")
    ap.add_argument("--resume", action="store_true", help="continue the full sweep's JSON-lines")
    ap.add_argument("--steps", default=",".join(s for s, _ in SHARES),
                    help="the steps to run, comma-separated, each keeping its share and deadline "
                         "(default: precision,quick,kernel,full)")
    args = ap.parse_args(argv)
    if not args.budget_s > 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in dict(SHARES)]
    if unknown or not args.steps:
        ap.error(f"--steps: unknown step(s) {unknown or args.steps}; choose from {', '.join(dict(SHARES))}")
    return args


def gpu_device(allow_cpu: bool):
    """The first GPU JAX sees, else (with allow_cpu) the CPU; None when neither applies, with the reason."""
    import jax

    try:
        return jax.devices("gpu")[0], None
    except RuntimeError as err:
        reason = " ".join(str(err).split())[:160]
    return (jax.devices("cpu")[0], None) if allow_cpu else (None, reason)


def plans(tiny: bool):
    """The four steps' configurations: (precision plan, quick BenchConfig, kernel-vs-loop (sizes, Ns), full
    BenchConfig). The precision plan: {net (the first net), candidates (the larger nets, smallest first), n}."""
    from gdjax.bench import config as bc

    if tiny:
        quick = bc.BenchConfig(sizes=bc.QUICK_SIZES[:1], batch_size=32, repeats=2, time_budget=0.5, million=False,
                               methods=("reverse", "fd-forward", "fd-loop"))
        full = bc.BenchConfig(sizes=((8, 8, 2),), batch_size=16, repeats=1, time_budget=0.5, million=False,
                              methods=("reverse", "fd-forward"))
        precision = {"net": (16, 8, 4), "candidates": [(16, h, 4) for h in (12, 24, 10_000)], "n": 16}
        return precision, quick, ((16, 12, 4), (10, 64)), full
    quick = bc.BenchConfig(sizes=bc.DEFAULT_SIZES, time_budget=10.0, million=False)
    full = bc.BenchConfig(sizes=bc.parse_sizes("full"), time_budget=60.0, million=True)
    precision = {"net": bc.LECTURE_NET, "candidates": [(784, h, 10) for h in WIDTHS], "n": PRECISION_N}
    return precision, quick, (bc.LECTURE_NET, NS), full


def budget_plan(t0: float, budget_s: float) -> dict:
    """Each step's share of the budget and its deadline (perf_counter values), in order: {step: (share_s,
    deadline)}; the deadlines add up the shares from `t0`, the last one is t0 + budget_s."""
    plan, end = {}, t0
    for step, frac in SHARES:
        end += frac * budget_s
        plan[step] = (frac * budget_s, end)
    return plan


def largest_fitting(candidates, n: int, ref_sizes, ref_seconds: float | None, point_budget: float):
    """(the largest candidate whose predicted seconds fit `point_budget`, or None; the predictions by net).

    An FD gradient's seconds at a candidate are predicted from `ref_seconds` at `ref_sizes` (same N, method and
    precision) scaled by evaluations (~P) x forward FLOPs. A small net fills a GPU less than a big one, so this
    overestimates big nets: the choice errs towards a net that fits (else the point is only extrapolated)."""
    from gdjax.nn import MLP, param_count

    if ref_seconds is None:
        return None, {}
    work = {c: param_count(c) * MLP(c).forward_flops(n) for c in [ref_sizes, *candidates]}
    pred = {"-".join(map(str, c)): ref_seconds * work[c] / work[ref_sizes] for c in candidates}
    fitting = [c for c in candidates if pred["-".join(map(str, c))] <= point_budget]
    return (max(fitting, key=param_count) if fitting else None), pred


def measure_net(tag: str, sizes, n: int, points, budget: float, deadline: float = float("inf")):
    """`gdjax.bench.measure` rows at one net (float32, N = n): the forward pass, then each (method,
    matmul_precision) of `points` until `deadline` (perf_counter), each with the device's peak bytes so far.
    Returns (forward row, {point: row}, the points left out)."""
    import functools

    import jax

    from gdjax import profiling
    from gdjax.bench.config import FORWARD_PASS, Point
    from gdjax.bench.measure import measure_forward, measure_method
    from gdjax.bench.problem import make_problem, reference_gradient, sub_batch

    cost, params, batch = make_problem(sizes, n, "float32")
    b = sub_batch(batch, n)
    fwd = measure_forward(Point(tag, sizes, n, FORWARD_PASS), cost, params, b, dtype="float32", repeats=3,
                          budget=budget)
    fwd["device_peak_bytes"] = profiling.device_peak_bytes()
    ref = functools.cache(lambda: reference_gradient(cost, params, b))
    got, left = {}, []
    for method, precision in points:
        if time.perf_counter() > deadline:
            left.append({"sizes": "-".join(map(str, sizes)), "method": method, "matmul_precision": precision})
            continue
        row, _ = measure_method(Point(tag, sizes, n, method), cost, params, b, dtype="float32",
                                t_forward=fwd["median_s"], forward_flops=fwd["xla_flops_raw"], reference=ref,
                                key=jax.random.key(0), repeats=3, budget=budget, validate=False,
                                options=None if precision is None else {"matmul_precision": precision})
        got[(method, precision)] = {**row, "device_peak_bytes": profiling.device_peak_bytes()}
    return fwd, got, left


def precision_tradeoff(plan: dict, share_s: float, deadline: float, tiny: bool) -> tuple[list[dict], dict]:
    """Step 1: `POINTS` at plan["net"], then at the largest candidate that fits (`largest_fitting`,
    from the lecture net's fd-central time at full float32). Returns (rows, the plan as run: nets, per-point
    budget, predictions, what was left out)."""
    n_points = 2 * (len(POINTS) + 1)  # two nets, the forward pass and each point
    point_budget = 0.5 if tiny else share_s / n_points / 2.0  # half for compilation, pilots and the error
    done = {"point_budget_s": point_budget, "share_s": share_s, "points": POINTS}
    fwd, got, not_run = measure_net("precision", plan["net"], plan["n"], POINTS, point_budget, deadline)
    rows = [fwd, *got.values()]
    central = got.get(("fd-central", "highest"))
    big, pred = largest_fitting(plan["candidates"], plan["n"], plan["net"], central["median_s"] if central and
                                central.get("status") == "ok" else None, point_budget)
    done.update(predicted_s=pred, largest=None if big is None else list(big))
    if big is not None and time.perf_counter() <= deadline:
        fwd, got, left = measure_net("precision", big, plan["n"], POINTS, point_budget, deadline)
        rows += [fwd, *got.values()]
        not_run += left
    elif big is not None:
        not_run.append({"sizes": "-".join(map(str, big)), "method": "all", "matmul_precision": None})
    return rows, {**done, "not_run": not_run}


def kernel_vs_loop(sizes, ns, budget: float, deadline: float, tiny: bool = False) -> list[dict]:
    """Whole `fd-forward` and `fd-loop` gradients and the matmul reference (1024^3, 2048^3 and the kernel's
    first-layer shape N x n_in x 64 h1; 128^3 when `tiny`) at `sizes` for each N in `ns`."""
    from gdjax.bench import sweep

    rows = []
    for n in ns:
        if time.perf_counter() > deadline:
            rows.append({"sizes": "-".join(map(str, sizes)), "batch_size": n, "status": "not run (time)"})
            continue
        shapes = [(128,) * 3] if tiny else [(1024,) * 3, (2048,) * 3, (n, sizes[0], 64 * sizes[1])]
        ref = sweep.measure_reference(shapes, "float32")
        _, got, _ = measure_net("kernel", sizes, n, [("fd-forward", None), ("fd-loop", None)], budget)
        ratio = got[("fd-loop", None)]["median_s"] / got[("fd-forward", None)]["median_s"]
        rows += [{**sweep.apply_reference([row], max(ref.values()))[0], "fd_loop_over_kernel": ratio,
                  "matmul_reference": ref} for row in got.values()]
    return rows


def main(argv=None) -> int:
    t0 = time.perf_counter()
    try:
        import jax  # noqa: F401

        from gdjax import provenance, results
        from gdjax.bench import run as bench_run
    except ImportError as err:  # a CPU machine's bare python3, or a GPU image missing a dependency
        print(f"bench_gpu: {err} in {sys.executable}: this target runs on a GPU machine's own python with jax "
              f"(CUDA) and gdjax's dependencies; on a CPU use `make bench`; nothing measured", file=sys.stderr)
        return 3 if "--require-gpu" in (sys.argv[1:] if argv is None else argv) else 0
    provenance.start()  # the run's stamp, verified when its results are written (gdjax.results.write_json)
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    device, reason = gpu_device(args.allow_cpu)
    if device is None:
        print(f"bench_gpu: no NVIDIA GPU visible to JAX here ({reason}); nothing measured")
        return 3 if args.require_gpu else 0
    deadline = t0 + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    precision, quick, (k_sizes, k_ns), full = plans(args.tiny)
    steps = budget_plan(t0, args.budget_s)
    written = []
    with jax.default_device(device):
        if "precision" in args.steps:
            written += step_precision(precision, steps["precision"], args, out, results)
        if "quick" in args.steps:
            data, more = bench_run.run(quick, out, quick=args.tiny, progress=False, deadline=steps["quick"][1])
            written += more
            print(bench_run.summary(data))
        if "kernel" in args.steps:
            written += step_kernel(k_sizes, k_ns, steps["kernel"], args, out, results)
        if "full" in args.steps:
            data, more = bench_run.run(full, out, name="fd_vs_grad_full", quick=args.tiny, progress=False,
                                       resume=args.resume, deadline=deadline)
            written += more
            print(f"full sweep: {len(data['rows'])} points measured, {len(data['meta']['not_run'])} left for "
                  f"--resume")
    for p in written:
        print(f"wrote {p}")
    print(f"bench_gpu: done in {time.perf_counter() - t0:.0f} s on {device.device_kind}")
    return 0


def _save(out: Path, name: str, rows: list[dict], config: dict, results) -> list[Path]:
    """One step's results file, its rows printed (`gdjax.bench.report.human_time`)."""
    from gdjax.bench.report import human_time

    path = results.save_results(out / f"{name}.json", rows, meta={**results.environment(), "benchmark": name},
                                config=config)
    for r in rows:
        if r.get("status") == "ok" and r["method"] != "forward-pass":
            print(f"{r['sizes']:>12} N={r['batch_size']:<6} {r['method']:<11} {r.get('matmul_precision') or '':<14} "
                  f"{human_time(r['median_s']):>9} ({r['how']})  rel. error {r.get('rel_error')}")
    return [path]


def step_precision(precision: dict, step: tuple, args, out: Path, results) -> list[Path]:
    """Step 1, `precision_tradeoff`, written to precision_tradeoff.json and printed."""
    rows, done = precision_tradeoff(precision, *step, args.tiny)
    config = {**precision, "candidates": [list(c) for c in precision["candidates"]], **done,
              "budget_s": args.budget_s, "shares": dict(SHARES), "steps": args.steps}
    return _save(out, "precision_tradeoff", rows, config, results)


def step_kernel(k_sizes, k_ns, step: tuple, args, out: Path, results) -> list[Path]:
    """Step 3, `kernel_vs_loop`, written to kernel_vs_loop.json and printed."""
    rows = kernel_vs_loop(k_sizes, k_ns, 0.25 * step[0], step[1], args.tiny)
    return _save(out, "kernel_vs_loop", rows, {"sizes": list(k_sizes), "batch_sizes": list(k_ns)}, results)


if __name__ == "__main__":
    sys.exit(main())
