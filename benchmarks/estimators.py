#!/usr/bin/env python
"""The estimator ladder: what one gradient costs between finite differences and backprop, and how well it trains.

    python benchmarks/estimators.py            # [784,30,10] and [784,128,64,10], N = 1000, f32, + training
                                               # on digits: 15-30 min on a busy 2-core CPU (`make bench-estimators`)
    python benchmarks/estimators.py --quick    # a tiny net, 1 epoch: about a minute, mostly compilation
    python benchmarks/estimators.py --replot benchmarks/results/cpu/estimators.json   # figures only

Part 1, the ladder (`group: "ladder"` rows): for each network (sigmoid hidden and output units, quadratic cost,
N(0, 1) weights, x ~ U[0, 1], one-hot random labels, N examples, float32) and each rung, one gradient:
  - `median_s` / `min_s` / `max_s` per gradient after a warm-up call (`compile_s`: the warm-up's time), repeats
    stopped early past `--time-budget` seconds (at least one timed call);
  - `evaluations` (the estimator's own count, cost evaluations per gradient) and `fp_equivalents` = FLOPs of the
    gradient / FLOPs of one forward pass (the cost), both from XLA's cost analysis. XLA counts a loop body once,
    so FLOPs come from loop-free programs: the layer-aware FD is compiled with every step under one vmap
    (`layerwise_differences(loop=False)`, compiled only, never run); the FD kernel's FLOPs are its evaluations x
    the forward pass's (each evaluation is a whole forward pass: `flops_source` says which). XLA counts
    transcendental functions (exp, expm1, log1p: most of the layer-aware FD's work) separately:
    `transcendentals`;
  - `rel_error` = |g - g_ref| / |g_ref| and `cosine` against float64 `jax.grad` on the same params and batch;
    stochastic rungs: mean and standard deviation over `--keys` keys (`rel_error_std`, `cosine_std`);
  - `speedup_vs_fd` = time(fd-forward) / time(rung) and `over_reverse` = time(rung) / time(reverse): ratios
    within this run (the machine is shared: compare ratios, not absolute times).
  The FD kernel first runs a pilot on K evenly spread directions (the kernel applied to the cost restricted to
  them, so each evaluation is still a whole forward pass; K fits a twentieth of `--time-budget`), scaled by
  evaluations(P) / evaluations(K) (`pilot_s`). When that predicts more than half the budget, the pilot is the
  result: `extrapolated: true`, `measured_directions` = K, `scale`, and its error is over those K components
  (`error_on`); otherwise the whole gradient is timed.
Part 2, training (`group: "training"` rows): the digits data (1500 train / 297 test, 8x8 images), network
[64, 16, 10], the same init, plain SGD eta = 3 (`--lr`), mini-batches of 10, `--epochs` epochs, every rung
through `gdjax.train.fit`; one row per epoch with the train cost, test accuracy, steps and training seconds
(compile excluded). A run that diverges is kept up to its last good epoch (`status: "diverged"`).

Output: benchmarks/results/<platform>/estimators.json (+ .csv), estimators_ladder.{png,svg} (time per gradient,
log scale, rungs ordered, hatched = extrapolated) and estimators_training.{png,svg} (cost vs steps and vs
seconds). Errors: one line on stderr, exit status 2 (bad options) or 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import gdjax  # noqa: E402
from gdjax import profiling, results  # noqa: E402
from gdjax.data import Batch, one_hot  # noqa: E402
from gdjax.gradients import method_info, structured  # noqa: E402

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
DEFAULT_SIZES = "784,30,10;784,128,64,10"
QUICK = {"sizes": "12,8,6,4", "batch": 64, "repeats": 1, "keys": 4, "epochs": 1, "n_train": 100,
         "time_budget": 5.0, "train_methods": "reverse,fd-layerwise,spsa-k16"}


class UsageError(ValueError):
    """A bad command-line option (exit status 2)."""


# --- options --------------------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[tuple[int, ...]]:
    """'784,30,10;784,128,64,10' -> [(784, 30, 10), (784, 128, 64, 10)]."""
    nets = []
    for part in text.split(";"):
        try:
            sizes = tuple(int(s) for s in part.split(","))
        except ValueError:
            raise UsageError(f"--sizes: {part!r} is not a comma-separated list of layer widths such as 784,30,10")
        if len(sizes) < 3 or min(sizes) < 1:
            raise UsageError(f"--sizes: {part!r} needs at least 3 positive widths (input, hidden..., output)")
        nets.append(sizes)
    return nets


def parse_labels(text: str, valid=LABELS, what="--methods") -> tuple[str, ...]:
    labels = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in labels if s not in valid]
    if bad or not labels:
        raise UsageError(f"{what}: unknown {bad or text!r}; valid: {','.join(valid)}")
    return labels


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr (main prints it), not argparse's usage block
        raise UsageError(message)


def parse_args(argv):
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help=f"networks, ';'-separated (default {DEFAULT_SIZES})")
    ap.add_argument("--batch", type=int, default=None, help="examples N (default 1000)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--methods", default=",".join(LABELS), help="rungs of the ladder (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per rung (default 3)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds per rung: repeats stop past it; the FD kernel is extrapolated from a subset of "
                         "directions when a pilot predicts a full gradient over half of it (default 120)")
    ap.add_argument("--keys", type=int, default=None, help="keys for the error spread of stochastic rungs (default 20)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs per rung (default 10; 0: no training)")
    ap.add_argument("--n-train", type=int, default=None, help="training examples of digits (default all 1500)")
    ap.add_argument("--train-methods", default=None, help=f"rungs trained (default {','.join(TRAINING)})")
    ap.add_argument("--lr", type=float, default=3.0, help="SGD learning rate for training (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a tiny net, one repeat, one epoch: about a minute (mostly compilation)")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/<platform>/estimators.json)")
    ap.add_argument("--replot", default=None, metavar="JSON", help="only redraw the figures from a results file")
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else {"sizes": DEFAULT_SIZES, "batch": 1000, "repeats": 3, "keys": 20,
                                         "epochs": 10, "n_train": None, "time_budget": 120.0,
                                         "train_methods": ",".join(TRAINING)}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.nets = parse_sizes(args.sizes)
    args.labels = parse_labels(args.methods)
    args.train_labels = parse_labels(args.train_methods, what="--train-methods")
    for name in ("batch", "repeats", "keys"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {args.epochs}")
    if args.n_train is not None and not 10 <= args.n_train <= 1500:
        raise UsageError(f"--n-train must lie in [10, 1500] (digits has 1500 training images), got {args.n_train}")
    if not args.time_budget > 0 or not args.lr > 0:
        raise UsageError("--time-budget and --lr must be > 0")
    return args


# --- the problem ----------------------------------------------------------------------------------------------

def make_problem(sizes, n: int, dtype: str, seed: int):
    """The lecture's network and data: (cost, params, batch)."""
    net = gdjax.MLP(sizes)
    kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
    params = net.init(kp, dtype=dtype)
    x = jax.random.uniform(kx, (n, sizes[0]), jnp.dtype(dtype))
    y = one_hot(np.asarray(jax.random.randint(ky, (n,), 0, sizes[-1])), sizes[-1], dtype)
    return gdjax.make_cost(net, "quadratic"), params, Batch(x, y)


