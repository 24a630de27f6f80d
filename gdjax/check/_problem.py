"""What `check_grad` evaluates: f as a function of the differentiable leaves only, and the two small programs
that evaluate it at chosen points (single entries moved; whole flat points).

The leaf policy is `gdjax.gradients._leaves`: only inexact array leaves of params are differentiated and
perturbed; every other leaf (ints, bools, PRNG keys, functions and static fields of an Equinox module) is passed
to f untouched. Array leaves of the passed-through params, of `*args` and of `**f_kwargs` travel as inputs of the
compiled programs; every other Python object (functions, strings, flags) is closed over, so that a repeated
check of the same f with the same structure reuses its compiled programs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import precision as _precision
from gdjax.gradients import _leaves

CACHE_SIZE = 32  # costs (and their compiled programs) of the last f / structure combinations kept


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray)


def _split_arrays(tree):
    """(arrays, others): two pytrees like `tree`, None in the other's places (arrays travel as program inputs)."""
    arrays = jax.tree_util.tree_map(lambda x: x if _is_array(x) else None, tree)
    others = jax.tree_util.tree_map(lambda x: None if _is_array(x) else x, tree)
    return arrays, others


class Problem:
    """f(params, *args, **kwargs) as `cost(leaves, inputs) -> scalar`, leaves the differentiable leaves (a list).

    Attributes:
      paths: `keystr` path of each differentiable leaf; leaves: those leaves (as given); treedef of params.
      inputs: the array pytree passed to every program (passed-through param arrays, args and kwargs arrays).
      cost: the function of (leaves, inputs), traced under the matmul precision in force.
      static_note: `describe_static(params)`, for the report.
    """

    def __init__(self, f, params, args, kwargs, has_aux, precision):
        diff, static = _leaves.partition(params)
        flat = jax.tree_util.tree_flatten_with_path(diff)[0]
        if not flat:
            raise ValueError(
                f"params has no inexact (floating) array leaf to check: {_leaves.describe_static(params)}; "
                f"check_grad differentiates only floating arrays (wrap a Python float in jnp.asarray to include it)")
        self.paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in flat]
        self.leaves = [leaf for _, leaf in flat]
        self.diff_def = jax.tree_util.tree_structure(diff)
        self.diff, self.static = diff, static
        self.static_note = _leaves.describe_static(params)
        s_arr, s_other = _split_arrays(static)
        a_arr, a_other = _split_arrays((tuple(args), dict(kwargs)))
        self.inputs = (s_arr, a_arr)
        others = (s_other, a_other)
        sig = (f, bool(has_aux), self.diff_def, jax.tree_util.tree_structure(others),
               tuple(jax.tree_util.tree_leaves(others)), jax.tree_util.tree_structure(self.inputs),
               _precision.resolve(precision))
        self.raw = lambda leaves, inputs: _build_cost(f, False, self.diff_def, others, None)(leaves, inputs)
        try:
            self.cost = _cached_cost(*sig)
        except TypeError:  # an unhashable f or static leaf: no reuse of compiled programs across calls
            self.cost = _build_cost(f, bool(has_aux), self.diff_def, others, sig[-1])

    @property
    def sizes(self) -> list[int]:
        return [int(np.size(leaf)) for leaf in self.leaves]

    def params_of(self, leaves):
        """The full params pytree with `leaves` at the differentiable places (for the gradient under test)."""
        return _leaves.combine(jax.tree_util.tree_unflatten(self.diff_def, leaves), self.static)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _cached_cost(f, has_aux, diff_def, others_def, others_leaves, inputs_def, precision):
    """One cost object per (f, structure, passed-through values, precision): its compiled programs are reused."""
    return _build_cost(f, has_aux, diff_def, jax.tree_util.tree_unflatten(others_def, others_leaves), precision)


