"""Finite differences: the FD kernel ("fd-forward", "fd-central", "fd-complex") and the naive loop ("fd-loop").

The lecture's gradient: perturb each of the P parameters in turn and re-evaluate the cost,

    forward:  dC/dv_i ~ (C(v + h_i e_i) - C(v)) / h_i                  P + 1 evaluations, error O(h)
    central:  dC/dv_i ~ (C(v + h_i e_i) - C(v - h_i e_i)) / (2 h_i)    2P evaluations,    error O(h^2)
    complex:  dC/dv_i ~ Im C(v + i h e_i) / h                         P evaluations,     error O(h^2), no
              subtractive cancellation, so h can be tiny and the result is exact to rounding (analytic costs only)

The FD kernel flattens the params (`ravel_pytree`) and evaluates all the perturbed costs in ONE jitted program:
`chunk_size` directions at a time under `vmap`, the chunks in sequence under `lax.map`, the chunks split over
the devices of a mesh when there are several (see `gdjax.gradients._directions`). It never builds a P x P
matrix: a chunk holds `chunk_size` perturbed parameter vectors. The batch is shared by every direction
(vmap in_axes None), so XLA turns the first layer of all the perturbed networks into one matmul
`(N, n_in) @ (n_in, chunk_size * n_hidden)`, which is where the time goes.

    >>> est = gradient(cost, "fd-central", chunk_size=128)     # or eps=..., devices=..., mesh=...
    >>> g = est(params, batch)                                  # same pytree as jax.grad(cost)(params, batch)
    >>> est.evaluations(n_params(params))                       # 2P

"fd-loop" is the baseline the kernel is measured against: the same directions and arithmetic, one jitted cost
call per direction driven from Python.

Choice of step (defaults, `eps=None`), with eps_m the machine epsilon of the parameters' dtype
(float32: 1.19e-7, float64: 2.22e-16) and C, C'', C''' of order one (costs of the lecture are O(1)):
  forward:  h_i = sqrt(eps_m) * max(1, |v_i|). The error is truncation h|C''|/2 plus rounding 2 eps_m |C| / h;
            their sum is smallest at h ~ sqrt(eps_m) (float32: 3.5e-4, float64: 1.5e-8), error ~ sqrt(eps_m).
  central:  h_i = cbrt(eps_m) * max(1, |v_i|). Truncation h^2|C'''|/6 plus rounding eps_m|C|/h is smallest at
            h ~ cbrt(eps_m) (float32: 4.9e-3, float64: 6.1e-6), error ~ eps_m^(2/3).
  complex:  h = eps_m^2 (float32: 1.4e-14, float64: 4.9e-32), not scaled. There is no difference of nearly
            equal numbers, so h is limited only by underflow: the truncation error O(h^2) is then ~eps_m^4,
            far below rounding, while Im C = h dC/dv_i stays a normal float for any |dC/dv_i| > tiny / eps_m^2
            (1e-24 in float32).
The factor max(1, |v_i|) makes the step relative for large parameters (a step below the spacing of floats
near v_i would vanish) and absolute near zero. The step actually taken is h_i = fl(v_i + h_i) - v_i, which is
exactly representable, so the denominator is the true distance between the two evaluation points.
An explicit `eps` replaces the factor in front of max(1, |v_i|) (forward, central) or h (complex).

Default chunk size: a memory budget of `DEFAULT_MEMORY_BUDGET` (256 MiB) divided by the bytes one direction
needs: 3 copies of the parameter vector (the perturbed vector, its unravelled layers, a relayout for the
matmul) plus every intermediate array of one cost evaluation (from the cost's jaxpr, an upper bound: XLA
fuses most elementwise ones away). Capped at the number of directions per device and at `MAX_CHUNK`. Memory
then grows with chunk_size * (P + activations), never with P^2. For the lecture's [784, 30, 10] net at
N = 1000 in float32 this gives a chunk of about 45 directions.

Sharding: with several devices (`devices=None` means every device of the global `jax.devices()`), the
padded direction axis is split across a 1-D mesh (`direction_mesh`) with `jax.shard_map`; each device maps
over its own chunks and the gradient comes back replicated. Each chunk holds the same directions as on one
device, so the result is identical.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax import _checks
from gdjax.costs import Cost
from gdjax.gradients import _directions
from gdjax.gradients.registry import Estimator, register

SCHEMES = ("forward", "central", "complex")
DEFAULT_MEMORY_BUDGET = _directions.DEFAULT_MEMORY_BUDGET
MAX_CHUNK = _directions.MAX_CHUNK
default_chunk_size = _directions.default_chunk_size


def default_eps(scheme: str, dtype) -> float:
    """The default step factor for `scheme` at parameter `dtype` (see the module docstring for the reasoning).

    >>> default_eps("central", jnp.float32)   # cbrt(1.19e-7) = 4.9e-3
    """
    _checks.choice(scheme, SCHEMES, "finite-difference scheme")
    eps_m = float(jnp.finfo(dtype).eps)
    return {"forward": eps_m ** 0.5, "central": eps_m ** (1 / 3), "complex": eps_m**2}[scheme]


def n_directions(scheme: str, n_params: int) -> int:
    """Cost evaluations per gradient: P + 1 (forward), 2P (central), P (complex)."""
    return {"forward": n_params + 1, "central": 2 * n_params, "complex": n_params}[scheme]


class Plan(NamedTuple):
    """The directions of a scheme: direction j sets `v[idx[j]] = t[j]`; `den` is the step in the denominator.

    v: (P,) the flat params (complex for the complex step); idx: (n,) int32; t: (n,) new values; den: (P,).
    n = P + 1 (forward: direction 0 is the base point), 2P (central), P (complex).
    """

    v: jax.Array
    idx: jax.Array
    t: jax.Array
    den: jax.Array


def plan(v: jax.Array, scheme: str, eps: float) -> Plan:
    """The perturbed points of `scheme` around the flat params `v: (P,)` with step factor `eps`."""
    P = v.shape[0]
    arange = jnp.arange(P, dtype=jnp.int32)
    if scheme == "complex":  # Im C(v + i h e_i) / h; v itself is real, the perturbed vectors complex
        vc = v.astype(jnp.result_type(v.dtype, jnp.complex64))
        return Plan(vc, arange, jax.lax.complex(v, jnp.full_like(v, eps)), jnp.full_like(v, eps))
    h = eps * jnp.maximum(1, jnp.abs(v))
    tp = v + h
    if scheme == "forward":
        # direction 0 leaves v unchanged (sets v[0] = v[0]): the base cost C(v), evaluated by the same
        # batched program as the perturbed ones, so that both share the same rounding behaviour
        return Plan(v, jnp.concatenate([jnp.zeros((1,), jnp.int32), arange]), jnp.concatenate([v[:1], tp]),
                    tp - v)  # tp - v: the exactly representable step actually taken
    tm = v - h
    return Plan(v, jnp.concatenate([arange, arange]), jnp.concatenate([tp, tm]), tp - tm)


def combine(scheme: str, den: jax.Array, values: jax.Array, dtype) -> jax.Array:
    """Flat gradient `(P,)` of `dtype` from the costs `values` at the points of `plan`."""
    P = den.shape[0]
    if scheme == "complex":
        g = jnp.imag(values) / den.astype(jnp.imag(values).dtype)
    elif scheme == "forward":
        g = (values[1:] - values[0]) / den.astype(values.dtype)
    else:
        g = (values[:P] - values[P:]) / den.astype(values.dtype)
    return g.astype(dtype)


def _ravel(params, scheme: str):
    """Flat params and the unravel function for the perturbed vectors (complex leaves for the complex step)."""
    if scheme == "complex":
        cparams = jax.tree_util.tree_map(lambda a: a.astype(jnp.result_type(a.dtype, jnp.complex64)), params)
        return ravel_pytree(cparams)[1]
    return ravel_pytree(params)[1]


def _prepare(cost, params, batch, scheme: str, eps: float | None, method: str):
    """Checks shared by the kernel and the loop; returns (v, unravel, perturbed unravel, step factor)."""
    _directions.check_params(params, method)
    _directions.check_scalar_cost(cost, params, batch, method)
    v, unravel = ravel_pytree(params)
    eps_m = float(jnp.finfo(v.dtype).eps)
    if eps is None:
        eps = default_eps(scheme, v.dtype)
    elif scheme != "complex" and eps <= eps_m:
        raise ValueError(
            f"eps={eps:g} is not above the machine epsilon of {v.dtype.name} ({eps_m:.3g}): v + eps*max(1,|v|) "
            f"would round back to v; use eps >= {default_eps(scheme, v.dtype):.3g} (the default) or similar"
        )
    unravel_t = _ravel(params, scheme)
    if scheme == "complex":
        out = jax.eval_shape(cost, unravel_t(v.astype(jnp.result_type(v.dtype, jnp.complex64))), batch)
        if not jnp.issubdtype(out.dtype, jnp.complexfloating):
            raise ValueError(
                f"method {method!r}: the cost returned {out.dtype} for complex parameters, so its imaginary part "
                f"(the complex-step derivative) is lost; the cost must be analytic and complex-safe "
                f"(gdjax.make_cost costs are), or use 'fd-central'"
            )
    return v, unravel, unravel_t, eps


def _perturbed_cost(cost, unravel_t):
    """`f((v, batch), (i, t)) = cost(unravel(v with v[i] = t), batch)`: one direction's cost."""

    def f(operands, direction):
        v, batch = operands
        i, t = direction
        return cost(unravel_t(v.at[i].set(t)), batch)

    return f


