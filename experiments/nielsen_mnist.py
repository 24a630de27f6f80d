"""The lecture's network on Fashion-MNIST (and MNIST when its IDX files are given), plus a stronger MLP.

1. [784, 30, 10], sigmoid hidden and output units, quadratic cost, N(0, 1) init, plain SGD eta = 3.0, mini-batch 10,
   30 epochs (Nielsen's network.py setting) with `gdjax.fit.fit`: test accuracy per epoch.
2. A stronger MLP: 784-256-128-10, ReLU, softmax output, cross-entropy, He init, Adam (lr 1e-3), mini-batch 128,
   `strong_epochs` epochs; compared with the Fashion-MNIST README's MLPClassifier (256-128-100) test accuracy 0.8833.
Expected on Fashion-MNIST (60,000 train / 10,000 test): the lecture's network ends near 0.85 test accuracy (on
MNIST it reaches ~0.95), the stronger MLP at or above ~0.88. The printed summary gives the reached accuracies and
the wall time of each run; the figure shows test accuracy per epoch with the 0.8833 reference line.

MNIST is optional: when its IDX files are found ($GDJAX_DATA_DIR/mnist, $GDJAX_DATA_DIR, or `mnist_dir`) the
lecture's network also runs on it; when they are not, the script says so and runs Fashion-MNIST only.

    python experiments/nielsen_mnist.py                          # Fashion-MNIST from Debian's package folder
    python experiments/nielsen_mnist.py mnist_dir=/data/mnist    # also MNIST from IDX files in that folder
    python experiments/nielsen_mnist.py mnist=false              # never MNIST
    python experiments/nielsen_mnist.py dataset=digits epochs=5  # offline, seconds (sizes adapt: 64 inputs)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import optax

import _experiment as C  # noqa: N812

import gdjax  # noqa: E402
from gdjax.fit import fit  # noqa: E402

NAME = "nielsen_mnist"
README_MLP_ACCURACY = 0.8833  # Fashion-MNIST README benchmark table: MLPClassifier, hidden 256-128-100


@dataclasses.dataclass
class Config(C.BaseConfig):
    dataset: str = "fashion-mnist"
    data_dir: str = ""
    mnist: bool = True  # also run the lecture's network on MNIST when its IDX files are found
    mnist_dir: str = ""  # the folder of MNIST's IDX files (default: where gdjax.data looks)
    n_train: int = 0  # 0: all
    n_test: int = 0
    hidden: int = 30
    eta: float = 3.0
    batch_size: int = 10
    epochs: int = 30
    strong_hidden: tuple[int, ...] = (256, 128)
    strong_lr: float = 1e-3
    strong_batch_size: int = 128
    strong_epochs: int = 20
    seed: int = 0


QUICK = {"dataset": "digits", "epochs": 4, "strong_epochs": 4, "strong_lr": 1e-2, "n_train": 300, "n_test": 100, "hidden": 8,
         "strong_hidden": (16,), "strong_batch_size": 32}


def _runs(cfg: Config):
    """(run name, dataset name, data_dir) for every dataset to train on."""
    out = [(cfg.dataset, cfg.dataset, cfg.data_dir or None)]
    if not cfg.mnist or cfg.dataset == "mnist":
        return out
    d = cfg.mnist_dir
    dirs = [Path(d) / "mnist", Path(d)] if d else gdjax.data.default_data_dirs("mnist")
    try:
        gdjax.data.find_idx_files("mnist", dirs)
    except FileNotFoundError as err:
        print(f"{NAME}: note: MNIST is optional and was not found, so only {cfg.dataset} runs ({err})")
        return out
    return out + [("mnist", "mnist", d or None)]


def _train(run_name: str, model: str, label: str, cost, optimizer, params, ds, **fit_kw):
    """Train one model with `fit`; (its rows, its summary entries: last and best test accuracy, wall time)."""
    hist = fit(cost, optimizer, params, ds.train, ds.test, progress=False, **fit_kw).history
    rows = [{"dataset": run_name, "model": model, "label": label, **_pick(r)} for r in hist]
    summary = {f"{model}_test_accuracy[{run_name}]": hist[-1]["test_accuracy"],
               f"{model}_best_test_accuracy[{run_name}]": max(r["test_accuracy"] for r in hist),
               f"{model}_wall_s[{run_name}]": hist[-1]["wall_s"]}
    return rows, summary


def run(cfg: Config):
    rows, summary = [], {}
    key = jax.random.key(cfg.seed)
    for i, (run_name, ds_name, ddir) in enumerate(_runs(cfg)):
        ds = gdjax.data.load_dataset(ds_name, ddir, n_train=cfg.n_train or None, n_test=cfg.n_test or None)
        n_in = int(ds.train.x.shape[1])
        k_net, k_fit, k_strong, k_sfit = jax.random.split(jax.random.fold_in(key, i), 4)
        # 1. the lecture's network
        net = gdjax.MLP((n_in, cfg.hidden, ds.n_classes), activation="sigmoid", output="sigmoid")
        tag = f"lecture {n_in}-{cfg.hidden}-{ds.n_classes} sigmoid quadratic SGD eta {cfg.eta:g}"
        r, s = _train(run_name, "lecture", tag, gdjax.make_cost(net, "quadratic"), optax.sgd(cfg.eta),
                      net.init(k_net), ds, epochs=cfg.epochs, batch_size=cfg.batch_size, key=k_fit,
                      learning_rate=cfg.eta)
        rows += r
        summary.update(s)
        # 2. the stronger MLP (on the main dataset only)
        if i == 0 and cfg.strong_epochs > 0:
            sizes = (n_in, *cfg.strong_hidden, ds.n_classes)
            snet = gdjax.MLP(sizes, activation="relu", output="softmax")
            stag = f"MLP {'-'.join(map(str, sizes))} ReLU cross-entropy Adam {cfg.strong_lr:g}"
            r, s = _train(run_name, "strong", stag, gdjax.make_cost(snet, "cross-entropy"), optax.adam(cfg.strong_lr),
                          snet.init(k_strong, scheme="he"), ds, epochs=cfg.strong_epochs,
                          batch_size=cfg.strong_batch_size, key=k_sfit, learning_rate=cfg.strong_lr)
            rows += r
            summary.update(s)
            summary["readme_mlp_accuracy"] = README_MLP_ACCURACY
    return rows, summary


def _pick(r: dict) -> dict:
    return {k: r[k] for k in ("epoch", "step", "train_cost", "train_accuracy", "test_cost", "test_accuracy",
                              "epoch_s", "wall_s")}


def plot(data: dict):
    rows = data["rows"]
    sets = sorted({r["dataset"] for r in rows}, key=lambda s: s == "mnist")
    fig, axes = C.figure(len(sets))
    for ax, name in zip(axes, sets):
        for model, color in (("lecture", "tab:blue"), ("strong", "tab:red")):
            rs = sorted(C.rows_where(rows, dataset=name, model=model), key=lambda r: r["epoch"])
            if not rs:
                continue
            acc = rs[-1]["test_accuracy"]
            ax.plot([r["epoch"] for r in rs], [r["test_accuracy"] for r in rs], "o-", ms=3, color=color,
                    label=f"{rs[0]['label']}: {acc:.4f} ({rs[-1]['wall_s']:.0f} s)")
        if name == "fashion-mnist":
            ax.axhline(README_MLP_ACCURACY, color="k", ls="--", lw=1,
                       label=f"Fashion-MNIST README MLP 256-128-100: {README_MLP_ACCURACY}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(max(0.0, min(r["test_accuracy"] for r in rows if r["dataset"] == name and r["epoch"] > 0) - 0.05),
                    1.0)
        ax.set_title(name, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("The lecture's network (SGD, η = 3, mini-batch 10) and a stronger MLP", fontsize=10)
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
