"""Directions mode: k random directional derivatives, then group testing to name the failing entries.

Directions: u_j = s_j / sqrt(P), s_j a Rademacher (+-1) vector over all P differentiable entries (drawn from
the check's `key`). Each direction is tested at the steps t and t / 2 (t = eps x max(1, rms |v|)), 4
evaluations: at the points actually taken, p = fl(v + s u) (so the rounding of v + s u costs nothing), the
difference e(t) = (f(p+) - f(p-)) / (2t) - g . (p+ - p-) / (2t) between the FD and the claimed gradient, whose
truncation part shrinks 4x from t to t / 2. A direction fails when

    |e(t/2)| > multiple x (|e(t) - e(t/2)| / 3 + 2 eps_m |f| / t) + atol_u + rtol |fd|

with atol_u = 3 x 10 eps_g max|g| (10 eps_g max|g| bounds each entry's own rounding, as in full mode; a sum of
P such errors with random signs of weight 1 / sqrt(P) has at most that standard deviation) and rtol = 10 eps_g.

Group testing: with the worst failing direction's signs, the set of suspects (all entries, in the flat order
of the leaves) is halved; each half is tested as a direction of its own (the signs restricted to it, 4
evaluations); a failing half is halved again, down to single entries, which are then checked as full mode
refines an entry (`_full.refine`: 4 evaluations each, + 1 base; failed / kink / inconclusive / ok). With the
same signs the halves' errors add up to the whole's, so a failing set always has a failing half (up to the
threshold). Evaluations: 1 (f at v) + 4k + 8 x (sets halved) + 4m + 1 for m named entries: for one bad entry
and P = 2^L, 4k + 8L + 6; O(k + m log P) in general.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.check._full import refine
from gdjax.check._problem import flat_values


def _points(v, us, t, wd):
    """The points fl(v + s u) for s in (t, -t, t/2, -t/2), each (n, P) float64 (exact values of wd numbers)."""
    vw = jnp.asarray(v, wd)
    return [np.asarray(vw[None, :] + jnp.asarray(s * us, wd), np.float64) for s in (t, -t, t / 2, -t / 2)]


def test_directions(problem, leaves_w, v, g, us, f0, o, atol_u, rtol):
    """Test the rows of `us` (n, P) as directions. Returns dict of (n,) arrays and the evaluations (4n)."""
    t = o["eps1"] * max(1.0, float(np.sqrt(np.mean(v**2))))
    pts = _points(v, us, t, o["wd"])
    vals = flat_values(problem, leaves_w, np.concatenate(pts)).reshape(4, -1)
    fp, fm, fp2, fm2 = vals
    with np.errstate(invalid="ignore"):
        fd1, fd2 = (fp - fm) / (2 * t), (fp2 - fm2) / t
        g1, g2 = (pts[0] - pts[1]) @ g / (2 * t), (pts[2] - pts[3]) @ g / t
        e1, e2 = fd1 - g1, fd2 - g2
        trunc, rnd = np.abs(e1 - e2) / 3, 2 * o["eps_m"] * abs(f0) / t
        tol = o["multiple"] * (trunc + rnd) + atol_u + rtol * np.abs(fd2)
        fail = ~(np.abs(e2) <= tol)
    return {"fd": fd2, "grad": g2, "err": np.abs(e2), "est": trunc + rnd, "tol": tol, "fail": fail}, 4 * len(us)


def check_directions(problem, leaves_w, g, eps_g, f0, o):
    """k random directions, group testing on failure. Returns (directions dict, named dict or None, unresolved
    list of (lo, hi), evaluations)."""
    v = np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves_w])
    n = v.size
    k = o["num_directions"]
    signs = np.asarray(jax.random.rademacher(o["key"], (k, n), jnp.float32), np.float64)
    g_fin = np.where(np.isfinite(g), g, 0.0)
    gmax = float(np.max(np.abs(g_fin))) if n else 0.0
    eps_g_max = float(np.max(eps_g))
    atol_u = 30 * eps_g_max * gmax if o["atol"] is None else o["atol"]
    rtol = 10 * eps_g_max if o["rtol"] is None else o["rtol"]
    dirs, evals = test_directions(problem, leaves_w, v, g, signs / np.sqrt(n), f0, o, atol_u, rtol)
    dirs["atol"] = np.full(k, atol_u)
    if not dirs["fail"].any():
        return dirs, None, [], evals
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(dirs["err"] / dirs["tol"]), dirs["err"] / dirs["tol"], np.inf)
    s = signs[int(np.argmax(ratio))]
    frontier, found, unresolved = [(0, n)], [], []
    while frontier:
        halves = []
        for lo, hi in frontier:
            if hi - lo == 1:
                found.append(lo)
            else:
                mid = lo + (hi - lo) // 2
                halves += [(lo, mid), (mid, hi)]
        if not halves:
            break
        us = np.zeros((len(halves), n))
        for r, (lo, hi) in enumerate(halves):
            us[r, lo:hi] = s[lo:hi] / np.sqrt(hi - lo)
        res, e = test_directions(problem, leaves_w, v, g, us, f0, o, atol_u, rtol)
        evals += e
        nxt = [h for h, bad in zip(halves, res["fail"]) if bad]
        for r in range(0, len(halves), 2):  # a failing set none of whose halves fails: not narrowed further
            if not (res["fail"][r] or res["fail"][r + 1]):
                unresolved.append((halves[r][0], halves[r + 1][1]))
        frontier = nxt
    named = None
    if found:
        idx = np.asarray(sorted(found))
        atol_e, rtol_e = 10 * eps_g * gmax, 10 * eps_g
        if o["atol"] is not None:
            atol_e = np.full(n, o["atol"])
        if o["rtol"] is not None:
            rtol_e = np.full(n, o["rtol"])
        r, e = refine(problem, leaves_w, v, g, idx, f0, o, atol_e, rtol_e)
        evals += e
        named = dict(r, index=idx)
    return dirs, named, unresolved, evals

