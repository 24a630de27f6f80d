"""Full mode: every entry, 2P + 1 evaluations, and a few more only at the entries that need them.

1. One pass of the FD kernel (`finite_diff.fd_gradient`, central differences at the kernel's step h, or the
   complex step): D_i for every entry, 2P evaluations (P for fd-complex), plus f at the base point.
2. An entry passes at once when |g_i - D_i| <= its *tight* tolerance, `multiple` x the rounding term
   eps_m |f| / h_i + atol + rtol |D_i| (no truncation allowance: agreement that close is the evidence).
3. Every other entry (error above half that tolerance, "near or over") is refined with 4 more evaluations,
   f(v_i +- h_i) and f(v_i +- h_i / 2) (and f(v) once per refinement, in the same program):
     * central D(h), D(h/2): the truncation error of D(h/2) ~ |D(h) - D(h/2)| / 3, the tolerance
       multiple x (truncation + rounding) + atol + rtol |value| (`_estimate`);
     * one-sided slopes, forward F and backward B, each at h and h/2 with the error |X(h) - X(h/2)|.
   Verdict: within the central tolerance: ok. Otherwise, if the jump J = 2 (F(h/2) - B(h/2)) - (F(h) - B(h))
   (zero to O(h^3) for a smooth f) exceeds its tolerance, f has a kink within the step, and with g between the
   slopes the entry is a **kink** (both slopes reported; not a failure,
   not ok); g outside them: failed if each side's slope is the same at h and h/2 (one kink, at v), else
   **inconclusive** (kinks inside the step). Otherwise: **failed**; but if f did not change at all
   at +-h and +-h/2 while it does at +-H (H = min(1024 h, max(1, |v_i|) / 4), 2 more evaluations), f resolves
   less than the compute dtype (reduced precision inside f): **inconclusive**.
4. Inconclusive, never ok: an entry whose tolerance exceeds `max_rel_tol` x max(|g_i|, |fd_i|) while that
   magnitude is above the noise floor (`noise_floor` x the largest |fd|): a relative error of max_rel_tol there
   could not have been seen.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import sharding
from gdjax.check import _estimate
from gdjax.check._problem import CACHE_SIZE, entry_values
from gdjax.gradients import finite_diff

OK, FAIL, INCONCLUSIVE, KINK = "ok", "failed", "inconclusive", "kink"
NEAR = 0.5  # an entry whose error exceeds NEAR x its tight tolerance is refined
SMOOTH = 0.1  # J above SMOOTH x |F(h) - B(h)|: not the O(h^3) remainder of a smooth f
CLEAN = 0.25  # a kink is "clean" (one kink at v) when the sides' slopes move less than CLEAN x the jump


@functools.lru_cache(maxsize=CACHE_SIZE)
def _kernel(cost, scheme, eps, chunk_size, devices, method):
    """The FD kernel (`finite_diff.fd_gradient`) in `scheme`, jitted (sharded over `devices`), one per arguments;
    `method` names the check's method in its errors."""
    mesh = sharding.resolve_mesh(devices, None)
    fn = functools.partial(finite_diff.fd_gradient, cost, scheme=scheme, eps=eps, chunk_size=chunk_size, mesh=mesh,
                           method=method)
    return sharding.jit_replicated(fn, mesh)


def kernel_pass(problem, leaves_w, scheme, eps, chunk_size, devices, method):
    """D for every entry (flat float64, leaves concatenated) and its evaluations."""
    devices = tuple(devices) if isinstance(devices, list) else devices
    try:
        fn = _kernel(problem.cost, scheme, eps, chunk_size, devices, method)
    except TypeError:  # unhashable devices
        fn = _kernel.__wrapped__(problem.cost, scheme, eps, chunk_size, devices, method)
    out = jax.device_get(fn(list(leaves_w), problem.inputs))
    d = np.concatenate([np.asarray(x, np.float64).ravel() for x in out])
    return d, finite_diff.n_directions(scheme, d.size)


