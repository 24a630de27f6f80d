"""Finite differences: the FD kernel ("fd-forward", "fd-central", "fd-complex") and the naive loop ("fd-loop").

The lecture's gradient: perturb each of the P parameters in turn and re-evaluate the cost,

    forward:  dC/dv_i ~ (C(v + h_i e_i) - C(v)) / h_i                  P + 1 evaluations, error O(h)
    central:  dC/dv_i ~ (C(v + h_i e_i) - C(v - h_i e_i)) / (2 h_i)    2P evaluations,    error O(h^2)
    complex:  dC/dv_i ~ Im C(v + i h e_i) / h                         P evaluations,     error O(h^2), no
              subtractive cancellation, so h can be tiny and the result is exact to rounding (analytic costs only)

The FD kernel evaluates all the perturbed costs in ONE jitted program, leaf by leaf of the params pytree:
for leaf k, `chunk_size` perturbed copies of that leaf at a time under `vmap` (the other leaves unbatched, so
what depends only on them is computed once per chunk), the chunks in sequence under `lax.scan`, the chunks
split over the devices of a mesh when there are several (`gdjax.gradients._chunked`). It never builds a
P x P matrix: a chunk holds `chunk_size` copies of one leaf. The batch is shared by every direction (vmap
in_axes None), so XLA turns the first layer of all the perturbed networks into one matmul
`(N, n_in) @ (n_in, chunk_size * n_hidden)`, which is where the time goes. The chunk's copies live in one buffer
carried from chunk to chunk (`_leaf_stack.perturb_stack`): each chunk restores the entries the previous one set
and sets its own, 2 x chunk_size scattered entries, instead of writing chunk_size fresh copies of the leaf
(1.3-1.5x faster at N = 10 on a 2-core CPU, the same at N = 1000). The cost is a black box: only its
parameter pytree is used, never the network's structure (that is "fd-layerwise", gdjax.gradients.structured).

    >>> est = gradient(cost, "fd-central", chunk_size=128)     # or eps=..., devices=..., mesh=...
    >>> g = est(params, batch)                                  # same pytree as jax.grad(cost)(params, batch)
    >>> est.evaluations(n_params(params))                       # 2P

"fd-loop" is the baseline the kernel is measured against: the same directions and arithmetic, one jitted cost
call per direction driven from Python.

The steps (defaults, `eps=None`: sqrt(eps_m) forward, cbrt(eps_m) central, eps_m^2 complex, times max(1, |v_i|)
for the real schemes, taken as exactly representable) are the one step rule of `gdjax.gradients._steps`.

Default chunk size, per leaf (`_budget.default_chunk_size`): the largest chunk such that
  * its memory fits a budget of 256 MiB: per direction, 3 copies of the leaf (the perturbed copy, a relayout,
    slack) plus every intermediate array of one cost evaluation (from the cost's jaxpr, an upper bound: XLA fuses
    most elementwise ones away), so memory grows with chunk_size * (leaf + activations), never with P^2;
  * on a CPU, its stack of perturbed copies fits 8 MiB, or 24 MiB when each copy serves 96 or more examples:
    wide enough for an efficient batched matmul, narrow enough for the copies and activations to stay in cache
    (measured: see `_budget.CACHE_BUDGET`);
  * at most `MAX_CHUNK`; on a CPU a multiple of 16 from 64 up (measured: see `_budget.ALIGN`); then evened out
    so that padding wastes fewer than 16 directions per chunk (one on other platforms).
For the lecture's [784, 30, 10] net in float32 on CPU this gives chunks of 80 (N = 10) or 256 (N = 1000) for the
784 x 30 weights and, on a GPU, 314 (N = 1000) or 905 (N = 10).

Sharding: with several devices (`devices=None` means every device of the global `jax.devices()`), the
padded direction axis is split across a 1-D mesh (`gdjax.sharding.device_mesh`) with `jax.shard_map`; each device maps
over its own chunks and the gradient comes back replicated. With the same chunk_size each chunk holds the same
directions as on one device, so the result is the same, up to an ulp of a cost value where XLA compiles a chunk
inside or outside a loop differently (usually bitwise).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks, sharding
from gdjax.costs import Cost
from gdjax.gradients import _budget, _chunked, _leaf_stack, _validate
from gdjax.gradients._steps import (
    SCHEMES, LeafPlan, default_eps, leaf_combine, leaf_plan, n_directions, plan_lengths, step_factor,
)
from gdjax.gradients.registry import Estimator, Subset, register

__all__ = ["SCHEMES", "LeafPlan", "default_eps", "fd_chunk_size", "fd_gradient", "fd_loop",
           "fd_subset", "leaf_chunk_sizes", "leaf_combine", "leaf_plan", "n_directions"]


def _complexify(params):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.result_type(a.dtype, jnp.complex64)), params)


def _prepare(cost, params, batch, scheme: str, method: str):
    """Checks shared by the kernel and the loop; returns (leaves, treedef)."""
    _validate.check_params(params, method)
    _validate.check_scalar_cost(cost, params, batch, method)
    if scheme == "complex":
        try:
            out = jax.eval_shape(cost, _complexify(params), batch)
        except (TypeError, ValueError):  # e.g. lax.conv of a real input with complex weights
            raise TypeError(
                f"method {method!r}: the complex step needs a cost that accepts complex parameters, but this cost "
                f"fails when traced with complex parameters (it mixes them with real-only operations such as "
                f"lax.conv of a real input); use 'fd-central' instead"
            ) from None
        if not jnp.issubdtype(out.dtype, jnp.complexfloating):
            raise ValueError(
                f"method {method!r}: the cost returned {out.dtype} for complex parameters, so its imaginary part "
                f"(the complex-step derivative) is lost; the cost must be analytic and complex-safe "
                f"(gdjax.make_cost costs are), or use 'fd-central'"
            )
    return jax.tree_util.tree_flatten(params)


def _leaf_values(cost, leaves, treedef, batch, k: int, pl: LeafPlan, chunk_size: int, mesh):
    """The costs at every point of leaf k's plan, chunk by chunk; only leaf k is batched."""
    axis = _leaf_stack.leaf_axis(leaves[k].ndim)

    dtype = jnp.result_type(leaves[k].dtype, pl.t.dtype)

    def chunk_fn(operands, state, xs):
        lv, b = operands
        state = _leaf_stack.perturb_stack(lv[k], state, *xs, axis)
        values = jax.vmap(lambda leaf: cost(_leaf_stack.replace_leaf(lv, treedef, k, leaf), b), in_axes=axis)(
            state.stack)
        return state, values

    def init(operands):
        return _leaf_stack.leaf_stack(operands[0][k], chunk_size, axis, dtype)

    return _chunked.map_directions(chunk_fn, (leaves, batch), (pl.idx, pl.t), chunk_size, mesh, init=init)


