"""The error estimate and tolerance of a gradient check: pure NumPy functions of FD values at two steps.

For a scheme of order p (forward: p = 1, central: p = 2) the FD value at step h is
D(h) = g + c h^p + O(h^(p+1)) + rounding, so with r = 2^p the values at h and h/2 give, per entry,

    truncation error of D(h)    ~ r / (r - 1) |D(h) - D(h/2)|
    truncation error of D(h/2)  ~ 1 / (r - 1) |D(h) - D(h/2)|
    Richardson value            R = (r D(h/2) - D(h)) / (r - 1)       (order p + 1)

and the rounding error of a difference of two cost values, each exact to about eps_m |f|, divided by the step:

    central D(h): eps_m |f| / h        forward D(h): 2 eps_m |f| / h
    D(h/2): twice that                 R: (2 r + 1) / (r - 1) times that of D(h)

The complex step has no difference of nearly equal numbers and its step eps_m^2 makes the truncation
O(h^2) ~ eps_m^4 negligible: its estimate is the rounding eps_m |D| alone, and it needs one pass, not two.
"""

from __future__ import annotations

import numpy as np

from gdjax.gradients._steps import ORDER  # noqa: F401  (the schemes' truncation orders, defined once)
ROUNDING = {"forward": 2.0, "central": 1.0}


def steps(values: np.ndarray, eps: float) -> np.ndarray:
    """The kernel's step of each entry, h_i = eps * max(1, |v_i|): `values` any shape, result the same shape."""
    return eps * np.maximum(1.0, np.abs(values))


def rounding(scheme: str, eps_m: float, f_abs: float, h: np.ndarray) -> np.ndarray:
    """The rounding error of a real-scheme FD value at steps h: eps_m |f| / h (central), 2 eps_m |f| / h (forward)."""
    return ROUNDING[scheme] * eps_m * f_abs / h


def fd_estimate(scheme: str, d1: np.ndarray, d2: np.ndarray | None, h: np.ndarray, f_abs: float, eps_m: float,
                richardson: bool = False, half: bool = False):
    """The FD value of each entry and its estimated error (module docstring).

    Args:
      scheme: "forward", "central" or "complex".
      d1: (n,) float64, FD values at steps h; d2: (n,) at h / 2 (None for "complex").
      h: (n,) the steps of d1; f_abs: |f| at the base point; eps_m: machine epsilon f was evaluated in.
      richardson: return the extrapolated value R (and its error bound) instead of D(h).
      half: return D(h/2) and its error (truncation |D(h) - D(h/2)| / (r - 1), rounding twice that of D(h)).
    Returns:
      (value, truncation, rounding): three (n,) float64 arrays.
    """
    if scheme == "complex":
        return d1, np.zeros_like(d1), eps_m * np.abs(d1)
    r = 2.0 ** ORDER[scheme]
    diff = np.abs(d1 - d2)
    round1 = rounding(scheme, eps_m, f_abs, h)
    if richardson:
        # the extrapolated value's truncation error is of higher order; the error of D(h/2) bounds it
        return (r * d2 - d1) / (r - 1), diff / (r - 1), (2 * r + 1) / (r - 1) * round1
    if half:
        return d2, diff / (r - 1), 2 * round1
    return d1, r / (r - 1) * diff, round1


def tolerance(value: np.ndarray, truncation: np.ndarray, rounding: np.ndarray, multiple: float, atol: float,
              rtol: float) -> np.ndarray:
    """Per-entry tolerance: multiple * (truncation + rounding) + atol + rtol * |value|; all (n,) float64."""
    return multiple * (truncation + rounding) + atol + rtol * np.abs(value)
