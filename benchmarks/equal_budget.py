"""Which estimator trains best at equal cost? Each gradient method trains Fashion-MNIST nets at its own tuned
learning rate on two equal budgets: wall-clock seconds and forward-pass equivalents.

    python benchmarks/equal_budget.py                   # the full run (see docs/equal_budget.md for its wall time)
    python benchmarks/equal_budget.py --quick           # tiny budgets and data, seconds (the test runs this)
    python benchmarks/equal_budget.py --out benchmarks/results/cpu/ --resume     # continue an interrupted run
    python benchmarks/equal_budget.py --plot-only runs/bench-budget-.../equal_budget.json

Every run and learning-rate trial is one call of `gdjax.train.fit` (its shuffling, divergence check, timer and
forward-pass-equivalent count), plain SGD with mini-batch `--batch-size` 10; the learning rate is traced
(`optax.inject_hyperparams`), so a (method, net) compiles its programs once. Nets: lecture = [784, 30, 10]
sigmoid, quadratic cost, N(0, 1) init; relu = [784, 128, 10] ReLU, softmax, cross-entropy, He init.

Data: Fashion-MNIST (`gdjax.load_dataset`); the last `--val` training images are the validation split, which
alone chooses the learning rate (per (method, net), the best of `--lr-points` values on a log grid, each
trained for `--tune-seconds` from seed 0); the test set is only reported.

Budgets: `--seconds` of training time and `--fpe` forward-pass equivalents (fit's `fpe_per_step`: XLA FLOPs of
the compiled step over those of the cost on one mini-batch). A run trains until both are spent, or `--cap` x
`--seconds` (a budget not reached is reported so). Test accuracy is recorded every fpe / 20 / fpe_per_step
steps (fit's `record_every`); the accuracy "at" a budget is the first record's past it, and time and FPE to
`--target` (0.8) test accuracy the first record's at or above it.

Output: `runs/bench-budget-<date>/equal_budget.json` (git-ignored) unless `--out`: `rows` (one per net, method,
seed), `summary` (over seeds), `tuning` (the grids); each finished run or trial is appended to the `.jsonl`
beside it, stamped with the commit, which `--resume` reuses when written by the current code. Figures from the
JSON: equal_budget_curves and equal_budget_bars (.png, .svg).
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # benchmarks/_common.py

import _common as common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gdjax  # noqa: E402
from gdjax import plotting, provenance, results, train  # noqa: E402

NAME = "equal_budget"
COMMAND = "bench-budget"
METHODS = {  # label: (registry name, options); fd-forward is the FD kernel (a few steps at most)
    "reverse": ("reverse", {}), "node-perturbation": ("node-perturbation", {}),
    "node-perturbation-central": ("node-perturbation", {"scheme": "central"}), "fd-layerwise": ("fd-layerwise", {}),
    **{f"{m}-k{k}": (m, {"num_directions": k}) for m in ("spsa", "forward-gradient", "forward-gradient-activity")
       for k in (1, 16)},
    "fd-forward": ("fd-forward", {}),
}  # --methods also takes any other registered method by its name (its default options): `spec`
NETS = {  # label: (sizes, hidden activation, output, loss, init scheme, log10 lr range)
    "lecture": ((784, 30, 10), "sigmoid", "sigmoid", "quadratic", "nielsen", (-3.0, 1.0)),
    "relu": ((784, 128, 10), "relu", "softmax", "cross-entropy", "he", (-4.0, 0.0)),
}
DEFAULTS = {"seconds": 15.0, "fpe": 1.0e5, "tune_seconds": 2.0, "seeds": 3, "lr_points": 9, "n_train": None,
            "n_test": None, "val": 10000, "cap": 2.0, "methods": ",".join(METHODS), "nets": ",".join(NETS)}
QUICK = {"seconds": 0.3, "fpe": 200.0, "tune_seconds": 0.1, "seeds": 2, "lr_points": 2, "n_train": 1200,
         "n_test": 300, "val": 200, "cap": 2.0, "methods": "reverse,forward-gradient-activity-k1", "nets": "lecture"}
CHECKPOINTS = 20  # a record every 1/CHECKPOINTS of the FPE budget
MAX_CHUNK = 4096  # and at least every this many steps


def parse_args(argv):
    """The options, every one checked before any work (UsageError: one line, exit status 2)."""
    p = common.Parser(COMMAND, __doc__, f"{NAME}.json",
                      quick="tiny data and budgets, 2 learning rates, 2 seeds, reverse and activity-k1 (a smoke test)")
    for flag, kind, text in (
            ("seconds", float, "training-time budget per run, s"), ("fpe", float, "FPE budget per run"),
            ("tune-seconds", float, "budget of each learning-rate trial, s"), ("seeds", int, "seeds per run"),
            ("lr-points", int, "learning rates on the log grid"), ("cap", float, "stop a run at cap x --seconds"),
            ("n-train", int, "training images loaded"), ("n-test", int, "test images loaded"),
            ("val", int, "training images held out for validation")):
        default = DEFAULTS[flag.replace("-", "_")] or "all"
        p.add_argument(f"--{flag}", type=kind, default=None, help=f"{text} (default {default})")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch (default 10, the lecture's)")
    p.add_argument("--target", type=float, default=0.8, help="test accuracy for time-to-target (default 0.8)")
    p.add_argument("--methods", default=None, help=f"comma-separated labels from: {', '.join(METHODS)}, or any "
                   "registered method's name (gdjax.available_methods(), its default options)")
    p.add_argument("--nets", default=None, help=f"comma-separated from: {', '.join(NETS)}")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (default: searched)")
    p.add_argument("--resume", action="store_true", help="skip runs already in the .jsonl beside the JSON "
                   "(those written by the current code)")
    p.add_argument("--plot-only", default=None, metavar="FILE.json", help="redraw the figures of a results JSON")
    args = p.parse(argv, defaults=DEFAULTS, quick=QUICK)
    if args.plot_only is not None:
        if not Path(args.plot_only).is_file():
            raise common.UsageError(f"--plot-only: {args.plot_only} is not a file; give a results JSON")
        return args
    common.require(args, 0.0, "seconds", "fpe", "tune_seconds", strict=True)
    common.require(args, 1.0, "seeds", "lr_points", "cap", "batch_size")
    common.require(args, 0.0, "target", strict=True)
    args.method_list = _labels(args.methods, {**dict.fromkeys(gdjax.available_methods()), **METHODS}, "--methods")
    args.net_list = _labels(args.nets, NETS, "--nets")
    if args.resume and args.out is None:
        raise common.UsageError("--resume needs --out (the folder or .json of the run to continue)")
    common.require(args, 1.0, *(name for name in ("n_train", "n_test") if getattr(args, name) is not None))
    if args.n_train is not None and args.n_train <= args.val + args.batch_size:
        raise common.UsageError(f"--n-train ({args.n_train}) must exceed --val ({args.val}) + --batch-size")
    return args


def _labels(text: str, valid: dict, what: str) -> list[str]:
    labels = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [s for s in labels if s not in valid]
    if bad or not labels:
        raise common.UsageError(f"{what}: unknown {', '.join(bad) or 'empty list'}; valid: {', '.join(valid)}")
    return labels


def spec(label: str) -> tuple[str, dict]:
    """(registry name, options) of a --methods label: a configured one of METHODS, else the registered method of
    that name with its default options (a new estimator runs here without an edit)."""
    return METHODS.get(label, (label, {}))


def lr_grid(net: str, points: int) -> list[float]:
    """The log grid of learning rates of `net`: `points` values from 10**lo to 10**hi."""
    lo, hi = NETS[net][5]
    if points == 1:
        return [10.0 ** hi]
    return [float(10.0 ** (lo + (hi - lo) * i / (points - 1))) for i in range(points)]


# --- one (method, net): setup and runs, each a call of `gdjax.fit` ---------------------------------------------

def setup(net_label: str, method_label: str, data, batch_size: int, fpe: float):
    """The cost, optimiser and record interval of one (net, method): the optimiser object is shared by all its
    runs (fit keeps the compiled programs of one optimiser object; the learning rate is traced)."""
    sizes, act, out, loss, scheme, _ = NETS[net_label]
    net = gdjax.MLP(sizes, act, out)
    method, options = spec(method_label)
    cost = gdjax.make_cost(net, loss)
    s = types.SimpleNamespace(net=net, cost=cost, scheme=scheme, method=method, options=options,
                              opt=optax.inject_hyperparams(optax.sgd)(learning_rate=1.0), batch_size=batch_size,
                              evaluations=gdjax.gradient(cost, method, **options).evaluations(net.n_params()))
    # one step with a tiny FPE budget measures fit's fpe_per_step (the one-step program fit compiles anyway)
    probe = train.fit(s.cost, s.opt, net.init(jax.random.key(0), scheme=scheme), data.train, max_fpe=1e-12,
                      record_every=1, batch_size=batch_size, key=jax.random.key(0), method=method,
                      method_options=options, learning_rate=1e-6, progress=False)
    s.fpe_step = probe.fpe_per_step
    s.record_every = max(1, min(MAX_CHUNK, int(fpe / CHECKPOINTS / s.fpe_step)))
    return s


def train_run(s, data, test, seed: int, lr: float, seconds: float, fpe: float | None = None, cap: float = 1.0):
    """Train from `seed` until both budgets are spent (or cap x seconds; `fpe` None: seconds only).

    Returns `(records, diverged)`: fit's records after the start (a diverged run's up to the divergence),
    each with its training seconds, forward-pass equivalents and test cost and accuracy.
    """
    k_net, k_run = jax.random.split(jax.random.key(1000 + seed))
    both = None if fpe is None else (lambda r: r["wall_s"] >= seconds and r["fpe"] >= fpe)
    try:
        res = train.fit(s.cost, s.opt, s.net.init(k_net, scheme=s.scheme), data, test, key=k_run,
                        batch_size=s.batch_size, max_seconds=cap * seconds, count_fpe=fpe is not None,
                        record_every=s.record_every, method=s.method, method_options=s.options, learning_rate=lr,
                        divergence_factor=None, progress=False, callback=both)
        return res.history[1:], False
    except train.Diverged as err:  # the records before it (the start alone when it diverged in the first chunk)
        return err.history[1:] or err.history[:1], True


# --- the sweep ------------------------------------------------------------------------------------------------

def at_budget(curve, index: int, budget: float):
    """(accuracy, spent) at the first checkpoint whose `index` (0 seconds, 1 fpe) reaches `budget`, or None."""
    for point in curve:
        if point[index] >= budget:
            return point[2], point[index]
    return None, None


def run_row(records, diverged, args, net, label, seed, lr, s) -> dict:
    curve = [(r["wall_s"], r["fpe"], r["test_accuracy"]) for r in records]
    acc_s, at_s = at_budget(curve, 0, args.seconds)
    acc_f, at_f = at_budget(curve, 1, args.fpe)
    hit = next((p for p in curve if p[2] >= args.target), None)
    return {"phase": "run", "net": net, "method": label, "registry_method": spec(label)[0],
            "options": spec(label)[1], "seed": seed, "learning_rate": lr, "budget_seconds": args.seconds,
            "budget_fpe": args.fpe, "fpe_per_step": s.fpe_step, "evaluations_per_step": s.evaluations,
            "steps_per_chunk": s.record_every, "steps": _steps(records),
            "diverged": diverged, "acc_at_seconds": acc_s, "seconds_at_checkpoint": at_s, "acc_at_fpe": acc_f,
            "fpe_at_checkpoint": at_f, "final_seconds": curve[-1][0], "final_fpe": curve[-1][1],
            "final_acc": curve[-1][2], "best_acc": max(p[2] for p in curve), "target": args.target,
            "reached_target": hit is not None, "seconds_to_target": hit[0] if hit else None,
            "fpe_to_target": hit[1] if hit else None, "curve": [list(p) for p in curve]}


def load_data(args):
    """Fashion-MNIST as `Batch`es: train (all but the last --val training images), val, test."""
    ds = gdjax.load_dataset("fashion-mnist", args.data_dir, n_train=args.n_train, n_test=args.n_test)
    n = ds.train.x.shape[0] - args.val
    x, y = ds.train.x, ds.train.y
    return types.SimpleNamespace(train=gdjax.Batch(x[:n], y[:n]), val=gdjax.Batch(x[n:], y[n:]), test=ds.test,
                                 n_train=n, n_val=args.val, n_test=int(ds.test.x.shape[0]))


def _key(row) -> tuple:
    return (row["phase"], row["net"], row["method"], row.get("learning_rate") if row["phase"] == "tune" else None,
            row.get("seed"), row.get("budget_seconds"), row.get("budget_fpe"))


def run(args) -> int:
    if args.plot_only is not None:
        for p in plot(args.plot_only):
            print(p)
        return 0
    load0 = common.load_average()
    jsonl = args.path.with_suffix(".jsonl")
    if not args.resume and jsonl.exists():
        raise common.UsageError(f"{jsonl} exists: add --resume to continue it, or choose another --out")
    env = results.environment()
    stamp = results.row_stamp(env)
    kept = results.resume_jsonl(jsonl, stamp, (f"benchmarks/{NAME}.py", *provenance.LIBRARY), "runs") if args.resume else []
    done = {_key(r): {k: v for k, v in r.items() if k not in stamp} for r in kept}
    data = load_data(args)
    t_start = time.perf_counter()
    rows, tuning = [], []
    for net in args.net_list:
        for label in args.method_list:
            s = None
            grid, trials = lr_grid(net, args.lr_points), []
            for lr in grid:
                key = ("tune", net, label, lr, 0, args.tune_seconds, None)
                if key not in done:
                    s = s or setup(net, label, data, args.batch_size, args.fpe)
                    recs, div = train_run(s, data.train, data.val, 0, lr, args.tune_seconds)
                    done[key] = {"phase": "tune", "net": net, "method": label, "learning_rate": lr, "seed": 0,
                                 "budget_seconds": args.tune_seconds, "budget_fpe": None, "diverged": div,
                                 "val_acc": recs[-1]["test_accuracy"] if recs else 0.0, "steps": _steps(recs)}
                    results.append_jsonl(jsonl, {**done[key], **stamp})
                trials.append(done[key])
            best = max(trials, key=lambda r: (not r["diverged"], r["val_acc"]))
            lr = best["learning_rate"]
            tuning.append({"net": net, "method": label, "grid": grid, "val_acc": [r["val_acc"] for r in trials],
                           "diverged": [r["diverged"] for r in trials], "learning_rate": lr})
            for seed in range(args.seeds):
                key = ("run", net, label, None, seed, args.seconds, args.fpe)
                if key not in done:
                    s = s or setup(net, label, data, args.batch_size, args.fpe)
                    recs, div = train_run(s, data.train, data.test, seed, lr, args.seconds, args.fpe, args.cap)
                    done[key] = run_row(recs, div, args, net, label, seed, lr, s)
                    results.append_jsonl(jsonl, {**done[key], **stamp})
                rows.append(r := done[key])
                print(f"{net:8s} {label:30s} seed {seed} lr {lr:.3g}: acc@{args.seconds:g}s "
                      f"{_fmt(r['acc_at_seconds'])}, acc@{args.fpe:.3g}fpe {_fmt(r['acc_at_fpe'])}, "
                      f"best {r['best_acc']:.4f} ({r['steps']} steps, {r['fpe_per_step']:.3g} fpe/step)", flush=True)
    config = {k: getattr(args, k) for k in ("seconds", "fpe", "tune_seconds", "seeds", "lr_points", "cap",
                                            "batch_size", "target", "val", "quick")}
    config.update(methods=args.method_list, nets=args.net_list, n_train=data.n_train, n_val=data.n_val,
                  n_test=data.n_test, dataset="fashion-mnist", checkpoints_per_budget=CHECKPOINTS,
                  net_specs={n: {"sizes": NETS[n][0], "activation": NETS[n][1], "output": NETS[n][2],
                                 "loss": NETS[n][3], "init": NETS[n][4]} for n in args.net_list},
                  method_specs={m: dict(zip(("method", "options"), spec(m))) for m in args.method_list})
    meta = common.meta(load0, wall_seconds=time.perf_counter() - t_start)
    results.write_json(args.path, {"meta": meta, "config": config, "rows": rows, "summary": summarise(rows),
                                   "tuning": tuning})
    print(args.path)
    for p in plot(args.path):
        print(p)
    return 0


def _steps(records) -> int:
    return records[-1]["step"] if records else 0


def _fmt(v) -> str:
    return "not reached" if v is None else f"{v:.4f}"


def _stats(values) -> dict:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    a = np.asarray(v, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()),
            "max": float(a.max()), "n": int(a.size)}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (net, method): mean, std, min, max over seeds of every headline number (None where not reached)."""
    out = []
    for net, label in dict.fromkeys((r["net"], r["method"]) for r in rows):
        rs = [r for r in rows if r["net"] == net and r["method"] == label]
        row = {"net": net, "method": label, "learning_rate": rs[0]["learning_rate"], "seeds": len(rs),
               "fpe_per_step": rs[0]["fpe_per_step"], "reached_target": sum(r["reached_target"] for r in rs),
               "diverged": sum(r["diverged"] for r in rs)}
        for field in ("acc_at_seconds", "acc_at_fpe", "seconds_to_target", "fpe_to_target", "best_acc", "steps"):
            for stat, v in _stats([r[field] for r in rs]).items():
                row[f"{field}_{stat}"] = v
        out.append(row)
    return out


