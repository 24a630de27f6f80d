"""The report of a gradient check: per-leaf rows, the table `str(report)` prints, `assert_ok`, `to_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from gdjax.check import _estimate


@dataclass(frozen=True)
class LeafCheck:
    """One leaf of params (full mode) or the set of random directions (directions mode).

    Attributes:
      path: the leaf's path in the params pytree (`jax.tree_util.keystr`), or "<k directions>".
      shape, dtype: of the leaf (directions: (k,) and the dtype of the evaluation).
      max_abs_err: max |grad - fd|; max_rel_err: max |grad - fd| / max(|grad|, |fd|).
      worst_index: index (into the leaf) of the entry furthest past its tolerance (largest err / tol).
      worst_grad, worst_fd, worst_err: the gradient under test, the FD value and their difference there.
      worst_fd_err: the estimated FD error (truncation + rounding) there; worst_tol: its tolerance.
      max_fd_err: the largest estimated FD error in the leaf.
      n_fail: entries past their tolerance (or non-finite in grad); ok: n_fail == 0.
    """

    path: str
    shape: tuple
    dtype: str
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
    ok: bool


def leaf_check(path: str, shape: tuple, dtype, grad, value, truncation, rounding, tol) -> LeafCheck:
    """Summarise one leaf; every array argument is flat (n,) float64 (grad may hold non-finite entries)."""
    err, rel, ratio, failed = _estimate.compare(grad, value, tol)
    worst = int(np.argmax(np.where(np.isnan(ratio), np.inf, ratio)))
    est = truncation + rounding
    return LeafCheck(
        path=path, shape=tuple(int(s) for s in shape), dtype=str(np.dtype(dtype)) if dtype is not None else "",
        max_abs_err=float(np.max(err)), max_rel_err=float(np.max(rel)),
        worst_index=tuple(int(i) for i in np.unravel_index(worst, shape)) if len(shape) else (),
        worst_grad=float(grad[worst]), worst_fd=float(value[worst]), worst_err=float(err[worst]),
        worst_fd_err=float(est[worst]), worst_tol=float(tol[worst]), max_fd_err=float(np.max(est)),
        n_fail=int(np.sum(failed)), ok=not bool(np.any(failed)),
    )


_COLUMNS = ("path", "shape", "max abs err", "max rel err", "worst index", "err there", "est FD err", "tolerance",
            "fails", "")


def _fmt(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else str(x)


def _row(leaf: LeafCheck) -> tuple:
    return (leaf.path, str(leaf.shape), _fmt(leaf.max_abs_err), _fmt(leaf.max_rel_err), str(leaf.worst_index),
            _fmt(leaf.worst_err), _fmt(leaf.worst_fd_err), _fmt(leaf.worst_tol), str(leaf.n_fail),
            "ok" if leaf.ok else "FAIL")


def table(leaves) -> str:
    """The per-leaf table as aligned plain text (one header line, one line per leaf)."""
    rows = [_COLUMNS] + [_row(leaf) for leaf in leaves]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@dataclass(frozen=True)
class GradCheck:
    """The result of `gdjax.check_grad`.

    Attributes:
      ok: every entry (or direction) within its tolerance.
      leaves: one `LeafCheck` per leaf of params (full mode), or one for all directions (directions mode).
      mode: "full" or "directions" (what ran); mode_reason: why (auto mode's prediction vs its time budget).
      method, eps (step factor of the first step), richardson, compute_dtype (the dtype f was evaluated in).
      multiple, atol, rtol: the tolerance rule, tol = multiple * (est. truncation + rounding) + atol + rtol |fd|.
      f_value: f at the base point; n_params: P; num_directions: k (directions mode) or None.
      evaluations: cost evaluations by the FD side; seconds: wall time of the whole check.
      fd, grad: full mode: pytrees like params of float64 NumPy arrays (fd is the Richardson value when
        richardson=True); directions mode: (k,) arrays of the directional derivatives.
    """

    ok: bool
    leaves: tuple
    mode: str
    mode_reason: str
    method: str
    eps: float
    richardson: bool
    compute_dtype: str
    multiple: float
    atol: float
    rtol: float
    f_value: float
    n_params: int
    num_directions: int | None
    evaluations: int
    seconds: float
    fd: object = field(repr=False, compare=False, default=None)
    grad: object = field(repr=False, compare=False, default=None)

    def __str__(self) -> str:
        failed = [leaf.path for leaf in self.leaves if not leaf.ok]
        verdict = "ok" if self.ok else f"FAILED in {', '.join(failed)}"
        head = (f"gradient check {verdict}: {self.mode} ({self.mode_reason}); {self.method}"
                f"{' + Richardson' if self.richardson else ''} in {self.compute_dtype}, P = {self.n_params}, "
                f"{self.evaluations} evaluations, {self.seconds:.2f} s\n"
                f"tolerance = {self.multiple:g} x estimated FD error + {self.atol:.2e} + {self.rtol:.2e} x |fd| "
                f"(err there / est FD err / tolerance: at the worst index)")
        return head + "\n" + table(self.leaves)

    def assert_ok(self) -> None:
        """Raise AssertionError with the table unless every entry passed (for pytest)."""
        if not self.ok:
            raise AssertionError(str(self))

    def to_dict(self) -> dict:
        """A JSON-able dict: every attribute except the fd / grad arrays; `leaves` a list of dicts (non-finite
        floats, e.g. the error of a NaN gradient entry, become None)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in ("fd", "grad", "leaves")}
        out["leaves"] = [{f.name: _plain(getattr(leaf, f.name)) for f in fields(leaf)} for leaf in self.leaves]
        return out


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
