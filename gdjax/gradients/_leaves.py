"""The one leaf policy: which leaves of a params pytree are differentiated, perturbed and updated.

A researcher's params are any pytree: a tuple of `Layer(w, b)`, a dict holding a step counter and a mask, an
Equinox module (whose leaves include activation functions and static fields), a Flax NNX state with RNG
counters and keys. gdjax differentiates, perturbs and updates only the **inexact array leaves** (a `jax.Array`
or `numpy.ndarray` of a floating or complex dtype, as `equinox.is_inexact_array`); every other leaf (int and
bool arrays, PRNG keys, Python scalars, functions, strings, None) passes through untouched and never changes.
A Python float is *not* differentiated (it is usually a hyperparameter such as a dropout rate); wrap it in
`jnp.asarray` to train it.

The result convention, for every gradient method and `check_grad`: a gradient is a pytree with the structure
of `params`, the derivative at each differentiated leaf and **None** at every other leaf (as
`equinox.filter_grad`). `optax.apply_updates` and `gdjax.train.make_step` skip the None leaves.

    >>> diff, static = partition(params)          # diff: inexact arrays (None elsewhere); static: the rest
    >>> params == combine(diff, static)            # the same pytree back
    >>> g = jax.grad(restrict(cost, static))(diff, batch)   # None where params has no inexact array

Every method sees only `diff` (a pytree whose leaves are all inexact arrays, None elsewhere, so it flattens to
the differentiated leaves alone) and a cost closed over `static`: `restrict(cost, static)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


_ARRAY_TYPES = (jax.Array, np.ndarray, jax.ShapeDtypeStruct)


def is_differentiable(leaf) -> bool:
    """True for a JAX or NumPy array of a floating or complex dtype (never a PRNG key, int, bool or Python scalar);
    a `jax.ShapeDtypeStruct` (an abstract array, as the memory budget reads shapes) counts as its array would."""
    if not isinstance(leaf, _ARRAY_TYPES):
        return False
    dtype = leaf.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(dtype, jnp.inexact))


def _is_none(x) -> bool:
    return x is None


def partition(params) -> tuple:
    """Split `params` into `(diff, static)`, two pytrees of its structure with None in the other's places.

    `diff` holds the differentiable leaves (`is_differentiable`), `static` every other leaf.
    """
    diff = jax.tree_util.tree_map(lambda x: x if is_differentiable(x) else None, params)
    static = jax.tree_util.tree_map(lambda x: None if is_differentiable(x) else x, params)
    return diff, static


def combine(diff, static):
    """Inverse of `partition`: at each leaf the non-None of `diff` and `static`."""
    return jax.tree_util.tree_map(lambda d, s: s if d is None else d, diff, static, is_leaf=_is_none)


def restrict(fn: Callable, static) -> Callable:
    """`fn(params, *args)` as a function of the differentiable part only: `g(diff, *args) = fn(combine(diff, static), *args)`."""

    def restricted(diff, *args, **kwargs):
        return fn(combine(diff, static), *args, **kwargs)

    return restricted


def n_differentiable(params) -> int:
    """Number of scalars in the differentiable leaves of `params` (what a gradient method sees as P)."""
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params) if is_differentiable(x))


def describe_static(params, limit: int = 4) -> str:
    """A short description of the leaves passed through, e.g. "2 leaves passed through: ['step'] int32, ..."."""
    paths = [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(params)
             if not is_differentiable(x)]
    if not paths:
        return "no leaves passed through"
    shown = ", ".join(f"{p} {getattr(x, 'dtype', type(x).__name__)}" for p, x in paths[:limit])
    more = f", ... ({len(paths) - limit} more)" if len(paths) > limit else ""
    return f"{len(paths)} leaves passed through untouched: {shown}{more}"


def is_array(leaf) -> bool:
    """True for a JAX array (a tracer included), a NumPy array or a `jax.ShapeDtypeStruct`, of any dtype: what
    `jax.jit` (or `jax.eval_shape`, for the abstract one) can take."""
    return isinstance(leaf, _ARRAY_TYPES)


def split_arrays(tree) -> tuple:
    """Split `tree` into `(arrays, objects)`: its array leaves (any dtype) and its other leaves (functions,
    Python scalars, strings), each with None in the other's places; `combine(arrays, objects)` is `tree`.

    What `jax.jit` or `lax.scan` can carry is `arrays`; close over `objects` (as `equinox.filter_jit` does).
    """
    arrays = jax.tree_util.tree_map(lambda x: x if is_array(x) else None, tree)
    objects = jax.tree_util.tree_map(lambda x: None if is_array(x) else x, tree)
    return arrays, objects


class _Object:
    """A non-array leaf as part of a jit cache key: equal by `==` where it is hashable, else by identity."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def _key(self):
        try:
            hash(self.value)
            return (0, self.value)
        except TypeError:
            return (1, id(self.value))

    def __eq__(self, other):
        if not isinstance(other, _Object) or type(self.value) is not type(other.value):
            return False
        a, b = self._key(), other._key()
        if a[0] or b[0]:
            return a == b
        try:
            return bool(a[1] == b[1])
        except Exception:  # noqa: BLE001 (an object whose == is not a bool: compare identities)
            return self.value is other.value

    def __hash__(self):
        k = self._key()
        return hash((type(self.value).__name__, k[1])) if not k[0] else hash(k)