class Entries:
    """Per-entry arrays of a check (flat over all differentiable leaves, float64): filled by `check_full`."""

    def __init__(self, n):
        self.value = np.zeros(n)      # the FD value compared (D(h), or the refined value)
        self.est = np.zeros(n)        # its estimated error (truncation + rounding)
        self.tol = np.zeros(n)        # the tolerance applied
        self.status = np.full(n, OK, dtype=object)
        self.reason = np.full(n, "", dtype=object)
        self.forward = np.full(n, np.nan)  # one-sided slopes where refined
        self.backward = np.full(n, np.nan)
        self.refined = np.zeros(n, bool)


def locate(sizes, i):
    """(leaf, index within the leaf) of flat entry i over leaves of `sizes` entries."""
    cuts = np.cumsum(sizes)
    k = int(np.searchsorted(cuts, i, side="right"))
    return k, int(i - (cuts[k - 1] if k else 0))


def refine(problem, leaves_w, v, g, idx, f0, o, atol, rtol):
    """Refine the flat entries `idx` (module docstring, step 3). Returns (dict of per-entry arrays, evaluations)."""
    wd, eps_m, eps1, mult = o["wd"], o["eps_m"], o["eps1"], o["multiple"]
    sizes = problem.sizes
    h = eps1 * np.maximum(1.0, np.abs(v[idx]))
    vw = jnp.asarray(v[idx], wd)
    steps = [jnp.asarray(s, wd) for s in (h, -h, h / 2, -h / 2)]
    pts = np.stack([np.asarray(vw + s, np.float64) for s in steps])  # (4, m): the points actually taken
    vals = np.zeros((4, len(idx)))
    f0r = np.zeros(len(idx))
    evals = 0
    by_leaf = {}
    for j, i in enumerate(idx):
        k, local = locate(sizes, i)
        by_leaf.setdefault(k, []).append((j, local))
    for k, items in by_leaf.items():
        js = np.asarray([j for j, _ in items])
        local = np.asarray([loc for _, loc in items])
        ii = np.concatenate([[-1], np.tile(local, 4)])
        tt = np.concatenate([[0.0], pts[:, js].ravel()])
        out = entry_values(problem, leaves_w, k, ii, tt)
        evals += len(ii)
        f0r[js] = out[0]
        vals[:, js] = out[1:].reshape(4, len(js))
    fp, fm, fp2, fm2 = vals
    vv = np.asarray(vw, np.float64)
    tp, tm, tp2, tm2 = pts
    d1, d2 = (fp - fm) / (tp - tm), (fp2 - fm2) / (tp2 - tm2)
    f_abs = abs(f0)
    value, trunc, rnd = _estimate.fd_estimate("central", d1, d2, h, f_abs, eps_m, o["richardson"], half=True)
    gi = g[idx]
    tol_c = _estimate.tolerance(value, trunc, rnd, mult, atol[idx], rtol[idx])
    fw1, fw2 = (fp - f0r) / (tp - vv), (fp2 - f0r) / (tp2 - vv)
    bw1, bw2 = (f0r - fm) / (vv - tm), (f0r - fm2) / (vv - tm2)
    # kink: for a smooth f, F(h) - B(h) = h f'' + O(h^3) is twice F(h/2) - B(h/2); a kink within the step
    # leaves a jump J = 2 (F(h/2) - B(h/2)) - (F(h) - B(h)) of the size of the change of slope
    jump = 2 * (fw2 - bw2) - (fw1 - bw1)
    # J combines six cost values with weights summing to 20 / h in absolute value: its rounding is at most
    # 20 eps_m |f| / h; twice that (no `multiple`: at worst a smooth entry that already failed reads as a kink,
    # which is reported, never ok)
    tol_j = 40 * eps_m * f_abs / h
    lo = np.minimum(np.minimum(fw1, fw2), np.minimum(bw1, bw2)) - tol_c
    hi = np.maximum(np.maximum(fw1, fw2), np.maximum(bw1, bw2)) + tol_c
    # a clean kink at v: each side's slope the same at h and h/2 (up to O(h) curvature), far below the jump;
    # otherwise f has kinks inside the step, where the FD cannot check g (inconclusive, not failed)
    clean = np.abs(fw1 - fw2) + np.abs(bw1 - bw2) <= CLEAN * np.abs(jump)
    with np.errstate(invalid="ignore"):
        ok_c = np.abs(gi - value) <= tol_c
        # and against the smooth part: for a smooth f, F(h) - B(h) ~ h f2 while J ~ h^3 f4 (f2, f4: its 2nd and
        # 4th derivatives); at a kink J ~ F - B
        nonsmooth = ~ok_c & (np.abs(jump) > tol_j) & (np.abs(jump) > SMOOTH * np.abs(fw1 - bw1))
        kink = nonsmooth & (lo <= gi) & (gi <= hi)
        unclear = nonsmooth & ~kink & ~clean & np.isfinite(gi)
    status = np.full(len(idx), FAIL, dtype=object)
    reason = np.full(len(idx), "", dtype=object)
    out_value, out_tol, out_est = value, tol_c, trunc + rnd
    status[ok_c] = OK
    status[kink] = KINK
    status[unclear] = INCONCLUSIVE
    reason[unclear] = "kinks"
    flat = (status == FAIL) & (fp == f0r) & (fm == f0r) & (fp2 == f0r) & (fm2 == f0r) & np.isfinite(gi)
    if np.any(flat):  # f unchanged at +-h and +-h/2: does it change at a far larger step?
        fi = np.flatnonzero(flat)
        big = np.minimum(1024 * h[fi], np.maximum(1.0, np.abs(v[idx][fi])) / 4)
        vb = jnp.asarray(v[idx][fi], wd)
        far = np.stack([np.asarray(vb + jnp.asarray(s, wd), np.float64) for s in (big, -big)])
        for k in {locate(sizes, idx[j])[0] for j in fi}:
            js = np.asarray([j for j in fi if locate(sizes, idx[j])[0] == k])
            pos = np.searchsorted(fi, js)
            local = np.asarray([locate(sizes, idx[j])[1] for j in js])
            out = entry_values(problem, leaves_w, k, np.concatenate([[-1], local, local]),
                               np.concatenate([[0.0], far[0, pos], far[1, pos]]))
            evals += 2 * len(js) + 1
            moved = (out[1:1 + len(js)] != out[0]) | (out[1 + len(js):] != out[0])
            status[js[moved]] = INCONCLUSIVE
            reason[js[moved]] = "resolution"
    return {"status": status, "reason": reason, "value": out_value, "tol": out_tol, "est": out_est,
            "forward": fw2, "backward": bw2}, evals


