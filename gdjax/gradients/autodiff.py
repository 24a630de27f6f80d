"""Automatic differentiation: "reverse" (`jax.grad`, the baseline) and "forward" (jvp over basis directions).

    >>> g = gradient(cost, "reverse")(params, batch)                 # jax.grad(cost)(params, batch)
    >>> g = gradient(cost, "forward", chunk_size=64)(params, batch)  # same values, P tangent passes

Costs in forward-pass equivalents F (one cost evaluation over the batch), for a dense network whose time goes
into its matmuls:
  reverse: 3 F. The forward pass (1 F) plus the backward pass, which per layer does two matmuls of the
           forward's size (delta @ W^T to propagate the error, a^T @ delta for the weight gradient): 2 F.
           Griewank's bound for reverse mode is at most 5 F; 2-3 F is what dense networks cost.
  forward: 1.5 P + 1 F. One primal pass, then per basis direction e_i a tangent pass, which costs between
           1 F (the first layer: the input carries no tangent, so only x @ dW) and 2 F (deeper layers:
           da @ W + a @ dW); 1.5 is the middle of that range. The primal is recomputed once per chunk of
           directions (vmap over tangents only keeps it unbatched): P / chunk_size more, neglected. (Taken
           leaf by leaf, the layers before the perturbed leaf carry no tangent, so deep leaves cost less.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.gradients import _directions
from gdjax.gradients.registry import Estimator, register


@register("reverse", kind="exact", summary="jax.grad (reverse-mode autodiff, backpropagation by XLA)")
def reverse(cost, **options) -> Estimator:
    """`jax.grad(cost)`; about 3 forward-pass equivalents whatever the parameter count (module docstring)."""
    if options:
        raise TypeError(f"method 'reverse' takes no options, got {sorted(options)}")
    grad = jax.grad(cost)

    def fn(params, batch, key):
        _directions.check_params(params, "reverse")
        _directions.check_scalar_cost(cost, params, batch, "reverse")
        return grad(params, batch)

    return Estimator("reverse", fn, lambda n: 3.0)


def forward_gradient_exact(cost, params, batch, *, chunk_size: int | None = None, mesh=None):
    """The gradient by forward mode, un-jitted: `jax.jvp` along every basis vector e_i, in chunks.

    Leaf by leaf, like the FD kernel: the tangents of a chunk are one-hot copies of one leaf (a buffer of zeros
    edited in place from chunk to chunk, `_directions.perturb_stack`), pushed through `jax.jvp` of the cost as a function of that leaf alone
    under vmap, so the other leaves carry no tangent and the primal is computed once per chunk.

    Args:
      cost: `cost(params, batch) -> scalar`.
      params: pytree of real floating arrays, P scalars.
      chunk_size: basis directions per chunk (per device); None for the FD kernel's memory-budget default
        with the activations counted twice (primal and tangent).
      mesh: a Mesh to split the directions over (`_directions.resolve_mesh`), or None.
    Returns:
      pytree like `params`.
    """
    _directions.check_params(params, "forward")
    _directions.check_scalar_cost(cost, params, batch, "forward")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    n_dev = 1 if mesh is None else mesh.size
    if chunk_size is None:
        act = 2 * _directions.intermediate_bytes(cost, params, batch)
        platform = None if mesh is None else mesh.devices.flat[0].platform
        budget, cache = _directions.memory_budget(platform), _directions.cache_budget(platform)
    grads = []
    for k, leaf in enumerate(leaves):
        axis = _directions.leaf_axis(leaf.ndim)
        chunk = chunk_size or _directions.default_chunk_size(leaf.size, leaf.dtype.itemsize, act, leaf.size, n_dev,
                                                             budget, cache)
        chunk = min(chunk, leaf.size)  # as in the FD kernel

        def chunk_fn(operands, state, idx, k=k, axis=axis):
            lv, b = operands
            state = _directions.perturb_stack(jnp.zeros_like(lv[k]), state, idx, jnp.ones(idx.shape, lv[k].dtype), axis)
            f = lambda leaf: cost(_directions.replace_leaf(lv, treedef, k, leaf), b)  # noqa: E731
            return state, jax.vmap(lambda t: jax.jvp(f, (lv[k],), (t,))[1], in_axes=axis)(state.stack)

        def init(operands, k=k, axis=axis, chunk=chunk):
            return _directions.leaf_stack(jnp.zeros_like(operands[0][k]), chunk, axis)

        g = _directions.map_directions(chunk_fn, (leaves, batch), jnp.arange(leaf.size, dtype=jnp.int32), chunk, mesh,
                                       init=init)
        grads.append(g.reshape(leaf.shape).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, grads)


@register("forward", kind="exact", summary="forward-mode autodiff: jvp along each basis vector, chunked vmap")
def forward(cost, chunk_size=None, devices=None, mesh=None) -> Estimator:
    """Forward mode over the P basis directions (options chunk_size, devices, mesh as for the FD kernel).

    Like `jax.jacfwd`, but chunked: jacfwd pushes all P tangents at once and needs P copies of the activations.
    """
    if chunk_size is not None:
        chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    mesh = _directions.resolve_mesh(devices, mesh)

    def kernel(params, batch):
        return forward_gradient_exact(cost, params, batch, chunk_size=chunk_size, mesh=mesh)

    jitted = jax.jit(kernel) if mesh is None else jax.jit(kernel, out_shardings=_directions.replicated(mesh))
    return Estimator("forward", lambda params, batch, key: jitted(params, batch), lambda n: 1.5 * n + 1,
                     options={"chunk_size": chunk_size, "n_devices": 1 if mesh is None else mesh.size})
