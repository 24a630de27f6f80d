"""2-D test surfaces (the lecture's "hilly terrain") and gradient-descent trajectories on them.

A surface is a pure function `f(v) -> scalar` of a point `v: (2,)`; `SURFACES` names four, each with the box
it is drawn in and its known local minima:

    >>> s = SURFACES["himmelblau"]
    >>> s.f(jnp.array([3.0, 2.0]))                               # 0.0, one of its four minima
    >>> path = descend(s.f, jnp.array([0.0, 0.0]), 0.01, 200)    # (201, 2): v_0 .. v_200, v <- v - eta grad f
    >>> s.nearest_minimum(path[-1])                              # index into s.minima, or -1

`descend` is pure (jit it at the call site with `f` and `n_steps` static; vmap it over starts or learning rates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks

# --- the surfaces --------------------------------------------------------------------------------------------

BOWL_EIGENVALUES = (1.0, 10.0)  # Hessian eigenvalues of the default bowl: lambda_min, lambda_max
BOWL_ANGLE = math.pi / 6  # rotation of the bowl's principal axes


def bowl_hessian(eigenvalues=BOWL_EIGENVALUES, angle: float = BOWL_ANGLE) -> np.ndarray:
    """The (2, 2) Hessian `R diag(eigenvalues) R^T` of the quadratic bowl, R a rotation by `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    r = np.array([[c, -s], [s, c]])
    return r @ np.diag(np.asarray(eigenvalues, float)) @ r.T


def bowl(v: jax.Array) -> jax.Array:
    """The quadratic bowl `0.5 v^T H v`, H = `bowl_hessian()` (eigenvalues 1 and 10); minimum 0 at the origin."""
    h = jnp.asarray(bowl_hessian(), v.dtype)
    return 0.5 * v @ h @ v


def rosenbrock(v: jax.Array) -> jax.Array:
    """Rosenbrock's banana valley `(1 - x)^2 + 100 (y - x^2)^2`; minimum 0 at (1, 1) at the end of a flat valley."""
    x, y = v[0], v[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def himmelblau(v: jax.Array) -> jax.Array:
    """Himmelblau's function `(x^2 + y - 11)^2 + (x + y^2 - 7)^2`: four minima, all of value 0."""
    x, y = v[0], v[1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


# centre (x, y), width, height (negative: a well)
HILLS = (
    ((-1.5, -1.0), 0.7, -2.0),
    ((1.6, 1.1), 0.6, -1.2),
    ((0.9, -1.6), 0.5, -0.9),
    ((-1.4, 1.3), 0.6, -0.7),
    ((0.0, 0.5), 0.7, 1.5),
    ((-0.3, -2.2), 0.5, 0.8),
)


def hills(v: jax.Array) -> jax.Array:
    """Gaussian hills and wells `sum_i h_i exp(-|v - c_i|^2 / (2 s_i^2)) + 0.05 |v|^2` (`HILLS`): several
    local minima of different depth, saddles and ridges between them; the small bowl keeps it bounded below."""
    out = 0.05 * jnp.sum(v**2)
    for (cx, cy), s, h in HILLS:
        out = out + h * jnp.exp(-((v[0] - cx) ** 2 + (v[1] - cy) ** 2) / (2 * s**2))
    return out


@dataclass(frozen=True)
class Surface:
    """A named 2-D surface: `f(v: (2,)) -> scalar`, its drawing box and its local minima `(k, 2)`."""

    name: str
    f: Callable[[jax.Array], jax.Array]
    box: tuple[tuple[float, float], tuple[float, float]]
    minima: tuple[tuple[float, float], ...] = ()
    log_levels: bool = False  # contour levels on a log scale (steep walls, flat floors)

    def nearest_minimum(self, v, tol: float = 1e-2) -> int:
        """Index of the known minimum within `tol` of `v` (`(2,)`), or -1 (not converged / diverged)."""
        v = np.asarray(v, float)
        if not np.all(np.isfinite(v)) or not self.minima:
            return -1
        d = np.linalg.norm(np.asarray(self.minima) - v, axis=1)
        i = int(np.argmin(d))
        return i if d[i] <= tol else -1


def find_minima(f: Callable, box, n_grid: int = 9, eta: float = 0.05, n_steps: int = 4000, tol: float = 1e-3):
    """Local minima of `f` in `box`, found by gradient descent from an `n_grid x n_grid` grid of starts.

    Endpoints with a small gradient (< 1e-6) are merged when closer than `tol`; returns a tuple of (x, y)
    sorted by value of f. Used for the hills surface, whose minima have no closed form.
    """
    (x0, x1), (y0, y1) = box
    gx, gy = np.meshgrid(np.linspace(x0, x1, n_grid), np.linspace(y0, y1, n_grid))
    starts = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], 1))
    ends = jax.jit(jax.vmap(lambda v: descend(f, v, eta, n_steps)[-1]))(starts)
    grads = jax.vmap(jax.grad(f))(ends)
    found: list[np.ndarray] = []
    for v, g in zip(np.asarray(ends), np.asarray(grads)):
        if not np.all(np.isfinite(v)) or np.linalg.norm(g) > 1e-6:
            continue
        if not (x0 <= v[0] <= x1 and y0 <= v[1] <= y1):
            continue
        if all(np.linalg.norm(v - u) > tol for u in found):
            found.append(v)
    found.sort(key=lambda u: float(f(jnp.asarray(u))))
    return tuple((float(u[0]), float(u[1])) for u in found)


# found by find_minima(hills, ((-3, 3), (-3, 3)), n_grid=15) in float64 (tests/test_landscapes.py checks them),
# deepest first
_HILLS_MINIMA = ((-1.479241, -0.984621), (1.622287, 1.093138), (0.899848, -1.551754), (-1.463625, 1.284614))
_HIMMELBLAU_MINIMA = ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126))

SURFACES: dict[str, Surface] = {
    "bowl": Surface("bowl", bowl, ((-2.0, 2.0), (-2.0, 2.0)), ((0.0, 0.0),)),
    "rosenbrock": Surface("rosenbrock", rosenbrock, ((-2.0, 2.0), (-1.0, 3.0)), ((1.0, 1.0),), log_levels=True),
    "himmelblau": Surface("himmelblau", himmelblau, ((-5.0, 5.0), (-5.0, 5.0)), _HIMMELBLAU_MINIMA,
                          log_levels=True),
    "hills": Surface("hills", hills, ((-3.0, 3.0), (-3.0, 3.0)), _HILLS_MINIMA),
}


def surface(name: str) -> Surface:
    """The `Surface` called `name`, one of `SURFACES` (ValueError listing them otherwise)."""
    return SURFACES[_checks.choice(name, SURFACES, "surface")]


# --- descent -------------------------------------------------------------------------------------------------


def descend(f: Callable, v0: jax.Array, eta, n_steps: int) -> jax.Array:
    """Plain gradient descent `v <- v - eta grad f(v)` from `v0`, as a `lax.scan`.

    Args:
      f: `f(v: (2,)) -> scalar` (any dimension works; the surfaces here are 2-D).
      v0: the start, `(d,)` float.
      eta: the learning rate (a scalar; may be traced, e.g. under vmap over learning rates).
      n_steps: number of steps (static).
    Returns:
      the trajectory `(n_steps + 1, d)`: `v_0, ..., v_n`. A diverging run runs into inf/NaN (kept as is).
    Example:
      >>> path = jax.jit(descend, static_argnums=(0, 3))(rosenbrock, jnp.array([-1.0, 1.0]), 1e-3, 1000)
    """
    n_steps = _checks.positive_int(n_steps, "n_steps")
    grad = jax.grad(f)

    def body(v, _):
        v_next = v - eta * grad(v)
        return v_next, v_next

    _, path = jax.lax.scan(body, v0, None, length=n_steps)
    return jnp.concatenate([v0[None], path])


def grid(f: Callable, box, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(X, Y, Z)` of shape `(n, n)` each: `f` on a regular grid over `box = ((x0, x1), (y0, y1))` (for contours)."""
    n = _checks.positive_int(n, "n", minimum=2)
    (x0, x1), (y0, y1) = box
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    pts = jnp.asarray(np.stack([xs.ravel(), ys.ravel()], 1))
    z = jax.jit(jax.vmap(f))(pts)
    return xs, ys, np.asarray(z).reshape(n, n)
