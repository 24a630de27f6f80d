#!/usr/bin/env python
"""The estimator ladder: what one gradient costs between finite differences and backprop, and how well it trains.

    python benchmarks/estimators.py            # [784,30,10] and [784,128,64,10], N = 1000, f32, + training
                                               # on digits (`make bench-estimators`)
    python benchmarks/estimators.py --quick    # a tiny net, 1 epoch (mostly compilation)
    python benchmarks/estimators.py --replot benchmarks/results/cpu/estimators.json   # figures only

Part 1, the ladder (`group: "ladder"` rows): for each network (the lecture's problem of every benchmark,
`gdjax.bench.problem.mlp_problem`: sigmoid hidden and output units, quadratic cost, N(0, 1) weights,
x ~ U[0, 1], one-hot random labels, N examples) and each rung, one gradient measured by the harness of `gdjax
bench` (`gdjax.bench.measure.measure_method`, the same row fields, the same timer), so the two agree by
construction:
  - `median_s` / `min_s` / `max_s` per gradient after compilation (`compile_s`), the whole gradient timed in
    the same interleaved rounds as the forward pass (`over_forward`: median of per-round ratios);
  - `evaluations`: the estimator's own count of cost evaluations per gradient where that is a true count
    (None for autodiff, whose cost is not a number of cost evaluations);
  - `xla_flops` (also as `flops`): XLA's FLOP count of the compiled gradient program (loop bodies counted with
    their trip counts) and `forward_equivalents` (also as `fp_equivalents`) = xla_flops / the compiled cost's
    XLA FLOPs (`forward_xla_flops`): measured, never a constant;
  - `rel_error` = |g - g_ref| / |g_ref| and `cosine` against float64 `jax.grad` on the same params and batch;
    stochastic rungs: the mean and standard deviation (ddof 1) over `--keys` keys (`keys`, `rel_error_std`,
    `cosine_std`; k directions per gradient: `num_directions`);
  - `speedup_vs_fd` = time(fd-forward) / time(rung) and `over_reverse` = time(rung) / time(reverse): ratios
    within this run (the machine is shared: compare ratios, not absolute times).
  A method that can be timed on part of its directions (`est.subset`) is timed whole when its pilot predicts
  a whole gradient within `--time-budget`; otherwise two parts of its own compiled program are timed and
  extrapolated (`gdjax.bench.policy.extrapolate`: a fixed cost per call plus a cost per direction):
  `extrapolated: true`, `measured_directions`, `scale`, and the error on as many evenly spread components
  (the method on the cost restricted to them, `error_on`; none for structured methods). Every other rung is
  timed whole, whatever its prediction. A whole rung whose method has a subset is validated as `gdjax bench`
  validates it: the parts an extrapolation would time are timed beside it (`validation_ratio` = extrapolated /
  whole, `validation_ratio_cpu`, ..., where the point is large enough for a real extrapolation).
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
from gdjax.bench.config import FORWARD_PASS, Point  # noqa: E402
from gdjax.bench.measure import measure_forward, measure_method  # noqa: E402
from gdjax.bench.problem import Problem, mlp_problem  # noqa: E402
from gdjax.bench.sweep import VALIDATION_FIELDS  # noqa: E402
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
                    help="seconds per rung (gdjax bench's --time-budget): a method timeable on a subset of its "
                         "directions is extrapolated when its pilot predicts a whole gradient over it (default 120)")
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


# --- one rung: measured by gdjax.bench, the harness of `gdjax bench` --------------------------------------------

class Ladder(NamedTuple):
    """One network's problem and what every rung is measured against: the `Problem`, the forward pass's row
    (`gdjax.bench.measure.measure_forward`), its compiled program (timed in the same rounds as each whole
    gradient) and the float64 reference gradient (P,)."""

    sizes: tuple
    problem: Problem
    forward: dict
    forward_exe: object
    ref: np.ndarray


def _point(sizes, args, method: str) -> Point:
    return Point("ladder", tuple(sizes), args.batch, method)


def setup(sizes, args) -> Ladder:
    """The lecture's problem at `sizes` with `args.batch` examples, its forward pass and its reference."""
    prob = mlp_problem(tuple(sizes), args.batch, args.dtype, args.seed)
    fwd = measure_forward(_point(sizes, args, FORWARD_PASS), prob, dtype=args.dtype, repeats=args.repeats,
                          budget=args.time_budget)
    return Ladder(tuple(sizes), prob, fwd, profiling.compiled(prob.cost, prob.params, prob.batch), prob.reference())


def measure_rung(entry, lad: Ladder, args) -> dict:
    """One rung (label, method, options) at one network, measured by `gdjax.bench.measure.measure_method` (whole,
    or extrapolated from the method's own subset program with the error on as many spread components), with
    the fields the estimators tables read (see the module docstring)."""
    label, method, options = entry
    fwd = lad.forward
    row, check = measure_method(
        _point(lad.sizes, args, method), lad.problem, dtype=args.dtype,
        t_forward=fwd["measured_median_s"], forward_flops=fwd["xla_flops_raw"],
        forward_dot_flops=fwd.get("dot_flops_raw"), forward_row=fwd, forward=lad.forward_exe,
        reference=lambda: lad.ref, key=jax.random.key(args.seed + 1), repeats=args.repeats, budget=args.time_budget,
        validate=True, options=options, error_keys=args.keys, skip_over_budget=False, subset_errors=True)
    if check is not None:  # a whole gradient, also timed the way an extrapolation would be (gdjax bench's check)
        row.update({f"validation_{k}": check[k] for k in VALIDATION_FIELDS})
    row.update({"group": "ladder", "label": label, "options": options, "structured": method_info(method).structured,
                "extrapolated": row["how"] == "extrapolated", "forward_xla_flops": fwd["xla_flops_raw"],
                # the names the estimators tables read (gdjax/report): the same numbers as the harness's fields
                "flops": row.get("xla_flops"), "fp_equivalents": row.get("forward_equivalents")})
    if row["how"] == "whole":
        row["error_on"] = "all"
    if row.get("error_keys"):  # a stochastic rung's error is its mean +- std over `keys` keys, k stated
        row.update({"rel_error": row["rel_error_mean"], "cosine": row["cosine_mean"], "keys": row["error_keys"]})
    return row


def run_ladder(args) -> list[dict]:
    """Every rung of `args.labels` at every network of `args.nets`: the ladder rows, with same-run ratios."""
    rows = []
    for sizes in args.nets:
        lad = setup(sizes, args)
        base = {"sizes": lad.problem.name, "P": lad.problem.n_params, "N": args.batch, "dtype": args.dtype,
                "forward_s": lad.forward["median_s"]}
        net_rows = []
        for entry in LADDER:
            if entry[0] not in args.labels:
                continue
            print(f"  {base['sizes']:>16}  {entry[0]:<26}", end="", file=sys.stderr, flush=True)
            try:
                row = {**base, **measure_rung(entry, lad, args)}
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