def fd_chunk_size(cost, params, batch, scheme: str = "central", n_devices: int = 1) -> int:
    """The default chunk size the FD kernel would use for these arguments (for benchmarks to report)."""
    v, _ = ravel_pytree(params)
    return default_chunk_size(
        v.size, v.dtype.itemsize * (2 if scheme == "complex" else 1),
        _directions.intermediate_bytes(cost, params, batch) * (2 if scheme == "complex" else 1),
        n_directions(scheme, v.size), n_devices,
    )


def fd_gradient(cost, params, batch, *, scheme: str = "central", eps: float | None = None,
                chunk_size: int | None = None, mesh=None, method: str | None = None):
    """The FD kernel, un-jitted: a pytree like `params`, the finite-difference gradient of `cost`.

    Args:
      cost: `cost(params, batch) -> scalar`, any JAX-traceable function (complex-safe for scheme "complex").
      params: pytree of real floating arrays, P scalars in all.
      batch: anything `cost` takes; shared by every direction.
      scheme: "forward", "central" or "complex".
      eps: step factor (see the module docstring), None for the default of the dtype.
      chunk_size: directions per vmapped chunk (per device), None for the memory-budget default.
      mesh: a Mesh over which to split the directions (`_directions.resolve_mesh`), or None.
    Returns:
      pytree like `params` (same structure and dtypes).
    """
    method = method or f"fd-{scheme}"
    v, unravel, unravel_t, eps = _prepare(cost, params, batch, scheme, eps, method)
    pl = plan(v, scheme, eps)
    n_dev = 1 if mesh is None else mesh.size
    if chunk_size is None:
        chunk_size = fd_chunk_size(cost, params, batch, scheme, n_dev)
    chunk_size = min(chunk_size, -(-pl.idx.shape[0] // n_dev))  # no chunk larger than the directions
    values = _directions.map_directions(_perturbed_cost(cost, unravel_t), (pl.v, batch), (pl.idx, pl.t), chunk_size,
                                        mesh)
    return unravel(combine(scheme, pl.den, values, v.dtype))


def _check_options(scheme, eps, chunk_size, method):
    _checks.choice(scheme, SCHEMES, f"scheme of {method!r}")
    if eps is not None:
        eps = _checks.positive_float(eps, "eps")
    if chunk_size is not None:
        chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    return eps, chunk_size


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
        mesh = _directions.resolve_mesh(devices, mesh)
        kernel = functools.partial(fd_gradient, cost, scheme=scheme, eps=eps, chunk_size=chunk_size, mesh=mesh,
                                   method=method)
        jitted = jax.jit(kernel) if mesh is None else jax.jit(kernel, out_shardings=_directions.replicated(mesh))
        options = {"eps": eps, "chunk_size": chunk_size, "n_devices": 1 if mesh is None else mesh.size}
        return Estimator(method, lambda params, batch, key: jitted(params, batch),
                         functools.partial(n_directions, scheme), options=options)

    build.__doc__ = f"The FD kernel, {scheme} scheme; options eps, chunk_size, devices, mesh (module docstring)."
    return build


register("fd-forward", kind="fd", summary="forward differences, chunked vmap over directions (P+1 costs, O(h))")(
    _kernel_builder("forward"))
register("fd-central", kind="fd", summary="central differences, chunked vmap over directions (2P costs, O(h^2))")(
    _kernel_builder("central"))
register("fd-complex", kind="fd",
         summary="complex step Im C(v+ih e_i)/h, chunked vmap (P costs, exact to rounding; analytic costs only)")(
    _kernel_builder("complex"))


@register("fd-loop", kind="fd", summary="naive baseline: one jitted cost call per direction from a Python loop")
def fd_loop(cost, scheme: str = "forward", eps: float | None = None) -> Estimator:
    """The naive FD baseline: the kernel's directions and arithmetic, one jitted call per direction.

    The per-direction function `(v, idx, t, batch, j) -> cost(unravel(v with v[idx[j]] = t[j]), batch)` is
    jitted once per parameter structure and reused; the Python loop only dispatches it P (+1) times with an
    integer j, so nothing is slowed on purpose. Not jittable (it is driven from Python).

    Args:
      scheme: "forward" (default, the lecture's), "central" or "complex"; eps as for the kernel.
    """
    method = "fd-loop"
    eps, _ = _check_options(scheme, eps, None, method)
    _check_analytic(cost, scheme, method)
    compiled = {}

    def programs(params, batch):
        """Jitted (plan, one direction, combine) for this parameter structure, built once and reused."""
        leaves, treedef = jax.tree_util.tree_flatten(params)
        sig = (treedef, tuple((leaf.shape, jnp.result_type(leaf)) for leaf in leaves))
        if sig not in compiled:
            v, unravel, unravel_t, step_eps = _prepare(cost, params, batch, scheme, eps, method)  # checks, once
            f = _perturbed_cost(cost, unravel_t)
            plan_fn = jax.jit(lambda params: plan(ravel_pytree(params)[0], scheme, step_eps))
            step = jax.jit(lambda v, idx, t, batch, j: f((v, batch), (idx[j], t[j])))
            finish = jax.jit(lambda den, values: unravel(combine(scheme, den, values, v.dtype)))
            compiled[sig] = (plan_fn, step, finish)
        return compiled[sig]

    def fn(params, batch, key):
        _directions.check_params(params, method)
        _directions.check_scalar_cost(cost, params, batch, method)
        plan_fn, step, finish = programs(params, batch)
        pl = plan_fn(params)
        values = [step(pl.v, pl.idx, pl.t, batch, j) for j in range(pl.idx.shape[0])]
        return finish(pl.den, jnp.asarray(np.asarray(jax.device_get(values))))

    return Estimator(method, fn, functools.partial(n_directions, scheme), jittable=False,
                     options={"scheme": scheme, "eps": eps})
