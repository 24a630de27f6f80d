"""The finite-difference step rule, in one place: every FD method (the kernel, fd-loop, layer-aware FD, node
perturbation) takes its steps from here, so they perturb by the same amounts and divide by the same numbers.

    forward:  dC/dv_i ~ (C(v + h_i e_i) - C(v)) / h_i                  P + 1 evaluations, error O(h)
    central:  dC/dv_i ~ (C(v + h_i e_i) - C(v - h_i e_i)) / (2 h_i)    2P evaluations,    error O(h^2)
    complex:  dC/dv_i ~ Im C(v + i h e_i) / h                         P evaluations,     error O(h^2), no
              subtractive cancellation, so h can be tiny and the result is exact to rounding (analytic costs only)

Choice of step (defaults, `eps=None`), with eps_m the machine epsilon of the parameters' dtype
(float32: 1.19e-7, float64: 2.22e-16) and C, C'', C''' of order one (costs of the lecture are O(1)):
  forward:  h_i = sqrt(eps_m) * max(1, |v_i|). The error is truncation h|C''|/2 plus rounding 2 eps_m |C| / h;
            their sum is smallest at h ~ sqrt(eps_m) (float32: 3.5e-4, float64: 1.5e-8), error ~ sqrt(eps_m).
  central:  h_i = cbrt(eps_m) * max(1, |v_i|). Truncation h^2|C'''|/6 plus rounding eps_m|C|/h is smallest at
            h ~ cbrt(eps_m) (float32: 4.9e-3, float64: 6.1e-6), error ~ eps_m^(2/3).
  complex:  h = eps_m^2 (float32: 1.4e-14, float64: 4.9e-32), not scaled. There is no difference of nearly
            equal numbers, so h is limited only by underflow: the truncation error O(h^2) is then ~eps_m^4,
            far below rounding, while Im C = h dC/dv_i stays a normal float for any |dC/dv_i| > tiny / eps_m^2
            (1e-24 in float32).
The factor max(1, |v_i|) makes the step relative for large parameters (a step below the spacing of floats
near v_i would vanish) and absolute near zero. The step actually taken is h_i = fl(v_i + h_i) - v_i, which is
exactly representable, so the denominator is the true distance between the two evaluation points.
An explicit `eps` replaces the factor in front of max(1, |v_i|) (forward, central) or h (complex).

    >>> points, den = fd_points(v, step_factor("central", None, v.dtype, "fd-central"), "central")
    >>> # derivative_i = (C(v with v_i = points[0]_i) - C(v with v_i = points[1]_i)) / den_i
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax import _checks

SCHEMES = ("forward", "central", "complex")
ORDER = {"forward": 1, "central": 2, "complex": 2}  # truncation order p of each scheme: error O(h^p)


def default_eps(scheme: str, dtype) -> float:
    """The default step factor for `scheme` at parameter `dtype` (see the module docstring for the reasoning).

    >>> default_eps("central", jnp.float32)   # cbrt(1.19e-7) = 4.9e-3
    """
    _checks.choice(scheme, SCHEMES, "finite-difference scheme")
    eps_m = float(jnp.finfo(dtype).eps)
    return {"forward": eps_m ** 0.5, "central": eps_m ** (1 / 3), "complex": eps_m**2}[scheme]


def step_factor(scheme: str, eps: float | None, dtype, method: str) -> float:
    """The step factor for parameters of `dtype`: `eps`, or the dtype's default; refuses a real step at or
    below the machine epsilon (v + eps*max(1,|v|) would round back to v)."""
    if eps is None:
        return default_eps(scheme, dtype)
    eps_m = float(jnp.finfo(dtype).eps)
    if scheme != "complex" and eps <= eps_m:
        raise ValueError(
            f"eps={eps:g} is not above the machine epsilon of {jnp.dtype(dtype).name} ({eps_m:.3g}) "
            f"(method {method!r}): v + eps*max(1,|v|) would round back to v; use eps >= "
            f"{default_eps(scheme, dtype):.3g} (the default) or similar"
        )
    return eps


def n_directions(scheme: str, n_params: int) -> int:
    """Cost evaluations per gradient: P + 1 (forward), 2P (central), P (complex)."""
    return {"forward": n_params + 1, "central": 2 * n_params, "complex": n_params}[scheme]


def fd_points(v, eps, scheme: str):
    """The real schemes' evaluation points around `v` (any shape) and the denominators, `h = eps * max(1, |v|)`.

    Returns `(points, den)`: forward `([fl(v + h)], fl(v + h) - v)`, central `([fl(v + h), fl(v - h)],
    fl(v + h) - fl(v - h))`: the denominator is the distance actually taken.
    """
    h = eps * jnp.maximum(1, jnp.abs(v))
    tp = v + h
    if scheme == "forward":
        return [tp], tp - v
    tm = v - h
    return [tp, tm], tp - tm


def fd_steps(v, eps, scheme: str):
    """`fd_points` as steps from `v`: forward `([fl(v + h) - v], den)`, central `([fl(v + h) - v, fl(v - h) - v],
    den)`; for methods that move a quantity by the step (layer-aware FD, node perturbation)."""
    points, den = fd_points(v, eps, scheme)
    return [p - v for p in points], den


class LeafPlan(NamedTuple):
    """The perturbed points of one leaf: direction j sets `leaf.ravel()[idx[j]] = t[j]`.

    idx: (n,) int32, -1 for the base point (forward scheme, first leaf only); t: (n,) new values, complex for the
    complex step; den: (leaf.size,) the step in each derivative's denominator. n = size + 1 (forward, first
    leaf), size (forward, other leaves), 2 size (central: +h then -h), size (complex).
    """

    idx: jax.Array
    t: jax.Array
    den: jax.Array


def leaf_plan(leaf: jax.Array, scheme: str, eps: float, with_base: bool = False) -> LeafPlan:
    """The points of `scheme` around one leaf with step factor `eps` (module docstring); `with_base` puts the
    base point C(v) first (forward scheme, first leaf)."""
    x = jnp.ravel(leaf)
    ar = jnp.arange(x.shape[0], dtype=jnp.int32)
    if scheme == "complex":  # Im C(v + i h e_i) / h
        h = jnp.full_like(x, eps)
        return LeafPlan(ar, jax.lax.complex(x, h), h)
    points, den = fd_points(x, eps, scheme)
    if scheme == "forward":
        if with_base:  # C(v) itself, evaluated by the same batched program as the perturbed costs
            return LeafPlan(jnp.concatenate([jnp.full((1,), -1, jnp.int32), ar]), jnp.concatenate([x[:1], *points]),
                            den)
        return LeafPlan(ar, points[0], den)
    return LeafPlan(jnp.concatenate([ar, ar]), jnp.concatenate(points), den)


def plan_lengths(scheme: str, sizes: list[int]) -> list[int]:
    """Directions of each leaf's plan (leaves of `sizes` scalars): size (+1 on the first leaf, forward), 2 size
    (central), size (complex)."""
    return [n_directions(scheme, s) - (scheme == "forward" and k > 0) for k, s in enumerate(sizes)]


def leaf_combine(scheme: str, den: jax.Array, values: jax.Array, base) -> jax.Array:
    """Flat derivatives `(size,)` of one leaf from the costs at its points (without the base; `base` = C(v))."""
    if scheme == "complex":
        im = jnp.imag(values)
        return im / den.astype(im.dtype)
    if scheme == "forward":
        return (values - base) / den.astype(values.dtype)
    n = den.shape[0]
    return (values[:n] - values[n:]) / den.astype(values.dtype)
