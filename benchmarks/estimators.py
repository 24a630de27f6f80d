#!/usr/bin/env python
"""The estimator ladder: what one gradient costs between finite differences and backprop, and how well it trains.

    python benchmarks/estimators.py            # [784,30,10] and [784,128,64,10], N = 1000, f32, + training
                                               # on digits: 15-30 min on a busy 2-core CPU (`make bench-estimators`)
    python benchmarks/estimators.py --quick    # a tiny net, 1 epoch: about a minute, mostly compilation
    python benchmarks/estimators.py --replot benchmarks/results/cpu/estimators.json   # figures only

Part 1, the ladder (`group: "ladder"` rows): for each network (the lecture's problem of every benchmark,
`benchmarks/_common.make_problem`: sigmoid hidden and output units, quadratic cost, N(0, 1) weights, x ~ U[0, 1],
one-hot random labels, N examples, float32) and each rung, one gradient:
  - `median_s` / `min_s` / `max_s` per gradient after a warm-up call (`first_call_s`; `compile_s`: XLA's
    compilation of the whole gradient program, timed apart), repeats stopped early past `--time-budget` seconds
    (at least one timed call);
  - `evaluations`: the estimator's own count of cost evaluations per gradient where that is a true count
    (`est.evaluations(P)`; None for autodiff, whose cost is not a number of cost evaluations);
  - `flops`: XLA's FLOP count of the compiled gradient program (`gdjax.profiling.xla_flops`, loop bodies
    counted with their trip counts) and `fp_equivalents` = flops / the FLOPs of the compiled cost (one forward
    pass): measured, never a constant;
  - `rel_error` = |g - g_ref| / |g_ref| and `cosine` against float64 `jax.grad` on the same params and batch;
    stochastic rungs: mean and standard deviation over `--keys` keys (`rel_error_std`, `cosine_std`);
  - `speedup_vs_fd` = time(fd-forward) / time(rung) and `over_reverse` = time(rung) / time(reverse): ratios
    within this run (the machine is shared: compare ratios, not absolute times).
  A method that can be timed on part of its directions (`est.subset`: the FD kernel) first runs a pilot: its
  own compiled program (same chunk size, same loop body, whole chunks) on the first K directions, K fitting a
  twentieth of `--time-budget`, and on K / 4, extrapolated to every direction from the two
  (`gdjax.bench.policy.extrapolate`: a fixed cost per call plus a cost per direction; `pilot_s`). When that predicts more than
  half the budget, the pilot is the result: `extrapolated: true`, `measured_directions`, `scale`, and the error
  over K evenly spread components (the method on the cost restricted to them, `error_on`); otherwise the whole
  gradient is timed. Every other rung is timed whole.
Part 2, training (`group: "training"` rows): the digits data (1500 train / 297 test, 8x8 images), network
[64, 16, 10], the same init, plain SGD eta = 3 (`--lr`), mini-batches of 10, `--epochs` epochs, every rung
through `gdjax.fit.fit`; one row per epoch with the train cost, test accuracy, steps and training seconds
(compile excluded). A run that diverges is kept up to its last good epoch (`status: "diverged"`).

Output: runs/estimators-<date>/estimators.json (git-ignored; + .csv) unless `--out FOLDER` (or `--out FILE.json`),
the committed reference being `--out benchmarks/results/<platform>/`; beside it estimators_ladder.{png,svg} (time
per gradient, log scale, rungs ordered, hatched = extrapolated) and estimators_training.{png,svg} (cost vs steps
and vs seconds). Every option is checked before any work; errors: one line on stderr, exit status 2 (bad
options) or 1.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import _common as common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

import gdjax  # noqa: E402
from gdjax import profiling, results  # noqa: E402
from gdjax.bench.measure import time_parts  # noqa: E402
from gdjax.gradients import method_info  # noqa: E402

NAME = "estimators"
# (label, registry method, options), from the most expensive rung to the cheapest
LADDER = (
    ("fd-forward", "fd-forward", {}),
    ("fd-central", "fd-central", {}),
    ("fd-layerwise", "fd-layerwise", {}),
    ("fd-layerwise-central", "fd-layerwise-central", {}),
    ("node-perturbation", "node-perturbation", {}),
    ("node-perturbation-central", "node-perturbation", {"scheme": "central"}),
    ("spsa-k16", "spsa", {"num_directions": 16}),
    ("spsa-k1", "spsa", {"num_directions": 1}),
    ("forward-gradient-k16", "forward-gradient", {"num_directions": 16}),
    ("forward-gradient-k1", "forward-gradient", {"num_directions": 1}),
    ("reverse", "reverse", {}),
)
LABELS = tuple(e[0] for e in LADDER)
TRAINING = ("reverse", "fd-forward", "fd-layerwise", "node-perturbation", "spsa-k16", "spsa-k1",
            "forward-gradient-k16", "forward-gradient-k1")
DEFAULTS = {"sizes": "784,30,10;784,128,64,10", "batch": 1000, "repeats": 3, "keys": 20, "epochs": 10,
            "n_train": None, "time_budget": 120.0, "train_methods": ",".join(TRAINING)}
QUICK = {"sizes": "12,8,6,4", "batch": 64, "repeats": 1, "keys": 4, "epochs": 1, "n_train": 100,
         "time_budget": 5.0, "train_methods": "reverse,fd-layerwise,spsa-k16"}


# --- options --------------------------------------------------------------------------------------------------

def parse_labels(text: str, valid=LABELS, what="--methods") -> tuple[str, ...]:
    """'fd-forward,reverse' -> ("fd-forward", "reverse"); UsageError naming the unknown ones and the valid."""
    labels = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in labels if s not in valid]
    if bad or not labels:
        raise common.UsageError(f"{what}: unknown {bad or text!r}; valid: {','.join(valid)}")
    return labels


def parse_args(argv):
    """The options, every one checked before any work (UsageError: one line, exit status 2)."""
    ap = common.Parser(NAME, __doc__, f"{NAME}.json",
                       quick="a tiny net, one repeat, one epoch: about a minute (mostly compilation)")
    ap.add_argument("--sizes", default=None, help=f"networks, ';'-separated (default {DEFAULTS['sizes']})")
    ap.add_argument("--batch", type=int, default=None, help="examples N (default 1000)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--methods", default=",".join(LABELS), help="rungs of the ladder (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per rung (default 3)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds per rung: repeats stop past it; a method timeable on a subset of directions is "
                         "extrapolated when its pilot predicts a whole gradient over half of it (default 120)")
    ap.add_argument("--keys", type=int, default=None, help="keys for the error spread of stochastic rungs (default 20)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs per rung (default 10; 0: no training)")
    ap.add_argument("--n-train", type=int, default=None, help="training examples of digits (default all 1500)")
    ap.add_argument("--train-methods", default=None, help=f"rungs trained (default {','.join(TRAINING)})")
    ap.add_argument("--lr", type=float, default=3.0, help="SGD learning rate for training (default 3)")
    ap.add_argument("--replot", default=None, metavar="JSON", help="only redraw the figures from a results file")
    args = ap.parse(argv, DEFAULTS, QUICK)
    args.nets = common.sizes_list(args.sizes, min_layers=3)
    args.labels = parse_labels(args.methods)
    args.train_labels = parse_labels(args.train_methods, what="--train-methods")
    common.require(args, 1, "batch", "repeats", "keys")
    common.require(args, 0, "epochs")
    common.require(args, 0, "time_budget", "lr", strict=True)
    if args.n_train is not None and not 10 <= args.n_train <= 1500:
        raise common.UsageError(f"--n-train must lie in [10, 1500] (digits has 1500 training images), got {args.n_train}")
    if args.replot and not Path(args.replot).is_file():
        raise common.UsageError(f"--replot: no results file {args.replot}")
    return args


# --- one rung -----------------------------------------------------------------------------------------------------

class Problem(NamedTuple):
    """One network's problem and what every rung is compared with: the float64 reference gradient (P,), the
    forward pass's median seconds and XLA FLOPs (None when XLA gives no count)."""

    cost: object
    params: tuple
    batch: gdjax.Batch
    ref: np.ndarray
    t_forward: float
    forward_flops: float | None