# --- figures (from the results JSON only) ---------------------------------------------------------------------

def _band(curves, index: int, grid):
    """Accuracy of each run at each grid point (the last checkpoint at or before it; NaN before the first)."""
    out = np.full((len(curves), grid.size), np.nan)
    for i, c in enumerate(curves):
        xs = np.asarray([p[index] for p in c])
        acc = np.asarray([p[2] for p in c])
        j = np.searchsorted(xs, grid, side="right") - 1
        out[i] = np.where(j >= 0, acc[np.clip(j, 0, None)], np.nan)
    return out


def plot(path) -> list[Path]:
    """equal_budget_curves and equal_budget_bars next to the results JSON `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    data = json.loads(path.read_text())
    rows, cfg = data["rows"], data["config"]
    nets = list(dict.fromkeys(r["net"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = {m: plt.cm.tab20(i / max(1, len(methods) - 1)) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(nets), 2, figsize=(12, 4.2 * len(nets)), squeeze=False)
    for i, net in enumerate(nets):
        for j, (index, xlabel) in enumerate(((0, "training wall-clock seconds"), (1, "forward-pass equivalents"))):
            ax = axes[i][j]
            for m in methods:
                curves = [r["curve"] for r in rows if r["net"] == net and r["method"] == m]
                if not curves:
                    continue
                hi = max(c[-1][index] for c in curves)
                lo = min(c[0][index] for c in curves)
                grid = np.geomspace(max(lo, 1e-9), max(hi, lo * 1.0001, 1e-9), 200)
                acc = _band(curves, index, grid)
                ok = ~np.all(np.isnan(acc), axis=0)
                if not ok.any():
                    continue
                with np.errstate(all="ignore"):
                    mean = np.nanmean(acc[:, ok], 0)
                    ax.fill_between(grid[ok], np.nanmin(acc[:, ok], 0), np.nanmax(acc[:, ok], 0),
                                    color=colors[m], alpha=0.2, lw=0)
                ax.plot(grid[ok], mean, color=colors[m], label=m, lw=1.3)
            budget = cfg["seconds"] if index == 0 else cfg["fpe"]
            ax.axvline(budget, color="0.5", ls="--", lw=0.8)
            ax.axhline(cfg["target"], color="0.7", ls=":", lw=0.8)
            ax.set(xscale="log", ylim=(0, 1), xlabel=xlabel, ylabel=f"test accuracy ({net})")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle("Fashion-MNIST: test accuracy at equal cost (mean over seeds, band: min-max)")
    out = plotting.save_figure(fig, path.with_name(f"{NAME}_curves"))
    summary = data["summary"]
    fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4.5), squeeze=False)
    for i, net in enumerate(nets):
        ax, s = axes[0][i], [r for r in summary if r["net"] == net]
        x = np.arange(len(s))
        for off, field, label in ((-0.2, "acc_at_seconds", f"at {cfg['seconds']:g} s"),
                                  (0.2, "acc_at_fpe", f"at {cfg['fpe']:.3g} fpe")):
            mean, lo, hi = (np.asarray([r[f"{field}_{k}"] for r in s], float) for k in ("mean", "min", "max"))
            ax.bar(x + off, np.nan_to_num(mean), 0.4, yerr=np.nan_to_num([mean - lo, hi - mean]), label=label,
                   capsize=2)
        ax.set_xticks(x, [r["method"] for r in s], rotation=60, ha="right", fontsize=7)
        ax.set(ylim=(0, 1), ylabel=f"test accuracy ({net})")
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy at equal budget (mean over seeds, bars: min-max; 0 = budget not reached)")
    return out + plotting.save_figure(fig, path.with_name(f"{NAME}_bars"))


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
