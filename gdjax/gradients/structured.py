"""Gradient estimators that read the network's structure: layer-aware finite differences, node perturbation.

Both need a cost built by `gdjax.make_cost`; any other cost raises TypeError. They read the network through
the "affine layer + elementwise activation" protocol of `gdjax.models` (`cost.net.states`, the activation and
loss objects' difference forms, `layer_grads`), never an activation's or a loss' name. Params are real
(float32/float64) MLP params, a tuple of `Layer(w, b)`.

"fd-layerwise" / "fd-layerwise-central" give the numbers of the FD kernel ("fd-forward" / "fd-central", same
eps, same steps h = eps * max(1, |v|) taken as representable): one perturbation per parameter,
`(C(v + h e) - C(v)) / h` or `(C(v + h e) - C(v - h e)) / 2h`. But a perturbation of `w[j, i]` in layer l only
moves unit i's pre-activation, `z_i -> z_i + h * a_j` over the batch (a bias `b_i` moves it by h), so from the
unperturbed activations (computed once) only the network after that unit is recomputed: the next layer as a
rank-1 update of its pre-activation, `dz_{l+1} = (sigma(z_i + h a_j) - sigma(z_i)) * W_{l+1}[i, :]`, then the
remaining layers. One step of a `lax.map` handles one unit and a block of its inputs as a dense
`(block, n_next, N)` program (examples on the minor axis), all inside one jitted program per
(cost, scheme, chunk_size); eps is a traced argument, so another eps reuses the compilation.

Precision: the change is carried in *difference form* all the way (`gdjax.gradients._difference`), never as
the difference of two large numbers. Each layer turns the change of its pre-activation into the change of its
activation with its activation object's exact identity (sigmoid: `s(z+d) - s(z) = s(z) s(-z) expm1(d) / (1 +
s(z) expm1(d))`; tanh: `tanh(d) (1 - tanh(z)^2) / (1 + tanh(z) tanh(d))`; relu: `max(d, -z)` for z >= 0,
`max(z + d, 0)` else), and the per-example loss change comes from the loss object's change of the logits
(binary cross-entropy: `softplus(z+d) - softplus(z) = log1p(s(z) expm1(d))`; categorical: `logsumexp(z+d) -
logsumexp(z) = log1p(sum_k softmax(z)_k expm1(d_k))`). The per-example changes are then averaged. So `C' - C` keeps its relative precision in float32,
where the FD kernel's `C(p + eps e) - C(p)` loses `log10(C / (C' - C))` digits; in float64 both agree to rounding.

"node-perturbation" perturbs each unit's pre-activation instead of each weight: shifting `z_i` by eps for
every example is shifting the bias `b_i` by eps, so one evaluation of the per-example costs per unit (two for the
central scheme) gives `dC_x/dz_i` for all examples x at once, each change in the same difference form (the layers
after the unit only; a plain `C_x' - C_x` in float32 erred by 1% of the gradient on the lecture net and stalled
its training), and the weight gradient follows as the batch average `dC/dw[j, i] = mean_x a_j(x) dC_x/dz_i(x)`
(`dC/db_i = mean_x dC_x/dz_i`). About `units + 1` evaluations instead of `P + 1`. The units of a layer are
`vmap`-ed (or `lax.map`-ed in chunks of `chunk_size`) over the unperturbed forward pass, computed once.

    >>> cost = make_cost(MLP((784, 30, 10)), "quadratic")
    >>> g = gradient(cost, "fd-layerwise")(params, batch)            # == gradient(cost, "fd-forward")
    >>> g = gradient(cost, "node-perturbation", scheme="central")(params, batch)

The L2 term of the cost (`l2/2 ||w||^2`, known in closed form) is added exactly: its difference quotient
`l2 (w + (h+ + h-)/2)` for the layer-aware FD (`l2 (w + h/2)` forward, ~`l2 w` central), `l2 w` for node
perturbation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from gdjax import _checks, sharding
from gdjax.costs import Cost, require_mlp_cost
from gdjax.data import check_batch
from gdjax.gradients import _chunked, _plan, _validate
from gdjax.gradients._difference import loss_changes, prepared, rows
from gdjax.gradients._plan import DirectionPlan, Layout
from gdjax.gradients._steps import fd_steps, step_factor
from gdjax.gradients.registry import Estimator, Subset, count_per_direction, count_per_unit, register
from gdjax.models.mlp import Layer, layer_grads

SCHEMES = ("forward", "central")
# Elements (chunk * N * widest layer after the perturbed one) one chunk of directions may hold.
_CHUNK_ELEMENTS = 2**21


def _params_dtype(cost: Cost, params, method: str) -> jnp.dtype:
    """The params' dtype, after checking they are the cost's network's layers of real floating arrays."""
    cost.net.check_params(params)
    _validate.check_params(params, method)
    return params[0].w.dtype


