"""The matmul precision policy: finite differences evaluate the cost at full float32 precision by default.

On NVIDIA GPUs from Ampere on, JAX runs float32 matmuls and convolutions in TensorFloat-32 by default: inputs
rounded to a 10-bit mantissa (unit roundoff 2^-11 ~ 4.9e-4). A forward difference with h ~ sqrt(eps_f32) ~ 3.5e-4
changes the cost by about h |g| relative, below that rounding, so an FD gradient in TF32 is mostly noise. gdjax
therefore traces every cost evaluation of a finite-difference program (the FD kernel, layer-wise FD, node
perturbation, SPSA, `check_grad`) under `jax.default_matmul_precision(precision)`, "highest" by default, which
sets the precision of every dot and convolution that does not name its own. On a CPU this changes nothing.

    >>> f = at_precision(cost, "highest")     # f(params, batch) == cost(params, batch), every dot at HIGHEST
    >>> resolve(None)                         # "highest": the default
    >>> resolve("tensorfloat32")              # opt into TF32 passes for speed (GPU)

Names (JAX's): "highest" (= "float32": full float32), "high" (= "tensorfloat32", bf16_3x on TPUs),
"default" (= "bfloat16": the platform default, TF32 on Ampere+ GPUs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from gdjax import _checks

PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16")
DEFAULT = "highest"


def resolve(precision: str | None) -> str:
    """The precision name in force: `precision`, or the default "highest" for None; ValueError otherwise."""
    if precision is None:
        return DEFAULT
    return _checks.choice(precision, PRECISIONS, "matmul_precision")


def at_precision(fn: Callable, precision: str | None = None) -> Callable:
    """`fn` traced under `jax.default_matmul_precision(resolve(precision))`: same signature, same values.

    The context is entered when `fn` is called, that is when it is traced, so it also holds inside an outer
    `jax.jit`, `vmap` or `lax.scan`; a dot whose caller names its own `precision=` keeps it.
    """
    name = resolve(precision)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(name):
            return fn(*args, **kwargs)

    return wrapped
