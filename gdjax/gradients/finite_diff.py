"""Finite differences: the FD kernel ("fd-forward", "fd-central", "fd-complex") and the naive loop ("fd-loop").

The lecture's gradient: perturb each of the P parameters in turn and re-evaluate the cost,

    forward:  dC/dv_i ~ (C(v + h_i e_i) - C(v)) / h_i                  P + 1 evaluations, error O(h)
    central:  dC/dv_i ~ (C(v + h_i e_i) - C(v - h_i e_i)) / (2 h_i)    2P evaluations,    error O(h^2)
    complex:  dC/dv_i ~ Im C(v + i h e_i) / h                         P evaluations,     error O(h^2), no
              subtractive cancellation, so h can be tiny and the result is exact to rounding (analytic costs only)

The FD kernel evaluates all the perturbed costs in ONE jitted program, leaf by leaf of the params pytree:
for leaf k, `widths[k]` perturbed copies of that leaf at a time under `vmap` (the other leaves unbatched, so
what depends only on them is computed once per chunk), the chunks in sequence under `lax.scan`, the chunks
split over the devices of a mesh when there are several (`gdjax.gradients._chunked`). It never builds a
P x P matrix: a chunk holds `widths[k]` copies of one leaf. The batch is shared by every direction (vmap
in_axes None), so for an MLP XLA turns the first layer of all the perturbed networks into one matmul
`(N, n_in) @ (n_in, width * n_hidden)`. By default the chunk's copies live in one buffer carried from chunk to
chunk (`_leaf_stack.perturb_stack`: each chunk restores the entries the previous one set and sets its own, 2 x
width scattered entries, instead of writing width fresh copies); a width of 1 evaluates one copy at a time
without vmap (the cost as written, in a loop). The cost is a black box: only its parameter pytree is used,
never the network's structure (that is "fd-layerwise", gdjax.gradients.structured).

    >>> est = gradient(cost, "fd-central")                      # or eps=..., chunk_size=..., devices=..., mesh=...
    >>> g = est(params, batch)                                  # same pytree as jax.grad(cost)(params, batch)
    >>> est.evaluations(n_params(params))                       # 2P
    >>> est.plan(params, batch).widths                          # the layout it runs with (see below)

"fd-loop" is the baseline the kernel is measured against: the same directions and arithmetic, one jitted cost
call per direction driven from Python.

The steps (defaults, `eps=None`: sqrt(eps_m) forward, cbrt(eps_m) central, eps_m^2 complex, times max(1, |v_i|)
for the real schemes, taken as exactly representable) are the one step rule of `gdjax.gradients._steps`.

The program is described once by a `_plan.DirectionPlan` (each leaf's directions, the `Layout` that runs them:
a chunk width per leaf and the carried buffer or fresh copies); `fd_gradient` runs it whole, `fd_subset` a prefix
of it (for timing part of the kernel), `fd_multi_step` its directions at several step sizes in one program.

The layout (`chunk_size` option of the estimators):
  * None or "auto" (default): measured. The first call for a new key (`plan_key`: the cost, the params' and
    batch's structure, shapes and dtypes, the scheme, the devices) times candidate layouts on a small part of the
    largest leaf's directions, the budget default first, then one direction at a time, fresh copies, narrower
    widths (`_plan.candidates`), within a planning budget (`_plan.FRACTION` = 0.1 of the predicted gradient time,
    at most `_plan.MAX_SECONDS`; nothing is measured when one compilation exceeds it), and keeps the fastest. The
    plan is cached in the process and, after `set_plan_cache(path)`, on disk (keyed by the lowered program and
    the device kind). Under a tracer (the estimator inside a user's jax.jit or lax.scan) nothing can be timed:
    the plan cached for the key, else the budget default. `est.plan(params, batch)` or `plan_for(...)` returns
    the `KernelPlan`: widths, carry, source, candidates with their measured times, planning seconds.
  * "budget": the memory-budget default below, nothing measured.
  * an integer: that width for every leaf (at most its directions), nothing measured.
The un-jitted functions (`fd_gradient`, `fd_subset`, `fd_multi_step`) take `chunk_size` (an integer, or None for
the budget default) or `layout=` (e.g. `plan_for(...).layout`); they never measure.

Budget default, per leaf (`_budget.default_chunk_size`): the largest chunk such that
  * its memory fits the memory budget (`_budget.memory_budget`: 0.25 of the memory the device reports free,
    `memory_stats()`, on GPUs and TPUs; 256 MiB on a CPU or without statistics; `_budget.MEMORY_BUDGET[platform]`
    overrides it): per direction, 3 copies of the leaf (the perturbed copy, a relayout, slack) plus every
    intermediate array of one cost evaluation (from the cost's jaxpr, an upper bound: XLA fuses most elementwise
    ones away), so memory grows with chunk_size * (leaf + activations), never with P^2;
  * on a CPU, its stack of perturbed copies fits 8 MiB, or 24 MiB when each copy serves 96 or more examples:
    wide enough for an efficient batched matmul, narrow enough for the copies and activations to stay in cache
    (measured: see `_budget.CACHE_BUDGET`);
  * at most `MAX_CHUNK`; on a CPU a multiple of 16 from 64 up (measured: see `_budget.ALIGN`); then evened out
    so that padding wastes fewer than 16 directions per chunk (one on other platforms).
For the lecture's [784, 30, 10] net in float32 on CPU this gives chunks of 80 (N = 10) or 256 (N = 1000) for the
784 x 30 weights.

Sharding: with several devices (`devices=None` means every device of the global `jax.devices()`), the
padded direction axis is split across a 1-D mesh (`gdjax.sharding.device_mesh`) with `jax.shard_map`; each device maps
over its own chunks and the gradient comes back replicated. With the same widths each chunk holds the same
directions as on one device, so the result is the same, up to an ulp of a cost value where XLA compiles a chunk
inside or outside a loop differently (usually bitwise). Any layout gives the same gradient to the rounding of the
cost values (the same points, evaluated by another program).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks, sharding
from gdjax.costs import Cost
from gdjax.gradients import _budget, _chunked, _leaf_stack, _plan, _validate
from gdjax.gradients._plan import DirectionPlan, KernelPlan, Layout
from gdjax.gradients._steps import (
    SCHEMES, LeafPlan, default_eps, leaf_combine, leaf_plan, n_directions, plan_lengths, step_factor,
)
from gdjax.gradients.registry import Estimator, Subset, count_per_direction, register

__all__ = ["SCHEMES", "KernelPlan", "LeafPlan", "Layout", "clear_plans", "default_eps", "fd_chunk_size",
           "fd_gradient", "fd_loop", "fd_multi_step", "fd_subset", "leaf_chunk_sizes", "leaf_combine", "leaf_plan",
           "n_directions", "plan_for", "plan_key", "set_plan_cache"]


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


def _leaf_values(cost, leaves, treedef, batch, k: int, pl: LeafPlan, width: int, carry: bool, mesh):
    """The costs at every point of leaf k's points `pl`, `width` at a time; only leaf k is batched.

    `carry`: the chunk's copies live in one buffer carried from chunk to chunk (`_leaf_stack.perturb_stack`), else
    each chunk writes fresh copies (`_leaf_stack.fresh_stack`). Width 1 evaluates one copy at a time, without vmap.
    """
    axis = _leaf_stack.leaf_axis(leaves[k].ndim)
    dtype = jnp.result_type(leaves[k].dtype, pl.t.dtype)

    def evaluate(lv, b, stack):
        def one(leaf):
            return cost(_leaf_stack.replace_leaf(lv, treedef, k, leaf), b)

        if width == 1:  # one direction per step of the loop: the cost as the user wrote it, no batch axis
            return one(jnp.squeeze(stack, axis))[None]
        return jax.vmap(one, in_axes=axis)(stack)

    if not carry:
        def fresh_fn(operands, xs):
            lv, b = operands
            return evaluate(lv, b, _leaf_stack.fresh_stack(lv[k], *xs, axis, dtype))

        return _chunked.map_directions(fresh_fn, (leaves, batch), (pl.idx, pl.t), width, mesh)

    def chunk_fn(operands, state, xs):
        lv, b = operands
        state = _leaf_stack.perturb_stack(lv[k], state, *xs, axis)
        return state, evaluate(lv, b, state.stack)

    def init(operands):
        return _leaf_stack.leaf_stack(operands[0][k], width, axis, dtype)

    return _chunked.map_directions(chunk_fn, (leaves, batch), (pl.idx, pl.t), width, mesh, init=init)


def leaf_chunk_sizes(cost, params, batch, scheme: str = "central", n_devices: int = 1,
                     platform: str | None = None, chunk_size: int | None = None, device=None) -> list[int]:
    """Directions per chunk of every leaf's plan: `chunk_size`, or the budget default (`_budget`), at most the
    leaf's directions. Complex copies count twice the bytes, in the copies and the activations. `device` (e.g. a
    mesh's first device) sets the memory budget (`_budget.memory_budget`)."""
    factor = 2 if scheme == "complex" else 1
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
    return _budget.leaf_chunk_sizes(cost, params, batch, plan_lengths(scheme, sizes), chunk_size, n_devices,
                                    platform, copy_factor=factor, activation_factor=factor, device=device)


