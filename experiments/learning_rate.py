"""The learning rate: too small is slow, right converges, too large oscillates, larger still diverges.

(a) Gradient descent v <- v - eta grad C on the quadratic bowl C(v) = v^T H v / 2 of `gdjax.landscapes` (Hessian
eigenvalues 1 and 10): along the eigenvector of lambda the error is multiplied by (1 - eta lambda) every step, so
eta < 1/lambda_max decays monotonically, 1/lambda_max < eta < 2/lambda_max overshoots (the sign flips every step)
but converges, and eta > 2/lambda_max diverges. The sweep covers eta lambda_max from 0.05 to 2.3; both analytic
thresholds are drawn.
(b) The same sweep on the network (digits, [64, 30, 10], sigmoid, quadratic cost, full-batch GD with
`gdjax.train.make_step`, all learning rates at once under `vmap`): final cost vs eta and the cost curves, with
2/lambda_max of the Hessian at the initial point (power iteration on Hessian-vector products) for reference.

Runs are classified automatically (`classify`):
  diverged     the cost became NaN/inf or ended above where it started; (network) also: the gradient norm fell
               below 1/100 of its start while the final cost is not within 2x of the best (the steps threw the
               weights onto a plateau where the sigmoids saturate: the quadratic cost of a sigmoid network is
               bounded, so it cannot blow up; it gets stuck, e.g. at 0.5 = every output 0);
  oscillating  (bowl) more than half of the steps in the second half reverse direction (d_t . d_t+1 < 0) and the
               run has not converged; (network) more than 10% of the steps raise the cost;
  converged    (bowl) final cost <= 1e-6 x the start; (network) final cost <= 2 x the best final cost of the sweep;
  slow         none of the above: still going down.
Expected (default config): bowl: slow for eta lambda_max <= 0.6, converged at 1.0 - 1.7, oscillating at 1.95,
diverged at 2.05 and 2.3. Network: slow for eta <= 0.3, converged at 1 - 3 (best eta 3, the lecture's),
oscillating at 10, diverged (saturated at cost 0.5) from 30 up.

    python experiments/learning_rate.py            # ~20 s
    python experiments/learning_rate.py net_steps=1000 "net_etas=0.1,1,10,100"
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import _experiment as C  # noqa: N812

from gdjax import landscapes, train  # noqa: E402

NAME = "learning_rate"
CLASSES = ("slow", "converged", "oscillating", "diverged")
CLASS_COLORS = {"slow": "tab:blue", "converged": "tab:green", "oscillating": "tab:orange", "diverged": "tab:red"}


@dataclasses.dataclass
class Config(C.BaseConfig):
    bowl_ratios: tuple[float, ...] = (0.05, 0.2, 0.6, 1.0, 1.3, 1.7, 1.95, 2.05, 2.3)  # eta * lambda_max
    bowl_start: tuple[float, ...] = (1.5, 1.0)
    bowl_steps: int = 100
    net_sizes: tuple[int, ...] = (64, 30, 10)
    net_etas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    net_steps: int = 300
    n_train: int = 1500
    power_iters: int = 100  # power iteration for lambda_max of the network's Hessian at init
    seed: int = 0


QUICK = {"power_iters": 10, "bowl_steps": 100, "net_sizes": (64, 8, 10), "net_etas": (0.1, 3.0, 1000.0),
         "net_steps": 20,
         "n_train": 100}


def classify_bowl(costs, path, tol: float = 1e-6) -> str:
    """Class of a GD run on the bowl from its cost curve `(n+1,)` and trajectory `(n+1, d)`."""
    costs, path = np.asarray(costs, float), np.asarray(path, float)
    if not np.all(np.isfinite(costs)) or costs[-1] > costs[0]:
        return "diverged"
    converged = costs[-1] <= tol * costs[0]
    d = np.diff(path, axis=0)
    half = d[len(d) // 2:]
    dots = np.sum(half[:-1] * half[1:], axis=1)
    if not converged and np.mean(dots < 0) > 0.5:
        return "oscillating"
    return "converged" if converged else "slow"


def classify_curve(costs, best_final: float, grad_ratio: float = 1.0) -> str:
    """Class of a training run from its cost curve (`best_final`: the lowest final cost of the sweep) and the
    ratio |grad C| at the end / at the start."""
    costs = np.asarray(costs, float)
    if not np.all(np.isfinite(costs)) or costs[-1] >= costs[0]:
        return "diverged"
    if grad_ratio < 1e-2 and costs[-1] > 2 * best_final:  # thrown onto a plateau: sigmoids saturated, grad ~0
        return "diverged"
    if np.mean(np.diff(costs) > 0) > 0.1:
        return "oscillating"
    return "converged" if costs[-1] <= 2 * best_final else "slow"


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree)))


def _lambda_max(f, v, n_iter: int = 100) -> float:
    """Largest Hessian eigenvalue of `f` at `v` (flat), by power iteration on Hessian-vector products."""
    hvp = jax.jit(lambda u: jax.jvp(jax.grad(f), (v,), (u,))[1])
    u = jnp.ones_like(v) / jnp.sqrt(v.size)
    lam = 0.0
    for _ in range(n_iter):
        w = hvp(u)
        lam = float(u @ w)
        u = w / jnp.linalg.norm(w)
    return lam


def run(cfg: Config):
    rows, summary = [], {}
    # (a) the bowl
    h = landscapes.bowl_hessian()
    lam_max = float(np.linalg.eigvalsh(h).max())
    v0 = jnp.asarray(cfg.bowl_start, jnp.float32)
    if v0.shape != (2,):
        raise ValueError(f"bowl_start must be two numbers, got {cfg.bowl_start}")
    etas = jnp.asarray(cfg.bowl_ratios, jnp.float32) / lam_max
    paths = jax.jit(jax.vmap(lambda e: landscapes.descend(landscapes.bowl, v0, e, cfg.bowl_steps)))(etas)
    costs = jax.vmap(jax.vmap(landscapes.bowl))(paths)
    for ratio, eta, p, c in zip(cfg.bowl_ratios, np.asarray(etas), np.asarray(paths), np.asarray(costs)):
        cls = classify_bowl(c, p)
        rows.append({"part": "bowl", "eta": float(eta), "eta_lambda_max": float(ratio), "class": cls,
                     "initial_cost": float(c[0]), "final_cost": float(c[-1]), "costs": c.tolist(),
                     "path_x": p[:, 0].tolist(), "path_y": p[:, 1].tolist(), "lambda_max": lam_max})
    summary["bowl_lambda_max"] = lam_max
    summary["bowl_classes"] = {f"{r['eta_lambda_max']:g}": r["class"] for r in rows}

    # (b) the network, full-batch gradient descent, every eta at once
    ds, net, cost = C.digits_problem(cfg.net_sizes, cfg.n_train, name="net_sizes")
    k_init, k_run = jax.random.split(jax.random.key(cfg.seed))
    params = net.init(k_init)
    data = ds.train
    for e in cfg.net_etas:
        if not e > 0:
            raise ValueError(f"net_etas must be > 0, got {e}")

    def curve(eta):
        opt = optax.sgd(eta)
        step = train.make_step(cost, opt)
        state = train.init(params, opt, k_run)

        def body(s, _):
            s, m = step(s, data)
            return s, m["cost"]

        s, cs = jax.lax.scan(body, state, None, length=cfg.net_steps)
        g_end = _norm(jax.grad(cost)(s.params, data)) / _norm(jax.grad(cost)(params, data))
        return jnp.append(cs, cost(s.params, data)), g_end

    curves, growth = jax.jit(jax.vmap(curve))(jnp.asarray(cfg.net_etas, jnp.float32))
    curves, growth = np.asarray(curves, float), np.asarray(growth, float)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    lam_net = _lambda_max(lambda v: cost(unravel(v), data), flat, cfg.power_iters)
    finals = curves[:, -1]
    ok = np.isfinite(finals) & (finals < curves[:, 0])
    best = float(finals[ok].min()) if ok.any() else float("nan")
    for eta, c, gr in zip(cfg.net_etas, curves, growth):
        rows.append({"part": "network", "eta": float(eta), "eta_lambda_max": float(eta * lam_net),
                     "class": classify_curve(c, best, gr), "initial_cost": float(c[0]), "final_cost": float(c[-1]),
                     "grad_norm_ratio": float(gr), "costs": c.tolist(), "lambda_max": lam_net})
    summary["network_lambda_max_at_init"] = lam_net
    summary["network_classes"] = {f"{r['eta']:g}": r["class"] for r in rows if r["part"] == "network"}
    summary["network_best_eta"] = float(np.asarray(cfg.net_etas)[ok][np.argmin(finals[ok])]) if ok.any() else None
    summary["network_best_final_cost"] = best
    return rows, summary


def plot(data: dict):
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, ((ax_path, ax_curve), (ax_ncurves, ax_net)) = plt.subplots(2, 2, figsize=(11, 8.5))
    bowl = C.rows_where(rows, part="bowl")
    lam = bowl[0]["lambda_max"]
    # (a) trajectories on the bowl's contours
    xs, ys, zs = landscapes.grid(landscapes.bowl, ((-2, 2), (-2, 2)), 120)
    ax_path.contour(xs, ys, zs, levels=12, colors="0.8", linewidths=0.6)
    for r in bowl:
        if r["eta_lambda_max"] in (0.2, 1.0, 1.95, 2.05):
            ax_path.plot(r["path_x"][:30], r["path_y"][:30], ".-", ms=3, lw=0.9, color=CLASS_COLORS[r["class"]],
                         label=f"η λ_max = {r['eta_lambda_max']:g} ({r['class']})")
    ax_path.set_xlim(-2, 2)
    ax_path.set_ylim(-2, 2)
    ax_path.set_aspect("equal")
    ax_path.legend(fontsize=7, loc="lower right")
    ax_path.set_title("(a) bowl, Hessian eigenvalues 1 and 10: first 30 steps", fontsize=9)
    # final cost vs eta, bowl (log) and network (linear: the cost is bounded)
    for ax, part in ((ax_curve, "bowl"), (ax_net, "network")):
        rs = C.rows_where(rows, part=part)
        finals = [max(r["final_cost"], 1e-30) for r in rs]
        for r, f in zip(rs, finals):
            ax.plot([r["eta"]], [f], "o", ms=7, color=CLASS_COLORS[r["class"]])
        ax.plot([r["eta"] for r in rs], finals, "-", color="0.6", lw=0.8, zorder=0)
        ax.set_xscale("log")
        if part == "bowl":
            ax.set_yscale("log")
        lam_p = rs[0]["lambda_max"]
        for k, ls in ((1, ":"), (2, "--")):
            ax.axvline(k / lam_p, color="k", ls=ls, lw=1,
                       label=f"η = {k}/λ_max" + (" (Hessian at init)" if part == "network" else ""))
        ax.axhline(rs[0]["initial_cost"], color="0.5", lw=0.8, ls="-.", label="initial cost")
        for c in CLASSES:
            ax.plot([], [], "o", color=CLASS_COLORS[c], label=c)
        ax.set_xlabel("learning rate η")
        ax.set_ylabel("final cost")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    ax_curve.set_title(f"(a) bowl: cost after {len(bowl[0]['costs']) - 1} steps (λ_max = {lam:g})", fontsize=9)
    net = C.rows_where(rows, part="network")
    n_net = len(net[0]["costs"]) - 1
    ax_net.set_title(f"(b) digits network, full-batch GD: cost after {n_net} steps", fontsize=9)
    # (b) the network's cost curves
    for r in net:
        ax_ncurves.plot(r["costs"], color=CLASS_COLORS[r["class"]], lw=1)
        ax_ncurves.annotate(f"η={r['eta']:g}", (n_net, r["costs"][-1]), fontsize=6, color=CLASS_COLORS[r["class"]],
                            xytext=(2, 0), textcoords="offset points", va="center")
    ax_ncurves.set_xlabel("step")
    ax_ncurves.set_ylabel("train cost")
    ax_ncurves.set_xlim(0, n_net * 1.12)
    ax_ncurves.grid(True, alpha=0.3)
    ax_ncurves.set_title("(b) digits network: cost curves, coloured by class", fontsize=9)
    fig.suptitle("Learning rate: slow / converged / oscillating / diverged (classified from the runs)", fontsize=10)
    fig.tight_layout()
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
