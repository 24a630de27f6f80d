#!/usr/bin/env python3
"""`make bench-gpu`: the FD-vs-`jax.grad` benchmark on one NVIDIA GPU, time-boxed (8 minutes with compilation).

    PYTHONPATH=. python3 benchmarks/bench_gpu.py            # on the GPU machine, with ITS python and jax
    python3 benchmarks/bench_gpu.py --allow-cpu --tiny      # the same plan on the CPU, tiny sizes (the test)

Runs with the interpreter it is started with (on a GPU image: the image's own jax with CUDA; no venv is made,
so a CPU-only jax never hides the GPU). Three steps, each cut short by the wall-clock budget (`--budget-s`,
default 480 s from the start, compilation included):
  1. the quick sweep: `gdjax bench`'s default networks and every method (per-point budget 10 s), no million
     table: `fd_vs_grad.json`;
  2. the FD kernel (`fd-forward`) against `fd-loop` and the matmul reference, whole gradients at
     [784, 30, 10] with N = 10, 1000 and 10000: `kernel_vs_loop.json` (rows: N, method, seconds, % of the
     reference by XLA FLOPs, fd-loop / kernel);
  3. as much of the full sweep (`--full`: P = 1e2..1e6, per-point budget 60 s) as the time left allows:
     `fd_vs_grad_full.json` (meta["not_run"] lists what did not fit; `--resume` continues it).
Writes `benchmarks/results/gpu/` (or `--out`). Without a GPU it prints one line and exits 0 (`--require-gpu`:
exit status 3). A missing optional package (matplotlib) only skips the figures.
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


def parse_args(argv):
    from gdjax.bench.args import OneLineParser

    ap = OneLineParser(prog="bench_gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"), help="output folder")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock seconds for everything (480)")
    ap.add_argument("--allow-cpu", action="store_true", help="run the plan on the CPU (tests)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and budgets (tests)")
    ap.add_argument("--require-gpu", action="store_true", help="exit 3 (not 0) when there is no GPU")
    ap.add_argument("--resume", action="store_true", help="continue the full sweep's JSON-lines")
    args = ap.parse_args(argv)
    if not args.budget_s > 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
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
    """The three steps' configurations: (quick BenchConfig, kernel-vs-loop (sizes, Ns), full BenchConfig)."""
    from gdjax.bench import config as bc

    if tiny:
        quick = bc.BenchConfig(sizes=bc.QUICK_SIZES[:1], batch_size=32, repeats=2, time_budget=0.5, million=False,
                               methods=("reverse", "fd-forward", "fd-loop"))
        full = bc.BenchConfig(sizes=((8, 8, 2),), batch_size=16, repeats=1, time_budget=0.5, million=False,
                              methods=("reverse", "fd-forward"))
        return quick, ((16, 12, 4), (10, 64)), full
    quick = bc.BenchConfig(sizes=bc.DEFAULT_SIZES, time_budget=10.0, million=False)
    full = bc.BenchConfig(sizes=bc.parse_sizes("full"), time_budget=60.0, million=True)
    return quick, (bc.LECTURE_NET, NS), full


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

        from gdjax import results
        from gdjax.bench import run as bench_run
    except ImportError as err:  # a CPU machine's bare python3, or a GPU image missing a dependency
        print(f"bench_gpu: {err} in {sys.executable}: this target runs on a GPU machine's own python with jax "
              f"(CUDA) and gdjax's dependencies; on a CPU use `make bench`; nothing measured", file=sys.stderr)
        return 3 if "--require-gpu" in (sys.argv[1:] if argv is None else argv) else 0
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
    quick, (k_sizes, k_ns), full = plans(args.tiny)
    with jax.default_device(device):
        data, written = bench_run.run(quick, out, quick=args.tiny, progress=False, deadline=deadline)
        print(bench_run.summary(data))
        rows = kernel_vs_loop(k_sizes, k_ns, 0.25 * args.budget_s, deadline, args.tiny)
        path = out / "kernel_vs_loop.json"
        results.save_results(path, rows, meta={**results.environment(), "benchmark": "kernel_vs_loop"},
                             config={"sizes": list(k_sizes), "batch_sizes": list(k_ns)})
        written.append(path)
        for r in rows:
            if r.get("status") == "ok":
                print(f"N={r['batch_size']:>6} {r['method']:<11} {r['median_s']:.4g} s  "
                      f"{(r.get('peak_fraction') or 0):.0%} of matmul  fd-loop/kernel {r['fd_loop_over_kernel']:.3g}")
        data, more = bench_run.run(full, out, name="fd_vs_grad_full", quick=args.tiny, progress=False,
                                   resume=args.resume, deadline=deadline)
        written += more
    print(f"full sweep: {len(data['rows'])} points measured, {len(data['meta']['not_run'])} left for --resume")
    for p in written:
        print(f"wrote {p}")
    print(f"bench_gpu: done in {time.perf_counter() - t0:.0f} s on {device.device_kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
