"""Automatic differentiation: "reverse" (`jax.grad`, the baseline) and "forward" (jvp over basis directions).

    >>> g = gradient(cost, "reverse")(params, batch)                 # jax.grad(cost)(params, batch)
    >>> g = gradient(cost, "forward", chunk_size=64)(params, batch)  # same values, P tangent passes

Costs, in forward-pass equivalents F (one cost evaluation over the batch), for a dense network whose time goes
into its matmuls (`evaluations` returns None for both: they make no cost evaluations, and benchmarks measure
their cost as XLA's FLOPs of the gradient program over those of the cost, `gdjax.profiling`):
  reverse: about 3 F. The forward pass (1 F) plus the backward pass, which per layer does two matmuls of the
           forward's size (delta @ W^T to propagate the error, a^T @ delta for the weight gradient): 2 F.
           Griewank's bound for reverse mode is at most 5 F.
  forward: between P + 1 and 2P + 1 F. One primal pass, then per basis direction e_i a tangent pass, which
           costs between 1 F (the first layer: the input carries no tangent, so only x @ dW) and 2 F (deeper
           layers: da @ W + a @ dW). Taken leaf by leaf, the layers before the perturbed leaf carry no tangent.
           Its `subset` times its own program on its first directions, as for the FD kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax import sharding
from gdjax.gradients import _budget, _chunked, _leaf_stack, _plan, _validate
from gdjax.gradients._plan import DirectionPlan, Layout
from gdjax.gradients.registry import Estimator, Subset, no_count, register


@register("reverse", kind="exact", summary="jax.grad (reverse-mode autodiff, backpropagation by XLA)",
          cost_formula="about 2-3 F (`jax.grad`)", error_order="exact to rounding", label="`jax.grad`",
          affordable_at_million=True, reference=True)
def reverse(cost) -> Estimator:
    """`jax.grad(cost)`; about 3 forward-pass equivalents whatever the parameter count (module docstring)."""
    grad = jax.grad(cost)

    def fn(params, batch, key):
        _validate.check_params(params, "reverse")
        _validate.check_scalar_cost(cost, params, batch, "reverse")
        return grad(params, batch)

    return Estimator("reverse", fn, no_count)


def _forward_chunks(cost, params, batch, chunk_size, mesh) -> list[int]:
    """Basis directions per chunk of every leaf: `chunk_size`, or the FD kernel's budget default with the
    activations counted twice (primal and tangent); never more than the leaf's size."""
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
    return _budget.leaf_chunk_sizes(cost, params, batch, sizes, chunk_size, 1 if mesh is None else mesh.size,
                                    _budget.mesh_platform(mesh), activation_factor=2)


def _leaf_jvps(cost, leaves, treedef, batch, k: int, chunk: int, mesh, limit: int):
    """The directional derivatives along the first `limit` basis vectors of leaf k, chunk by chunk."""
    axis = _leaf_stack.leaf_axis(leaves[k].ndim)

    def chunk_fn(operands, state, idx):
        lv, b = operands
        state = _leaf_stack.perturb_stack(jnp.zeros_like(lv[k]), state, idx, jnp.ones(idx.shape, lv[k].dtype), axis)
        f = lambda leaf: cost(_leaf_stack.replace_leaf(lv, treedef, k, leaf), b)  # noqa: E731
        return state, jax.vmap(lambda t: jax.jvp(f, (lv[k],), (t,))[1], in_axes=axis)(state.stack)

    def init(operands):
        return _leaf_stack.leaf_stack(jnp.zeros_like(operands[0][k]), chunk, axis)

    return _chunked.map_directions(chunk_fn, (leaves, batch), jnp.arange(limit, dtype=jnp.int32), chunk, mesh,
                                      init=init)


def _forward_plan(cost, params, batch, chunk_size, mesh) -> DirectionPlan:
    """Forward mode's `DirectionPlan`: leaf k's basis directions, `_forward_chunks` of them per chunk."""
    sizes = tuple(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    return DirectionPlan(sizes, Layout(tuple(_forward_chunks(cost, params, batch, chunk_size, mesh))),
                         1 if mesh is None else mesh.size)


def _forward_values(cost, params, batch, plan: DirectionPlan, mesh, limits=None) -> list:
    """Forward mode's values (`plan.run`): per leaf, the directional derivatives along its first `limits[k]`
    basis vectors (every one: None) as `(m,)` (None for a leaf not run), after the checks."""
    _validate.check_params(params, "forward")
    _validate.check_scalar_cost(cost, params, batch, "forward")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return plan.run(lambda k, m, width, carry: _leaf_jvps(cost, leaves, treedef, batch, k, width, mesh, m), limits)


def forward_gradient_exact(cost, params, batch, *, chunk_size: int | None = None, mesh=None):
    """The gradient by forward mode, un-jitted: `jax.jvp` along every basis vector e_i, in chunks.

    Leaf by leaf, like the FD kernel: the tangents of a chunk are one-hot copies of one leaf (a buffer of zeros
    edited in place from chunk to chunk, `_leaf_stack.perturb_stack`), pushed through `jax.jvp` of the cost as a
    function of that leaf alone under vmap, so the other leaves carry no tangent and the primal is computed once
    per chunk. The program is described by `_forward_plan` (its prefix, for timing, is `forward_subset`).

    Args:
      cost: `cost(params, batch) -> scalar`.
      params: pytree of real floating arrays, P scalars.
      chunk_size: basis directions per chunk (per device); None for the FD kernel's memory-budget default
        with the activations counted twice (primal and tangent).
      mesh: a Mesh to split the directions over (`sharding.resolve_mesh`), or None.
    Returns:
      pytree like `params`.
    """
    values = _forward_values(cost, params, batch, _forward_plan(cost, params, batch, chunk_size, mesh), mesh)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return jax.tree_util.tree_unflatten(treedef, [v.reshape(leaf.shape).astype(leaf.dtype)
                                                  for v, leaf in zip(values, leaves)])


def forward_subset(cost, params, batch, n: int, *, chunk_size: int | None = None, mesh=None) -> Subset:
    """Forward mode's own program on its first `n` basis directions (leaf after leaf), whole chunks
    (`_forward_plan`, `_plan.subset`)."""
    plan = _forward_plan(cost, params, batch, chunk_size, mesh)
    return _plan.subset(plan, lambda p, b, limits: _forward_values(cost, p, b, plan, mesh, limits), n,
                        wrap=lambda fn: sharding.jit_replicated(fn, mesh))


@register("forward", kind="exact", subset=True,
          summary="forward-mode autodiff: jvp along each basis vector, chunked vmap",
          cost_formula="P tangent passes (chunked `jvp`)", error_order="exact to rounding", label="forward mode")
def forward(cost, chunk_size=None, devices=None, mesh=None) -> Estimator:
    """Forward mode over the P basis directions (options chunk_size, devices, mesh as for the FD kernel).

    Like `jax.jacfwd`, but chunked: jacfwd pushes all P tangents at once and needs P copies of the activations.
    """
    chunk_size = _validate.chunk_option(chunk_size)
    mesh = sharding.resolve_mesh(devices, mesh)

    def kernel(params, batch):
        return forward_gradient_exact(cost, params, batch, chunk_size=chunk_size, mesh=mesh)

    jitted = sharding.jit_replicated(kernel, mesh)

    def subset(params, batch, n_directions):
        return forward_subset(cost, params, batch, n_directions, chunk_size=chunk_size, mesh=mesh)

    return Estimator("forward", lambda params, batch, key: jitted(params, batch), no_count, subset=subset,
                     options={"chunk_size": chunk_size, "n_devices": 1 if mesh is None else mesh.size})