def to64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def flat_np(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree))[0])


def errors(estimate: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(|g - ref| / |ref|, cosine(g, ref))."""
    rel = float(np.linalg.norm(estimate - ref) / np.linalg.norm(ref))
    cos = float(estimate @ ref / (np.linalg.norm(estimate) * np.linalg.norm(ref) + 1e-300))
    return rel, cos


def cost_analysis(compiled) -> dict:
    """flops / transcendentals of a compiled program (None when the backend gives none)."""
    try:
        d = compiled.cost_analysis()
        d = d[0] if isinstance(d, list | tuple) else d
    except Exception:  # some backends do not implement it
        d = None
    d = d or {}
    return {k: (float(d[k]) if k in d and d[k] >= 0 else None) for k in ("flops", "transcendentals")}


def has_loop(compiled) -> bool:
    return " while(" in compiled.as_text()


# --- timing one rung ------------------------------------------------------------------------------------------

def restricted(cost, params, idx):
    """`cost` as a function of the parameters at flat positions `idx` only (the others held): (sub_cost, u0)."""
    v0, unravel = ravel_pytree(params)
    idx = jnp.asarray(idx)

    def sub_cost(u, batch):
        return cost(unravel(v0.at[idx].set(u)), batch)

    return sub_cost, v0[idx]


def time_call(fn, args, repeats: int, budget: float) -> profiling.Timing:
    return profiling.time_fn(fn, *args, repeats=repeats, warmup=1, max_time=budget)


def fd_pilot_directions(p: int, t_forward: float, budget: float) -> int:
    """Directions of the FD kernel's pilot run: what fits a twentieth of the budget, at least min(64, P/4)."""
    return int(min(p, max(min(64, max(1, p // 4)), budget / 20 / t_forward)))


def measure_rung(label, method, options, cost, params, batch, ref, t_forward, fwd_flops, args) -> dict:
    """One rung of the ladder at one network: a row (see the module docstring)."""
    info = method_info(method)
    est = gradient_for(cost, method, options)
    p = int(ref.size)
    row = {"group": "ladder", "label": label, "method": method, "options": options, "kind": info.kind,
           "structured": info.structured, "stochastic": est.stochastic, "evaluations": float(est.evaluations(p)),
           "extrapolated": False, "measured_directions": p, "error_on": "all", "status": "ok"}
    key = jax.random.key(args.seed + 1)
    if method in ("fd-forward", "fd-central"):
        # a pilot on k evenly spread directions (the kernel on the cost restricted to them); the whole gradient
        # is timed when the pilot predicts it fits half the budget, else the pilot is the (flagged) result
        k = fd_pilot_directions(p, t_forward, args.time_budget)
        if k < p:
            idx = np.unique(np.linspace(0, p - 1, k).round().astype(np.int64))
            sub_cost, u0 = restricted(cost, params, idx)
            sub = gradient_for(sub_cost, method, options)
            fn = jax.jit(lambda u, b: sub(u, b))
            timing = time_call(fn, (u0, batch), args.repeats, args.time_budget)
            scale = row["evaluations"] / float(sub.evaluations(len(idx)))
            row["pilot_s"] = timing.median_s * scale
            if timing.median_s * scale > args.time_budget / 2:
                rel, cos = errors(flat_np(fn(u0, batch)), ref[idx])
                row.update({"extrapolated": True, "measured_directions": int(len(idx)), "scale": scale,
                            "error_on": f"{len(idx)} of {p} components", "rel_error": rel, "cosine": cos,
                            "note": f"timed on {len(idx)} of {p} directions, scaled by {scale:.4g}"})
                _put_timing(row, timing, scale)
                k = None
        if k is not None:
            fn = jax.jit(lambda q, b: est(q, b))
            timing = time_call(fn, (params, batch), args.repeats, args.time_budget)
            _put_timing(row, timing, 1.0)
            row["rel_error"], row["cosine"] = errors(flat_np(fn(params, batch)), ref)
        row.update({"flops": row["evaluations"] * fwd_flops["flops"] if fwd_flops["flops"] else None,
                    "transcendentals": None if fwd_flops["transcendentals"] is None else
                    row["evaluations"] * fwd_flops["transcendentals"],
                    "flops_source": "evaluations x XLA forward pass", "xla_loop": None})
        return row
    if est.stochastic:
        fn = jax.jit(lambda q, b, k: est(q, b, k))
        timing = time_call(fn, (params, batch, key), args.repeats, args.time_budget)
        errs = np.array([errors(flat_np(fn(params, batch, jax.random.fold_in(key, i))), ref)
                         for i in range(args.keys)])
        row.update({"rel_error": float(errs[:, 0].mean()), "rel_error_std": float(errs[:, 0].std()),
                    "cosine": float(errs[:, 1].mean()), "cosine_std": float(errs[:, 1].std()), "keys": args.keys})
        args_flops = (params, batch, key)
    else:
        fn = jax.jit(lambda q, b: est(q, b))
        timing = time_call(fn, (params, batch), args.repeats, args.time_budget)
        row["rel_error"], row["cosine"] = errors(flat_np(fn(params, batch)), ref)
        args_flops = (params, batch)
    _put_timing(row, timing, 1.0)
    if method in ("fd-layerwise", "fd-layerwise-central"):
        compiled = loop_free_layerwise(cost, params, batch, est.options["scheme"])
        source = "XLA, loop-free program (compiled, not run)"
    else:
        compiled = fn.lower(*args_flops).compile()
        source = "XLA"
    row.update(cost_analysis(compiled))
    row.update({"flops_source": source, "xla_loop": has_loop(compiled)})
    return row


def gradient_for(cost, method, options):
    return gdjax.gradient(cost, method, **options)


def loop_free_layerwise(cost, params, batch, scheme):
    """The layer-aware FD with every step under one vmap, compiled for XLA's FLOP count (never run)."""
    h = structured.default_eps(scheme, params[0].w.dtype)

    def fn(q, b):
        per_layer = [structured.fd_steps(jnp.concatenate([lw.w, lw.b[None]]), h, scheme) for lw in q]
        steps = [[st[0][s] for st in per_layer] for s in range(len(per_layer[0][0]))]
        return structured.layerwise_differences(cost, q, b, steps, loop=False)

    return jax.jit(fn).lower(params, batch).compile()


def _put_timing(row, timing, scale):
    row.update({"median_s": timing.median_s * scale, "min_s": timing.min_s * scale,
                "max_s": timing.max_s * scale, "compile_s": timing.compile_s, "repeats": len(timing.times),
                "measured_median_s": timing.median_s})


def run_ladder(args) -> list[dict]:
    rows = []
    for sizes in args.nets:
        cost, params, batch = make_problem(sizes, args.batch, args.dtype, args.seed)
        p = gdjax.n_params(params)
        ref = flat_np(jax.jit(jax.grad(cost))(to64(params), to64(batch)))
        fwd = jax.jit(cost)
        t_forward = time_call(fwd, (params, batch), max(3, args.repeats), args.time_budget).median_s
        fwd_flops = cost_analysis(fwd.lower(params, batch).compile())
        base = {"sizes": "-".join(map(str, sizes)), "P": p, "N": args.batch, "dtype": args.dtype,
                "forward_s": t_forward, "forward_flops": fwd_flops["flops"]}
        net_rows = []
        for label, method, options in LADDER:
            if label not in args.labels:
                continue
            print(f"  {base['sizes']:>16}  {label:<26}", end="", file=sys.stderr, flush=True)
            try:
                row = {**base, **measure_rung(label, method, options, cost, params, batch, ref, t_forward,
                                              fwd_flops, args)}
            except Exception as err:  # recorded, never dropped silently
                row = {**base, "group": "ladder", "label": label, "method": method, "options": options,
                       "status": "error", "note": f"{type(err).__name__}: {err}".splitlines()[0]}
            if row.get("flops") and fwd_flops["flops"]:
                row["fp_equivalents"] = row["flops"] / fwd_flops["flops"]
            print(f" {_fmt_s(row.get('median_s'))}{'~' if row.get('extrapolated') else ''}"
                  f"  err {row.get('rel_error', float('nan')):.2e}", file=sys.stderr, flush=True)
            net_rows.append(row)
        add_ratios(net_rows)
        rows.extend(net_rows)
    return rows


def add_ratios(rows):
    """Same-run ratios: speed-up over the FD kernel (fd-forward) and time over reverse."""
    t = {r["label"]: r.get("median_s") for r in rows if r.get("status") == "ok"}
    for r in rows:
        if r.get("status") != "ok":
            continue
        r["speedup_vs_fd"] = t["fd-forward"] / r["median_s"] if t.get("fd-forward") else None
        r["over_reverse"] = r["median_s"] / t["reverse"] if t.get("reverse") else None


# --- training ---------------------------------------------------------------------------------------------------

def run_training(args) -> list[dict]:
    import optax

    from gdjax import train
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
            res = train.fit(cost, optax.sgd(args.lr), params, ds.train, ds.test, epochs=args.epochs, batch_size=10,
                            key=jax.random.key(args.seed + 2), method=method, method_options=options,
                            learning_rate=args.lr, progress=False)
            history, compile_s = res.history, res.compile_s
        except train.Diverged as err:
            history, compile_s, status, note = err.history, None, "diverged", str(err)
        for rec in history:
            rows.append({"group": "training", "label": label, "method": method, "options": options,
                         "sizes": "64-16-10", "N": int(ds.train.x.shape[0]), "batch_size": 10, "lr": args.lr,
                         "epoch": rec["epoch"], "step": rec["step"], "train_cost": rec["train_cost"],
                         "test_accuracy": rec["test_accuracy"], "wall_s": rec.get("wall_s", 0.0) or 0.0,
                         "compile_s": compile_s, "status": status, "note": note})
        last = history[-1] if history else {}
        print(f" cost {last.get('train_cost', float('nan')):.3f} acc {last.get('test_accuracy') or 0:.3f} "
              f"({time.perf_counter() - t0:.1f} s{', ' + status if status != 'ok' else ''})",
              file=sys.stderr, flush=True)
    return rows


# --- figures (drawn from the results file) ------------------------------------------------------------------

def plot_ladder(data: dict, stem) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdjax.plotting import save_figure

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdjax.plotting import save_figure

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

def _fmt_s(s):
    if s is None:
        return "   -   "
    return f"{s * 1e3:8.2f} ms" if s < 1 else f"{s:8.2f} s "


def summary(rows) -> str:
    lines = [f"{'net':>16} {'rung':<26} {'s/grad':>12} {'vs fd':>8} {'/reverse':>9} {'evals':>9} "
             f"{'fwd-eq':>9} {'rel err':>9} {'cosine':>7}"]
    for r in rows:
        if r.get("group") != "ladder":
            continue
        if r.get("status") != "ok":
            lines.append(f"{r['sizes']:>16} {r['label']:<26} {r['status']}: {r.get('note')}")
            continue
        lines.append(
            f"{r['sizes']:>16} {r['label']:<26} {_fmt_s(r['median_s'])}{'~' if r['extrapolated'] else ' '} "
            f"{_g(r.get('speedup_vs_fd')):>8} {_g(r.get('over_reverse')):>9} {_g(r['evaluations']):>9} "
            f"{_g(r.get('fp_equivalents')):>9} {r['rel_error']:9.2e} {r['cosine']:7.4f}")
    return "\n".join(lines)


def _g(v):
    return "-" if v is None else f"{v:.3g}"


def main(argv=None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.replot:
            for path in plot_all(args.replot):
                print(path)
            return 0
        env = results.environment()
        platform = env.get("platform") or jax.default_backend()
        out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / platform / "estimators.json"
        jax.config.update("jax_enable_x64", True)  # the float64 reference gradient; params keep --dtype
        rows = run_ladder(args)
        if args.epochs:
            rows += run_training(args)
        config = {k: v for k, v in vars(args).items() if k not in ("nets",)}
        results.save_results(out, rows, meta={**env, "dtype": args.dtype}, config=config)
        print(summary(rows))
        for path in [out, *plot_all(out)]:
            print(path)
        return 0
    except UsageError as err:
        print(f"estimators: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one line on stderr, not a traceback
        print(f"estimators: error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
