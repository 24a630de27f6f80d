"""One image vs the average over m images: how good is a mini-batch gradient?

The lecture's cost is the average over the training images, C = (1/N) sum_x C_x, so its gradient is the average
of per-image gradients. On digits ([64, 30, 10], sigmoid, quadratic, N = 1500), the script computes every
per-image gradient once (`vmap` of `jax.grad` of `cost.per_example`) and, for m = 1, 2, 4, ..., 1024, draws
`n_draws` random mini-batches of m images (without replacement) and measures
  * the cosine similarity between the mini-batch gradient and the full-data gradient, and
  * the variance E ||g_m - g||^2, which for sampling without replacement is (sigma^2 / m) (N - m) / (N - 1):
    ~1/m (log-log slope -1, fitted and printed) until m approaches N.
At two points: the initial parameters and after `train_epochs` epochs of mini-batch SGD (eta 3, batch 10), where
the full gradient is small and single images disagree more. Expected (default config): one image's gradient has
cosine ~0.6 with the full gradient at init and ~0.3 after 3 epochs; m = 10 (the lecture's mini-batch) ~0.93 and
~0.67, m = 100 ~0.99 and ~0.96; the variance follows the 1/m line (fitted slope ~ -1.0 for m <= N/10).
For SGD: a mini-batch step is a noisy but unbiased step; the noise shrinks
like 1/sqrt(m) while the cost of the step grows like m, so small batches and many steps win per unit of work.

    python experiments/batch_average.py        # ~15 s
    python experiments/batch_average.py n_draws=500
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np
import optax

import _experiment as C  # noqa: N812

from gdjax.fit import fit  # noqa: E402

NAME = "batch_average"


@dataclasses.dataclass
class Config(C.BaseConfig):
    sizes: tuple[int, ...] = (64, 30, 10)
    n_train: int = 1500
    batch_sizes: tuple[int, ...] = (1, 2, 4, 10, 16, 32, 64, 100, 256, 512, 1024)
    n_draws: int = 200
    train_epochs: int = 3
    seed: int = 0


QUICK = {"sizes": (64, 8, 10), "n_train": 200, "batch_sizes": (1, 4, 10, 16), "n_draws": 20, "train_epochs": 0}


def run(cfg: Config):
    ds, net, cost = C.digits_problem(cfg.sizes, cfg.n_train)
    n = int(ds.train.x.shape[0])
    for m in cfg.batch_sizes:
        if not 1 <= m <= n:
            raise ValueError(f"batch_sizes must lie in [1, {n}], got {m}")
    k_init, k_train, k_draw = jax.random.split(jax.random.key(cfg.seed), 3)
    p0 = net.init(k_init)
    points = [("init", p0)]
    if cfg.train_epochs > 0:  # 0: the initial point only
        p1 = fit(cost, optax.sgd(3.0), p0, ds.train, epochs=cfg.train_epochs, batch_size=10, key=k_train,
                 progress=False).params
        points.append((f"after {cfg.train_epochs} epochs", p1))
    per_example = jax.jit(jax.vmap(lambda p, x, y: jax.flatten_util.ravel_pytree(
        jax.grad(cost.per_example)(p, x, y))[0], (None, 0, 0)))
    rows, summary = [], {}
    for label, params in points:
        gs = np.asarray(per_example(params, ds.train.x, ds.train.y), np.float64)  # (N, P)
        g = gs.mean(0)
        full = np.asarray(jax.flatten_util.ravel_pytree(jax.grad(cost)(params, ds.train))[0], np.float64)
        sigma2 = float(np.mean(np.sum((gs - g) ** 2, 1)))
        var_m = []
        for m in cfg.batch_sizes:
            keys = jax.random.split(jax.random.fold_in(k_draw, m), cfg.n_draws)
            idx = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, n)[:m])(keys))
            w = np.zeros((cfg.n_draws, n))
            np.put_along_axis(w, idx, 1.0 / m, axis=1)
            gm = w @ gs  # (draws, P): each row the mean of m distinct per-image gradients
            cos = gm @ g / (np.linalg.norm(gm, axis=1) * np.linalg.norm(g))
            var = float(np.mean(np.sum((gm - g) ** 2, 1)))
            var_m.append(var)
            rows.append({"point": label, "m": m, "cos_mean": float(cos.mean()), "cos_std": float(cos.std()),
                         "cos_p10": float(np.percentile(cos, 10)), "cos_p90": float(np.percentile(cos, 90)),
                         "variance": var, "variance_theory": sigma2 / m * (n - m) / (n - 1),
                         "full_grad_norm": float(np.linalg.norm(g)), "draws": cfg.n_draws})
        small = [i for i, m in enumerate(cfg.batch_sizes) if m <= n / 10]
        summary[f"variance_slope[{label}]"] = C.loglog_slope(np.asarray(cfg.batch_sizes)[small],
                                                               np.asarray(var_m)[small])
        summary[f"mean_vs_jax_grad_max_abs[{label}]"] = float(np.max(np.abs(g - full)))
        for m in (1, 10, 100):
            r = [x for x in rows if x["point"] == label and x["m"] == m]
            if r:
                summary[f"cos_m{m}[{label}]"] = r[0]["cos_mean"]
    return rows, summary


def plot(data: dict):
    rows, summ = data["rows"], data["meta"].get("summary", {})
    fig, (a1, a2) = C.figure(2)
    for point, color in zip(sorted({r["point"] for r in rows}, key=lambda s: s != "init"), ("tab:blue", "tab:red")):
        rs = sorted(C.rows_where(rows, point=point), key=lambda r: r["m"])
        m = np.array([r["m"] for r in rs])
        a1.semilogx(m, [r["cos_mean"] for r in rs], "o-", color=color, label=point)
        a1.fill_between(m, [r["cos_p10"] for r in rs], [r["cos_p90"] for r in rs], color=color, alpha=0.15)
        slope = summ.get(f"variance_slope[{point}]")
        a2.loglog(m, [r["variance"] for r in rs], "o", color=color,
                  label=f"{point}: measured (slope {slope:.2f})" if slope is not None else point)
        a2.loglog(m, [r["variance_theory"] for r in rs], "--", color=color, lw=1,
                  label="σ²/m · (N−m)/(N−1)" if point == "init" else None)
    a1.axvline(10, color="0.5", ls=":", lw=1)
    a1.text(10, 0.02, " m = 10 (lecture)", fontsize=7, color="0.4")
    a1.set_ylim(0, 1.02)
    a1.set_xlabel("images averaged m")
    a1.set_ylabel("cos(g_m, ∇C)  (band: 10-90 %)")
    a1.set_title("direction of the mini-batch gradient", fontsize=9)
    a1.legend(fontsize=7)
    a2.set_xlabel("images averaged m")
    a2.set_ylabel("E ‖g_m − ∇C‖²")
    a2.set_title("variance of the mini-batch gradient ~ 1/m", fontsize=9)
    a2.legend(fontsize=7)
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    fig.suptitle("The gradient of one image vs the average over m images (digits)", fontsize=10)
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