def fd_chunk_size(cost, params, batch, scheme: str = "central", n_devices: int = 1) -> int:
    """The default chunk size of the largest leaf (the one that dominates the kernel), for benchmarks to report."""
    leaves = jax.tree_util.tree_leaves(params)
    sizes = leaf_chunk_sizes(cost, params, batch, scheme, n_devices)
    return sizes[max(range(len(leaves)), key=lambda k: leaves[k].size)]


def _lengths(params, scheme) -> tuple[int, ...]:
    return tuple(plan_lengths(scheme, [leaf.size for leaf in jax.tree_util.tree_leaves(params)]))


def _direction_plan(cost, params, batch, scheme, chunk_size, mesh, layout: Layout | None) -> DirectionPlan:
    """The kernel's `DirectionPlan`: each leaf's directions (`plan_lengths`), run by `layout`, or by chunks of
    `chunk_size` (None: the memory-budget default, `leaf_chunk_sizes`) with the carried buffer; widths at most the
    leaf's directions (not per device: a given width keeps the chunks, and the result, identical on any number of
    devices; the default is already per device)."""
    lengths = _lengths(params, scheme)
    n_dev = 1 if mesh is None else mesh.size
    if layout is None:
        widths = leaf_chunk_sizes(cost, params, batch, scheme, n_dev, _budget.mesh_platform(mesh), chunk_size,
                                  _budget.mesh_device(mesh))
        layout = Layout(tuple(widths), True)
    elif not isinstance(layout, Layout) or len(layout.widths) != len(lengths):
        raise ValueError(f"layout must be a _plan.Layout with one width per leaf ({len(lengths)} leaves), "
                         f"got {layout!r}; take it from finite_diff.plan_for(...).layout")
    return DirectionPlan(lengths, Layout(tuple(min(int(w), m) for w, m in zip(layout.widths, lengths)),
                                         bool(layout.carry)), n_dev)


