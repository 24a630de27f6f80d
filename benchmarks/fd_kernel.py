#!/usr/bin/env python
"""The FD kernel against its ceiling (a big matmul) and its baseline (fd-loop), measured side by side.

    python benchmarks/fd_kernel.py                        # [784,30,10], N = 10 and 1000: ~3 min on a 2-core CPU
    python benchmarks/fd_kernel.py --chunks 5,64          # also the kernel at chunk sizes 5 and 64
    python benchmarks/fd_kernel.py --quick                # a tiny net: seconds

The lecture's net by default: sigmoid hidden and output units, quadratic cost, N(0, 1) weights, x ~ U[0, 1],
random one-hot labels, float32, the forward scheme (P + 1 cost evaluations). For each batch size N, everything is
compiled first; then, for each of `--rounds` rounds, in this order:
  * `matmul`: the rate of a jitted 2048^3 float32 matmul (`gdjax.profiling.matmul_rate`), the machine's ceiling;
  * `fd-forward`: the FD kernel, one whole gradient, at the library's default chunk size and at each `--chunks`;
  * `fd-loop`: the naive baseline, one whole gradient (P + 1 jitted calls from Python).
Nothing is extrapolated. Per (N, method, chunk) the row holds the median / min / max seconds per gradient, and:
  * `rate` = P x forward FLOPs / time (the issue's definition of the kernel's arithmetic rate);
  * `of_matmul` = rate / the matmul rate of the same round, median over rounds (min / max beside it);
  * `loop_over_kernel` = fd-loop time / kernel time of the same round, median over rounds;
  * `bound_loop_over_kernel` = fd-loop time / (P x forward FLOPs / matmul rate): the ratio a kernel running at
    100% of the matmul rate would reach. No FD kernel that evaluates the cost P times as a black box can beat
    it on this machine, so a target above it cannot be met by a faster kernel, only by a slower loop.
  * `max_rel_diff_vs_loop`: max |kernel - loop| / max |loop| over the gradient (rounding: the two compile
    each cost evaluation differently, and a forward difference divides an ulp of C by h).
Targets (issue 3, at [784, 30, 10], float32): of_matmul >= 0.85 at N = 1000; loop_over_kernel >= 2.5 at N = 1000
and >= 20 at N = 10.

Output: benchmarks/results/<platform>/fd_kernel.json (+ .csv; `pandas.DataFrame(json["rows"])`) and
fd_kernel.{png,svg} (time per gradient per method, one panel per N, the 100%-of-matmul bound dashed).
Errors: one line on stderr, exit status 2 (bad options) or 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gdjax  # noqa: E402
from gdjax import plotting, profiling, results  # noqa: E402
from gdjax.benchmark import make_problem, parse_sizes, sub_batch  # noqa: E402
from gdjax.gradients import finite_diff  # noqa: E402

TARGETS = {"of_matmul_n1000": 0.85, "loop_over_kernel_n1000": 2.5, "loop_over_kernel_n10": 20.0}
DEFAULTS = {"sizes": "784,30,10", "batches": "10,1000", "rounds": 3, "matmul_n": 2048}
QUICK = {"sizes": "20,8,4", "batches": "5,20", "rounds": 1, "matmul_n": 128}


class UsageError(ValueError):
    """A bad command-line option (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr (main prints it), not argparse's usage block
        raise UsageError(message)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a comma-separated list of integers such as 10,1000") from None
    if any(v < 1 for v in values):
        raise UsageError(f"{what}: every value must be >= 1, got {text!r}")
    return values


def parse_args(argv):
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help=f"one network's layer widths (default {DEFAULTS['sizes']})")
    ap.add_argument("--batches", default=None, help=f"batch sizes N (default {DEFAULTS['batches']})")
    ap.add_argument("--chunks", default="", help="extra kernel chunk sizes besides the default, e.g. 5,64")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--matmul-n", type=int, default=None, help="n of the n^3 reference matmul (default 2048)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a tiny net, one round: seconds (a smoke test)")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/<platform>/fd_kernel.json)")
    args = ap.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        nets = parse_sizes(args.sizes)
    except ValueError as err:
        raise UsageError(f"--sizes: {err}") from None
    if len(nets) != 1:
        raise UsageError(f"--sizes: give one network (e.g. 784,30,10), got {len(nets)}")
    args.net = nets[0]
    args.batch_list = _int_list(args.batches, "--batches")
    args.chunk_list = _int_list(args.chunks, "--chunks")
    for name in ("rounds", "matmul_n"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree_util.tree_leaves(tree)])


