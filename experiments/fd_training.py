"""Training with finite differences: the same descent as backprop, at ~P/2 times the price.

The same network (digits, [64, 16, 10], sigmoid, quadratic cost, N(0, 1) init, P = 1210 weights and biases) is
trained by mini-batch SGD (eta 3, batch 10) twice with `gdjax.fit.fit`: once with the gradient from `reverse`
(`jax.grad`) and once with `fd-central` (the library's FD kernel: 2P cost evaluations per gradient), from the same
initial parameters and the same key, so both runs see the same mini-batches in the same order. Expected: the cost
curves agree (the measured max |difference| of the per-epoch train cost is printed: ~1e-5 in float32, the FD
truncation/rounding error of ~1e-4 relative per gradient barely moves the trajectory), while the wall time per
epoch differs by a factor of the order of P/2 (= 605; the measured ratio is printed: fd-central evaluates the
cost 2P times per step, reverse mode costs ~2-3 cost evaluations, and per-step overheads at mini-batch 10 shrink
the measured gap). The figure shows both cost curves against epochs and against wall-clock seconds.

    python experiments/fd_training.py          # ~1 min (FD epochs take ~1-2 s each)
    python experiments/fd_training.py epochs=10 dtype=float64
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np
import optax

import _experiment as C  # noqa: N812

jax.config.update("jax_enable_x64", True)  # dtype=float64 is an option

import gdjax  # noqa: E402
from gdjax.fit import fit  # noqa: E402

NAME = "fd_training"
METHODS = ("reverse", "fd-central")


@dataclasses.dataclass
class Config(C.BaseConfig):
    sizes: tuple[int, ...] = (64, 16, 10)
    epochs: int = 6
    batch_size: int = 10
    eta: float = 3.0
    n_train: int = 1500
    dtype: str = "float32"
    seed: int = 0


QUICK = {"sizes": (64, 4, 10), "epochs": 1, "n_train": 100, "batch_size": 20}


def run(cfg: Config):
    if cfg.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {cfg.dtype!r}")
    ds, net, cost = C.digits_problem(cfg.sizes, cfg.n_train, dtype=cfg.dtype)
    k_init, k_run = jax.random.split(jax.random.key(cfg.seed))
    params = net.init(k_init, dtype=cfg.dtype)
    p = gdjax.n_params(params)
    rows, hist, compile_s = [], {}, {}
    for method in METHODS:
        res = fit(cost, optax.sgd(cfg.eta), params, ds.train, ds.test, epochs=cfg.epochs,
                  batch_size=cfg.batch_size, key=k_run, method=method, learning_rate=cfg.eta, progress=False)
        hist[method], compile_s[method] = res.history, res.compile_s
        for r in res.history:
            rows.append({"method": method, **{k: r[k] for k in ("epoch", "step", "train_cost", "test_cost",
                                                                 "test_accuracy", "epoch_s", "wall_s")}})
    a, b = hist["reverse"], hist["fd-central"]
    diff = [abs(x["train_cost"] - y["train_cost"]) for x, y in zip(a, b)]
    t_rev = float(np.median([r["epoch_s"] for r in a[1:]]))
    t_fd = float(np.median([r["epoch_s"] for r in b[1:]]))
    summary = {"n_params": p, "p_over_2": p / 2, "max_abs_train_cost_difference": float(max(diff)),
               "max_rel_train_cost_difference": float(max(d / x["train_cost"] for d, x in zip(diff, a))),
               "epoch_s_reverse": t_rev, "epoch_s_fd_central": t_fd, "wall_time_ratio": t_fd / t_rev,
               "final_test_accuracy_reverse": a[-1]["test_accuracy"],
               "final_test_accuracy_fd_central": b[-1]["test_accuracy"],
               "compile_s_reverse": compile_s["reverse"], "compile_s_fd_central": compile_s["fd-central"]}
    return rows, summary


def plot(data: dict):
    rows, summ = data["rows"], data["meta"].get("summary", {})
    fig, (a1, a2) = C.figure(2)
    style = {"reverse": dict(color="tab:blue", marker="o", ls="-"), "fd-central": dict(color="tab:red", marker="x",
                                                                                         ls="--")}
    for m in METHODS:
        rs = sorted(C.rows_where(rows, method=m), key=lambda r: r["epoch"])
        a1.plot([r["epoch"] for r in rs], [r["train_cost"] for r in rs], ms=5, label=m, **style[m])
        a2.semilogx([max(r["wall_s"], 1e-4) for r in rs], [r["train_cost"] for r in rs], ms=5, label=m, **style[m])
    a1.set_xlabel("epoch")
    a1.set_ylabel("train cost")
    a1.set_title(f"same descent: max |Δ cost| = {summ.get('max_abs_train_cost_difference', float('nan')):.2g}",
                 fontsize=9)
    a2.set_xlabel("wall-clock seconds of training (log; epoch 0 drawn at 1e-4)")
    a2.set_ylabel("train cost")
    a2.set_title(f"time per epoch: fd-central / reverse = {summ.get('wall_time_ratio', float('nan')):.0f}"
                 f" (P/2 = {summ.get('p_over_2', float('nan')):.0f})", fontsize=9)
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle("Training by finite differences vs backprop (digits, same init and mini-batches)", fontsize=10)
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
