"""The report of a gradient check: status, per-leaf rows, named entries, the fixes; `str`, `assert_ok`, `to_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

STATUSES = ("ok", "kinks", "inconclusive", "failed")  # overall, from best to worst

FIXES = {
    "fd": "the FD error in {wd} is too large for these entries: compute in float64 (jax.config.update("
          "'jax_enable_x64', True) before creating arrays, or check={{'compute_dtype': 'float64'}})",
    "grad": "the gradient under test is {gdtype}: its own rounding (atol/rtol = 10 eps of {gdtype}) is above "
            "{frac:g} |g| there; check the rule in float32/float64 params, or set atol/rtol if that rounding is "
            "expected",
    "kinks": "f has kinks inside the step at these entries (its one-sided slopes change between h and h/2), where "
             "finite differences cannot check g: compute in float64 (a smaller step) or move the point off the kinks",
    "resolution": "f did not change at +-h but did at a larger step: f resolves less than {wd} (TF32 matmuls, "
                  "lax.reduce_precision, a bfloat16 cast inside f); use matmul_precision='highest' (the default) "
                  "and remove the reduced precision for the check",
}


@dataclass(frozen=True)
class LeafCheck:
    """One differentiable leaf of params (full mode), or the k random directions (directions mode).

    Attributes:
      path: the leaf's path (`jax.tree_util.keystr`) or "<k random directions>"; shape, dtype of the leaf.
      status: "ok" | "kinks" | "inconclusive" | "failed" (the worst of its entries); ok: status == "ok".
      max_abs_err: max |grad - fd|; max_rel_err: max |grad - fd| / max(|grad|, |fd|).
      worst_index: the entry furthest past its tolerance (a failed one first).
      worst_grad, worst_fd, worst_err, worst_fd_err (estimated FD error), worst_tol: at that entry.
      max_fd_err: the largest estimated FD error in the leaf.
      n_fail, n_inconclusive, n_kink: entries (directions) of each verdict; n_refined: entries that took
        the extra evaluations.
      kinks: up to 5 (index, grad, forward slope, backward slope) of the kink entries.
    """

    path: str
    shape: tuple
    dtype: str
    status: str
    ok: bool
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple
    worst_grad: float
    worst_fd: float
    worst_err: float
    worst_fd_err: float
    worst_tol: float
    max_fd_err: float
    n_fail: int
    n_inconclusive: int
    n_kink: int
    n_refined: int
    kinks: tuple = ()


def overall(statuses) -> str:
    """The overall status of entry / leaf verdicts ("ok", "kink(s)", "inconclusive", "failed")."""
    s = set(statuses)
    if "failed" in s:
        return "failed"
    if "inconclusive" in s:
        return "inconclusive"
    if "kink" in s or "kinks" in s:
        return "kinks"
    return "ok"


def leaf_check(path, shape, dtype, grad, value, est, tol, status, forward=None, backward=None,
               refined=None) -> LeafCheck:
    """Summarise one leaf; every array argument is flat (n,) (grad float64, may hold non-finite entries)."""
    shape = tuple(int(s) for s in shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(np.isfinite(grad), np.abs(grad - value), np.inf)
        scale = np.maximum(np.abs(np.nan_to_num(grad, posinf=0, neginf=0)), np.abs(value))
        rel = np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), np.where(err > 0, np.inf, 0.0))
        ratio = np.where(tol > 0, err / np.where(tol > 0, tol, 1.0), np.where(err > 0, np.inf, 0.0))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    failed = status == "failed"
    worst = int(np.argmax(ratio))
    if failed.any():
        cand = np.flatnonzero(failed)
        worst = int(cand[np.argmax(ratio[cand])])
    kink_idx = np.flatnonzero(status == "kink")
    unravel = (lambda i: tuple(int(x) for x in np.unravel_index(i, shape))) if shape else (lambda i: ())
    kinks = tuple((unravel(i), float(grad[i]), float(forward[i]), float(backward[i])) for i in kink_idx[:5]) \
        if forward is not None else ()
    st = overall(list(status))
    return LeafCheck(
        path=path, shape=shape, dtype=str(np.dtype(dtype)) if dtype is not None else "", status=st, ok=st == "ok",
        max_abs_err=float(np.max(err)), max_rel_err=float(np.max(rel)), worst_index=unravel(worst),
        worst_grad=float(grad[worst]), worst_fd=float(value[worst]), worst_err=float(err[worst]),
        worst_fd_err=float(est[worst]), worst_tol=float(tol[worst]), max_fd_err=float(np.max(est)),
        n_fail=int(np.sum(failed)), n_inconclusive=int(np.sum(status == "inconclusive")),
        n_kink=int(len(kink_idx)), n_refined=int(np.sum(refined)) if refined is not None else 0, kinks=kinks)


@dataclass(frozen=True)
class NamedEntry:
    """An entry named by the directions mode's group testing, then checked on its own (as full mode refines)."""

    path: str
    index: tuple
    status: str
    grad: float
    fd: float
    tol: float
    forward: float
    backward: float


_COLUMNS = ("path", "shape", "max abs err", "max rel err", "worst index", "err there", "est FD err", "tolerance",
            "fails", "inconcl.", "kinks", "")