def measure_batch(sizes, n: int, chunks: list[int], rounds: int, matmul_n: int, seed: int, log) -> list[dict]:
    """Rows for one batch size: the kernel at its default chunk and at `chunks`, and the loop, interleaved."""
    cost, params, batch = make_problem(sizes, n, "float32", seed)
    batch = sub_batch(batch, n)
    p, flops = gdjax.nn.param_count(sizes), gdjax.forward_flops(sizes, n)
    default_chunk = finite_diff.fd_chunk_size(cost, params, batch, "forward")
    methods = {("fd-forward", None): gdjax.gradient(cost, "fd-forward", devices=jax.devices()[:1])}
    for c in chunks:
        methods[("fd-forward", c)] = gdjax.gradient(cost, "fd-forward", chunk_size=c, devices=jax.devices()[:1])
    methods[("fd-loop", None)] = gdjax.gradient(cost, "fd-loop")
    grads, compile_s = {}, {}
    for key, est in methods.items():  # compile (and check) every method before any timing
        t0 = time.perf_counter()
        grads[key] = _flat(jax.block_until_ready(est(params, batch)))
        compile_s[key] = time.perf_counter() - t0
        log(f"N={n}: {key[0]}{'' if key[0] == 'fd-loop' else f' chunk {key[1] or default_chunk}'}: first call {compile_s[key]:.2f} s")
    loop_g = grads[("fd-loop", None)]
    times = {key: [] for key in methods}
    mm = []
    for r in range(rounds):
        mm.append(profiling.matmul_rate(matmul_n, "float32"))
        for key, est in methods.items():
            times[key].append(profiling.time_fn(est, params, batch, repeats=1, warmup=0).median_s)
        log(f"N={n}: round {r + 1}/{rounds}: matmul {mm[-1] / 1e9:.0f} GFLOP/s, "
            + ", ".join(f"{k[0]}{'' if k[1] is None else f'@{k[1]}'} {times[k][-1]:.3f} s" for k in methods))
    mm, loop_t = np.array(mm), np.array(times[("fd-loop", None)])
    rows = []
    for (method, chunk), ts in times.items():
        ts = np.array(ts)
        of_mm = p * flops / ts / mm
        row = {"sizes": "-".join(map(str, sizes)), "n_params": p, "batch_size": n, "forward_flops": flops,
               "method": method, "chunk_size": (chunk or default_chunk) if method != "fd-loop" else None,
               "default_chunk": chunk is None and method != "fd-loop", "rounds": rounds,
               "median_s": float(np.median(ts)), "min_s": float(ts.min()), "max_s": float(ts.max()),
               "times_s": ts.tolist(), "first_call_s": compile_s[(method, chunk)],
               "rate": float(p * flops / np.median(ts)), "matmul_rate": float(np.median(mm)),
               "matmul_rates": mm.tolist(), "of_matmul": float(np.median(of_mm)),
               "of_matmul_min": float(of_mm.min()), "of_matmul_max": float(of_mm.max()),
               "loop_over_kernel": float(np.median(loop_t / ts)),
               "bound_loop_over_kernel": float(np.median(loop_t / (p * flops / mm))),
               "max_rel_diff_vs_loop": float(np.max(np.abs(grads[(method, chunk)] - loop_g))
                                             / max(np.max(np.abs(loop_g)), np.finfo(np.float32).tiny))}
        rows.append(row)
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """Issue 3's targets with the measured values (the default-chunk kernel)."""
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
                    "status": "-" if value is None else ("PASS" if value >= TARGETS[name] else "SHORT")})
    return out


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
        bound = rs[0]["n_params"] * rs[0]["forward_flops"] / rs[0]["matmul_rate"]
        ax.axvline(bound, ls="--", color="k", lw=1)
        ax.text(bound, -0.6, " P x forward FLOPs at the matmul rate", fontsize=7, va="bottom", rotation=90)
        ax.set_yticks(range(len(rs)), labels, fontsize=8)
        ax.set_xlim(0, max(r["max_s"] for r in rs) * 1.9)
        ax.set_ylim(-0.6, len(rs) - 0.4)
        ax.set_xlabel("seconds per gradient (median, min-max)")
        ax.set_title(f"{rs[0]['sizes']}, N = {n}, P = {rs[0]['n_params']:,}", fontsize=9)
    meta = data.get("meta", {})
    fig.suptitle(f"FD kernel vs fd-loop ({meta.get('device_kind', '?')}, float32)", fontsize=10)
    fig.tight_layout()
    return plotting.save_figure(fig, out_stem)


def main(argv=None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"fd_kernel: error: {err}", file=sys.stderr)
        return 2
    try:
        def log(msg):
            print(msg, file=sys.stderr, flush=True)

        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        rows = []
        for n in args.batch_list:
            rows += measure_batch(args.net, n, args.chunk_list, args.rounds, args.matmul_n, args.seed, log)
        meta = results.environment()
        meta.update({"load_avg_1min_start": load0,
                     "load_avg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
        config = {"sizes": list(args.net), "batches": args.batch_list, "chunks": args.chunk_list,
                  "rounds": args.rounds, "matmul_n": args.matmul_n, "seed": args.seed, "dtype": "float32",
                  "scheme": "forward", "targets": TARGETS}
        tg = targets(rows)
        config["target_results"] = tg
        out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / meta["platform"] / "fd_kernel.json"
        results.save_results(out, rows, meta=meta, config=config)
        figs = figure(results.load_results(out), out.with_suffix(""))
    except (ValueError, TypeError, OSError) as err:
        print(f"fd_kernel: error: {err}", file=sys.stderr)
        return 1
    print(f"{'N':>5} {'method':<11} {'chunk':>5} {'median s':>10} {'min s':>9} {'max s':>9} {'GFLOP/s':>8} "
          f"{'of mm':>6} {'loop/k':>7} {'bound':>6}")
    for r in rows:
        kernel = r["method"] != "fd-loop"
        print(f"{r['batch_size']:>5} {r['method']:<11} {r['chunk_size'] or '':>5} {r['median_s']:10.4f} "
              f"{r['min_s']:9.4f} {r['max_s']:9.4f} {r['rate'] / 1e9:8.1f} {r['of_matmul']:6.0%} "
              f"{r['loop_over_kernel'] if kernel else 1:7.2f} {r['bound_loop_over_kernel']:6.2f}")
    print("targets (default chunk; bound: what a kernel at 100% of the matmul rate would reach):")
    for t in tg:
        val = "-" if t["value"] is None else f"{t['value']:.3g}"
        bound = "-" if t["bound"] is None else f"{t['bound']:.3g}"
        print(f"  {t['status']:<6}{t['target']:<24}{val:>8}  (target >= {t['threshold']:g}; bound {bound})")
    print(f"wrote {out} and {', '.join(str(f) for f in figs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