def leaf_chunk_sizes(cost, params, batch, scheme: str = "central", n_devices: int = 1,
                     platform: str | None = None, chunk_size: int | None = None) -> list[int]:
    """Directions per chunk of every leaf's plan: `chunk_size`, or the budget default (`_budget`), at most the
    leaf's directions. Complex copies count twice the bytes, in the copies and the activations."""
    factor = 2 if scheme == "complex" else 1
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
    return _budget.leaf_chunk_sizes(cost, params, batch, plan_lengths(scheme, sizes), chunk_size, n_devices,
                                    platform, copy_factor=factor, activation_factor=factor)


def fd_chunk_size(cost, params, batch, scheme: str = "central", n_devices: int = 1) -> int:
    """The default chunk size of the largest leaf (the one that dominates the kernel), for benchmarks to report."""
    leaves = jax.tree_util.tree_leaves(params)
    sizes = leaf_chunk_sizes(cost, params, batch, scheme, n_devices)
    return sizes[max(range(len(leaves)), key=lambda k: leaves[k].size)]


def _mesh_chunks(cost, params, batch, scheme, chunk_size, mesh) -> list[int]:
    return leaf_chunk_sizes(cost, params, batch, scheme, 1 if mesh is None else mesh.size,
                            _budget.mesh_platform(mesh), chunk_size)


def _multi_plan(plans: list[LeafPlan], chunk_size: int, n_devices: int) -> tuple[LeafPlan, int]:
    """One plan holding the plans of several step scales (the same directions) one after another, each padded to
    whole chunks with copies of its first point (as `map_directions` pads a plan), so that every chunk holds the
    directions it holds in the one-scale program; returns it and the length n of each scale's own plan."""
    n = plans[0].idx.shape[0]
    pad = _chunked.padded_length(n, chunk_size, n_devices) - n

    def cat(field):
        return jnp.concatenate([jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,))])
                                for a in (getattr(p, field) for p in plans)])

    return LeafPlan(cat("idx"), cat("t"), None), n