def _build_cost(f, has_aux, diff_def, others, precision):
    s_other, (args_other, kwargs_other) = others

    def cost(leaves, inputs):
        s_arr, (args_arr, kwargs_arr) = inputs
        static = _leaves.combine(s_arr, s_other)
        params = _leaves.combine(jax.tree_util.tree_unflatten(diff_def, list(leaves)), static)
        args = _leaves.combine(args_arr, args_other)
        kwargs = _leaves.combine(kwargs_arr, kwargs_other)
        out = f(params, *args, **kwargs)
        return out[0] if has_aux else out

    return _precision.at_precision(cost, precision)


# ----------------------------------------------------------------------------------------------- evaluators

@functools.lru_cache(maxsize=CACHE_SIZE)
def jitted_grad(cost):
    """jax.jit(jax.grad(cost)) over the list of differentiable leaves, one per cost object."""
    return jax.jit(jax.grad(cost))


@functools.lru_cache(maxsize=CACHE_SIZE)
def jitted(cost):
    """jax.jit(cost), one per cost object (a repeated check compiles nothing new)."""
    return jax.jit(cost)


CHUNK = 32  # points per vmapped chunk of the evaluators (sequential chunks under lax.map)


def _chunked(one, xs):
    """vmap `one` over the leading axis of the pytree `xs` in chunks of CHUNK (lax.map over chunks)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if n <= CHUNK:
        return jax.vmap(one)(xs)
    # n is a multiple of CHUNK here (`_pad`)
    stacked = jax.tree_util.tree_map(lambda a: a.reshape((n // CHUNK, CHUNK) + a.shape[1:]), xs)
    return jax.lax.map(jax.vmap(one), stacked).reshape(n)


def _pad(n: int) -> int:
    """Points actually run for n requested: n itself up to CHUNK, else whole chunks (bounded recompilation)."""
    return n if n <= CHUNK else -(-n // CHUNK) * CHUNK


@functools.lru_cache(maxsize=CACHE_SIZE)
def _entry_program(cost, k):
    """jit((leaves, inputs, idx (n,), t (n,)) -> (n,) costs with leaf k's entry idx[j] set to t[j]; idx -1: base)."""

    def run(leaves, inputs, idx, t):
        flat = jnp.ravel(leaves[k])

        def one(it):
            i, v = it
            new = jnp.where(i >= 0, flat.at[jnp.maximum(i, 0)].set(v), flat).reshape(leaves[k].shape)
            return cost(leaves[:k] + [new] + leaves[k + 1:], inputs)

        return _chunked(one, (idx, t))

    return jax.jit(run)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _flat_program(cost, shapes):
    """jit((inputs, points (n, P)) -> (n,) costs at the flat points, split into leaves of `shapes`)."""
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum(sizes)[:-1].tolist()

    def run(inputs, points):
        def one(x):
            return cost([part.reshape(s) for part, s in zip(jnp.split(x, cuts), shapes)], inputs)

        return _chunked(one, points)

    return jax.jit(run)


def entry_values(problem: Problem, leaves_w, k: int, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """f with entry idx[j] of leaf k set to t[j] (idx -1: the base point), one value per j, float64 NumPy."""
    n = len(idx)
    m = _pad(n)
    idx_p = np.concatenate([idx, np.full(m - n, -1)]).astype(np.int32)
    t_p = np.concatenate([t, np.zeros(m - n)]).astype(leaves_w[k].dtype)
    out = _entry_program(problem.cost, k)(list(leaves_w), problem.inputs, jnp.asarray(idx_p), jnp.asarray(t_p))
    return np.asarray(out, np.float64)[:n]


def flat_values(problem: Problem, leaves_w, points: np.ndarray) -> np.ndarray:
    """f at flat points (n, P) (leaves concatenated in order, in the dtype of leaves_w), float64 NumPy."""
    n = points.shape[0]
    m = _pad(n)
    if m > n:
        points = np.concatenate([points, np.repeat(points[:1], m - n, 0)])
    shapes = tuple(tuple(leaf.shape) for leaf in leaves_w)
    out = _flat_program(problem.cost, shapes)(problem.inputs, jnp.asarray(points, leaves_w[0].dtype))
    return np.asarray(out, np.float64)[:n]