def setup(sizes, args) -> Problem:
    """The lecture's problem at `sizes` with `args.batch` examples, its reference and its forward pass."""
    cost, params, batch = common.problem(sizes, args.batch, args.dtype, args.seed)
    fwd = jax.jit(cost)
    t_forward = profiling.time_fn(fwd, params, batch, repeats=max(3, args.repeats), max_time=args.time_budget)
    return Problem(cost, params, batch, common.reference_gradient(cost, params, batch), t_forward.median_s,
                   profiling.xla_flops(fwd, params, batch))


def pilot_directions(p: int, t_forward: float, budget: float) -> int:
    """Directions of a pilot run: what fits a twentieth of the budget (one forward pass each), at least
    min(64, P/4)."""
    return int(min(p, max(min(64, max(1, p // 4)), budget / 20 / t_forward)))


def timed(fn, call_args, args) -> profiling.Timing:
    """`fn(*call_args)` timed after one warm-up call, `args.repeats` times or until `args.time_budget`."""
    return profiling.time_fn(fn, *call_args, repeats=args.repeats, warmup=1, max_time=args.time_budget)


def measure_rung(entry, prob: Problem, args) -> dict:
    """One rung (label, method, options) at one network: a row (see the module docstring)."""
    label, method, options = entry
    est = gdjax.gradient(prob.cost, method, **options)
    p = int(prob.ref.size)
    evals = est.evaluations(p)
    row = {"group": "ladder", "label": label, "method": method, "options": options, "kind": method_info(method).kind,
           "structured": est.structured, "stochastic": est.stochastic, "exact": est.exact,
           "evaluations": None if evals is None else float(evals), "extrapolated": False,
           "measured_directions": p, "error_on": "all", "status": "ok"}
    if est.stochastic:
        key = jax.random.key(args.seed + 1)
        fn, call_args = jax.jit(lambda q, b, k: est(q, b, k)), (prob.params, prob.batch, key)
    else:
        fn, call_args = jax.jit(lambda q, b: est(q, b)), (prob.params, prob.batch)
    t0 = time.perf_counter()
    exe = profiling.compiled(fn, *call_args)  # compiled once: counted, then timed
    row["compile_s"] = time.perf_counter() - t0
    row["flops"] = profiling.xla_flops(fn, *call_args, executable=exe)  # the whole program
    row["fp_equivalents"] = row["flops"] / prob.forward_flops if row["flops"] and prob.forward_flops else None
    if est.subset is not None and _extrapolate(row, est, prob, args):
        return row
    timing = timed(exe, call_args, args)
    _put_timing(row, timing, 1.0)
    if est.stochastic:
        row.update(stochastic_errors(exe, prob, key, args.keys))
    else:
        row["rel_error"], row["cosine"] = common.errors(common.flat_numpy(exe(*call_args)), prob.ref)
    return row


def stochastic_errors(fn, prob: Problem, key, n_keys: int) -> dict:
    """Mean and spread of (rel_error, cosine) over `n_keys` keys fold_in(key, i) of fn(params, batch, key)."""
    errs = np.array([common.errors(common.flat_numpy(fn(prob.params, prob.batch, jax.random.fold_in(key, i))),
                                   prob.ref) for i in range(n_keys)])
    return {"rel_error": float(errs[:, 0].mean()), "rel_error_std": float(errs[:, 0].std()),
            "cosine": float(errs[:, 1].mean()), "cosine_std": float(errs[:, 1].std()), "keys": n_keys}


def _extrapolate(row: dict, est, prob: Problem, args) -> bool:
    """Time the method's own program on its first K directions (`est.subset`); when that predicts a whole
    gradient over half the budget, fill `row` with the extrapolation (and the error on K spread components)
    and return True; else False (the caller times the whole gradient)."""
    p = int(prob.ref.size)
    n = pilot_directions(p, prob.t_forward, args.time_budget)
    sub = est.subset(prob.params, prob.batch, n)
    if sub.covered >= sub.total:
        return False
    parts = time_parts(est, prob.params, prob.batch, n, args.repeats, args.time_budget)
    covered, total = parts["covered"], parts["total"]
    timing = parts["timing"]
    row["pilot_s"] = timing.median_s
    if row["pilot_s"] <= args.time_budget / 2:
        return False
    row.update({"extrapolated": True, "measured_directions": int(covered[0]),
                "scale": timing.median_s / statistics.median(parts["times"]),
                "note": f"timed on {' and '.join(map(str, covered))} of {total} directions (its own program: "
                        f"fixed cost per call + cost per direction)"})
    _put_timing(row, timing, 1.0)
    row["measured_median_s"] = statistics.median(parts["times"])
    if est.structured:  # a restricted cost is not a gdjax MLP cost: no error measured
        row.update({"rel_error": None, "cosine": None, "error_on": "none (structured method, extrapolated)"})
        return True
    idx = common.spread_indices(p, int(covered[0]))
    sub_cost, theta0 = common.restrict_cost(prob.cost, prob.params, idx)
    g = jax.jit(gdjax.gradient(sub_cost, row["method"], **row["options"]))(theta0, prob.batch)
    row["rel_error"], row["cosine"] = common.errors(common.flat_numpy(g), prob.ref[idx])
    row["error_on"] = f"{len(idx)} of {p} components (the method on the cost restricted to them)"
    return True


def _put_timing(row, timing, scale):
    row.update({"median_s": timing.median_s * scale, "min_s": timing.min_s * scale,
                "max_s": timing.max_s * scale, "first_call_s": timing.compile_s, "repeats": len(timing.times),
                "measured_median_s": timing.median_s})


def run_ladder(args) -> list[dict]:
    """Every rung of `args.labels` at every network of `args.nets`: the ladder rows, with same-run ratios."""
    rows = []
    for sizes in args.nets:
        prob = setup(sizes, args)
        base = {"sizes": "-".join(map(str, sizes)), "P": int(prob.ref.size), "N": args.batch, "dtype": args.dtype,
                "forward_s": prob.t_forward, "forward_flops": prob.forward_flops}
        net_rows = []
        for entry in LADDER:
            if entry[0] not in args.labels:
                continue
            print(f"  {base['sizes']:>16}  {entry[0]:<26}", end="", file=sys.stderr, flush=True)
            try:
                row = {**base, **measure_rung(entry, prob, args)}
            except Exception as err:  # recorded, never dropped silently
                row = {**base, "group": "ladder", "label": entry[0], "method": entry[1], "options": entry[2],
                       "status": "error", "note": f"{type(err).__name__}: {err}".splitlines()[0]}
            print(f" {common.human_time(row.get('median_s'))}{'~' if row.get('extrapolated') else ''}"
                  f"  err {_g(row.get('rel_error'))}", file=sys.stderr, flush=True)
            net_rows.append(row)
        add_ratios(net_rows)
        rows.extend(net_rows)
    return rows


def add_ratios(rows):
    """Same-run ratios: speed-up over the FD kernel (the fd-forward rung) and time over reverse."""
    t = {r["label"]: r.get("median_s") for r in rows if r.get("status") == "ok"}
    for r in rows:
        if r.get("status") != "ok":
            continue
        r["speedup_vs_fd"] = t["fd-forward"] / r["median_s"] if t.get("fd-forward") else None
        r["over_reverse"] = r["median_s"] / t["reverse"] if t.get("reverse") else None


# --- training ---------------------------------------------------------------------------------------------------

def run_training(args) -> list[dict]:
    """Train [64, 16, 10] on digits with each rung of `args.train_labels`: one row per epoch."""
    import optax

    from gdjax import fit
    from gdjax.data import load_dataset

    ds = load_dataset("digits", n_train=args.n_train, dtype=args.dtype)
    net = gdjax.MLP((64, 16, 10))
    cost = gdjax.make_cost(net, "quadratic")
    params = net.init(jax.random.key(args.seed), dtype=args.dtype)
    rows = []
    entries = {e[0]: e for e in LADDER}
    for label in args.train_labels:
        _, method, options = entries[label]
        print(f"  train {label:<26}", end="", file=sys.stderr, flush=True)
        status, note = "ok", None
        t0 = time.perf_counter()
        try:
            res = fit.fit(cost, optax.sgd(args.lr), params, ds.train, ds.test, epochs=args.epochs, batch_size=10,
                          key=jax.random.key(args.seed + 2), method=method, method_options=options,
                          learning_rate=args.lr, progress=False)
            history, compile_s = res.history, res.compile_s
        except fit.Diverged as err:
            history, compile_s, status, note = err.history, None, "diverged", str(err)
        for rec in history:
            rows.append({"group": "training", "label": label, "method": method, "options": options,
                         "sizes": "64-16-10", "N": int(ds.train.x.shape[0]), "batch_size": 10, "lr": args.lr,
                         "epoch": rec["epoch"], "step": rec["step"], "train_cost": rec["train_cost"],
                         "test_accuracy": rec["test_accuracy"], "wall_s": rec.get("wall_s", 0.0) or 0.0,
                         "compile_s": compile_s, "status": status, "note": note})
        last = history[-1] if history else {}
        print(f" cost {_g(last.get('train_cost'))} acc {_g(last.get('test_accuracy'))} "
              f"({common.human_time(time.perf_counter() - t0)}{', ' + status if status != 'ok' else ''})",
              file=sys.stderr, flush=True)
    return rows


# --- figures (drawn from the results file) ------------------------------------------------------------------

def plot_ladder(data: dict, stem) -> list:
    from gdjax.plotting import plt, save_figure

    rows = [r for r in data["rows"] if r.get("group") == "ladder" and r.get("status") == "ok"]
    nets = list(dict.fromkeys(r["sizes"] for r in rows))
    if not nets:
        return []
    fig, axes = plt.subplots(1, len(nets), figsize=(6.2 * len(nets), 0.45 * len(LABELS) + 1.6), squeeze=False)
    colors = {"fd": "tab:red", "stochastic": "tab:blue", "exact": "tab:green"}
    for ax, net in zip(axes[0], nets):
        rs = sorted((r for r in rows if r["sizes"] == net), key=lambda r: -r["median_s"])
        y = np.arange(len(rs))
        for i, r in enumerate(rs):
            ax.barh(i, r["median_s"], color=colors.get(r.get("kind"), "grey"), alpha=0.85,
                    hatch="//" if r.get("extrapolated") else None, edgecolor="black", linewidth=0.4)
            ax.errorbar(r["median_s"], i, xerr=[[r["median_s"] - r["min_s"]], [r["max_s"] - r["median_s"]]],
                        fmt="none", ecolor="black", capsize=2, linewidth=0.7)
            err = r.get("rel_error")
            extra = _times(r["speedup_vs_fd"]) if r.get("speedup_vs_fd") else ""
            extra += f"  err {err:.1e}" if err is not None else ""
            if r.get("rel_error_std") is not None:
                extra += f" +- {r['rel_error_std']:.1e}"
            ax.text(r["max_s"] * 1.3, i, extra, va="center", fontsize=7)
        ax.set_yticks(y, [r["label"] + ("~" if r.get("extrapolated") else "") for r in rs], fontsize=8)
        ax.invert_yaxis()  # the most expensive rung on top
        ax.set_xscale("log")
        lo = min(r["min_s"] for r in rs)
        hi = max(r["max_s"] for r in rs)
        ax.set_xlim(lo / 3, hi * 300)
        p = rs[0]["P"]
        ax.set_title(f"[{net.replace('-', ', ')}], P = {p:,}, N = {rs[0]['N']}, {rs[0]['dtype']}", fontsize=9)
        ax.set_xlabel("seconds per gradient (log); Nx: speed-up over fd-forward; err: vs float64 jax.grad")
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.85) for c in colors.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="//"))
    fig.legend(handles, ["finite differences (deterministic)", "stochastic", "exact (autodiff)",
                         "extrapolated (~)"], fontsize=7, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("The estimator ladder: time per gradient" + _device_suffix(data), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_training(data: dict, stem) -> list:
    from gdjax.plotting import plt, save_figure

    rows = [r for r in data["rows"] if r.get("group") == "training"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if not labels:
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, label in enumerate(labels):
        rs = sorted((r for r in rows if r["label"] == label), key=lambda r: r["epoch"])
        style = "--" if rs[-1]["status"] != "ok" else "-"
        name = label + (" (diverged)" if rs[-1]["status"] != "ok" else "")
        a1.plot([r["step"] for r in rs], [r["train_cost"] for r in rs], style, marker="o", ms=3, color=cmap(i % 10),
                label=name)
        walls = [max(r["wall_s"], 1e-4) for r in rs]
        a2.plot(walls, [r["train_cost"] for r in rs], style, marker="o", ms=3, color=cmap(i % 10), label=name)
    r0 = rows[0]
    for ax, xl in ((a1, "SGD steps"), (a2, "training seconds (compile excluded, log)")):
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("train cost (quadratic)")
        ax.grid(alpha=0.3)
    a2.set_xscale("log")
    a2.text(0.02, 0.02, "epoch 0 drawn at 1e-4 s", transform=a2.transAxes, fontsize=7, color="grey")
    a1.text(0.02, 0.02, "deterministic rungs follow the same path (the same gradient to FD accuracy)",
            transform=a1.transAxes, fontsize=7, color="grey")
    a1.legend(fontsize=7)
    fig.suptitle(f"Training [64, 16, 10] on digits ({r0['N']} images), SGD eta = {r0['lr']:g}, mini-batch "
                 f"{r0['batch_size']}, each gradient from a different rung" + _device_suffix(data), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem)


def _times(v: float) -> str:
    """A speed-up as text: 1,234x or 2.5x."""
    return f"{v:,.0f}x" if v >= 10 else f"{v:.2g}x"


def _device_suffix(data):
    meta = data.get("meta", {})
    dev = meta.get("device_kind") or meta.get("platform")
    return f" ({dev})" if dev else ""


def plot_all(path) -> list:
    data = results.load_results(path)
    stem = Path(path).with_suffix("")
    return plot_ladder(data, f"{stem}_ladder") + plot_training(data, f"{stem}_training")


# --- main ---------------------------------------------------------------------------------------------------------

def summary(rows) -> str:
    """The ladder as a fixed-width text table ('~': extrapolated)."""
    lines = [f"{'net':>16} {'rung':<26} {'s/grad':>10} {'vs fd':>8} {'/reverse':>9} {'evals':>9} "
             f"{'fwd-eq':>9} {'rel err':>9} {'cosine':>7}"]
    for r in rows:
        if r.get("group") != "ladder":
            continue
        if r.get("status") != "ok":
            lines.append(f"{r['sizes']:>16} {r['label']:<26} {r['status']}: {r.get('note')}")
            continue
        lines.append(
            f"{r['sizes']:>16} {r['label']:<26} {common.human_time(r['median_s']):>9}{'~' if r['extrapolated'] else ' '} "
            f"{_g(r.get('speedup_vs_fd')):>8} {_g(r.get('over_reverse')):>9} {_g(r['evaluations']):>9} "
            f"{_g(r.get('fp_equivalents')):>9} {_g(r.get('rel_error'), '.2e'):>9} {_g(r.get('cosine'), '.4f'):>7}")
    return "\n".join(lines)


def _g(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def run(args) -> int:
    """Redraw (--replot), or measure the ladder and the training, write, draw and print."""
    if args.replot:
        for path in plot_all(args.replot):
            print(path)
        return 0
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # float64 params stay float64 on the device
    load0 = common.load_average()
    rows = run_ladder(args)
    if args.epochs:
        rows += run_training(args)
    config = {k: v for k, v in vars(args).items() if k not in ("nets", "path", "out", "replot")}
    out = results.save_results(args.path, rows, meta=common.meta(load0, dtype=args.dtype), config=config)
    print(summary(rows))
    return common.wrote(out, *plot_all(out))


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