@jax.tree_util.register_pytree_node_class
class Bound:
    """The batch of a restricted cost together with the leaves of params that are not differentiated.

    A pytree: the array leaves of `static` (ints, bools, PRNG keys: traced, never differentiated) and the
    batch are its children; the other leaves of `static` (functions, Python scalars, strings) are its static
    data, so that `jax.jit` sees them as part of its cache key (a changed activation function retraces).
    A method gets `(diff, Bound(static, batch))` and the cost `bound_cost(cost)`.
    """

    def __init__(self, static, batch):
        self.arrays, self.objects = split_arrays(static)
        self.batch = batch

    @property
    def static(self):
        """The leaves not differentiated, as one pytree (arrays and objects together)."""
        return combine(self.arrays, self.objects)

    def tree_flatten(self):
        # which leaves are children was decided once, when the Bound was built: JAX maps pytrees with
        # placeholders in the children's places (tracers, abstract values, its own markers), and a re-split on
        # the placeholders' types would give another structure
        leaves, treedef = jax.tree_util.tree_flatten(self.objects)
        return (self.arrays, self.batch), (treedef, tuple(_Object(x) for x in leaves))

    @classmethod
    def tree_unflatten(cls, aux, children):
        treedef, objects = aux
        bound = object.__new__(cls)
        bound.arrays, bound.batch = children
        bound.objects = jax.tree_util.tree_unflatten(treedef, [o.value for o in objects])
        return bound


class BoundCost:
    """`g(diff, bound) = cost(combine(diff, bound.static), bound.batch)` (its first element when `has_aux`).

    Equal (and equally hashed) for the same `cost` and `has_aux`, so that what is cached per cost (the FD
    kernel's measured plan, a jitted program) is shared by every estimator of one user cost.
    """

    __slots__ = ("cost", "has_aux", "__weakref__")

    def __init__(self, cost: Callable, has_aux: bool = False):
        self.cost, self.has_aux = cost, bool(has_aux)

    def __call__(self, diff, bound):
        out = self.cost(combine(diff, bound.static), bound.batch)
        return out[0] if self.has_aux else out

    def _key(self):
        try:
            hash(self.cost)
            return (self.cost, self.has_aux)
        except TypeError:
            return (id(self.cost), self.has_aux)

    def __eq__(self, other):
        return isinstance(other, BoundCost) and self._key() == other._key()

    def __hash__(self):
        return hash(("BoundCost", *self._key()))

    def __repr__(self):
        return f"BoundCost({self.cost!r}, has_aux={self.has_aux})"


def bound_cost(cost: Callable, *, has_aux: bool = False) -> BoundCost:
    """The cost of a black-box method's program: `BoundCost(cost, has_aux)`."""
    return BoundCost(cost, has_aux)