def _default_chunk(n_examples: int, width: int, n_cols: int) -> int:
    return max(1, min(n_cols, _CHUNK_ELEMENTS // max(1, n_examples * width)))


def _layer_blocks(params, k: int, n_examples: int, chunk_size) -> tuple[int, int, int]:
    """(block, n_blocks, n_pad) of layer k's loop: `block` of its n_in + 1 input columns per loop step."""
    n_cols = params[k].w.shape[0] + 1
    widths = [params[m].w.shape[1] for m in range(k + 1, len(params))] or [params[k].w.shape[1]]
    block = min(n_cols, chunk_size or _default_chunk(n_examples, max(widths), n_cols))
    block = -(-n_cols // -(-n_cols // block))  # the same number of blocks, as even as possible
    n_blocks = -(-n_cols // block)
    return block, n_blocks, n_blocks * block - n_cols


def _layerwise_plan(params, n_examples: int, chunk_size, n_sets: int, mesh) -> DirectionPlan:
    """Layer-aware FD's `DirectionPlan`: group k is layer k, its directions `n_out * n_blocks * block * n_sets`
    (every (unit, block of inputs) loop step evaluates `block` directions of each of the `n_sets` step sets,
    padding columns included), `block * n_sets` of them per loop step."""
    blocks = [_layer_blocks(params, k, n_examples, chunk_size) for k in range(len(params))]
    per_step = tuple(block * n_sets for block, _, _ in blocks)
    lengths = tuple(layer.w.shape[1] * nb * d for layer, (_, nb, _), d in zip(params, blocks, per_step))
    return DirectionPlan(lengths, Layout(per_step), 1 if mesh is None else mesh.size)


def _layer_values(cost: Cost, params, batch, steps, chunk_size, mesh, limits=None) -> list:
    """Layer-aware FD's values (`_layerwise_plan(...).run`): per layer, the mean cost changes of its first
    `limits[k]` directions (every one: None) as `(loop steps, len(steps), block)` (None for a layer not run);
    loop step s is unit `s // n_blocks`, block of inputs `s % n_blocks` (`layerwise_differences`)."""
    dtype = params[0].w.dtype
    prep = prepared(cost, params, batch)
    inputs = prep[0]
    n = batch.x.shape[0]
    plan = _layerwise_plan(params, n, chunk_size, len(steps), mesh)

    def evaluate(k, m, width, carry):
        n_out = params[k].w.shape[1]
        block, n_blocks, n_pad = _layer_blocks(params, k, n, chunk_size)
        # (n_cols + pad, N): a_j over the batch, the bias' constant 1, then zero rows (zero change) as padding
        cols = jnp.concatenate([inputs[k].T, jnp.ones((1, n), dtype), jnp.zeros((n_pad, n), dtype)])
        hs = jnp.stack([jnp.pad(s[k].astype(dtype), ((0, n_pad), (0, 0))).T for s in steps])  # (S, n_out, cols)

        def step(ij):
            i, jb = ij
            c = lax.dynamic_slice_in_dim(cols, jb * block, block)  # (block, N)
            hb = lax.dynamic_slice_in_dim(hs[:, i], jb * block, block, axis=1)  # (S, block)
            # h: (block,) steps of one set (+ or -); the change of z_i per direction and example is h a_j
            return jax.vmap(lambda h: jnp.mean(loss_changes(cost, params, prep, k, i, h[:, None] * c), axis=-1))(hb)

        units, jblocks = jnp.meshgrid(jnp.arange(n_out), jnp.arange(n_blocks), indexing="ij")
        ij = (units.ravel()[:m // width], jblocks.ravel()[:m // width])
        if mesh is None:
            return lax.map(step, ij)
        return _chunked.map_directions(lambda _, chunk: jax.vmap(step)(chunk), None, ij, 1, mesh)

    return plan.run(evaluate, limits)


def layerwise_differences(cost: Cost, params, batch, steps, chunk_size=None, mesh=None):
    """Cost changes `C(p + h e_d) - C(p)` for every parameter direction d and step h, by suffix recomputation.

    One step of the loop handles one unit i of one layer and a block of `chunk_size` of its inputs j (the bias
    is input j = n_in, an input of constant 1): the perturbed pre-activation changes by `h[j, i] a_j` over the
    batch, a dense `(chunk, N)` array, so the step is one fused elementwise-and-reduce program over
    `(chunk, n_next, N)` (examples on the minor axis, no gathers). Work per direction: the layers after the
    perturbed one, on differences (see the module docstring). The program is described by `_layerwise_plan`
    (its prefix, for timing, is `layerwise_subset`).

    Args:
      cost: a `Cost` from `make_cost` (its L2 term is not included here).
      params: MLP params, real dtype; batch: `Batch(x: (N, n_in), y: (N, n_out))`.
      steps: a list (one entry per step set, e.g. the + and - steps of central differences) of per-layer steps
        `(n_in + 1, n_out)`: rows 0..n_in-1 for `w[j, i]`, row n_in for `b[i]` (see `fd_steps`).
      chunk_size: directions per loop step, at most n_in + 1 (None: about 2**21 elements of work per step).
      mesh: a Mesh over which to split the loop steps (`gdjax.sharding.resolve_mesh`), or None for one device.
    Returns:
      per layer an array `(len(steps), n_in + 1, n_out)` of the changes of the mean cost (L2 term excluded).
    Example:
      >>> h = [[jnp.full((l.w.shape[0] + 1, l.w.shape[1]), 1e-3) for l in params]]
      >>> d = layerwise_differences(cost, params, batch, h)   # d[l][0, j, i] ~ 1e-3 * dC/dw_l[j, i]
    """
    out = []
    for k, d in enumerate(_layer_values(cost, params, batch, steps, chunk_size, mesh)):
        n_in, n_out = params[k].w.shape
        block, n_blocks, _ = _layer_blocks(params, k, batch.x.shape[0], chunk_size)
        # d: (n_out * n_blocks, S, block)
        d = d.reshape(n_out, n_blocks, len(steps), block).transpose(2, 1, 3, 0).reshape(len(steps), -1, n_out)
        out.append(d[:, :n_in + 1])
    return out


def _layer_steps(params, h, scheme: str):
    """The FD kernel's steps (`_steps.fd_steps`) per layer for [w; b] stacked as (n_in + 1, n_out): the per-layer
    (steps, den) and, per step set (+ / -), the list of per-layer steps."""
    per_layer = [fd_steps(jnp.concatenate([layer.w, layer.b[None]]), h, scheme) for layer in params]
    return per_layer, [[st[0][s] for st in per_layer] for s in range(1 if scheme == "forward" else 2)]


def layerwise_subset(cost: Cost, params, batch, n: int, *, scheme: str = "forward", eps=None, chunk_size=None,
                     mesh=None, method: str = "fd-layerwise") -> Subset:
    """Layer-aware FD's own program on its first `n` directions (layer after layer, whole loop steps, at least two
    steps of a layer that has two: `_layerwise_plan`, `_plan.subset`), for timing part of it; `total` counts the
    padded directions of the whole."""
    n_sets = 1 if scheme == "forward" else 2
    plan = _layerwise_plan(params, batch.x.shape[0], chunk_size, n_sets, mesh)
    h = step_factor(scheme, eps, _params_dtype(cost, params, method), method)

    def values(params, batch, limits):
        steps = _layer_steps(params, jnp.asarray(h, params[0].w.dtype), scheme)[1]
        return _layer_values(cost, params, batch, steps, chunk_size, mesh, limits)

    return _plan.subset(plan, values, n, wrap=lambda fn: sharding.jit_replicated(fn, mesh))


@functools.lru_cache(maxsize=32)
def _layerwise_kernel(cost: Cost, scheme: str, chunk_size, mesh):
    """The jitted program `(params, batch, eps) -> grads`; eps is traced, so a new eps reuses the compilation."""

    def fn(params, batch, h):
        per_layer, steps = _layer_steps(params, h, scheme)
        diffs = layerwise_differences(cost, params, batch, steps, chunk_size, mesh)
        grads = []
        for layer, d, (st, den) in zip(params, diffs, per_layer):
            g = (d[0] if scheme == "forward" else d[0] - d[1]) / den
            gw, gb = g[:-1], g[-1]
            if cost.l2:  # the difference quotient of l2/2 w^2, exactly: l2 (w + (h+ + h-)/2)
                gw = gw + cost.l2 * (layer.w + 0.5 * sum(s[:-1] for s in st))
            grads.append(Layer(gw, gb))
        return tuple(grads)

    return sharding.jit_replicated(fn, mesh)


def _layerwise(cost, scheme: str, eps, chunk_size, method: str, devices=None, mesh=None) -> Estimator:
    cost = require_mlp_cost(cost, method)
    eps = _validate.eps_option(eps)
    chunk_size = _validate.chunk_option(chunk_size)
    mesh = sharding.resolve_mesh(devices, mesh)
    kernel = _layerwise_kernel(cost, scheme, chunk_size, mesh)

    def fn(params, batch, key=None):
        dtype = _params_dtype(cost, params, method)
        check_batch(batch, net=cost.net)
        return kernel(params, batch, jnp.asarray(step_factor(scheme, eps, dtype, method), dtype))

    def subset(params, batch, n_directions):
        check_batch(batch, net=cost.net)
        return layerwise_subset(cost, params, batch, n_directions, scheme=scheme, eps=eps, chunk_size=chunk_size,
                                mesh=mesh, method=method)

    evals = (lambda p: p + 1.0) if scheme == "forward" else (lambda p: 2.0 * p)
    return Estimator(method, fn, evals, subset=subset, options={"eps": eps, "chunk_size": chunk_size,
                                                               "scheme": scheme,
                                                               "n_devices": 1 if mesh is None else mesh.size})


@register("fd-layerwise", kind="fd", structured=True, subset=True,
          summary="forward FD, one perturbation per parameter, recomputing only the network after the perturbed unit",
          cost_formula="P + 1 suffix evaluations", evaluations=count_per_direction("forward"),
          error_order="O(h), no cancellation", scheme="forward", affordable_at_million=True)
def fd_layerwise(cost, *, eps=None, chunk_size=None, devices=None, mesh=None) -> Estimator:
    """Forward differences `(C(p + eps e) - C(p)) / eps`, equal to "fd-forward", by suffix recomputation.

    Options: eps (None: sqrt(eps_mach) of the params' dtype), chunk_size (directions per vmapped chunk),
    devices / mesh (the loop steps split across them, as the FD kernel's directions; default every device).
    Evaluations: P + 1 (each a suffix of the network, far fewer FLOPs than a forward pass).
    """
    return _layerwise(cost, "forward", eps, chunk_size, "fd-layerwise", devices, mesh)


@register("fd-layerwise-central", kind="fd", structured=True, subset=True,
          summary="central FD, one perturbation pair per parameter, recomputing only the suffix after the unit",
          cost_formula="2P suffix evaluations", evaluations=count_per_direction("central"),
          error_order="O(h^2), no cancellation", scheme="central")
def fd_layerwise_central(cost, *, eps=None, chunk_size=None, devices=None, mesh=None) -> Estimator:
    """Central differences `(C(p + eps e) - C(p - eps e)) / 2 eps`, equal to "fd-central", by suffix recomputation.

    Options: eps (None: eps_mach**(1/3) of the params' dtype), chunk_size, devices / mesh. Evaluations: 2P.
    """
    return _layerwise(cost, "central", eps, chunk_size, "fd-layerwise-central", devices, mesh)


# --- node perturbation --------------------------------------------------------------------------------------

def _node_plan(params, chunk_size) -> DirectionPlan:
    """Node perturbation's `DirectionPlan`: group k is layer k, one direction per unit, `chunk_size` units per
    step of `lax.map` (its remainder unpadded), every unit at once without `chunk_size`."""
    sizes = tuple(layer.b.shape[0] for layer in params)
    return DirectionPlan(sizes, Layout(tuple(min(chunk_size or s, s) for s in sizes)), pad=False)


def _node_values(cost: Cost, params, batch, eps, scheme: str, chunk_size, limits=None) -> list:
    """Node perturbation's values (`_node_plan(...).run`): per layer, `(N, m)` per-example derivatives of its
    first `m = limits[k]` units (every unit: None; None for a layer not run)."""
    prep = prepared(cost, params, batch)
    ones = jnp.ones((1, batch.x.shape[0]), params[0].w.dtype)

    def evaluate(k, m, width, carry):
        steps, den = fd_steps(params[k].b, eps, scheme)

        def per_units(i):  # i: units (None: all), one row each -> (units, N)
            d = [loss_changes(cost, params, prep, k, i, rows(s, i)[:, None] * ones) for s in steps]
            return (d[0] if scheme == "forward" else d[0] - d[1]) / rows(den, i)[:, None]

        if chunk_size is None:  # every unit at once, as dense (units, N) arrays: no gathers
            d = per_units(None if m == params[k].b.shape[0] else slice(0, m))
        else:
            d = lax.map(lambda i: per_units(i)[0], jnp.arange(m), batch_size=width)
        return d.T  # (N, m)

    return _node_plan(params, chunk_size).run(evaluate, limits)


def node_deltas(cost: Cost, params, batch, eps: float, scheme: str = "forward", chunk_size=None):
    """Per-example derivatives `dC_x/dz_i` of every unit, by perturbing each unit's pre-activation.

    Shifting `z_i` by h for every example is shifting the bias `b_i` by h: the step is the FD kernel's for `b_i`,
    `h_i = eps * max(1, |b_i|)`, taken as representable (`fd_steps`). Each example's loss change is computed in
    difference form from the unperturbed forward pass (`_difference.loss_changes`: only the layers after the unit, on
    differences), so in float32 it keeps its relative precision where `C_x(b + h e_i) - C_x(b)` would lose
    `log10(C_x / (h dC_x/dz_i))` digits (about 1% of the gradient on the lecture net at the default step).
    The program is described by `_node_plan` (its prefix, for timing, is `node_subset`).

    Args:
      chunk_size: units per step of `lax.map` (None: every unit of a layer at once).
    Returns:
      a list over layers of `(N, n_out)` arrays: forward `(C_x(b + h_i e_i) - C_x) / h_i`, central
      `(C_x(b + h_i e_i) - C_x(b - h_i e_i)) / 2 h_i`.
    Example:
      >>> deltas = node_deltas(cost, params, batch, 1e-3)     # deltas[l][x, i] ~ dC_x / dz_{l,i}
    """
    return _node_values(cost, params, batch, eps, scheme, chunk_size)


def node_subset(cost: Cost, params, batch, n: int, *, scheme: str = "forward", eps=None, chunk_size=None) -> Subset:
    """Node perturbation's own program on its first `n` units (layer after layer, whole chunks of units:
    `_node_plan`, `_plan.subset`), for timing part of it; `covered` and `total` count units (a unit is one
    evaluation, two for central)."""
    h = step_factor(scheme, eps, _params_dtype(cost, params, "node-perturbation"), "node-perturbation")

    def values(params, batch, limits):
        return _node_values(cost, params, batch, jnp.asarray(h, params[0].w.dtype), scheme, chunk_size, limits)

    return _plan.subset(_node_plan(params, chunk_size), values, n, wrap=jax.jit)


@functools.lru_cache(maxsize=32)
def _node_kernel(cost: Cost, scheme: str, chunk_size):
    """The jitted program `(params, batch, eps) -> grads` of node perturbation (eps traced)."""

    @jax.jit
    def fn(params, batch, h):
        inputs = [s.a_in for s in cost.net.states(params, batch.x)]
        return grads_from_deltas(cost, params, inputs, node_deltas(cost, params, batch, h, scheme, chunk_size))

    return fn


def grads_from_deltas(cost: Cost, params, inputs, deltas):
    """The gradient from per-example errors of every layer: `models.mlp.layer_grads` with the cost's L2 term."""
    return layer_grads(params, inputs, deltas, cost.l2)


@register("node-perturbation", kind="fd", structured=True, subset=True,
          summary="perturb each unit's pre-activation, read every per-example cost change; weights by averaging",
          cost_formula="units + 1", evaluations=count_per_unit(), error_order="O(h), no cancellation",
          affordable_at_million=True)
def node_perturbation(cost, *, eps=None, scheme="forward", chunk_size=None) -> Estimator:
    """Node perturbation: `dC/dw[j, i] = mean_x a_j(x) dC_x/dz_i(x)`, `dC_x/dz_i` by finite differences per unit.

    Options: eps (the step factor, as for the FD kernel; None: its default for `scheme` and the params' dtype),
    scheme ("forward": units + 1 evaluations of the per-example costs, "central": 2 * units), chunk_size (units
    per vmapped chunk; None: all units of a layer at once). The bias gradient is exactly the FD kernel's (the
    same perturbation, in the same difference form: to rounding, also in float32); the weight gradient is in the
    same accuracy class but not equal to FD's: FD moves z_i by h * a_j, node perturbation by h and scales by a_j
    afterwards. The L2 term's gradient l2 * w is added exactly. `est.subset(params, batch, n)` times the program
    on its first n units (`node_subset`).
    """
    cost = require_mlp_cost(cost, "node-perturbation")
    eps = _validate.eps_option(eps)
    scheme = _checks.choice(scheme, SCHEMES, "scheme")
    chunk_size = _validate.chunk_option(chunk_size)

    kernel = _node_kernel(cost, scheme, chunk_size)

    def fn(params, batch, key=None):
        dtype = _params_dtype(cost, params, "node-perturbation")
        check_batch(batch, net=cost.net)
        return kernel(params, batch, jnp.asarray(step_factor(scheme, eps, dtype, "node-perturbation"), dtype))

    def subset(params, batch, n_directions):
        check_batch(batch, net=cost.net)
        return node_subset(cost, params, batch, n_directions, scheme=scheme, eps=eps, chunk_size=chunk_size)

    units = sum(cost.net.sizes[1:])
    evals = (lambda p: units + 1.0) if scheme == "forward" else (lambda p: 2.0 * units)
    return Estimator("node-perturbation", fn, evals, subset=subset,
                     options={"eps": eps, "scheme": scheme, "chunk_size": chunk_size, "units": units})
