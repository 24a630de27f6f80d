#!/usr/bin/env python3
"""`make bench-gpu`: the FD-vs-`jax.grad` benchmark on one NVIDIA GPU, time-boxed (8 minutes with compilation).

    PYTHONPATH=. python3 benchmarks/bench_gpu.py            # on the GPU machine, with ITS python and jax
    python3 benchmarks/bench_gpu.py --allow-cpu --tiny      # the same plan on the CPU, tiny sizes (the test)

Runs with the interpreter it is started with (on a GPU image: the image's own jax with CUDA; no venv is made,
so a CPU-only jax never hides the GPU). Four steps in this order, each with its share of the wall-clock budget
(`--budget-s`, default 480 s from the start, compilation included; `budget_plan`): a step starts no point
after its own deadline and lists what it left out, and every later step still gets its share:
  1. the precision trade-off (40%): `fd-forward` and `fd-central` at full float32 ("highest", gdjax's default)
     and at TF32 (`matmul_precision="tensorfloat32"`), beside `jax.grad` (`reverse`, at JAX's default), time
     and error against a float64 `jax.grad`, at [784, 30, 10] with N = 1000 and then at the largest
     [784, h, 10] whose predicted fd-central gradient at full float32 fits a point's budget (predicted from
     the lecture net's measured time x the ratio of evaluations x forward FLOPs: `largest_fitting`); each row
     records the precision in force, the program's memory and the device's peak: `precision_tradeoff.json`
     (config: the plan, its budget arithmetic and the candidates' predictions);
  2. the quick sweep (20%): `gdjax bench`'s default networks and every method (per-point budget 10 s), no
     million table: `fd_vs_grad.json`;
  3. the FD kernel (`fd-forward`) against `fd-loop` and the matmul reference (15%), whole gradients at
     [784, 30, 10] with N = 10, 1000 and 10000: `kernel_vs_loop.json` (rows: N, method, seconds, % of the
     reference by XLA FLOPs, fd-loop / kernel);
  4. as much of the full sweep (`--full`: P = 1e2..1e6, per-point budget 60 s) as the time left allows (the
     rest): `fd_vs_grad_full.json` (meta["not_run"] lists what did not fit; `--resume` continues it).
A point predicted over its budget is timed on part of its directions and extrapolated (`how: "extrapolated"`,
no error claimed), as in `gdjax bench`. Writes `benchmarks/results/gpu/` (or `--out`). Without a GPU it prints
one line and exits 0 (`--require-gpu`: exit status 3). A missing optional package (matplotlib) only skips the
figures.
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
FD_METHODS = ("fd-forward", "fd-central")
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


def points_per_net() -> list[tuple[str, str | None]]:
    """The (method, matmul_precision) points at each net of the precision step, in order: jax.grad first (at
    JAX's default: None), then each FD method at each precision."""
    return [("reverse", None)] + [(m, p) for m in FD_METHODS for p in PRECISIONS]


def predicted_seconds(sizes, n: int, ref_sizes, ref_seconds: float) -> float:
    """An FD gradient's seconds at `sizes` predicted from one measured at `ref_sizes` (same N, method and
    precision): scaled by evaluations (~P) x forward FLOPs. A small net fills a GPU less than a big one, so this
    overestimates big nets: the choice it makes errs towards a net that fits."""
    from gdjax.nn import MLP, param_count

    work = param_count(sizes) * MLP(sizes).forward_flops(n)
    return ref_seconds * work / (param_count(ref_sizes) * MLP(ref_sizes).forward_flops(n))


def largest_fitting(candidates, n: int, ref_sizes, ref_seconds: float | None, point_budget: float):
    """(the largest candidate whose predicted seconds fit `point_budget`, or None; the predictions by net).
    A prediction that errs the other way only makes the point extrapolated rather than timed whole."""
    from gdjax.nn import param_count

    if ref_seconds is None:
        return None, {}
    pred = {"-".join(map(str, c)): predicted_seconds(c, n, ref_sizes, ref_seconds) for c in candidates}
    fitting = [c for c in candidates if pred["-".join(map(str, c))] <= point_budget]
    return (max(fitting, key=param_count) if fitting else None), pred


def precision_tradeoff(plan: dict, share_s: float, deadline: float, tiny: bool) -> tuple[list[dict], dict]:
    """Step 1: `points_per_net()` at plan["net"], then at the largest candidate that fits (`largest_fitting`,
    from the lecture net's fd-central time at full float32). Rows from `gdjax.bench.measure` (time, error,
    memory, matmul_precision) plus device_peak_bytes; returns (rows, the plan as run: nets, per-point budget,
    predictions, what was left out)."""
    import jax

    from gdjax import profiling
    from gdjax.bench.config import FORWARD_PASS, Point
    from gdjax.bench.measure import measure_forward, measure_method
    from gdjax.bench.problem import make_problem, reference_gradient, sub_batch

    n_points = 2 * (len(points_per_net()) + 1)  # two nets, the forward pass and each point
    point_budget = 0.5 if tiny else share_s / n_points / 2.0  # half for compilation, pilots and the error
    rows, not_run, done = [], [], {"point_budget_s": point_budget, "share_s": share_s, "points": points_per_net()}

    def measure_net(sizes):
        cost, params, batch = make_problem(sizes, plan["n"], "float32")
        b = sub_batch(batch, plan["n"])
        fwd = measure_forward(Point("precision", sizes, plan["n"], FORWARD_PASS), cost, params, b, dtype="float32",
                              repeats=3, budget=point_budget)
        rows.append({**fwd, "device_peak_bytes": profiling.device_peak_bytes()})
        ref = None
        for method, precision in points_per_net():
            if time.perf_counter() > deadline:
                not_run.append({"sizes": "-".join(map(str, sizes)), "method": method, "matmul_precision": precision})
                continue
            if ref is None:
                ref = reference_gradient(cost, params, b)
            row, _ = measure_method(Point("precision", sizes, plan["n"], method), cost, params, b, dtype="float32",
                                    t_forward=fwd["median_s"], forward_flops=fwd["xla_flops_raw"],
                                    reference=lambda: ref, key=jax.random.key(0), repeats=3, budget=point_budget,
                                    validate=False, options=None if precision is None else
                                    {"matmul_precision": precision})
            rows.append({**row, "device_peak_bytes": profiling.device_peak_bytes()})

    measure_net(plan["net"])
    central = [r for r in rows if r["method"] == "fd-central" and r.get("matmul_precision") == "highest"
               and r.get("status") == "ok"]
    big, pred = largest_fitting(plan["candidates"], plan["n"], plan["net"],
                                central[0]["median_s"] if central else None, point_budget)
    done.update(predicted_s=pred, largest=None if big is None else list(big))
    if big is not None and time.perf_counter() <= deadline:
        measure_net(big)
    elif big is not None:
        not_run.append({"sizes": "-".join(map(str, big)), "method": "all", "matmul_precision": None})
    done["not_run"] = not_run
    return rows, done


def kernel_vs_loop(sizes, ns, budget: float, deadline: float, tiny: bool = False) -> list[dict]:
    """Whole `fd-forward` and `fd-loop` gradients and the matmul reference (1024^3, 2048^3 and the kernel's
    first-layer shape N x n_in x 64 h1; 128^3 when `tiny`) at `sizes` for each N in `ns`."""
    import jax

    from gdjax.bench import sweep
    from gdjax.bench.config import FORWARD_PASS, Point
    from gdjax.bench.measure import measure_forward, measure_method
    from gdjax.bench.problem import make_problem, reference_gradient, sub_batch

    rows = []
    for n in ns:
        if time.perf_counter() > deadline:
            rows.append({"sizes": "-".join(map(str, sizes)), "batch_size": n, "status": "not run (time)"})
            continue
        cost, params, batch = make_problem(sizes, n, "float32")
        b = sub_batch(batch, n)
        shapes = [(128,) * 3] if tiny else [(1024,) * 3, (2048,) * 3, (n, sizes[0], 64 * sizes[1])]
        ref = sweep.measure_reference(shapes, "float32")
        fwd = measure_forward(Point("kernel", sizes, n, FORWARD_PASS), cost, params, b, dtype="float32",
                              repeats=3, budget=budget)
        got = {}
        for method in ("fd-forward", "fd-loop"):
            row, _ = measure_method(Point("kernel", sizes, n, method), cost, params, b, dtype="float32",
                                    t_forward=fwd["median_s"], forward_flops=fwd["xla_flops_raw"],
                                    reference=lambda: reference_gradient(cost, params, b),
                                    key=jax.random.key(0), repeats=3, budget=budget, validate=False)
            got[method] = row
        best = max(ref.values())
        for method, row in got.items():
            row = sweep.apply_reference([row], best)[0]
            row["fd_loop_over_kernel"] = got["fd-loop"]["median_s"] / got["fd-forward"]["median_s"]
            row["matmul_reference"] = ref
            rows.append(row)
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


def step_precision(precision: dict, step: tuple, args, out: Path, results) -> list[Path]:
    """Step 1, `precision_tradeoff`, written to precision_tradeoff.json and printed."""
    rows, done = precision_tradeoff(precision, *step, args.tiny)
    path = out / "precision_tradeoff.json"
    config = {**{k: [list(c) for c in v] if k == "candidates" else v for k, v in precision.items()}, **done,
              "budget_s": args.budget_s, "shares": dict(SHARES), "steps": args.steps}
    results.save_results(path, rows, meta={**results.environment(), "benchmark": "precision_tradeoff"},
                         config=config)
    for r in rows:
        if r.get("status") == "ok" and r["method"] != "forward-pass":
            err = r.get("rel_error")
            print(f"{r['sizes']:>12} {r['method']:<11} {r['matmul_precision']:<14} {r['median_s']:.4g} s  "
                  f"rel. error {'-' if err is None else f'{err:.2g}'}  ({r['how']})")
    return [path]


def step_kernel(k_sizes, k_ns, step: tuple, args, out: Path, results) -> list[Path]:
    """Step 3, `kernel_vs_loop`, written to kernel_vs_loop.json and printed."""
    rows = kernel_vs_loop(k_sizes, k_ns, 0.25 * step[0], step[1], args.tiny)
    path = out / "kernel_vs_loop.json"
    results.save_results(path, rows, meta={**results.environment(), "benchmark": "kernel_vs_loop"},
                         config={"sizes": list(k_sizes), "batch_sizes": list(k_ns)})
    for r in rows:
        if r.get("status") == "ok" and "fd_loop_over_kernel" in r:
            print(f"N={r['batch_size']:>6} {r['method']:<11} {r['median_s']:.4g} s  "
                  f"{(r.get('peak_fraction') or 0):.0%} of matmul  fd-loop/kernel {r['fd_loop_over_kernel']:.3g}")
    return [path]


if __name__ == "__main__":
    sys.exit(main())
