#!/usr/bin/env python
"""The FD kernel against its ceiling (a big matmul) and its baseline (fd-loop), measured side by side.

    python benchmarks/fd_kernel.py                        # [784,30,10], N = 10 and 1000: ~3 min on a 2-core CPU
    python benchmarks/fd_kernel.py --chunks 44,128,272    # also the kernel at chunk sizes 44, 128 and 272
    python benchmarks/fd_kernel.py --quick                # a tiny net: seconds

The lecture's net (`_common.problem`), float32, the forward scheme (P + 1 cost evaluations). For each batch size
N every method is compiled and checked first; then in each of `--rounds` interleaved rounds
(`gdjax.profiling.interleaved`): the rate of a jitted 2048^3 matmul (`profiling.matmul_rate`, the ceiling),
`fd-forward` (one whole gradient at the default chunk size and at each `--chunks`), `fd-loop` (P + 1 jitted calls
from Python). Nothing is extrapolated. Per (N, method, chunk) a row holds the seconds per gradient (median / min /
max, `times_s`) and, each the median of per-round ratios (`profiling.round_ratios`):
  * `of_matmul` = work_flops / time / the same round's matmul rate, where `work_flops` = evaluations x XLA's
    FLOPs of one cost evaluation (`of_matmul_analytic` from the analytic count `forward_flops`);
  * `loop_over_kernel` = fd-loop time / kernel time;
  * `bound_loop_over_kernel` = fd-loop time / (work_flops / matmul rate): what a kernel at 100% of the matmul
    rate would reach, so a target above it can only be met by a slower loop;
  * `max_rel_diff_vs_loop`: max |kernel - loop| / max |loop| (rounding: an ulp of C divided by h).
Targets (`_common.TARGETS`): of_matmul >= 0.85 at N = 1000; loop_over_kernel >= 2.5 at N = 1000, >= 20 at N = 10.

Output: <out>/fd_kernel.json (+ .csv) and fd_kernel.{png,svg}; default <out> runs/fd_kernel-<date>/ (git-ignored),
the committed reference `--out benchmarks/results/<platform>/`. Errors: one line on stderr, exit status 2 or 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import _common as common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

import gdjax  # noqa: E402
from gdjax import plotting, profiling, results  # noqa: E402
from gdjax.report import benchmarks as report  # noqa: E402

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


def measure_batch(sizes, n: int, chunks: list[int], rounds: int, matmul_n: int, seed: int) -> list[dict]:
    """Rows for one batch size: the kernel at its default chunk and at `chunks`, and the loop, interleaved."""
    cost, params, batch = common.problem(sizes, n, "float32", seed)
    p = gdjax.n_params(params)
    one = jax.devices()[:1]
    methods = {("fd-forward", None): gdjax.gradient(cost, "fd-forward", devices=one),
               **{("fd-forward", c): gdjax.gradient(cost, "fd-forward", chunk_size=c, devices=one) for c in chunks},
               ("fd-loop", None): gdjax.gradient(cost, "fd-loop")}
    # the default row runs the kernel's measured layout (planned before any timing), labelled with the width of
    # its largest leaf
    plan = methods[("fd-forward", None)].plan(params, batch)
    largest = max(range(len(plan.widths)), key=lambda k: jax.tree_util.tree_leaves(params)[k].size)
    print(f"N={n}: default layout {plan.source}: widths {plan.widths} "
          f"(budget default {plan.record()['plan_default_widths']})", file=sys.stderr)
    # compile and check every method (the first call's seconds), then the same-round matmul rate before each round
    keys, calls, grads = list(methods), [(est, (params, batch)) for est in methods.values()], {}
    first, _ = profiling.interleaved([(lambda k=k, e=e: grads.setdefault(k, e(params, batch)), ())
                                      for k, e in methods.items()], 1)
    rates = []
    wall, _ = profiling.interleaved([(lambda: rates.append(profiling.matmul_rate(matmul_n, "float32")), ())]
                                    + calls, rounds)
    point = {"sizes": "-".join(map(str, sizes)), "n_params": p, "batch_size": n, "rounds": rounds,
             "forward_flops": gdjax.forward_flops(sizes, n),  # analytic: matmuls and bias adds
             "forward_xla_flops": profiling.xla_flops(jax.jit(cost), params, batch),  # a loop-free program
             "plan_s": plan.planning_s, "plan_source": plan.source, "plan_widths": list(plan.widths)}
    return batch_rows(point, plan.widths[largest], {k: float(e.evaluations(p)) for k, e in methods.items()},
                      {"matmul": rates, **dict(zip(keys, wall[1:]))},
                      {k: common.flat_numpy(g, np.float64) for k, g in grads.items()},
                      {k: t[0] for k, t in zip(keys, first)})


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
    ratio = profiling.round_ratios
    rows = []
    for (method, chunk), ts in values.items():
        ev = evals[(method, chunk)]
        work = ev * (xla if xla is not None else analytic)
        of_mm = ratio([work / t for t in ts], mm)
        rows.append({
            **point, "method": method, "chunk_size": (chunk or default_chunk) if method != "fd-loop" else None,
            "default_chunk": chunk is None and method != "fd-loop", **common.time_stats(ts),
            "first_call_s": first_s[(method, chunk)], "evaluations": ev, "work_flops": work,
            "flops_source": "evaluations x XLA forward pass" if xla is not None else
            "evaluations x analytic forward pass (XLA gave no count)",
            "of_matmul_analytic": ratio([ev * analytic / t for t in ts], mm)["median"],
            "rate": float(work / np.median(ts)), "matmul_rate": float(np.median(mm)), "matmul_rates": list(mm),
            "of_matmul": of_mm["median"], "of_matmul_min": of_mm["min"], "of_matmul_max": of_mm["max"],
            "loop_over_kernel": ratio(loop_t, ts)["median"],
            "bound_loop_over_kernel": ratio(loop_t, [work / m for m in mm])["median"],
            "max_rel_diff_vs_loop": float(np.max(np.abs(grads[(method, chunk)] - loop_g))
                                          / max(np.max(np.abs(loop_g)), np.finfo(np.float32).tiny))})
    fixed = [ts for (method, chunk), ts in values.items() if method != "fd-loop" and chunk is not None]
    for row, ((method, chunk), ts) in zip(rows, values.items()):
        if row["default_chunk"] and fixed:  # the measured plan against the best fixed width, per round
            best = ratio(ts, [min(r) for r in zip(*fixed)])
            row.update(over_best_fixed=best["median"], over_best_fixed_min=best["min"],
                       over_best_fixed_max=best["max"], plan_over_one_gradient=point.get("plan_s", 0.0) / float(
                           np.median(ts)))
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """The targets (`TARGETS`) of the default-chunk kernel with their bounds, as the report recomputes them."""
    return report._kernel_targets({"rows": rows, "config": {"targets": TARGETS}})


def figure(data: dict, out_stem) -> list[Path]:
    """Time per gradient for every method, one panel per batch size; dashed: the 100%-of-matmul bound."""
    rows = data["rows"]
    batches = sorted({r["batch_size"] for r in rows})
    fig, axes = plotting.plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 3.2), squeeze=False)
    for ax, n in zip(axes[0], batches):
        rs = sorted((r for r in rows if r["batch_size"] == n),
                    key=lambda r: (r["method"] != "fd-loop", not r["default_chunk"], r["chunk_size"] or 0))
        med = np.array([r["median_s"] for r in rs])
        ax.barh(range(len(rs)), med, xerr=np.array([[m - r["min_s"], r["max_s"] - m] for m, r in zip(med, rs)]).T,
                color=["tab:red" if r["method"] == "fd-loop" else "tab:blue" for r in rs], alpha=0.8)
        for i, r in enumerate(rs):
            if r["method"] != "fd-loop":
                ax.text(r["max_s"] + 0.02 * med.max(), i, f"{r['of_matmul']:.0%} of matmul, "
                        f"{r['loop_over_kernel']:.1f}x faster than the loop", va="center", fontsize=7)
        bound = rs[0]["work_flops"] / rs[0]["matmul_rate"]
        ax.axvline(bound, ls="--", color="k", lw=1)
        ax.text(bound, -0.6, " evaluations x forward FLOPs at the matmul rate", fontsize=7, va="bottom", rotation=90)
        ax.set_yticks(range(len(rs)), [r["method"] if r["chunk_size"] is None else f"{r['method']} chunk "
                                       f"{r['chunk_size']}{' (default)' if r['default_chunk'] else ''}" for r in rs],
                      fontsize=8)
        ax.set(xlim=(0, max(r["max_s"] for r in rs) * 1.9), ylim=(-0.6, len(rs) - 0.4),
               xlabel="seconds per gradient (median, min-max)")
        ax.set_title(f"{rs[0]['sizes']}, N = {n}, P = {rs[0]['n_params']:,}", fontsize=9)
    fig.suptitle(f"FD kernel vs fd-loop ({data.get('meta', {}).get('device_kind', '?')}, float32)", fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, out_stem)


def run(args) -> int:
    """Measure, write the JSON (+ CSV) and the figure, print the report's tables."""
    load0 = common.load_average()
    rows = [r for n in args.batch_list for r in measure_batch(args.net, n, args.chunk_list, args.rounds,
                                                              args.matmul_n, args.seed)]
    config = {"sizes": list(args.net), "batches": args.batch_list, "chunks": args.chunk_list, "rounds": args.rounds,
              "matmul_n": args.matmul_n, "seed": args.seed, "dtype": "float32", "scheme": "forward",
              "targets": TARGETS, "target_results": targets(rows)}
    out = results.save_results(args.path, rows, meta=common.meta(load0, dtype="float32"), config=config)
    data = results.load_results(out)
    print(report.fd_kernel_table(data), report.fd_kernel_targets(data), sep="\n\n")
    return common.wrote(out, *figure(data, out.with_suffix("")))


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
