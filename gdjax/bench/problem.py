"""The lecture's benchmark problem, shared by every benchmark: a sigmoid MLP with the quadratic cost, weights
and biases ~ N(0, 1), inputs x ~ U[0, 1], one-hot random labels; the float64 reference gradient; the
restriction of a cost to k of its parameters; the relative error of an estimate.

    >>> cost, params, batch = make_problem((784, 30, 10), 1000, "float32")
    >>> b = sub_batch(batch, 100)                        # the first 100 examples, on the device
    >>> ref = reference_gradient(cost, params, b)        # float64 jax.grad, flat numpy (P,)
    >>> relative_error(flat_numpy(gdjax.gradient(cost, "fd-central")(params, b)), ref)

No file I/O; nothing here is timed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax import profiling
from gdjax.costs import make_cost
from gdjax.data import Batch
from gdjax.nn import MLP, Layer, param_count

__all__ = ["make_problem", "sub_batch", "flat_numpy", "reference_gradient", "restrict_cost", "spread_indices",
           "relative_error"]


def make_problem(sizes, batch_size: int, dtype: str = "float32", seed: int = 0):
    """The benchmark's cost, params and batch for one network.

    Drawn with numpy (no XLA compilation per shape, which would dominate a sweep of many sizes). The same
    (sizes, seed) always gives the same params; the first n examples of a batch of N are the batch of n.

    Args:
      sizes: layer widths, e.g. (784, 30, 10).
      batch_size: N examples.
      dtype: "float32" or "float64" (float64 params need x64 switched on to stay float64 on the device).
      seed: the data and params seed.
    Returns:
      (cost, params, batch): `cost(params, batch) -> scalar` from `gdjax.make_cost`; params a tuple of
      `Layer(w (n_in, n_out), b (n_out,))` of `dtype`; batch a `Batch(x (N, n_in), y (N, n_out))` of numpy
      arrays (`sub_batch` puts the examples used on the device).
    """
    net = MLP(tuple(sizes))
    cost = make_cost(net, "quadratic")
    rng = np.random.default_rng([seed, param_count(sizes)])
    params = tuple(
        Layer(jnp.asarray(rng.standard_normal((n_in, n_out)).astype(dtype)),
              jnp.asarray(rng.standard_normal(n_out).astype(dtype)))
        for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:]))
    x = rng.random((batch_size, net.n_in), dtype=np.float32).astype(dtype)
    y = np.eye(net.n_out, dtype=dtype)[rng.integers(0, net.n_out, batch_size)]
    return cost, params, Batch(x, y)


def sub_batch(batch: Batch, n: int) -> Batch:
    """The first n examples of `batch`, as device arrays: Batch(x (n, n_in), y (n, n_out))."""
    return Batch(jnp.asarray(batch.x[:n]), jnp.asarray(batch.y[:n]))


def flat_numpy(tree, dtype=None) -> np.ndarray:
    """A pytree as one flat numpy vector (P,) in `jax.flatten_util.ravel_pytree` order (leaf after leaf);
    `dtype` casts it (e.g. np.float64), complex leaves keep their dtype unless cast."""
    flat = np.asarray(ravel_pytree(tree)[0])
    return flat if dtype is None else flat.astype(dtype)


def reference_gradient(cost, params, batch) -> np.ndarray:
    """float64 `jax.grad(cost)(params, batch)` as a flat numpy vector (P,); x64 switched on locally if off."""
    with profiling._x64_if(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
        b64 = Batch(jnp.asarray(np.asarray(batch.x, np.float64)), jnp.asarray(np.asarray(batch.y, np.float64)))
        return flat_numpy(jax.jit(jax.grad(cost))(p64, b64), np.float64)


def spread_indices(p: int, k: int) -> np.ndarray:
    """k distinct flat indices spread evenly over range(p) (every layer gets some), int64 (<= k,)."""
    return np.unique(np.linspace(0, p - 1, min(k, p)).round().astype(np.int64))


def restrict_cost(cost: Callable, params, idx) -> tuple[Callable, jax.Array]:
    """`cost` as a function of the parameters at flat positions `idx` only, the others held at `params`.

    Returns (sub_cost, theta0): `sub_cost(theta (k,), batch) -> scalar` and theta0 = the current values (k,).
    A complex theta (the complex step) gives complex params.
    """
    flat0, unravel = ravel_pytree(params)
    idx = jnp.asarray(np.asarray(idx))

    def sub_cost(theta, batch):
        flat = flat0.astype(jnp.result_type(flat0.dtype, theta.dtype)).at[idx].set(theta)
        if jnp.iscomplexobj(flat):  # ravel_pytree's unravel keeps the dtype it flattened: unravel each part
            return cost(jax.tree_util.tree_map(lambda r, i: r + 1j * i, unravel(flat.real), unravel(flat.imag)),
                        batch)
        return cost(unravel(flat), batch)

    return sub_cost, flat0[idx]


def relative_error(estimate, reference: np.ndarray) -> float:
    """||estimate - reference|| / ||reference|| in float64 (real part of complex estimates); the absolute
    error when the reference is zero. Both flattened."""
    est = np.real(np.asarray(estimate)).astype(np.float64).ravel()
    ref = np.asarray(reference, np.float64).ravel()
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(est - ref) / denom) if denom > 0 else float(np.linalg.norm(est - ref))
