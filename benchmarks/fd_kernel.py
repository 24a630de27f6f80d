#!/usr/bin/env python
"""The FD kernel against its ceiling (a big matmul) and its baseline (fd-loop), measured side by side.

    python benchmarks/fd_kernel.py                        # [784,30,10], N = 10 and 1000: ~3 min on a 2-core CPU
    python benchmarks/fd_kernel.py --chunks 44,128,272    # also the kernel at chunk sizes 44, 128 and 272
    python benchmarks/fd_kernel.py --quick                # a tiny net: seconds

The lecture's net by default: sigmoid hidden and output units, quadratic cost, N(0, 1) weights, x ~ U[0, 1],
random one-hot labels, float32, the forward scheme (P + 1 cost evaluations). For each batch size N, everything is
compiled first; then, for each of `--rounds` rounds, in this order:
  * `matmul`: the rate of a jitted 2048^3 float32 matmul (`gdjax.profiling.matmul_rate`), the machine's ceiling;
  * `fd-forward`: the FD kernel, one whole gradient, at the library's default chunk size and at each `--chunks`;
  * `fd-loop`: the naive baseline, one whole gradient (P + 1 jitted calls from Python).
Nothing is extrapolated. Per (N, method, chunk) the row holds the median / min / max seconds per gradient, the
per-round times (`times_s`), and:
  * `work_flops` = evaluations x FLOPs of one cost evaluation: the estimator's own count of cost evaluations
    (P + 1) times XLA's count of the compiled cost (`forward_xla_flops`; `forward_flops`, the analytic count of
    matmuls and bias adds, beside it, and `of_matmul_analytic` computed from it);
  * `rate` = work_flops / median time;
  * `of_matmul` = work_flops / time / the matmul rate of the same round, median over rounds (min / max beside);
  * `loop_over_kernel` = fd-loop time / kernel time of the same round, median over rounds;
  * `bound_loop_over_kernel` = fd-loop time / (work_flops / matmul rate), same round: the ratio a kernel running
    at 100% of the matmul rate would reach. No FD kernel that evaluates the cost P times as a black box can beat
    it on this machine, so a target above it cannot be met by a faster kernel, only by a slower loop.
  * `max_rel_diff_vs_loop`: max |kernel - loop| / max |loop| over the gradient (rounding: the two compile
    each cost evaluation differently, and a forward difference divides an ulp of C by h).
Targets (`benchmarks/_common.TARGETS`, at [784, 30, 10], float32): of_matmul >= 0.85 at N = 1000;
loop_over_kernel >= 2.5 at N = 1000 and >= 20 at N = 10.

Output: runs/fd_kernel-<date>/fd_kernel.json (git-ignored) unless `--out FOLDER` (or `--out FILE.json`): the
committed reference is `--out benchmarks/results/<platform>/`; beside the JSON its CSV
(`pandas.DataFrame(json["rows"])`) and fd_kernel.{png,svg} (time per gradient per method, one panel per N,
the 100%-of-matmul bound dashed).
Errors: one line on stderr, exit status 2 (bad options) or 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import _common as common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

import gdjax  # noqa: E402
from gdjax import plotting, profiling, results  # noqa: E402

NAME = "fd_kernel"
TARGETS = {k: common.TARGETS[k] for k in ("of_matmul_n1000", "loop_over_kernel_n1000", "loop_over_kernel_n10")}
DEFAULTS = {"sizes": "784,30,10", "batches": "10,1000", "rounds": 3, "matmul_n": 2048}
QUICK = {"sizes": "20,8,4", "batches": "5,20", "rounds": 1, "matmul_n": 128}


def parse_args(argv):
    """The options, every one checked before any work (UsageError: one line, exit status 2)."""
    ap = common.Parser(NAME, __doc__, f"{NAME}.json", quick="a tiny net, one round: seconds (a smoke test)")
    ap.add_argument("--sizes", default=None, help=f"one network's layer widths (default {DEFAULTS['sizes']})")
    ap.add_argument("--batches", default=None, help=f"batch sizes N (default {DEFAULTS['batches']})")
    ap.add_argument("--chunks", default="", help="extra kernel chunk sizes besides the default, e.g. 5,64")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--matmul-n", type=int, default=None, help="n of the n^3 reference matmul (default 2048)")
    args = ap.parse(argv, DEFAULTS, QUICK)
    args.net = common.sizes_list(args.sizes, one=True)[0]
    args.batch_list = common.int_list(args.batches, "--batches")
    args.chunk_list = common.int_list(args.chunks, "--chunks")
    common.require(args, 1, "rounds", "matmul_n")
    return args


def measure_batch(sizes, n: int, chunks: list[int], rounds: int, matmul_n: int, seed: int, log) -> list[dict]:
    """Rows for one batch size: the kernel at its default chunk and at `chunks`, and the loop, interleaved."""
    cost, params, batch = common.problem(sizes, n, "float32", seed)
    p = gdjax.n_params(params)
    methods = {("fd-forward", None): gdjax.gradient(cost, "fd-forward", devices=jax.devices()[:1])}
    for c in chunks:
        methods[("fd-forward", c)] = gdjax.gradient(cost, "fd-forward", chunk_size=c, devices=jax.devices()[:1])
    methods[("fd-loop", None)] = gdjax.gradient(cost, "fd-loop")
    # the work of one gradient: its true count of cost evaluations x XLA's FLOPs of one cost evaluation
    # (a loop-free program); the analytic count (matmuls and bias adds) beside it
    analytic = gdjax.forward_flops(sizes, n)
    xla = profiling.xla_flops(jax.jit(cost), params, batch)
    # the default row runs the kernel's measured layout (planned here, before any timing): label it with the
    # width of its largest leaf, and keep how the plan was made
    plan = methods[("fd-forward", None)].plan(params, batch)
    largest = max(range(len(plan.widths)), key=lambda k: jax.tree_util.tree_leaves(params)[k].size)
    default_chunk = plan.widths[largest]
    log(f"N={n}: default layout {plan.source}: widths {plan.widths} (budget default {plan.record()['plan_default_widths']})")
    grads, first_s = {}, {}
    for key, est in methods.items():  # compile (and check) every method before any timing
        t0 = time.perf_counter()
        grads[key] = common.flat_numpy(jax.block_until_ready(est(params, batch)), np.float64)
        first_s[key] = time.perf_counter() - t0
        log(f"N={n}: {_label(key, default_chunk)}: first call {common.human_time(first_s[key])}")
    calls = {key: (lambda est=est: est(params, batch)) for key, est in methods.items()}
    values = common.interleaved_rounds(calls, rounds, {"matmul": lambda: profiling.matmul_rate(matmul_n, "float32")},
                                       log=lambda msg: log(f"N={n}: {msg}"))
    point = {"sizes": "-".join(map(str, sizes)), "n_params": p, "batch_size": n, "rounds": rounds,
             "forward_flops": analytic, "forward_xla_flops": xla}
    evals = {key: float(est.evaluations(p)) for key, est in methods.items()}
    return batch_rows(point, default_chunk, evals, values, grads, first_s)


def batch_rows(point: dict, default_chunk: int, evals: dict, values: dict, grads: dict, first_s: dict) -> list[dict]:
    """The rows of one batch size from the raw measurements (pure: the tests plant times here).

    Args:
      point: sizes, n_params, batch_size, rounds, forward_flops (analytic), forward_xla_flops (None if XLA
        gave none).
      default_chunk: the kernel's default chunk size.
      evals: {(method, chunk): cost evaluations per gradient}; chunk None = the default (or fd-loop).
      values: {"matmul": [FLOP/s per round], (method, chunk): [seconds per round]}; one key ("fd-loop", None).
      grads: {(method, chunk): flat float64 gradient (P,)}; first_s: {(method, chunk): first call's seconds}.
    """
    values = dict(values)
    mm, loop_t, loop_g = values.pop("matmul"), values[("fd-loop", None)], grads[("fd-loop", None)]
    xla, analytic = point["forward_xla_flops"], point["forward_flops"]
    rows = []
    for (method, chunk), ts in values.items():
        ev = evals[(method, chunk)]
        work = ev * (xla if xla is not None else analytic)
        # per round: the rate against the same round's matmul, the loop against the same round's kernel
        of_mm = common.round_ratio([work / t for t in ts], mm)
        rows.append({
            **point, "method": method, "chunk_size": (chunk or default_chunk) if method != "fd-loop" else None,
            "default_chunk": chunk is None and method != "fd-loop", **common.time_stats(ts),
            "first_call_s": first_s[(method, chunk)], "evaluations": ev, "work_flops": work,
            "flops_source": "evaluations x XLA forward pass" if xla is not None else
            "evaluations x analytic forward pass (XLA gave no count)",
            "of_matmul_analytic": common.round_ratio([ev * analytic / t for t in ts], mm)["median"],
            "rate": float(work / np.median(ts)), "matmul_rate": float(np.median(mm)), "matmul_rates": list(mm),
            "of_matmul": of_mm["median"], "of_matmul_min": of_mm["min"], "of_matmul_max": of_mm["max"],
            "loop_over_kernel": common.round_ratio(loop_t, ts)["median"],
            "bound_loop_over_kernel": common.round_ratio(loop_t, [work / m for m in mm])["median"],
            "max_rel_diff_vs_loop": float(np.max(np.abs(grads[(method, chunk)] - loop_g))
                                          / max(np.max(np.abs(loop_g)), np.finfo(np.float32).tiny))})
    return rows


def _label(key, default_chunk) -> str:
    method, chunk = key
    return method if method == "fd-loop" else f"{method} chunk {chunk or default_chunk}"


def targets(rows: list[dict]) -> list[dict]:
    """The targets (`_common.TARGETS`) with the measured values of the default-chunk kernel and their bounds."""
    def kernel(n):
        return next((r for r in rows if r["method"] == "fd-forward" and r["default_chunk"]
                     and r["batch_size"] == n), None)

    out = []
    for name, (n, field) in {"of_matmul_n1000": (1000, "of_matmul"), "loop_over_kernel_n1000": (1000, "loop_over_kernel"),
                             "loop_over_kernel_n10": (10, "loop_over_kernel")}.items():
        r = kernel(n)
        value = None if r is None else r[field]
        bound = None if r is None else (1.0 if field == "of_matmul" else r["bound_loop_over_kernel"])
        out.append({"target": name, "value": value, "threshold": TARGETS[name], "bound": bound,
                    "status": common.target_status(value, TARGETS[name])})
    return out


def _work(row) -> float:
    """FLOPs of one kernel gradient (older results files: P x analytic forward FLOPs)."""
    return row.get("work_flops") or row["n_params"] * row["forward_flops"]


def figure(data: dict, out_stem) -> list[Path]:
    """Time per gradient for every method, one panel per batch size; dashed: the 100%-of-matmul bound."""
    rows = data["rows"]
    batches = sorted({r["batch_size"] for r in rows})
    fig, axes = plotting.plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 3.2), squeeze=False)
    for ax, n in zip(axes[0], batches):
        rs = [r for r in rows if r["batch_size"] == n]
        rs.sort(key=lambda r: (r["method"] != "fd-loop", not r["default_chunk"], r["chunk_size"] or 0))
        labels = [r["method"] if r["chunk_size"] is None else
                  f"{r['method']} chunk {r['chunk_size']}{' (default)' if r['default_chunk'] else ''}" for r in rs]
        med = np.array([r["median_s"] for r in rs])
        err = np.array([[m - r["min_s"], r["max_s"] - m] for m, r in zip(med, rs)]).T
        colors = ["tab:red" if r["method"] == "fd-loop" else "tab:blue" for r in rs]
        ax.barh(range(len(rs)), med, xerr=err, color=colors, alpha=0.8)
        for i, r in enumerate(rs):
            text = "" if r["method"] == "fd-loop" else (
                f"{r['of_matmul']:.0%} of matmul, {r['loop_over_kernel']:.1f}x faster than the loop")
            ax.text(r["max_s"] + 0.02 * med.max(), i, text, va="center", fontsize=7)
        bound = _work(rs[0]) / rs[0]["matmul_rate"]
        ax.axvline(bound, ls="--", color="k", lw=1)
        ax.text(bound, -0.6, " evaluations x forward FLOPs at the matmul rate", fontsize=7, va="bottom", rotation=90)
        ax.set_yticks(range(len(rs)), labels, fontsize=8)
        ax.set_xlim(0, max(r["max_s"] for r in rs) * 1.9)
        ax.set_ylim(-0.6, len(rs) - 0.4)
        ax.set_xlabel("seconds per gradient (median, min-max)")
        ax.set_title(f"{rs[0]['sizes']}, N = {n}, P = {rs[0]['n_params']:,}", fontsize=9)
    meta = data.get("meta", {})
    fig.suptitle(f"FD kernel vs fd-loop ({meta.get('device_kind', '?')}, float32)", fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, out_stem)


def run(args) -> int:
    """Measure, write the JSON (+ CSV) and the figure, print the table and the targets."""
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    load0 = common.load_average()
    rows = []
    for n in args.batch_list:
        rows += measure_batch(args.net, n, args.chunk_list, args.rounds, args.matmul_n, args.seed, log)
    tg = targets(rows)
    config = {"sizes": list(args.net), "batches": args.batch_list, "chunks": args.chunk_list, "rounds": args.rounds,
              "matmul_n": args.matmul_n, "seed": args.seed, "dtype": "float32", "scheme": "forward",
              "targets": TARGETS, "target_results": tg}
    out = results.save_results(args.path, rows, meta=common.meta(load0, dtype="float32"), config=config)
    figs = figure(results.load_results(out), out.with_suffix(""))
    print(f"{'N':>5} {'method':<11} {'chunk':>5} {'median':>10} {'min':>10} {'max':>10} {'GFLOP/s':>8} "
          f"{'of mm':>6} {'loop/k':>7} {'bound':>6}")
    for r in rows:
        kernel = r["method"] != "fd-loop"
        print(f"{r['batch_size']:>5} {r['method']:<11} {r['chunk_size'] or '':>5} {common.human_time(r['median_s']):>10} "
              f"{common.human_time(r['min_s']):>10} {common.human_time(r['max_s']):>10} {r['rate'] / 1e9:8.1f} "
              f"{r['of_matmul']:6.0%} {r['loop_over_kernel'] if kernel else 1:7.2f} {r['bound_loop_over_kernel']:6.2f}")
    print("targets (default chunk; bound: what a kernel at 100% of the matmul rate would reach):")
    for t in tg:
        val = "-" if t["value"] is None else f"{t['value']:.3g}"
        bound = "-" if t["bound"] is None else f"{t['bound']:.3g}"
        print(f"  {t['status']:<6}{t['target']:<24}{val:>8}  (target >= {t['threshold']:g}; bound {bound})")
    return common.wrote(out, *figs)


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