def _kernel(cost, params, batch, scheme, eps, chunk_size, mesh, method, limits=None, scales=None):
    """Per-leaf flat derivatives `[(size_k,)]` and the leaves; see `fd_gradient`.

    `limits`: optional per-leaf number of directions to evaluate (a prefix of each leaf's plan, 0 to skip the
    leaf); then the raw cost values of those directions are returned instead of derivatives (for `fd_subset`).
    `scales`: optional step scales (`fd_multi_step`); then each leaf's entry is a list, one array per scale.
    """
    leaves, treedef = _prepare(cost, params, batch, scheme, method)
    chunks = _mesh_chunks(cost, params, batch, scheme, chunk_size, mesh)
    bases, out = None, [None] * len(leaves)
    for k, leaf in enumerate(leaves):
        first = scheme == "forward" and k == 0
        factor = step_factor(scheme, eps, leaf.dtype, method)
        # chunks[k] is at most the leaf's directions (not per device: a given chunk_size keeps the chunks, and
        # the result, identical on any number of devices; the default is already per device)
        if limits is not None:
            if limits[k]:
                pl = leaf_plan(leaf, scheme, factor, with_base=first)
                prefix = pl._replace(idx=pl.idx[:limits[k]], t=pl.t[:limits[k]])
                out[k] = _leaf_values(cost, leaves, treedef, batch, k, prefix, chunks[k], mesh)
            continue
        plans = [leaf_plan(leaf, scheme, step_factor(scheme, factor * s, leaf.dtype, method), with_base=first)
                 for s in (scales or (1.0,))]
        if scales is None:
            values = [_leaf_values(cost, leaves, treedef, batch, k, plans[0], chunks[k], mesh)]
        else:
            pl, n = _multi_plan(plans, chunks[k], 1 if mesh is None else mesh.size)
            # a leaf of one chunk per scale: all its scales in one chunk, no loop (as the kernel runs it; a loop
            # per small leaf doubled the compile time of the lecture net's check)
            chunk = chunks[k] * (len(plans) if n <= chunks[k] else 1)
            values = jnp.split(_leaf_values(cost, leaves, treedef, batch, k, pl, chunk, mesh), len(plans))
            values = [v[:n] for v in values]
        if first:  # the forward scheme's base C(v): evaluated with every scale (the same point each time)
            bases, values = [v[0] for v in values], [v[1:] for v in values]
        derivs = [leaf_combine(scheme, p.den, v, b).astype(leaf.dtype)
                  for p, v, b in zip(plans, values, bases or [None] * len(plans))]
        out[k] = derivs[0] if scales is None else derivs
    return out, leaves, treedef


def fd_subset(cost, params, batch, n: int, *, scheme: str = "central", eps: float | None = None,
              chunk_size: int | None = None, mesh=None, method: str | None = None) -> Subset:
    """The FD kernel's own program on its first `n` directions (leaf after leaf), for timing part of it.

    Same chunk size, same carried buffer and `lax.scan` body as `fd_gradient`; each leaf's prefix is whole
    chunks (at least two where the leaf has two, so that the loop is the whole kernel's loop).
    Returns:
      a `Subset`: `fn(params, batch)` returns the cost values of the covered directions.
    """
    n = _checks.positive_int(n, "n_directions")
    method = method or f"fd-{scheme}"
    lengths = plan_lengths(scheme, [leaf.size for leaf in jax.tree_util.tree_leaves(params)])
    chunks = _mesh_chunks(cost, params, batch, scheme, chunk_size, mesh)
    limits, covered, total = _chunked.prefix(lengths, chunks, n, 1 if mesh is None else mesh.size)

    def fn(params, batch):
        values, _, _ = _kernel(cost, params, batch, scheme, eps, chunk_size, mesh, method, limits=limits)
        return jnp.concatenate([jnp.ravel(v) for v in values if v is not None])

    return Subset(fn, covered, total)


def fd_gradient(cost, params, batch, *, scheme: str = "central", eps: float | None = None,
                chunk_size: int | None = None, mesh=None, method: str | None = None):
    """The FD kernel, un-jitted: a pytree like `params`, the finite-difference gradient of `cost`.

    The directions are taken leaf by leaf (`_leaf_stack.perturb_stack`): for leaf k, `chunk_size` perturbed
    copies of that leaf at a time go through the cost under vmap while the other leaves stay unbatched.
    The forward scheme's base cost C(v) is the first direction of the first leaf.

    Args:
      cost: `cost(params, batch) -> scalar`, any JAX-traceable function (complex-safe for scheme "complex").
      params: pytree of real floating arrays, P scalars in all.
      batch: anything `cost` takes; shared by every direction.
      scheme: "forward", "central" or "complex".
      eps: step factor (see the module docstring), None for the default of each leaf's dtype.
      chunk_size: directions per chunk (per device), None for the memory-budget default of each leaf.
      mesh: a Mesh over which to split the directions (`sharding.resolve_mesh`), or None.
    Returns:
      pytree like `params` (same structure and dtypes).
    """
    derivs, leaves, treedef = _kernel(cost, params, batch, scheme, eps, chunk_size, mesh, method or f"fd-{scheme}")
    return jax.tree_util.tree_unflatten(treedef, [d.reshape(leaf.shape) for d, leaf in zip(derivs, leaves)])