def check_full(problem, leaves_w, g, eps_g, f0, o):
    """Every entry of every differentiable leaf; returns (Entries, evaluations). g, eps_g: flat (P,) float64."""
    scheme = o["scheme"]  # the check method's registry scheme (`_core._scheme`)
    d, evals = kernel_pass(problem, leaves_w, scheme, o["eps1"], o["chunk_size"], o["devices"], o["method"])
    v = np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves_w])
    n = d.size
    e = Entries(n)
    finite_d = d[np.isfinite(d)]
    scale = float(np.max(np.abs(finite_d))) if finite_d.size else 0.0
    atol = 10 * eps_g * scale if o["atol"] is None else np.full(n, o["atol"])
    rtol = 10 * eps_g if o["rtol"] is None else np.full(n, o["rtol"])
    if scheme == "complex":
        rnd = o["eps_m"] * np.abs(d)
    else:
        rnd = _estimate.rounding("central", o["eps_m"], abs(f0), _estimate.steps(v, o["eps1"]))
    e.value, e.est = d.copy(), rnd
    e.tol = o["multiple"] * rnd + atol + rtol * np.abs(d)
    with np.errstate(invalid="ignore"):
        err = np.where(np.isfinite(g), np.abs(g - d), np.inf)
        e.status[err > e.tol] = FAIL
        near = np.flatnonzero((err > NEAR * e.tol) & np.isfinite(g) & np.isfinite(d))
    if scheme != "complex" and near.size:
        r, extra = refine(problem, leaves_w, v, g, near, f0, o, atol, rtol)
        evals += extra
        e.refined[near] = True
        for name in ("status", "reason", "value", "tol", "est", "forward", "backward"):
            getattr(e, name)[near] = r[name]
    return e, evals, scale, atol, rtol