def _fmt(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else str(x)


def _row(leaf: LeafCheck) -> tuple:
    return (leaf.path, str(leaf.shape), _fmt(leaf.max_abs_err), _fmt(leaf.max_rel_err), str(leaf.worst_index),
            _fmt(leaf.worst_err), _fmt(leaf.worst_fd_err), _fmt(leaf.worst_tol), str(leaf.n_fail),
            str(leaf.n_inconclusive), str(leaf.n_kink), leaf.status.upper() if leaf.status != "ok" else "ok")


def table(leaves) -> str:
    """The per-leaf table as aligned plain text (one header line, one line per leaf)."""
    rows = [_COLUMNS] + [_row(leaf) for leaf in leaves]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@dataclass(frozen=True)
class GradCheck:
    """The result of `gdjax.check_grad`.

    Attributes:
      status: "ok" (every entry within a tolerance tight enough to see a `max_rel_tol` relative error),
        "kinks" (no failure, but f has kinks at some entries: both one-sided slopes reported, g one of them),
        "inconclusive" (no failure, but some entries could not be checked to `max_rel_tol`: see `fixes`),
        "failed". ok: status == "ok"; failed: status == "failed".
      leaves: one `LeafCheck` per differentiable leaf (full mode), or one for the k directions.
      named: directions mode: the entries named by group testing (`NamedEntry`); unresolved: sets (leaf
        ranges, as text) that failed but could not be narrowed.
      mode, mode_reason; method, eps (the step factor), richardson; compute_dtype (the dtype f was evaluated
        in) and compute_note (why); matmul_precision; multiple, atol, rtol, max_rel_tol, noise_floor (the rule).
      f_value; n_params (P, differentiable entries); passed_through (leaves not differentiated);
      num_directions, key_note (directions); evaluations (every evaluation of f by the check); seconds.
      fixes: one line per cause of an inconclusive entry, with the fix.
      fd, grad: full mode: pytrees of float64 NumPy arrays over the differentiable leaves (a list, in the order
        of `leaves`); directions mode: (k,) arrays of the directional derivatives.
    """

    status: str
    ok: bool
    leaves: tuple
    mode: str
    mode_reason: str
    method: str
    eps: float
    richardson: bool
    compute_dtype: str
    compute_note: str
    matmul_precision: str
    multiple: float
    atol: float | None
    rtol: float | None
    max_rel_tol: float
    noise_floor: float
    f_value: float
    n_params: int
    passed_through: str
    num_directions: int | None
    key_note: str
    evaluations: int
    seconds: float
    fixes: tuple = ()
    named: tuple = ()
    unresolved: tuple = ()
    fd: object = field(repr=False, compare=False, default=None)
    grad: object = field(repr=False, compare=False, default=None)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def __str__(self) -> str:
        bad = [leaf.path for leaf in self.leaves if leaf.status != "ok"]
        verdict = self.status.upper() if self.status != "ok" else "ok"
        where = f" in {', '.join(bad)}" if bad and self.mode == "full" else ""
        lines = [f"gradient check {verdict}{where}: {self.mode} ({self.mode_reason}); {self.method}"
                 f"{' + Richardson' if self.richardson else ''} in {self.compute_dtype} ({self.compute_note}), "
                 f"matmul precision {self.matmul_precision}, P = {self.n_params}, {self.evaluations} evaluations, "
                 f"{self.seconds:.2f} s",
                 f"params: {self.passed_through}",
                 f"tolerance = {self.multiple:g} x estimated FD error + atol + rtol x |fd|; inconclusive where it "
                 f"exceeds {self.max_rel_tol:g} x max(|g|, |fd|) above the noise floor "
                 f"({self.noise_floor:g} x max|fd|)"]
        if self.key_note:
            lines.append(self.key_note)
        lines.append(table(self.leaves))
        for leaf in self.leaves:
            for index, g, fw, bw in leaf.kinks:
                lines.append(f"kink at {leaf.path}{list(index)}: grad {g:.6g}, forward slope {fw:.6g}, "
                             f"backward slope {bw:.6g}")
        for e in self.named:
            lines.append(f"named: {e.path}{list(e.index)} {e.status}: grad {e.grad:.6g}, fd {e.fd:.6g} "
                         f"(tolerance {e.tol:.2e}; slopes {e.forward:.6g} / {e.backward:.6g})")
        for u in self.unresolved:
            lines.append(f"failed but not narrowed further: {u}")
        lines += [f"fix: {f}" for f in self.fixes]
        return "\n".join(lines)

    def assert_ok(self, allow: tuple = ()) -> None:
        """Raise AssertionError with the report unless status is "ok" or in `allow` (e.g. allow=("kinks",))."""
        if isinstance(allow, str):
            allow = (allow,)
        bad = set(allow) - {"kinks", "inconclusive"}
        if bad:
            raise ValueError(f"allow must name 'kinks' and/or 'inconclusive', got {sorted(bad)}")
        if self.status != "ok" and self.status not in allow:
            raise AssertionError(str(self))

    def to_dict(self) -> dict:
        """A JSON-able dict: every attribute except fd / grad; leaves and named as lists of dicts (non-finite
        floats, e.g. the error of a NaN gradient entry, become None)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("fd", "grad", "leaves", "named")}
        out["leaves"] = [{f.name: _plain(getattr(leaf, f.name)) for f in fields(leaf)} for leaf in self.leaves]
        out["named"] = [{f.name: _plain(getattr(e, f.name)) for f in fields(e)} for e in self.named]
        return out


def _plain(v):
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
