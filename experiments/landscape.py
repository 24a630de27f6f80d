"""The lecture's "hilly terrain": gradient descent on 2-D surfaces, several learning rates and starting points.

Four surfaces of `gdjax.landscapes` (quadratic bowl, Rosenbrock's valley, Himmelblau's four minima, Gaussian hills
and wells), drawn as contour plots with the GD trajectories v <- v - eta grad f(v) from several starts and learning
rates. Each run's end point is matched to the surface's known minima (`Surface.nearest_minimum`) and reported as
"minimum k", "not converged" or "diverged". Expected: on Himmelblau and the hills, different starts (and, from one
start, different eta) end in different local minima; a too-large eta overshoots: it zig-zags across the bowl and
Rosenbrock's valley and leaves the bowl; on Rosenbrock a small eta crawls along the flat valley floor.

    python experiments/landscape.py            # ~10 s
    python experiments/landscape.py steps=5000
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

import _experiment as C  # noqa: N812

from gdjax import landscapes as L  # noqa: E402

NAME = "landscape"

# surface -> (starts, learning rates)
RUNS = {
    "bowl": ([(-1.8, 1.6), (1.5, -1.2)], [0.02, 0.1, 0.19, 0.205]),
    "rosenbrock": ([(-1.5, 2.5), (0.0, -0.5)], [2e-4, 1e-3, 2e-3]),
    "himmelblau": ([(0.0, 0.0), (-1.0, 0.5), (-0.5, -1.0), (1.0, -0.5)], [0.005, 0.02]),
    "hills": ([(0.0, 0.0), (-0.3, 0.6), (0.6, -0.4), (-2.5, 2.5), (2.5, -0.5)], [0.1, 0.5]),
}


ROSENBROCK_FACTOR = 10  # Rosenbrock's valley floor is flat: it gets 10x the steps


@dataclasses.dataclass
class Config(C.BaseConfig):
    steps: int = 2000
    keep: int = 300  # trajectory points stored per run (the first `keep` steps; the end point is kept too)
    surfaces: tuple[str, ...] = ("bowl", "rosenbrock", "himmelblau", "hills")


QUICK = {"steps": 200, "keep": 50, "surfaces": ("bowl", "himmelblau")}


def run(cfg: Config):
    rows, summary = [], {}
    for name in cfg.surfaces:
        s = L.surface(name)
        starts, etas = RUNS[name]
        n_steps = cfg.steps * (ROSENBROCK_FACTOR if name == "rosenbrock" else 1)
        go = jax.jit(jax.vmap(jax.vmap(lambda v, e: L.descend(s.f, v, e, n_steps), (None, 0)), (0, None)))
        paths = np.asarray(go(jnp.asarray(starts, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
                              jnp.asarray(etas)), float)
        reached = set()
        for i, start in enumerate(starts):
            for j, eta in enumerate(etas):
                p = paths[i, j]
                end = p[-1]
                finite = np.all(np.isfinite(p), axis=1)
                box = np.asarray(s.box)
                margin = 10 * np.ptp(box, 1)  # "diverged": left the box by more than 10 box widths
                inside = finite & np.all((p >= box[:, 0] - margin) & (p <= box[:, 1] + margin), 1)
                k = s.nearest_minimum(end) if finite.all() else -1
                status = f"minimum {k}" if k >= 0 else ("diverged" if not inside.all() else "not converged")
                if k >= 0:
                    reached.add(k)
                n_keep = min(cfg.keep, len(p))
                kept = np.concatenate([p[:n_keep], p[-1:]])
                kept = np.where(np.isfinite(kept), kept, np.nan)
                rows.append({"surface": name, "start_x": start[0], "start_y": start[1], "eta": eta,
                             "end_x": float(end[0]), "end_y": float(end[1]),
                             "end_f": float(s.f(jnp.asarray(end))) if finite.all() else None,
                             "status": status, "steps": n_steps,
                             "path_x": [None if not np.isfinite(x) else float(x) for x in kept[:, 0]],
                             "path_y": [None if not np.isfinite(y) else float(y) for y in kept[:, 1]]})
        summary[f"{name}_minima_reached"] = len(reached)
        summary[f"{name}_statuses"] = sorted({r["status"] for r in rows if r["surface"] == name})
    return rows, summary


def plot(data: dict):
    rows = data["rows"]
    names = [n for n in RUNS if C.rows_where(rows, surface=n)]
    fig, axes = C.figure(len(names), width=4.3, height=4.3)
    for ax, name in zip(axes, names):
        s = L.surface(name)
        xs, ys, zs = L.grid(s.f, s.box, 160)
        if s.log_levels:
            ax.contour(xs, ys, np.log10(zs - zs.min() + 1e-2), levels=20, colors="0.75", linewidths=0.6)
        else:
            ax.contour(xs, ys, zs, levels=20, colors="0.75", linewidths=0.6)
        rs = C.rows_where(rows, surface=name)
        etas = sorted({r["eta"] for r in rs})
        cmap = {e: c for e, c in zip(etas, ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:green"])}
        for r in rs:
            x = np.array([np.nan if v is None else v for v in r["path_x"]], float)
            y = np.array([np.nan if v is None else v for v in r["path_y"]], float)
            ax.plot(x[:-1], y[:-1], "-", lw=0.9, color=cmap[r["eta"]], alpha=0.85)
            ax.plot(x[0], y[0], "o", ms=4, color="k")
            if r["status"].startswith("minimum"):
                ax.plot(x[-1], y[-1], "x", ms=6, color=cmap[r["eta"]])
        for m in s.minima:
            ax.plot(*m, "*", ms=10, color="gold", mec="k", mew=0.5)
        for e in etas:
            st = [r["status"] for r in rs if r["eta"] == e]
            n_div = sum(x == "diverged" for x in st)
            lab = f"η = {e:g}" + (f" ({n_div} diverged)" if n_div else "")
            ax.plot([], [], "-", color=cmap[e], label=lab)
        ax.set_xlim(*s.box[0])
        ax.set_ylim(*s.box[1])
        reached = data["meta"].get("summary", {}).get(f"{name}_minima_reached")
        ax.set_title(f"{name}: {reached} of {len(s.minima)} minima reached", fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
        ax.set_aspect("equal", adjustable="box")
    fig.suptitle("Gradient descent on hilly terrain (● start, ★ minima, × end)", fontsize=10)
    return fig


main = C.make_main(NAME, Config, QUICK, run, plot)


if __name__ == "__main__":
    sys.exit(main())