def _points(leaves, scheme, eps, method, scale: float = 1.0) -> list[LeafPlan]:
    """Every leaf's points (`leaf_plan`) at step factor `eps` x `scale`; the forward scheme's base point C(v)
    first in the first leaf's."""
    out = []
    for k, leaf in enumerate(leaves):
        factor = step_factor(scheme, eps, leaf.dtype, method)
        out.append(leaf_plan(leaf, scheme, step_factor(scheme, factor * scale, leaf.dtype, method),
                             with_base=scheme == "forward" and k == 0))
    return out


def _values(cost, leaves, treedef, batch, points: list[LeafPlan], plan: DirectionPlan, mesh, limits=None) -> list:
    """The kernel: per leaf, the costs at its points (the first `limits[k]`, None where 0), run as `plan` says."""

    def evaluate(k, m, width, carry):
        pl = points[k]
        if m < pl.idx.shape[0]:
            pl = pl._replace(idx=pl.idx[:m], t=pl.t[:m])
        return _leaf_values(cost, leaves, treedef, batch, k, pl, width, carry, mesh)

    return plan.run(evaluate, limits)


def _combine(scheme, leaves, points: list[LeafPlan], values: list) -> list:
    """Per-leaf flat derivatives `(size_k,)` in the leaf's dtype from every leaf's values (`_values`); the forward
    scheme's base C(v) is the first value of the first leaf."""
    base = None
    if scheme == "forward":
        base, values = values[0][0], [values[0][1:], *values[1:]]
    return [leaf_combine(scheme, p.den, v, base).astype(leaf.dtype) for leaf, p, v in zip(leaves, points, values)]