def fd_multi_step(cost, params, batch, *, scheme: str = "central", eps: float | None = None,
                  scales: tuple = (1.0, 0.5), chunk_size: int | None = None, mesh=None, method: str | None = None):
    """The FD kernel at several step scales in ONE program, un-jitted: a list of pytrees like `params`, the
    gradient at steps `scale * h` for each scale (h the kernel's step for `eps`), as `fd_gradient(eps=scale *
    eps)` would give each (the same points and chunks; for a gradient checker's error estimate).

    Each leaf's plan holds the points of every scale one after another (`_multi_plan`), run by the kernel's own
    chunk body (`_leaf_values`, same chunk size, same carried buffer), so a second scale costs its evaluations
    but no second compilation or dispatch; a leaf whose plan is one chunk runs all its scales as one chunk,
    without a loop, as the kernel runs it. Each scale's values are then the kernel's (bit for bit on CPU in
    the tests; XLA may fuse a program differently, so to rounding in general). (Evaluating every scale inside
    one chunk body instead compiled and ran slower: one scan body with two vmapped costs, measured on the
    lecture net in float64 at N = 10 on a 2-core CPU.)
    Args: as `fd_gradient`; scales: a tuple of positive floats (each step factor must stay above the
    dtype's machine epsilon for the real schemes).
    """
    method = method or f"fd-{scheme}"
    eps, chunk_size = _check_options(scheme, eps, chunk_size, method)
    if not (isinstance(scales, tuple) and scales and all(isinstance(s, float | int) and s > 0 for s in scales)):
        raise ValueError(f"scales must be a non-empty tuple of positive numbers, e.g. (1.0, 0.5), got {scales!r}")
    derivs, leaves, treedef = _kernel(cost, params, batch, scheme, eps, chunk_size, mesh, method,
                                      scales=tuple(float(s) for s in scales))
    return [jax.tree_util.tree_unflatten(treedef, [d[s].reshape(leaf.shape) for d, leaf in zip(derivs, leaves)])
            for s in range(len(scales))]


def _check_options(scheme, eps, chunk_size, method):
    _checks.choice(scheme, SCHEMES, f"scheme of {method!r}")
    return _validate.eps_option(eps), _validate.chunk_option(chunk_size)


def _check_analytic(cost, scheme, method):
    if scheme == "complex" and isinstance(cost, Cost) and not cost.net.is_analytic:
        raise ValueError(
            f"method {method!r} needs an analytic network, but this cost uses activation "
            f"{cost.net.activation!r} / output {cost.net.output!r} (relu has no complex extension); "
            f"use 'fd-central' or an analytic activation (sigmoid, tanh, identity)"
        )


def _kernel_builder(scheme: str):
    method = f"fd-{scheme}"

    def build(cost, eps=None, chunk_size=None, devices=None, mesh=None) -> Estimator:
        eps, chunk_size = _check_options(scheme, eps, chunk_size, method)
        _check_analytic(cost, scheme, method)
        mesh = sharding.resolve_mesh(devices, mesh)
        options = dict(scheme=scheme, eps=eps, chunk_size=chunk_size, mesh=mesh, method=method)
        jitted = sharding.jit_replicated(functools.partial(fd_gradient, cost, **options), mesh)

        def subset(params, batch, n_directions):
            sub = fd_subset(cost, params, batch, n_directions, **options)
            return sub._replace(fn=sharding.jit_replicated(sub.fn, mesh))

        return Estimator(method, lambda params, batch, key: jitted(params, batch),
                         functools.partial(n_directions, scheme), subset=subset,
                         options={"eps": eps, "chunk_size": chunk_size, "n_devices": 1 if mesh is None else mesh.size})

    build.__doc__ = f"The FD kernel, {scheme} scheme; options eps, chunk_size, devices, mesh (module docstring)."
    return build


register("fd-forward", kind="fd", subset=True, summary="forward differences, chunked vmap over directions (P+1 costs, O(h))")(
    _kernel_builder("forward"))
register("fd-central", kind="fd", subset=True, summary="central differences, chunked vmap over directions (2P costs, O(h^2))")(
    _kernel_builder("central"))
