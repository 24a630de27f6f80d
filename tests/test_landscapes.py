"""2-D surfaces and descent trajectories (float64 via conftest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import landscapes as L


@pytest.mark.parametrize("name", sorted(L.SURFACES))
def test_listed_minima_are_minima(name):
    s = L.surface(name)
    assert s.minima, "every surface lists its minima"
    grad, hess = jax.jit(jax.grad(s.f)), jax.jit(jax.hessian(s.f))
    for m in s.minima:
        v = jnp.asarray(m, jnp.float64)
        g = np.asarray(grad(v))
        # coordinates are given to 6 decimals; curvature <= ~1e3 (Rosenbrock) -> |grad| well below 1e-2
        assert np.linalg.norm(g) < 1e-2 if name == "himmelblau" else np.linalg.norm(g) < 1e-4, (m, g)
        assert np.all(np.linalg.eigvalsh(np.asarray(hess(v))) > 0), f"{m} is not a minimum"
        lo, hi = np.asarray(s.box).T
        assert np.all(lo <= np.asarray(m)) and np.all(np.asarray(m) <= hi)


def test_bowl_hessian_is_the_stated_one():
    h = np.asarray(jax.hessian(L.bowl)(jnp.array([0.3, -0.2])))
    np.testing.assert_allclose(h, L.bowl_hessian(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(h), L.BOWL_EIGENVALUES, rtol=1e-12)


def test_descend_is_plain_gradient_descent():
    v0, eta, n = jnp.array([1.0, -0.5]), 0.07, 25
    path = L.descend(L.bowl, v0, eta, n)
    assert path.shape == (n + 1, 2)
    np.testing.assert_array_equal(path[0], v0)
    # on the bowl GD is linear: v_t = (I - eta H)^t v_0
    m = np.eye(2) - eta * L.bowl_hessian()
    expected = [np.linalg.matrix_power(m, t) @ np.asarray(v0) for t in range(n + 1)]
    np.testing.assert_allclose(np.asarray(path), np.stack(expected), rtol=1e-10, atol=1e-14)


def test_bowl_converges_below_two_over_lambda_max_and_diverges_above():
    lam = max(L.BOWL_EIGENVALUES)
    run = jax.jit(jax.vmap(lambda eta: L.descend(L.bowl, jnp.array([1.0, 1.0]), eta, 300)[-1]))
    ends = np.asarray(run(jnp.array([0.95 * 2 / lam, 1.05 * 2 / lam])))
    assert np.linalg.norm(ends[0]) < 1e-5
    assert np.linalg.norm(ends[1]) > 1e3


def test_himmelblau_starts_reach_different_minima():
    s = L.surface("himmelblau")
    starts = jnp.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    ends = jax.jit(jax.vmap(lambda v: L.descend(s.f, v, 0.01, 500)[-1]))(starts)
    idx = [s.nearest_minimum(e) for e in np.asarray(ends)]
    assert sorted(idx) == [0, 1, 2, 3], idx


def test_hills_minima_are_what_the_search_finds():
    found = L.find_minima(L.hills, L.SURFACES["hills"].box, n_grid=15)
    np.testing.assert_allclose(np.asarray(found), np.asarray(L.SURFACES["hills"].minima), atol=2e-6)


def test_nearest_minimum_of_diverged_point_is_minus_one():
    s = L.surface("bowl")
    assert s.nearest_minimum([np.inf, 0.0]) == -1
    assert s.nearest_minimum([0.5, 0.0]) == -1
    assert s.nearest_minimum([1e-4, 0.0]) == 0


def test_grid_shape_and_values():
    xs, ys, z = L.grid(L.rosenbrock, ((-2, 2), (-1, 3)), n=11)
    assert xs.shape == ys.shape == z.shape == (11, 11)
    np.testing.assert_allclose(z[3, 4], (1 - xs[3, 4]) ** 2 + 100 * (ys[3, 4] - xs[3, 4] ** 2) ** 2, rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="valid: bowl"):
        L.surface("volcano")
    with pytest.raises(ValueError, match="n_steps"):
        L.descend(L.bowl, jnp.zeros(2), 0.1, 0)
