"""Finite-difference step size: gradient error vs eps for forward, central and complex step, float32 and float64.

On a network cost (digits, [64, 16, 10], sigmoid, quadratic, N(0, 1) init, 200 examples) the library's FD kernel
(`gdjax.gradient(cost, "fd-forward" | "fd-central" | "fd-complex", eps=...)`) is run for eps = 1e-1 .. 1e-14 and
compared with float64 `jax.grad`: relative error ||g_fd - g|| / ||g||. Expected: the U-curve of truncation error
(falling like eps for forward, eps^2 for central: fitted slopes ~1 and ~2 on the large-eps arm) against rounding
error (growing like eps_m / eps), its minimum near sqrt(eps_m) (forward) and cbrt(eps_m) (central); the complex
step has no subtraction, so its error falls to rounding (~eps_m) and stays there for every smaller eps. The
optimal eps of each curve is marked and compared with the default eps the library picks (read from the
estimator's `options`, else `gdjax.gradients.finite_diff.default_eps`), whose error is marked with a star.
Forward/central steps below the machine epsilon are refused by the library (the point would round back to v):
those points are recorded with status "refused" and not drawn.

    python experiments/fd_step.py              # ~1 min (one compile per eps)
    python experiments/fd_step.py eps_per_decade=2 n_examples=500
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

import _experiment as C  # noqa: N812

jax.config.update("jax_enable_x64", True)

import gdjax  # noqa: E402
from gdjax.gradients import finite_diff  # noqa: E402

NAME = "fd_step"
SCHEMES = ("forward", "central", "complex")


@dataclasses.dataclass
class Config(C.BaseConfig):
    sizes: tuple[int, ...] = (64, 16, 10)
    n_examples: int = 200
    eps_max: float = 1.0
    eps_min: float = 1e-14
    eps_per_decade: int = 1
    dtypes: tuple[str, ...] = ("float32", "float64")
    schemes: tuple[str, ...] = SCHEMES
    seed: int = 0


QUICK = {"sizes": (64, 4, 10), "n_examples": 20, "eps_max": 1e-1, "eps_min": 1e-3, "eps_per_decade": 1,
         "dtypes": ("float64",), "schemes": ("forward", "central")}


def _rel_err(g, ref) -> float:
    a, _ = jax.flatten_util.ravel_pytree(g)
    b, _ = jax.flatten_util.ravel_pytree(ref)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _slopes(eps, err):
    """Slope of log err vs log eps on the truncation arm: the points with eps above the curve's minimum whose
    error is at least 3x the minimum (clear of the bottom of the U; in float32 the arm is only ~2 decades)."""
    eps, err = np.asarray(eps, float), np.asarray(err, float)
    i = int(np.nanargmin(err))
    arm = (eps > eps[i]) & (err > 3 * err[i])
    return C.loglog_slope(eps[arm], err[arm]) if arm.sum() >= 2 else float("nan")


def run(cfg: Config):
    ds, net, cost = C.digits_problem(cfg.sizes, cfg.n_examples)
    for d in cfg.dtypes:
        if d not in ("float32", "float64"):
            raise ValueError(f"dtypes must be float32 and/or float64, got {d!r}")
    for sc in cfg.schemes:
        if sc not in SCHEMES:
            raise ValueError(f"schemes must be among {', '.join(SCHEMES)}, got {sc!r}")
    params64 = net.init(jax.random.key(cfg.seed), dtype="float64")
    batch64 = gdjax.Batch(ds.train.x.astype("float64"), ds.train.y.astype("float64"))
    ref = jax.jit(jax.grad(cost))(params64, batch64)
    n_eps = int(round(np.log10(cfg.eps_max / cfg.eps_min) * cfg.eps_per_decade)) + 1
    epss = np.logspace(np.log10(cfg.eps_max), np.log10(cfg.eps_min), n_eps)
    rows, summary = [], {"n_params": gdjax.n_params(params64)}
    for dtype in cfg.dtypes:
        params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params64)
        batch = gdjax.Batch(batch64.x.astype(dtype), batch64.y.astype(dtype))
        for scheme in cfg.schemes:
            method = f"fd-{scheme}"
            errs = []
            for eps in epss:
                try:
                    est = gdjax.gradient(cost, method, eps=float(eps))
                    g = jax.jit(lambda p, b: est(p, b))(params, batch)
                    err, status = _rel_err(g, ref), "ok"
                except ValueError as e:  # the library refuses eps at or below the machine epsilon
                    err, status = float("nan"), "refused"
                    note = str(e)
                errs.append(err)
                rows.append({"dtype": dtype, "scheme": scheme, "eps": float(eps), "rel_error": err,
                             "status": status, "default": False, "note": note if status != "ok" else ""})
            default_est = gdjax.gradient(cost, method)
            d_eps = default_est.options.get("eps")
            if d_eps is None:
                d_eps = finite_diff.default_eps(scheme, jnp.dtype(dtype))
            d_err = _rel_err(jax.jit(lambda p, b: default_est(p, b))(params, batch), ref)
            rows.append({"dtype": dtype, "scheme": scheme, "eps": float(d_eps), "rel_error": d_err, "status": "ok",
                         "default": True, "note": "the library's default eps"})
            errs = np.asarray(errs)
            i = int(np.nanargmin(errs))
            key = f"{scheme}_{dtype}"
            summary[f"slope_{key}"] = _slopes(epss, errs)
            summary[f"best_eps_{key}"] = float(epss[i])
            summary[f"best_err_{key}"] = float(errs[i])
            summary[f"default_eps_{key}"] = float(d_eps)
            summary[f"default_err_{key}"] = d_err
    return rows, summary


COLORS = {"forward": "tab:blue", "central": "tab:orange", "complex": "tab:green"}


def plot(data: dict):
    rows, summ = data["rows"], data["meta"].get("summary", {})
    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = C.figure(len(dtypes))
    for ax, dtype in zip(axes, dtypes):
        for scheme in SCHEMES:
            rs = [r for r in C.rows_where(rows, dtype=dtype, scheme=scheme, default=False)
                  if r["status"] == "ok" and r["rel_error"] is not None]
            if not rs:
                continue
            e = np.array([r["eps"] for r in rs])
            err = np.array([max(r["rel_error"], 1e-17) for r in rs])
            key = f"{scheme}_{dtype}"
            slope = summ.get(f"slope_{key}")
            lab = f"{scheme} (slope {slope:.2f})" if slope is not None else scheme
            ax.loglog(e, err, "o-", color=COLORS[scheme], ms=4, lw=1.2, label=lab)
            b = summ.get(f"best_eps_{key}")
            if b is not None:
                ax.loglog([b], [max(summ[f"best_err_{key}"], 1e-17)], "o", ms=11, mfc="none", mec=COLORS[scheme])
            d = C.rows_where(rows, dtype=dtype, scheme=scheme, default=True)
            if d:
                x, y = d[0]["eps"], max(d[0]["rel_error"], 1e-17)
                if x < e.min() / 10:  # the complex step's default (eps_m^2) lies far off the sweep: draw it at the edge
                    ax.annotate(f"default {x:.1e}", (e.min() / 10, y), fontsize=7, color=COLORS[scheme],
                                xytext=(0, 8), textcoords="offset points", ha="center")
                    x = e.min() / 10
                ax.loglog([x], [y], "*", ms=13, color=COLORS[scheme], mec="k", mew=0.6)
        eps_m = float(np.finfo(dtype).eps)
        ax.axvline(eps_m, color="0.6", ls=":", lw=1)
        ax.text(eps_m, ax.get_ylim()[1], " ε_m", fontsize=7, color="0.4", va="top")
        ax.plot([], [], "o", ms=11, mfc="none", mec="k", label="best eps (measured)")
        ax.plot([], [], "*", ms=12, color="w", mec="k", label="library default eps")
        ax.set_xlabel("eps (step factor)")
        ax.set_ylabel("relative error ‖g_FD − ∇C‖ / ‖∇C‖")
        ax.set_title(dtype)
        ax.invert_xaxis()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("FD gradient error vs step: truncation (slope 1 forward, 2 central) meets rounding", fontsize=10)
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
