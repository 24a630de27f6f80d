"""Stochastic gradient estimators: SPSA and the forward gradient, unbiased estimates from random directions.

Both are black-box (any `cost(params, batch) -> scalar`, any params pytree) and need an explicit PRNG key;
averaging `num_directions = k` independent directions divides the variance by k. The random directions span
the real floating leaves only (`gdjax.gradient` hands the method those, `_leaves`): ints, bools and PRNG keys
are never perturbed, and their gradient entries are None.

"spsa" (simultaneous perturbation, Spall 1992): a Rademacher direction `v` (entries +-1 with equal probability),
    g = (C(p + eps v) - C(p - eps v)) / (2 eps) * v,
    E[g] = grad C + O(eps^2),   Var[g_i] = (|grad C|^2 - (dC/dp_i)^2) / k.
    Evaluations per gradient: 2k cost evaluations.
"forward-gradient" (Baydin et al. 2022, "Gradients without backpropagation"): a Gaussian direction v ~ N(0, I),
    g = (grad C . v) v, the directional derivative by one `jax.jvp` (exact, no step),
    E[g] = grad C exactly,   Var[g_i] = (|grad C|^2 + (dC/dp_i)^2) / k.
    Evaluations per gradient: None (`evaluations` counts cost evaluations, and a jvp is not one: the primal is
    shared by the k directions and each tangent pass costs between 1 and 2 forward passes); benchmarks measure
    it as XLA's FLOPs of the gradient program over those of the cost.

    >>> est = gradient(cost, "spsa", num_directions=8)
    >>> g = est(params, batch, jax.random.key(0))   # a pytree like params; a fresh key for every step
    >>> est.evaluations(n_params(params))           # 16.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdjax import _checks
from gdjax.gradients.registry import Estimator, no_count, register


def _num_directions(k) -> int:
    return _checks.positive_int(k, "num_directions (random directions averaged per gradient)")


def _flat_real(params, method: str):
    flat, unravel = ravel_pytree(params)
    if flat.size == 0 or not jnp.issubdtype(flat.dtype, jnp.floating):
        raise TypeError(
            f"method {method!r} needs real float32/float64 params (a non-empty pytree), got dtype {flat.dtype}"
        )
    return flat, unravel


def spsa_eps(dtype) -> float:
    """The default SPSA step for `dtype`: eps_mach**(1/3) (central differences), 4.9e-3 f32, 6.1e-6 f64."""
    return float(jnp.finfo(dtype).eps) ** (1.0 / 3.0)


@register("spsa", kind="stochastic",
          summary="simultaneous perturbation: Rademacher direction, 2 cost evaluations, unbiased to O(eps^2)",
          cost_formula="2 per direction",
          evaluations=lambda n_params, sizes=None, num_directions=1, **options: 2.0 * num_directions,
          error_order="stochastic: relative error ~ sqrt(P / k)", affordable_at_million=True)
def spsa(cost, *, eps=None, num_directions=1) -> Estimator:
    """SPSA: `mean_k (C(p + eps v_k) - C(p - eps v_k)) / (2 eps) * v_k` with Rademacher `v_k`.

    Options: eps (> 0; None: eps_mach**(1/3) of the params' dtype), num_directions k >= 1.
    Evaluations: 2k.
    """
    k = _num_directions(num_directions)
    eps = None if eps is None else _checks.positive_float(eps, "eps")

    @jax.jit
    def fn(params, batch, key):
        flat, unravel = _flat_real(params, "spsa")
        h = eps if eps is not None else spsa_eps(flat.dtype)
        v = jax.random.rademacher(key, (k, flat.size), dtype=jnp.int8).astype(flat.dtype)

        def slope(vi):  # the central difference along vi
            return (cost(unravel(flat + h * vi), batch) - cost(unravel(flat - h * vi), batch)) / (2 * h)

        return unravel(jax.vmap(slope)(v) @ v / k)

    return Estimator("spsa", fn, lambda p: 2.0 * k, stochastic=True, options={"eps": eps, "num_directions": k})


@register("forward-gradient", kind="stochastic",
          summary="random-direction jvp (grad . v) v with v ~ N(0, I): unbiased, no step size",
          cost_formula="1 + k (one `jvp` per direction)", error_order="stochastic: relative error ~ sqrt(P / k)",
          affordable_at_million=True)
def forward_gradient(cost, *, num_directions=1) -> Estimator:
    """Forward gradient: `mean_k (grad C . v_k) v_k`, `v_k ~ N(0, I)`, each directional derivative by `jax.jvp`.

    Options: num_directions k >= 1. Evaluations: None (one primal and k tangent passes; module docstring).
    """
    k = _num_directions(num_directions)

    @jax.jit
    def fn(params, batch, key):
        flat, unravel = _flat_real(params, "forward-gradient")
        v = jax.random.normal(key, (k, flat.size), flat.dtype)

        def f(q):
            return cost(unravel(q), batch)

        slopes = jax.vmap(lambda vi: jax.jvp(f, (flat,), (vi,))[1])(v)  # (k,) directional derivatives
        return unravel(slopes @ v / k)

    return Estimator("forward-gradient", fn, no_count, stochastic=True, options={"num_directions": k})
