"""Which estimator trains best at equal cost? Each gradient method trains Fashion-MNIST nets at its own tuned
learning rate on two equal budgets: wall-clock seconds and forward-pass equivalents.

    python benchmarks/equal_budget.py                   # the full run (see docs/equal_budget.md for its wall time)
    python benchmarks/equal_budget.py --quick           # tiny budgets and data, seconds (the test runs this)
    python benchmarks/equal_budget.py --out benchmarks/results/cpu/ --resume     # continue an interrupted run
    python benchmarks/equal_budget.py --plot-only runs/bench-budget-.../equal_budget.json

Nets (plain SGD, mini-batch `--batch-size` 10, `gdjax.train.make_step` / `make_epoch`):
  lecture: [784, 30, 10] sigmoid hidden and output, quadratic cost, N(0, 1) init (the lecture's network);
  relu:    [784, 128, 10] ReLU hidden, softmax output, cross-entropy, He init.
Methods: reverse, node-perturbation (forward, central), fd-layerwise, spsa / forward-gradient /
forward-gradient-activity with k = 1 and 16 directions, fd-forward (the FD kernel: a few steps at most).

Data: Fashion-MNIST through `gdjax.load_dataset`; the last `--val` training images are held out as the
validation split, which alone chooses the learning rate; training uses the rest; the test set is only reported.

Learning rate: per (method, net), `--lr-points` values on a log grid (`--lr-min` .. `--lr-max` per net), each
trained for `--tune-seconds` of wall clock from seed 0; the one with the best validation accuracy is kept
(the grid, every value's accuracy and the choice are in the JSON).

Budgets (both in the JSON config): `--seconds` of training wall clock (compiled chunks of steps, waited for;
compilation and evaluation excluded) and `--fpe` forward-pass equivalents, where one step costs
XLA FLOPs(compiled step) / XLA FLOPs(cost over the same mini-batch) (`gdjax.profiling.xla_flops`, loops
counted with their trip counts). A run trains until both budgets are spent or `--cap` x `--seconds` has passed
(then the budget it did not reach is reported as not reached). A chunk of steps is at most 1/20 of either
budget (or one step); test accuracy is measured after the chunk that crosses a budget and whenever 1/20 of
either budget has passed since the last measurement, so the accuracy "at" a budget is the one at the first
checkpoint past it (past by at most one chunk). Time and forward-pass equivalents to `--target` (0.8) test accuracy: the first checkpoint
at or above it, or "not reached" with the best accuracy seen.

Output: `runs/bench-budget-<date>/equal_budget.json` (git-ignored) unless `--out`; rows: one per (net, method,
seed) run; `summary`: per (net, method) mean and spread over seeds; `tuning`: the learning-rate grids; every
finished run or tuning point is appended to `equal_budget.jsonl` beside it, stamped with the commit, which
`--resume` reads back: it reuses the lines written by the current code (`gdjax.provenance.reusable`) and trains
the others again.
Figures (drawn from the JSON): equal_budget_curves.{png,svg} (test accuracy vs seconds and vs forward-pass
equivalents, mean over seeds with a min-max band) and equal_budget_bars.{png,svg}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # benchmarks/_common.py

import _common as common  # noqa: E402

NAME = "equal_budget"
COMMAND = "bench-budget"
METHODS = {  # label: (registry name, options)
    "reverse": ("reverse", {}),
    "node-perturbation": ("node-perturbation", {}),
    "node-perturbation-central": ("node-perturbation", {"scheme": "central"}),
    "fd-layerwise": ("fd-layerwise", {}),
    "spsa-k1": ("spsa", {"num_directions": 1}),
    "spsa-k16": ("spsa", {"num_directions": 16}),
    "forward-gradient-k1": ("forward-gradient", {"num_directions": 1}),
    "forward-gradient-k16": ("forward-gradient", {"num_directions": 16}),
    "forward-gradient-activity-k1": ("forward-gradient-activity", {"num_directions": 1}),
    "forward-gradient-activity-k16": ("forward-gradient-activity", {"num_directions": 16}),
    "fd-forward": ("fd-forward", {}),
}
NETS = {  # label: (sizes, hidden activation, output, loss, init scheme, log10 lr range)
    "lecture": ((784, 30, 10), "sigmoid", "sigmoid", "quadratic", "nielsen", (-3.0, 1.0)),
    "relu": ((784, 128, 10), "relu", "softmax", "cross-entropy", "he", (-4.0, 0.0)),
}
DEFAULTS = {"seconds": 15.0, "fpe": 1.0e5, "tune_seconds": 2.0, "seeds": 3, "lr_points": 9, "n_train": None,
            "n_test": None, "val": 10000, "cap": 2.0, "methods": ",".join(METHODS), "nets": ",".join(NETS)}
QUICK = {"seconds": 0.3, "fpe": 200.0, "tune_seconds": 0.1, "seeds": 2, "lr_points": 2, "n_train": 1200,
         "n_test": 300, "val": 200, "cap": 2.0, "methods": "reverse,forward-gradient-activity-k1", "nets": "lecture"}
CHECKPOINTS = 20  # a chunk of steps is at most 1/CHECKPOINTS of either budget
MAX_CHUNK = 4096  # and at most this many steps


def parse_args(argv):
    """The options, every one checked before any work (UsageError: one line, exit status 2)."""
    p = common.Parser(COMMAND, __doc__, f"{NAME}.json",
                      quick="tiny data and budgets, 2 learning rates, 2 seeds, reverse and activity-k1 (a smoke test)")
    p.add_argument("--seconds", type=float, default=None, help="wall-clock budget per run, s (default 15)")
    p.add_argument("--fpe", type=float, default=None, help="forward-pass-equivalent budget per run (default 1e5)")
    p.add_argument("--tune-seconds", type=float, default=None, help="budget of each learning-rate trial, s (2)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per (method, net) (default 3)")
    p.add_argument("--lr-points", type=int, default=None, help="learning rates on the log grid (default 9)")
    p.add_argument("--cap", type=float, default=None, help="stop a run after cap x --seconds (default 2)")
    p.add_argument("--n-train", type=int, default=None, help="training images loaded (default all 60000)")
    p.add_argument("--n-test", type=int, default=None, help="test images loaded (default all 10000)")
    p.add_argument("--val", type=int, default=None, help="training images held out for validation (10000)")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch (default 10, the lecture's)")
    p.add_argument("--target", type=float, default=0.8, help="test accuracy for time-to-target (default 0.8)")
    p.add_argument("--methods", default=None, help=f"comma-separated labels from: {', '.join(METHODS)}")
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
    args.method_list = _labels(args.methods, METHODS, "--methods")
    args.net_list = _labels(args.nets, NETS, "--nets")
    if args.resume and args.out is None:
        raise common.UsageError("--resume needs --out (the folder or .json of the run to continue)")
    for name in ("n_train", "n_test"):
        if getattr(args, name) is not None:
            common.require(args, 1.0, name)
    if args.n_train is not None and args.n_train <= args.val + args.batch_size:
        raise common.UsageError(f"--n-train ({args.n_train}) must exceed --val ({args.val}) + --batch-size")
    return args


def _labels(text: str, valid: dict, what: str) -> list[str]:
    labels = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [s for s in labels if s not in valid]
    if bad or not labels:
        raise common.UsageError(f"{what}: unknown {', '.join(bad) or 'empty list'}; valid: {', '.join(valid)}")
    return labels


def lr_grid(net: str, points: int) -> list[float]:
    """The log grid of learning rates of `net`: `points` values from 10**lo to 10**hi."""
    lo, hi = NETS[net][5]
    if points == 1:
        return [10.0 ** hi]
    return [float(10.0 ** (lo + (hi - lo) * i / (points - 1))) for i in range(points)]


# --- one (method, net): the compiled chunk of training steps ------------------------------------------------

class Trainer:
    """Compiled training of one (method, net): chunks of `steps` SGD steps under lax.scan, lr a traced value."""

    def __init__(self, net_label: str, method_label: str, data, batch_size: int, seconds: float, fpe: float):
        import jax
        import optax

        import gdjax
        from gdjax import profiling, train

        sizes, act, out, loss, scheme, _ = NETS[net_label]
        self.net = gdjax.MLP(sizes, act, out)
        self.cost = gdjax.make_cost(self.net, loss)
        self.scheme, self.b = scheme, batch_size
        method, options = METHODS[method_label]
        self.opt = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)  # lr in the state: one compilation
        step = train.make_step(self.cost, self.opt, method, **options)
        self.train_x, self.train_y, self.data = data.train_x, data.train_y, data
        state = self.init_state(0, 1.0)
        probe = self._chunk(step, 1, state)
        sub = gdjax.Batch(self.train_x[:batch_size], self.train_y[:batch_size])
        self.fpe_step = _fpe_per_step(profiling, probe, self.cost, state.params, sub)
        times = []  # one probe step, three times: the fastest is the step time
        for _ in range(3):
            state = self.init_state(0, 1.0)  # donated by each call
            t0 = time.perf_counter()
            jax.block_until_ready(probe(state, self.train_x, self.train_y, self._idx(1, 0), jax.random.key(0)))
            times.append(time.perf_counter() - t0)
            if times[-1] > seconds / CHECKPOINTS:
                break
        self.step_s = min(times)
        per_chunk = min(seconds / CHECKPOINTS / self.step_s, fpe / CHECKPOINTS / self.fpe_step)
        self.steps = max(1, min(MAX_CHUNK, int(per_chunk)))
        self.run_chunk = probe if self.steps == 1 else self._chunk(step, self.steps, state)
        self.evaluate = jax.jit(lambda p, x, y: gdjax.accuracy(self.net, p, gdjax.Batch(x, y)))
        self.evaluations = step.estimator.evaluations(self.net.n_params())

    def _idx(self, steps: int, start: int):
        import numpy as np

        n = self.train_x.shape[0]
        return np.arange(start, start + steps * self.b) % n

    def _chunk(self, step, steps: int, state):
        import jax

        import gdjax
        from gdjax import train

        epoch = train.make_epoch(step, steps * self.b, self.b)

        def chunk(state, x, y, idx, key):
            return epoch(state, gdjax.Batch(x[idx], y[idx]), key)

        jitted = jax.jit(chunk, donate_argnums=0)
        return jitted.lower(state, self.train_x, self.train_y, self._idx(steps, 0), jax.random.key(0)).compile()

    def init_state(self, seed: int, lr: float):
        import jax

        from gdjax import train

        k_net, k_run = jax.random.split(jax.random.key(1000 + seed))
        params = self.net.init(k_net, scheme=self.scheme)
        state = train.init(params, self.opt, k_run)
        hp = dict(state.opt_state.hyperparams)
        hp["learning_rate"] = jax.numpy.asarray(lr, hp["learning_rate"].dtype)
        return state._replace(opt_state=state.opt_state._replace(hyperparams=hp))

    def run(self, seed: int, lr: float, seconds: float, fpe: float, cap: float, eval_x, eval_y, checkpoints: bool):
        """Train from `seed` until both budgets are spent (or cap x seconds; `fpe` None: seconds only).

        Returns `(curve, steps, diverged)`, curve a list of checkpoints `(seconds, fpe, accuracy on eval_x)`:
        with `checkpoints` as `_checkpoint_due` says, else only at the end (learning-rate trials).
        """
        import jax
        import numpy as np

        state = self.init_state(seed, lr)
        perm_rng = np.random.default_rng(seed)
        order, pos = perm_rng.permutation(self.train_x.shape[0]), 0
        spent, used, steps, curve, diverged = 0.0, 0.0, 0, [], False
        while (spent < seconds or fpe is not None and used < fpe) and spent < cap * seconds:
            need = self.steps * self.b
            if pos + need > order.size:
                order, pos = np.concatenate([order[pos:], perm_rng.permutation(self.train_x.shape[0])]), 0
            idx, pos = order[pos:pos + need], pos + need
            key = jax.random.fold_in(jax.random.key(seed), steps)
            before = (spent, used)
            t0 = time.perf_counter()
            state, m = self.run_chunk(state, self.train_x, self.train_y, idx, key)
            jax.block_until_ready(state)
            spent += time.perf_counter() - t0
            steps += self.steps
            used = steps * self.fpe_step
            if not bool(np.all(np.isfinite(np.asarray(m["cost"])))):
                diverged = True
            if diverged or (checkpoints and _checkpoint_due(curve, before, (spent, used), seconds, fpe)):
                curve.append((spent, used, float(self.evaluate(state.params, eval_x, eval_y))))
            if diverged:
                break
        if not curve or curve[-1][0] != spent:
            curve.append((spent, used, float(self.evaluate(state.params, eval_x, eval_y))))
        return curve, steps, diverged


def _checkpoint_due(curve, before, now, seconds: float, fpe: float) -> bool:
    """Evaluate after this chunk? When a budget was crossed in it, or 1/CHECKPOINTS of a budget has passed
    since the last evaluation (so a run has ~CHECKPOINTS to 2 x CHECKPOINTS evaluations, whatever its chunk)."""
    last = curve[-1][:2] if curve else (0.0, 0.0)
    crossed = any(b < budget <= n for b, n, budget in zip(before, now, (seconds, fpe)))
    return crossed or now[0] - last[0] >= seconds / CHECKPOINTS or now[1] - last[1] >= fpe / CHECKPOINTS


def _fpe_per_step(profiling, exe, cost, params, batch) -> float:
    """XLA FLOPs of the compiled one-step program over XLA FLOPs of the cost on the same mini-batch."""
    import jax

    step_flops = profiling.xla_flops(None, executable=exe)
    fwd = profiling.xla_flops(jax.jit(cost), params, batch)
    if not step_flops or not fwd:
        raise RuntimeError("XLA reports no FLOPs on this backend: forward-pass equivalents cannot be measured")
    return float(step_flops) / float(fwd)


# --- the sweep ------------------------------------------------------------------------------------------------

def at_budget(curve, index: int, budget: float):
    """(accuracy, spent) at the first checkpoint whose `index` (0 seconds, 1 fpe) reaches `budget`, or None."""
    for point in curve:
        if point[index] >= budget:
            return point[2], point[index]
    return None, None


def run_row(curve, steps, diverged, args, net, label, seed, lr, tr) -> dict:
    acc_s, at_s = at_budget(curve, 0, args.seconds)
    acc_f, at_f = at_budget(curve, 1, args.fpe)
    hit = next((p for p in curve if p[2] >= args.target), None)
    return {"phase": "run", "net": net, "method": label, "registry_method": METHODS[label][0],
            "options": METHODS[label][1], "seed": seed, "learning_rate": lr, "budget_seconds": args.seconds,
            "budget_fpe": args.fpe, "fpe_per_step": tr.fpe_step, "evaluations_per_step": tr.evaluations,
            "step_seconds_probe": tr.step_s, "steps_per_chunk": tr.steps, "steps": steps, "diverged": diverged,
            "acc_at_seconds": acc_s, "seconds_at_checkpoint": at_s, "acc_at_fpe": acc_f, "fpe_at_checkpoint": at_f,
            "final_seconds": curve[-1][0], "final_fpe": curve[-1][1], "final_acc": curve[-1][2],
            "best_acc": max(p[2] for p in curve), "target": args.target, "reached_target": hit is not None,
            "seconds_to_target": hit[0] if hit else None, "fpe_to_target": hit[1] if hit else None,
            "curve": [list(p) for p in curve]}


def load_data(args):
    import types

    import jax.numpy as jnp

    import gdjax

    ds = gdjax.load_dataset("fashion-mnist", args.data_dir, n_train=args.n_train, n_test=args.n_test)
    n = ds.train.x.shape[0] - args.val
    return types.SimpleNamespace(train_x=jnp.asarray(ds.train.x[:n]), train_y=jnp.asarray(ds.train.y[:n]),
                                 val_x=jnp.asarray(ds.train.x[n:]), val_y=jnp.asarray(ds.train.y[n:]),
                                 test_x=jnp.asarray(ds.test.x), test_y=jnp.asarray(ds.test.y),
                                 n_train=n, n_val=args.val, n_test=int(ds.test.x.shape[0]))


def _key(row) -> tuple:
    return (row["phase"], row["net"], row["method"], row.get("learning_rate") if row["phase"] == "tune" else None,
            row.get("seed"), row.get("budget_seconds"), row.get("budget_fpe"))


def run(args) -> int:
    from gdjax import provenance, results

    if args.plot_only is not None:
        for p in plot(args.plot_only):
            print(p)
        return 0
    load0 = common.load_average()
    jsonl = args.path.with_suffix(".jsonl")
    if not args.resume and jsonl.exists():
        raise common.UsageError(f"{jsonl} exists: add --resume to continue it, or choose another --out")
    env = results.environment()
    stamp = {"git_commit": env["git_commit"], "git_dirty": env["git_dirty"]}
    kept = results.resume_jsonl(jsonl, stamp, (f"benchmarks/{NAME}.py", *provenance.LIBRARY), "runs") if args.resume else []
    done = {_key(r): {k: v for k, v in r.items() if k not in stamp} for r in kept}
    data = load_data(args)
    t_start = time.perf_counter()
    rows, tuning = [], []
    for net in args.net_list:
        for label in args.method_list:
            tr = None
            grid, trials = lr_grid(net, args.lr_points), []
            for lr in grid:
                key = ("tune", net, label, lr, 0, args.tune_seconds, None)
                if key not in done:
                    tr = tr or Trainer(net, label, data, args.batch_size, args.seconds, args.fpe)
                    curve, steps, div = tr.run(0, lr, args.tune_seconds, None, 1.0, data.val_x, data.val_y, False)
                    done[key] = {"phase": "tune", "net": net, "method": label, "learning_rate": lr, "seed": 0,
                                 "budget_seconds": args.tune_seconds, "budget_fpe": None, "val_acc": curve[-1][2],
                                 "steps": steps, "diverged": div}
                    results.append_jsonl(jsonl, {**done[key], **stamp})
                trials.append(done[key])
            best = max(trials, key=lambda r: (not r["diverged"], r["val_acc"]))
            tuning.append({"net": net, "method": label, "grid": grid, "val_acc": [r["val_acc"] for r in trials],
                           "diverged": [r["diverged"] for r in trials], "learning_rate": best["learning_rate"]})
            for seed in range(args.seeds):
                key = ("run", net, label, None, seed, args.seconds, args.fpe)
                if key not in done:
                    tr = tr or Trainer(net, label, data, args.batch_size, args.seconds, args.fpe)
                    curve, steps, div = tr.run(seed, best["learning_rate"], args.seconds, args.fpe, args.cap,
                                               data.test_x, data.test_y, True)
                    done[key] = run_row(curve, steps, div, args, net, label, seed, best["learning_rate"], tr)
                    results.append_jsonl(jsonl, {**done[key], **stamp})
                rows.append(done[key])
                r = done[key]
                print(f"{net:8s} {label:30s} seed {seed} lr {r['learning_rate']:.3g}: acc@{args.seconds:g}s "
                      f"{_fmt(r['acc_at_seconds'])}, acc@{args.fpe:.3g}fpe {_fmt(r['acc_at_fpe'])}, "
                      f"best {r['best_acc']:.4f} ({r['steps']} steps, {r['fpe_per_step']:.3g} fpe/step)", flush=True)
    config = {k: getattr(args, k) for k in ("seconds", "fpe", "tune_seconds", "seeds", "lr_points", "cap",
                                            "batch_size", "target", "val", "quick")}
    config.update(methods=args.method_list, nets=args.net_list, n_train=data.n_train, n_val=data.n_val,
                  n_test=data.n_test, dataset="fashion-mnist", checkpoints_per_budget=CHECKPOINTS,
                  net_specs={n: {"sizes": NETS[n][0], "activation": NETS[n][1], "output": NETS[n][2],
                                 "loss": NETS[n][3], "init": NETS[n][4]} for n in args.net_list},
                  method_specs={m: {"method": METHODS[m][0], "options": METHODS[m][1]} for m in args.method_list})
    meta = common.meta(load0, wall_seconds=time.perf_counter() - t_start)
    results.write_json(args.path, {"meta": meta, "config": config, "rows": rows, "summary": summarise(rows),
                                   "tuning": tuning})
    print(args.path)
    for p in plot(args.path):
        print(p)
    return 0


def _fmt(v) -> str:
    return "not reached" if v is None else f"{v:.4f}"


def _stats(values) -> dict:
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    from gdjax import plotting

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
            ax.set_xscale("log")
            ax.set_ylim(0, 1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"test accuracy ({net})")
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
            mean = np.asarray([np.nan if r[f"{field}_mean"] is None else r[f"{field}_mean"] for r in s])
            lo = np.asarray([np.nan if r[f"{field}_min"] is None else r[f"{field}_min"] for r in s])
            hi = np.asarray([np.nan if r[f"{field}_max"] is None else r[f"{field}_max"] for r in s])
            ax.bar(x + off, np.nan_to_num(mean), 0.4, yerr=np.nan_to_num([mean - lo, hi - mean]), label=label,
                   capsize=2)
        ax.set_xticks(x, [r["method"] for r in s], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"test accuracy ({net})")
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy at equal budget (mean over seeds, bars: min-max; 0 = budget not reached)")
    return out + plotting.save_figure(fig, path.with_name(f"{NAME}_bars"))


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
