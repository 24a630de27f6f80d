"""What `gdjax bench` measures: a `Problem` (a cost, its params and its batch), filled by any model; the
lecture's MLP problem is one factory (`mlp_problem`) among others (benchmarks/problems/, or a researcher's own
`package.module:factory`, `load_problem`). Also: the float64 reference gradient, the restriction of a cost to k
of its parameters, the relative error and the cosine of an estimate.

    >>> prob = mlp_problem((784, 30, 10), 1000, "float32")       # the lecture's problem
    >>> prob = Problem(cost, params, batch, name="my-net")        # any cost(params, batch) -> scalar
    >>> prob = load_problem("benchmarks.problems.gmm:gmm")        # a factory returning a Problem or (cost, params, batch)
    >>> ref = prob.reference()                                    # float64 jax.grad, flat numpy (P,)
    >>> relative_error(flat_numpy(gdjax.gradient(prob.cost, "fd-central")(prob.params, prob.batch)), ref)
    >>> cosine(flat_numpy(g), ref)                                # the angle: 1.0 for a correct direction

Only `mlp_problem` (and `make_problem`, its tuple form) knows about gdjax's MLP; everything else in gdjax.bench
reads a Problem. No file I/O; nothing here is timed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax import profiling
from gdjax.costs import make_cost
from gdjax.data import Batch
from gdjax.gradients import _leaves
from gdjax.nn import MLP, Layer, param_count

__all__ = ["Problem", "mlp_problem", "make_problem", "load_problem", "sub_batch", "flat_numpy",
           "reference_gradient", "restrict_cost", "spread_indices", "relative_error", "cosine"]


@dataclass(frozen=True, eq=False)
class Problem:
    """One benchmark problem: `cost(params, batch) -> scalar` at `params` on `batch`, any pytrees.

    Only the inexact (floating) array leaves of `params` are differentiated (gdjax's leaf policy,
    `gdjax.gradients._leaves`); P counts them.

    Attributes:
      cost: `cost(params, batch) -> scalar`, jittable.
      params: any pytree (a tuple of `Layer`, a dict, the array part of an Equinox module, ...).
      batch: any pytree the cost takes (arrays on the device, or numpy arrays).
      name: a short label; it is the row's `sizes` field and part of the point's id.
      batch_size: the examples in `batch` (None: the leading axis of its first array leaf, 1 without one).
      forward_flops: the analytic FLOPs of one cost evaluation where known (the MLP: 2 x weights x N); None
        elsewhere (then XLA's count of the compiled cost stands in).
      structured: True when the cost comes from `gdjax.make_cost` (structured methods can run on it).
      description: one line for the results' config (the model, its sizes, the data).
    Example:
      >>> Problem(lambda p, b: jnp.sum((b @ p["w"]) ** 2), {"w": jnp.ones((3, 2))}, jnp.ones((5, 3)), name="ls")
    """

    cost: Callable
    params: Any
    batch: Any
    name: str = "problem"
    batch_size: int | None = None
    forward_flops: float | None = None
    structured: bool = False
    description: str = ""

    def __post_init__(self):
        if not callable(self.cost):
            raise TypeError(f"Problem cost must be callable as cost(params, batch) -> scalar, got "
                            f"{type(self.cost).__name__}")
        if not isinstance(self.name, str) or not self.name.strip() or "|" in self.name:
            raise ValueError(f"Problem name must be a non-empty string without '|', got {self.name!r}")
        if _leaves.n_differentiable(self.params) < 1:
            raise ValueError(f"Problem params have no floating-point array leaf to differentiate "
                             f"({_leaves.describe_static(self.params)}); pass the trainable arrays as params")
        if self.batch_size is None:
            leaves = [x for x in jax.tree_util.tree_leaves(self.batch) if np.ndim(x) > 0]
            object.__setattr__(self, "batch_size", int(np.shape(leaves[0])[0]) if leaves else 1)
        if not isinstance(self.batch_size, int | np.integer) or self.batch_size < 1:
            raise ValueError(f"Problem batch_size must be a positive int, got {self.batch_size!r}")

    @property
    def n_params(self) -> int:
        """P: scalars in the differentiated leaves of params."""
        return _leaves.n_differentiable(self.params)

    @property
    def dtype(self) -> str:
        """The dtype name of the differentiated leaves (their common result type), e.g. "float64"."""
        diff = jax.tree_util.tree_leaves(_leaves.partition(self.params)[0])
        return jnp.result_type(*[x.dtype for x in diff]).name

    def reference(self) -> np.ndarray:
        """float64 `jax.grad` of the cost at params on batch, flat numpy (P,) (`reference_gradient`)."""
        return reference_gradient(self.cost, self.params, self.batch)


def _mlp_facts(sizes, batch_size: int) -> dict:
    """The MLP's name, analytic forward FLOPs and description (the one place gdjax.bench reads an MLP)."""
    net = MLP(tuple(sizes))
    return {"name": "-".join(map(str, net.sizes)), "forward_flops": float(net.forward_flops(batch_size)),
            "structured": True, "batch_size": int(batch_size),
            "description": f"MLP {list(net.sizes)}, sigmoid units, quadratic cost, N = {batch_size}"}


def as_mlp_problem(cost, params, batch, sizes) -> Problem:
    """A Problem around the lecture's (cost, params, batch) of the MLP `sizes` (the batch's first axis is N)."""
    n = int(np.shape(jax.tree_util.tree_leaves(batch)[0])[0])
    return Problem(cost, params, batch, **_mlp_facts(sizes, n))


def make_problem(sizes, batch_size: int, dtype: str = "float32", seed: int = 0):
    """The lecture's benchmark cost, params and batch for one network (the tuple form of `mlp_problem`).

    A sigmoid MLP with the quadratic cost, weights and biases ~ N(0, 1), inputs x ~ U[0, 1], one-hot random
    labels, drawn with numpy (no XLA compilation per shape, which would dominate a sweep of many sizes). The same
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


def mlp_problem(sizes, batch_size: int, dtype: str = "float32", seed: int = 0, n: int | None = None) -> Problem:
    """The lecture's problem as a `Problem` (`make_problem`) for N = `batch_size` examples, of which the batch
    holds the first `n` (default all) on the device: `batch_size` and `forward_flops` (the analytic
    2 x weights x N) describe the N examples the point stands for (`gdjax bench` scales a point timed on n < N
    examples by N / n); `name` is the sizes joined by "-"."""
    n = batch_size if n is None else n
    cost, params, batch = make_problem(sizes, n, dtype, seed)
    return Problem(cost, params, sub_batch(batch, n), **_mlp_facts(sizes, batch_size))


def load_problem(spec: str, **kwargs) -> Problem:
    """The Problem of a factory named "package.module:factory" (`gdjax bench --problem`).

    The module is imported with the working directory first on `sys.path` (as `python -m` does); the factory is
    called with `kwargs` and returns a `Problem` or `(cost, params, batch)` (then named after the factory).
    Raises ValueError / TypeError, one line naming the spec and the fix, for a spec not of that form, a module
    that cannot be imported, a missing or non-callable attribute, a factory that raises or returns anything else.
    """
    form = "expected 'package.module:factory', e.g. benchmarks.problems.gmm:gmm"
    if not isinstance(spec, str):
        raise TypeError(f"problem must be a string 'package.module:factory', got {type(spec).__name__}")
    parts = spec.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts) or any(p != p.strip() for p in parts):
        raise ValueError(f"problem {spec!r}: {form}")
    module_name, attr = parts
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ModuleNotFoundError, an error inside the module: one line either way
        raise ValueError(f"problem {spec!r}: module {module_name!r} cannot be imported ({_one_line(err)}); "
                         f"{form}, importable from the working directory or the installed packages") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    factory = getattr(module, attr, None)
    if factory is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise ValueError(f"problem {spec!r}: module {module_name!r} has no attribute {attr!r} "
                         f"(its public callables: {', '.join(found) or 'none'})")
    if not callable(factory):
        raise TypeError(f"problem {spec!r}: {attr!r} is a {type(factory).__name__}, not a factory function "
                        f"returning a Problem or (cost, params, batch)")
    try:
        out = factory(**kwargs)
    except Exception as err:
        raise ValueError(f"problem {spec!r}: the factory raised {_one_line(err)}") from None
    try:
        if isinstance(out, Problem):
            return out
        if isinstance(out, tuple | list) and len(out) == 3:
            return Problem(*out, name=attr)
    except (TypeError, ValueError) as err:
        raise type(err)(f"problem {spec!r}: {_one_line(err, with_type=False)}") from None
    raise TypeError(f"problem {spec!r}: the factory must return a gdjax.bench.problem.Problem or a tuple "
                    f"(cost, params, batch), got {_describe(out)}")


def _one_line(err: BaseException, with_type: bool = True) -> str:
    msg = " ".join(str(err).split())[:300]
    return f"{type(err).__name__}: {msg}" if with_type else msg


def _describe(out) -> str:
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)} items"
    return type(out).__name__


def sub_batch(batch: Batch, n: int) -> Batch:
    """The first n examples of `batch`, as device arrays: Batch(x (n, n_in), y (n, n_out))."""
    return Batch(jnp.asarray(batch.x[:n]), jnp.asarray(batch.y[:n]))


def flat_numpy(tree, dtype=None) -> np.ndarray:
    """A pytree as one flat numpy vector (P,) in `jax.flatten_util.ravel_pytree` order (leaf after leaf; None
    leaves, gdjax's "not differentiated", hold nothing); `dtype` casts it (e.g. np.float64), complex leaves keep
    their dtype unless cast."""
    flat = np.asarray(ravel_pytree(tree)[0])
    return flat if dtype is None else flat.astype(dtype)


def _to_float64(leaf):
    """A real floating array leaf as a float64 device array; every other leaf unchanged."""
    if _leaves.is_differentiable(leaf) and not jnp.issubdtype(leaf.dtype, jnp.complexfloating):
        return jnp.asarray(np.asarray(leaf, np.float64))
    return leaf


def reference_gradient(cost, params, batch) -> np.ndarray:
    """float64 `jax.grad(cost)(params, batch)` over the differentiated leaves of params (gdjax's leaf policy),
    as a flat numpy vector (P,); floating leaves of params and batch cast to float64, x64 switched on locally."""
    with profiling._x64_if(True):
        p64 = jax.tree_util.tree_map(_to_float64, params)
        b64 = jax.tree_util.tree_map(_to_float64, batch)
        diff, static = _leaves.partition(p64)
        return flat_numpy(jax.jit(jax.grad(_leaves.restrict(cost, static)))(diff, b64), np.float64)


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
    error when the reference is zero. Both flattened; ValueError when their lengths differ."""
    est, ref = _flat_pair(estimate, reference)
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(est - ref) / denom) if denom > 0 else float(np.linalg.norm(est - ref))


def _flat_pair(estimate, reference) -> tuple[np.ndarray, np.ndarray]:
    est = np.real(np.asarray(estimate)).astype(np.float64).ravel()
    ref = np.asarray(reference, np.float64).ravel()
    if est.shape != ref.shape:
        raise ValueError(f"estimate has {est.size} entries, the reference {ref.size}: the estimator returned a "
                         f"gradient of another structure than the differentiated leaves of params")
    return est, ref


def cosine(estimate, reference: np.ndarray) -> float:
    """cos(estimate, reference) = <g, ref> / (|g| |ref|) in float64 (real part of complex estimates): 1 for the
    right direction whatever the scale; 0 when either is zero. Both flattened; ValueError when their lengths
    differ."""
    est, ref = _flat_pair(estimate, reference)
    denom = np.linalg.norm(est) * np.linalg.norm(ref)
    return float(est @ ref / denom) if denom > 0 else 0.0