def fd_subset(cost, params, batch, n: int, *, scheme: str = "central", eps: float | None = None,
              chunk_size: int | None = None, mesh=None, method: str | None = None,
              layout: Layout | None = None) -> Subset:
    """The FD kernel's own program on its first `n` directions (leaf after leaf), for timing part of it.

    Same layout (chunk widths, carried buffer or not) and loop body as `fd_gradient`; each leaf's prefix is whole
    chunks (at least two where the leaf has two, so that the loop is the whole kernel's loop):
    `DirectionPlan.prefix`, `_plan.subset`.
    Returns:
      a `Subset`: `fn(params, batch)` returns the cost values of the covered directions.
    """
    method = method or f"fd-{scheme}"
    plan = _direction_plan(cost, params, batch, scheme, chunk_size, mesh, layout)

    def values(params, batch, limits):
        leaves, treedef = _prepare(cost, params, batch, scheme, method)
        return _values(cost, leaves, treedef, batch, _points(leaves, scheme, eps, method), plan, mesh, limits)

    return _plan.subset(plan, values, n)


def fd_gradient(cost, params, batch, *, scheme: str = "central", eps: float | None = None,
                chunk_size: int | None = None, mesh=None, method: str | None = None, layout: Layout | None = None):
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
      layout: a `Layout` (e.g. `plan_for(...).layout`: widths per leaf, carried buffer or not) instead of
        `chunk_size`.
    Returns:
      pytree like `params` (same structure and dtypes).
    """
    method = method or f"fd-{scheme}"
    leaves, treedef = _prepare(cost, params, batch, scheme, method)
    plan = _direction_plan(cost, params, batch, scheme, chunk_size, mesh, layout)
    points = _points(leaves, scheme, eps, method)
    derivs = _combine(scheme, leaves, points, _values(cost, leaves, treedef, batch, points, plan, mesh))
    return jax.tree_util.tree_unflatten(treedef, [d.reshape(leaf.shape) for d, leaf in zip(derivs, leaves)])


def fd_multi_step(cost, params, batch, *, scheme: str = "central", eps: float | None = None,
                  scales: tuple = (1.0, 0.5), chunk_size: int | None = None, mesh=None, method: str | None = None,
                  layout: Layout | None = None):
    """The FD kernel at several step scales in ONE program, un-jitted: a list of pytrees like `params`, the
    gradient at steps `scale * h` for each scale (h the kernel's step for `eps`), as `fd_gradient(eps=scale *
    eps)` would give each (the same points and chunks; for a gradient checker's error estimate).

    The kernel's plan tiled (`DirectionPlan.tiled`): each leaf's points of every scale one after another, each
    padded to whole chunks, run by the kernel's own chunk body (same widths, same carried buffer), so a second
    scale costs its evaluations but no second compilation or dispatch; a leaf whose plan is one chunk runs all
    its scales as one chunk, without a loop, as the kernel runs it. Each scale's values are then the kernel's
    (bit for bit on CPU in the tests; XLA may fuse a program differently, so to rounding in general).
    (Evaluating every scale inside one chunk body instead compiled and ran slower: one scan body with two
    vmapped costs, measured on the lecture net in float64 at N = 10 on a 2-core CPU.)
    Args: as `fd_gradient`; scales: a tuple of positive floats (each step factor must stay above the
    dtype's machine epsilon for the real schemes).
    """
    method = method or f"fd-{scheme}"
    eps, chunk_size = _check_options(scheme, eps, chunk_size, method)
    if not (isinstance(scales, tuple) and scales and all(isinstance(s, float | int) and s > 0 for s in scales)):
        raise ValueError(f"scales must be a non-empty tuple of positive numbers, e.g. (1.0, 0.5), got {scales!r}")
    leaves, treedef = _prepare(cost, params, batch, scheme, method)
    plan = _direction_plan(cost, params, batch, scheme, chunk_size, mesh, layout)
    copies = len(scales)
    per_scale = [_points(leaves, scheme, eps, method, float(s)) for s in scales]
    tiled = [LeafPlan(plan.tile(k, [p[k].idx for p in per_scale]), plan.tile(k, [p[k].t for p in per_scale]), None)
             for k in range(len(leaves))]
    values = _values(cost, leaves, treedef, batch, tiled, plan.tiled(copies), mesh)
    split = [plan.untile(k, v, copies) for k, v in enumerate(values)]
    out = []
    for s, points in enumerate(per_scale):
        derivs = _combine(scheme, leaves, points, [sp[s] for sp in split])
        out.append(jax.tree_util.tree_unflatten(treedef, [d.reshape(leaf.shape) for d, leaf in zip(derivs, leaves)]))
    return out


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


CHUNK_MODES = ("auto", "budget")


def _chunk_mode(chunk_size):
    """The estimators' `chunk_size` option: None or "auto" (measure the layout, the default), "budget" (the
    memory-budget default, nothing measured) or an integer >= 1 (that width for every leaf, nothing measured)."""
    if chunk_size is None:
        return "auto"
    if isinstance(chunk_size, str):
        if chunk_size not in CHUNK_MODES:  # a string that is not a mode: the wrong type (e.g. "8")
            raise TypeError(f"chunk_size must be an integer >= 1, 'auto' (measure the layout: the default, also "
                             f"None) or 'budget' (the memory-budget default, nothing measured); got {chunk_size!r}")
        return chunk_size
    return _validate.chunk_option(chunk_size)


def _abstract(tree):
    """Shapes and dtypes only (what the memory-budget default reads), so that it can be computed under a tracer."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _device_kind(mesh) -> str:
    device = jax.devices()[0] if mesh is None else _budget.mesh_device(mesh)
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def plan_key(cost, params, batch, scheme: str, chunk_size="auto", mesh=None) -> tuple:
    """The in-process cache key of a plan: the cost, the params' and batch's structure, shapes and dtypes, the
    scheme, the chunk_size mode and the devices (a different cost or shape plans again; eps does not matter)."""
    devices = None if mesh is None else tuple(d.id for d in mesh.devices.flat)
    return ("fd", scheme, chunk_size, _plan.callable_key(cost), _plan.shape_key(params), _plan.shape_key(batch),
            devices, _device_kind(mesh))


def _default_layout(cost, params, batch, scheme, mesh) -> Layout:
    plan = _direction_plan(cost, _abstract(params), _abstract(batch), scheme, None, mesh, None)
    return plan.layout


def _measure(cost, params, batch, scheme, method, mesh, default: Layout) -> KernelPlan:
    """`_plan.choose` on the FD kernel: each candidate timed on the first directions of the largest leaf."""
    lengths = _lengths(params, scheme)
    big = max(range(len(lengths)), key=lambda k: lengths[k])
    n_dev = 1 if mesh is None else mesh.size

    def part(layout, n):
        plan = DirectionPlan(lengths, layout, n_dev)
        limit, covered, _ = _chunked.prefix([lengths[big]], [plan.widths[big]], n, n_dev)
        limits = [0] * len(lengths)
        limits[big] = limit[0]

        def fn(params, batch):
            leaves, treedef = jax.tree_util.tree_flatten(params)
            points = _points(leaves, scheme, None, method)
            return _values(cost, leaves, treedef, batch, points, plan, mesh, limits)[big]

        return sharding.jit_replicated(fn, mesh), (params, batch), covered, plan.total

    def objective():
        t0 = time.perf_counter()
        compiled = jax.jit(cost).lower(params, batch).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(params, batch))
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(params, batch))
            best = min(best, time.perf_counter() - t0)
        return compile_s, best

    return _plan.choose(default, lengths, part, objective, sum(lengths))


def plan_for(cost, params, batch, *, scheme: str = "central", chunk_size=None, mesh=None,
             method: str | None = None) -> KernelPlan:
    """The layout the FD kernel runs with for these arguments, and how it was chosen (a `_plan.KernelPlan`).

    `chunk_size`: None or "auto" (the default): measured on the first call for a new key (`plan_key`: cost,
    shapes, dtypes, scheme, devices) and cached in the process, and on disk under `set_plan_cache(path)`; an
    integer: that width for every leaf; "budget": the memory-budget default. Under a tracer (inside jax.jit,
    lax.scan, ...) nothing can be timed: the plan cached for the key, else the budget default (source "traced").

        >>> plan = finite_diff.plan_for(cost, params, batch, scheme="forward")
        >>> plan.widths, plan.layout.carry, plan.source, plan.planning_s    # e.g. (80, 10, 30, 10), True, ...
        >>> [(c.name, c.predicted_s) for c in plan.candidates]                # each candidate's prediction
        >>> fd_gradient(cost, params, batch, scheme="forward", layout=plan.layout)   # run it
    """
    method = method or f"fd-{scheme}"
    _checks.choice(scheme, SCHEMES, f"scheme of {method!r}")
    mode = _chunk_mode(chunk_size)
    key = plan_key(cost, params, batch, scheme, mode, mesh)
    hit = _plan.cached(key)
    if hit is not None:
        return hit
    traced = _plan.is_traced(params, batch)
    if isinstance(mode, int):
        layout = Layout(tuple(min(mode, m) for m in _lengths(params, scheme)), True)
        plan = KernelPlan(layout, "fixed", layout, note=f"chunk_size={mode} fixed by the caller")
    else:
        default = _default_layout(cost, params, batch, scheme, mesh)
        if mode == "budget":
            plan = KernelPlan(default, "budget", default, note="chunk_size='budget': the memory-budget default")
        elif traced:
            return KernelPlan(default, "traced", default, note="called under a tracer (jax.jit, lax.scan, ...): "
                              "nothing to time and no plan of this key yet, so the memory-budget default")
        else:
            plan = _auto_plan(cost, params, batch, scheme, method, mesh, default)
    _plan.store(key, plan, keep=cost)
    return plan


def _auto_plan(cost, params, batch, scheme, method, mesh, default: Layout) -> KernelPlan:
    """A measured plan, read from the disk cache when one is set and holds this program's."""
    _prepare(cost, params, batch, scheme, method)  # the checks, before any work
    fp = None
    if _plan.cache_dir() is not None:
        kind = _device_kind(mesh)
        lowered = jax.jit(functools.partial(fd_gradient, cost, scheme=scheme, mesh=mesh, method=method,
                                            layout=default)).lower(params, batch)
        fp = _plan.fingerprint(lowered.as_text(), kind)
        layout = _plan.load(fp, len(default.widths))
        if layout is not None:
            return KernelPlan(layout, "disk", default, fingerprint=fp,
                              note=f"read from {_plan.disk_path(fp)}")
    plan = dataclasses.replace(_measure(cost, params, batch, scheme, method, mesh, default), fingerprint=fp)
    if fp is not None:
        _plan.save(fp, plan, _device_kind(mesh))
    return plan


def set_plan_cache(path) -> None:
    """Keep the FD kernel's measured plans on disk in `path` too (None: in the process only, the default); a
    plan on disk is found by the lowered program's fingerprint and the device kind (`_plan.set_cache_dir`)."""
    _plan.set_cache_dir(path)


def clear_plans() -> None:
    """Forget the plans cached in this process (e.g. after changing `_budget.MEMORY_BUDGET`)."""
    _plan.clear()


def _kernel_builder(scheme: str):
    method = f"fd-{scheme}"

    def build(cost, eps=None, chunk_size=None, devices=None, mesh=None) -> Estimator:
        _checks.choice(scheme, SCHEMES, f"scheme of {method!r}")
        eps, mode = _validate.eps_option(eps), _chunk_mode(chunk_size)
        _check_analytic(cost, scheme, method)
        mesh = sharding.resolve_mesh(devices, mesh)
        options = dict(scheme=scheme, eps=eps, mesh=mesh, method=method)
        programs = {}

        def plan(params, batch) -> KernelPlan:
            return plan_for(cost, params, batch, scheme=scheme, chunk_size=mode, mesh=mesh, method=method)

        def program(layout: Layout):
            if layout not in programs:  # one jitted program per layout (a layout is static)
                programs[layout] = sharding.jit_replicated(
                    functools.partial(fd_gradient, cost, layout=layout, **options), mesh)
            return programs[layout]

        def fn(params, batch, key):
            return program(plan(params, batch).layout)(params, batch)

        def subset(params, batch, n_directions):
            sub = fd_subset(cost, params, batch, n_directions, layout=plan(params, batch).layout, **options)
            return sub._replace(fn=sharding.jit_replicated(sub.fn, mesh))

        return Estimator(method, fn, functools.partial(n_directions, scheme), subset=subset, plan=plan,
                         options={"eps": eps, "chunk_size": mode, "n_devices": 1 if mesh is None else mesh.size})

    build.__doc__ = (f"The FD kernel, {scheme} scheme; options eps, chunk_size (None/'auto': measured layout, "
                     f"'budget', or an int), devices, mesh (module docstring).")
    return build


register("fd-forward", kind="fd", subset=True, summary="forward differences, chunked vmap over directions (P+1 costs, O(h))",
         cost_formula="P + 1", evaluations=count_per_direction("forward"), error_order="O(h), h ~ sqrt(eps_m)",
         label="FD kernel", scheme="forward", affordable_at_million=True)(
    _kernel_builder("forward"))
register("fd-central", kind="fd", subset=True, summary="central differences, chunked vmap over directions (2P costs, O(h^2))",
         cost_formula="2P", evaluations=count_per_direction("central"), error_order="O(h^2), h ~ eps_m^(1/3)",
         scheme="central")(
    _kernel_builder("central"))
register("fd-complex", kind="fd", subset=True,
         summary="complex step Im C(v+ih e_i)/h, chunked vmap (P costs, exact to rounding; analytic costs only)",
         cost_formula="P (complex arithmetic)", evaluations=count_per_direction("complex"),
         error_order="O(h^2), h = eps_m^2: exact to rounding", scheme="complex")(
    _kernel_builder("complex"))


@register("fd-loop", kind="fd", jittable=False, subset=True,
          summary="naive baseline: one jitted cost call per direction from a Python loop",
          cost_formula="P + 1, one jitted call each", evaluations=count_per_direction(), error_order="as fd-forward",
          label="naive", affordable_at_million=True)
def fd_loop(cost, scheme: str = "forward", eps: float | None = None) -> Estimator:
    """The naive FD baseline: the kernel's directions and arithmetic, one jitted call per direction.

    The kernel's points (`_points`) and combination (`_combine`), jitted; in between, for each leaf k, one jitted
    program `(leaves, batch, idx, t, j) -> cost(params with leaf_k.ravel()[idx[j]] = t[j], batch)` (one leaf
    copied, one entry set; compiled once per parameter structure and leaf) dispatched from Python with an integer
    j, P (+1) times, each value fetched from the device: nothing is slowed on purpose. Its direction plan is the
    kernel's with width 1 (`DirectionPlan`), so its subset is `_plan.subset`'s. The checks run once per parameter
    structure. Not jittable (it is driven from Python).

    Args:
      scheme: "forward" (default, the lecture's), "central" or "complex"; eps as for the kernel.
    """
    method = "fd-loop"
    eps, _ = _check_options(scheme, eps, None, method)
    _check_analytic(cost, scheme, method)
    checked = set()
    points = jax.jit(lambda leaves: _points(leaves, scheme, eps, method))
    combine = jax.jit(lambda leaves, pts, vals: _combine(scheme, leaves, pts, vals))

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def one(treedef, k, leaves, batch, idx, t, j):
        """The cost at point j of leaf k's points: one leaf copied, one entry set (idx -1: the base point)."""
        leaf = leaves[k]
        flat = jnp.ravel(leaf).astype(jnp.result_type(leaf.dtype, t.dtype))
        i = jnp.maximum(idx[j], 0)
        new = jnp.where(idx[j] >= 0, t[j], flat[i])
        return cost(_leaf_stack.replace_leaf(leaves, treedef, k, flat.at[i].set(new).reshape(leaf.shape)), batch)

    def plan(params) -> DirectionPlan:
        lengths = _lengths(params, scheme)
        return DirectionPlan(lengths, Layout((1,) * len(lengths)))

    def values(params, batch, limits=None):
        """Per leaf, the cost at its first `limits[k]` points (every point: None), one call each, each value
        fetched from the device (what a Python loop pays per direction, so the subset pays it too)."""
        _validate.check_params(params, method)
        if _plan.shape_key(params) not in checked:
            _prepare(cost, params, batch, scheme, method)
            checked.add(_plan.shape_key(params))
        leaves, treedef = jax.tree_util.tree_flatten(params)
        pts = points(leaves)

        def evaluate(k, m, width, carry):
            vals = [one(treedef, k, leaves, batch, pts[k].idx, pts[k].t, j) for j in range(m)]
            return jnp.asarray(np.asarray(jax.device_get(vals)))

        return plan(params).run(evaluate, limits), pts

    def fn(params, batch, key):
        vals, pts = values(params, batch)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        derivs = combine(leaves, pts, vals)
        return jax.tree_util.tree_unflatten(treedef, [d.reshape(leaf.shape) for d, leaf in zip(derivs, leaves)])

    def subset(params, batch, n_directions):
        return _plan.subset(plan(params), lambda p, b, limits: values(p, b, limits)[0], n_directions,
                            jittable=False)

    return Estimator(method, fn, functools.partial(n_directions, scheme), jittable=False, subset=subset,
                     options={"scheme": scheme, "eps": eps})