register("fd-complex", kind="fd", subset=True,
         summary="complex step Im C(v+ih e_i)/h, chunked vmap (P costs, exact to rounding; analytic costs only)")(
    _kernel_builder("complex"))


@register("fd-loop", kind="fd", jittable=False, subset=True,
          summary="naive baseline: one jitted cost call per direction from a Python loop")
def fd_loop(cost, scheme: str = "forward", eps: float | None = None) -> Estimator:
    """The naive FD baseline: the kernel's directions and arithmetic, one jitted call per direction.

    For each leaf k, the per-direction function `(leaves, batch, idx, t, j) -> cost(params with
    leaf_k.ravel()[idx[j]] = t[j], batch)` (one leaf copied, one entry set) is jitted once per parameter structure
    and reused; the Python loop only dispatches it P (+1) times with an integer j, so nothing is slowed on
    purpose (the checks also run once per structure). Not jittable (it is driven from Python).

    Args:
      scheme: "forward" (default, the lecture's), "central" or "complex"; eps as for the kernel.
    """
    method = "fd-loop"
    eps, _ = _check_options(scheme, eps, None, method)
    _check_analytic(cost, scheme, method)
    compiled = {}

    def one_direction(treedef, k):
        """Jitted `(leaves, batch, idx, t, j) -> cost at point j of leaf k's plan`: one leaf copied, one entry set."""

        def f(leaves, batch, idx, t, j):
            leaf = leaves[k]
            flat = jnp.ravel(leaf).astype(jnp.result_type(leaf.dtype, t.dtype))
            i = jnp.maximum(idx[j], 0)
            new = jnp.where(idx[j] >= 0, t[j], flat[i])  # idx -1: the base point, unchanged
            return cost(_leaf_stack.replace_leaf(leaves, treedef, k, flat.at[i].set(new).reshape(leaf.shape)), batch)

        return jax.jit(f)

    def programs(params, batch):
        """Jitted (plans, one step per leaf, combine) for this parameter structure, built once and reused."""
        leaves, treedef = jax.tree_util.tree_flatten(params)
        sig = (treedef, tuple((leaf.shape, jnp.result_type(leaf)) for leaf in leaves))
        if sig not in compiled:
            _prepare(cost, params, batch, scheme, method)  # the checks, once per parameter structure
            epss = [step_factor(scheme, eps, leaf.dtype, method) for leaf in leaves]
            plans = jax.jit(lambda leaves: [leaf_plan(leaf, scheme, e, with_base=scheme == "forward" and k == 0)
                                            for k, (leaf, e) in enumerate(zip(leaves, epss))])
            steps = [one_direction(treedef, k) for k in range(len(leaves))]

            def finish(plans, values):
                base, grads = None, []
                for k, (leaf, pl, val) in enumerate(zip(leaves, plans, values)):
                    if scheme == "forward" and k == 0:
                        base, val = val[0], val[1:]
                    grads.append(leaf_combine(scheme, pl.den, val, base).reshape(leaf.shape).astype(leaf.dtype))
                return jax.tree_util.tree_unflatten(treedef, grads)

            compiled[sig] = (plans, steps, jax.jit(finish))
        return compiled[sig]

    def values(params, batch, limits=None):
        """The cost at every point of every leaf's plan (the first limits[k] of leaf k), one call each."""
        _validate.check_params(params, method)
        plans_fn, steps, finish = programs(params, batch)
        leaves = jax.tree_util.tree_leaves(params)
        plans = plans_fn(leaves)
        limits = limits or [pl.idx.shape[0] for pl in plans]
        vals = [[step(leaves, batch, pl.idx, pl.t, j) for j in range(m)] for step, pl, m in zip(steps, plans, limits)]
        return plans, finish, vals

    def gathered(vals):
        """Per leaf, its cost values as one array: each scalar fetched from the device (what a Python loop pays
        per direction, so the subset pays it too)."""
        return [jnp.asarray(np.asarray(jax.device_get(v))) for v in vals]

    def fn(params, batch, key):
        plans, finish, vals = values(params, batch)
        return finish(plans, gathered(vals))

    def subset(params, batch, n_directions):
        lengths = plan_lengths(scheme, [leaf.size for leaf in jax.tree_util.tree_leaves(params)])
        limits, covered, total = _chunked.prefix(lengths, [1] * len(lengths), n_directions)
        return Subset(lambda params, batch: jnp.concatenate(gathered(v for v in values(params, batch, limits)[2] if v)),
                      covered, total, jittable=False)

    return Estimator(method, fn, functools.partial(n_directions, scheme), jittable=False, subset=subset,
                     options={"scheme": scheme, "eps": eps})
