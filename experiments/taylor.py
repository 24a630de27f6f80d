"""The lecture's Taylor step: C(v + h dv) - C(v) = h grad C . dv + O(h^2), checked over many decades of h.

For the lecture's kind of network (digits, [64, 30, 10], sigmoid, quadratic cost, N(0, 1) init) and a few random
unit directions dv, the script measures the first-order remainder

    r(h) = | C(v + h dv) - C(v) - h grad C . dv |

for h from 1 down to 1e-12, in float32 and in float64. Expected: r(h) falls like h^2 (the fitted log-log slope,
printed, is about 2) until the difference C(v + h dv) - C(v) drowns in rounding, ~eps_m |C| (float32 below
h ~ 1e-2, float64 below h ~ 1e-6); below that r(h) stays at the rounding floor. The figure has one panel per
dtype: r(h) per direction, the linear term h |grad C . dv|, a reference h^2 line and the floor eps_m |C|.

    python experiments/taylor.py                 # ~10 s
    python experiments/taylor.py n_directions=8 h_min=1e-14

Slope fit: over the points with 1e-4 <= h <= 1 where r(h) > 10 eps_m |C| (clear of rounding); for float32
that leaves h in about [0.1, 1] (the curvature along dv is small, ~0.03, so r(h) meets the float32 floor early).
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

import _experiment as C  # noqa: N812

jax.config.update("jax_enable_x64", True)  # the float64 panel (a script, not the library: allowed here)

import gdjax  # noqa: E402

NAME = "taylor"


@dataclasses.dataclass
class Config(C.BaseConfig):
    sizes: tuple[int, ...] = (64, 30, 10)
    n_examples: int = 500
    n_directions: int = 5
    h_max: float = 1.0
    h_min: float = 1e-12
    points_per_decade: int = 4
    fit_h_min: float = 1e-4
    fit_h_max: float = 1.0
    seed: int = 0


QUICK = {"n_examples": 50, "n_directions": 2, "points_per_decade": 1, "h_min": 1e-8, "sizes": (64, 8, 10)}


def run(cfg: Config):
    ds, net, cost = C.digits_problem(cfg.sizes, cfg.n_examples)
    k_init, k_dir = jax.random.split(jax.random.key(cfg.seed))
    params64 = net.init(k_init, dtype="float64")
    n_p = gdjax.n_params(params64)
    dirs = jax.random.normal(k_dir, (cfg.n_directions, n_p), jnp.float64)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    n_h = int(round(np.log10(cfg.h_max / cfg.h_min) * cfg.points_per_decade)) + 1
    hs = np.logspace(np.log10(cfg.h_max), np.log10(cfg.h_min), n_h)
    rows, summary = [], {}
    for dtype in ("float32", "float64"):
        eps_m = float(jnp.finfo(dtype).eps)

        @jax.jit
        def measure(params64, x, y, dirs, hs_):
            # one compiled program per dtype: C(v) and C(v + h dv) for every direction and step, and grad C . dv
            params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params64)
            flat, unravel = jax.flatten_util.ravel_pytree(params)
            batch = gdjax.Batch(x.astype(dtype), y.astype(dtype))
            c = lambda v: cost(unravel(v), batch)  # noqa: E731
            g = jax.grad(c)(flat)
            dirs = dirs.astype(dtype)
            hs0 = jnp.concatenate([jnp.zeros(1, dtype), hs_.astype(dtype)])
            # C(v) from the same vmapped program as C(v + h dv) (h = 0 first): a point that rounds back to v
            # gives a difference of exactly 0
            vals = jax.vmap(lambda dv: jax.vmap(lambda h: c(flat + h * dv))(hs0))(dirs)
            return vals[:, 1:] - vals[:, :1], dirs @ g, vals[0, 0]

        d_all, slopes_dir, c0 = measure(params64, ds.train.x, ds.train.y, dirs, jnp.asarray(hs))
        d_all, slopes_dir, c0 = np.asarray(d_all, float), np.asarray(slopes_dir, float), float(c0)
        floor = eps_m * abs(c0)
        slopes = []
        for j in range(cfg.n_directions):
            d = d_all[j]
            lin = hs * slopes_dir[j]
            rem = np.abs(d - lin)
            fit = (hs >= cfg.fit_h_min) & (hs <= cfg.fit_h_max) & (rem > 10 * floor)
            slope = C.loglog_slope(hs[fit], rem[fit]) if fit.sum() >= 2 else float("nan")
            slopes.append(slope)
            for h, di, li, ri, fi in zip(hs, d, lin, rem, fit):
                rows.append({"dtype": dtype, "direction": j, "h": float(h), "delta": float(di), "linear": float(li),
                             "remainder": float(ri), "in_fit": bool(fi), "cost": c0,
                             "rounding_floor": floor, "slope": slope})
        summary[f"slope_{dtype}"] = float(np.nanmedian(slopes)) if np.isfinite(slopes).any() else float("nan")
        summary[f"slopes_{dtype}"] = [round(s, 3) for s in slopes]
    return rows, summary


def plot(data: dict):
    rows = data["rows"]
    fig, axes = C.figure(2)
    for ax, dtype in zip(axes, ("float32", "float64")):
        rs = C.rows_where(rows, dtype=dtype)
        dirs = sorted({r["direction"] for r in rs})
        for j in dirs:
            d = C.rows_where(rs, direction=j)
            h = np.array([r["h"] for r in d])
            ax.loglog(h, [max(r["remainder"], 1e-300) for r in d], "o-", ms=3, lw=1,
                      label="remainder |ΔC − h ∇C·dv|" if j == 0 else None)
            ax.loglog(h, [abs(r["linear"]) for r in d], ":", color="0.5", lw=1,
                      label="linear term h |∇C·dv|" if j == 0 else None)
        h = np.array(sorted({r["h"] for r in rs}))
        fitted = [r for r in rs if r["in_fit"]]
        if fitted:
            h0, r0 = fitted[0]["h"], fitted[0]["remainder"]
            ax.loglog(h, r0 * (h / h0) ** 2, "k--", lw=1, label="∝ h²")
        ax.axhline(rs[0]["rounding_floor"], color="r", lw=1, ls="-.", label="ε_m |C| (rounding)")
        slope = data["meta"].get("summary", {}).get(f"slope_{dtype}")
        ax.set_title(f"{dtype}: fitted slope {slope:.2f}" if slope is not None else f"{dtype}: no fit")
        ax.set_xlabel("step h")
        ax.set_ylabel("|C(v + h dv) − C(v) − h ∇C·dv|")
        lo = min(r["remainder"] for r in rs if r["remainder"] > 0) / 10
        ax.set_ylim(bottom=max(lo, 1e-30))
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle("Taylor: the first-order change h ∇C·dv leaves a remainder ∝ h² until rounding", fontsize=10)
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
