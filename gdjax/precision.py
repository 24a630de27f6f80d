"""The matmul precision policy: every method that is not exact evaluates the cost at full float32 precision.

On NVIDIA GPUs from Ampere on, JAX runs float32 matmuls and convolutions in TensorFloat-32 by default: inputs
rounded to a 10-bit mantissa (unit roundoff u_tf32 = 2^-11 ~ 4.9e-4). A forward difference with
h ~ sqrt(eps_f32) ~ 3.5e-4 moves a weight by less than its TF32 spacing, so an FD gradient in TF32 is mostly
noise (docs/estimators.md, "Reduced-precision matmuls"). gdjax therefore runs every estimator that is not exact
(the FD kernel, `fd-loop`, layer-wise FD, node perturbation, SPSA, the forward gradients) under
`jax.default_matmul_precision("highest")` by default: `gradient()` wraps the built estimator's `fn` and `subset`
once (`apply`), and the context is entered when the estimator is called, that is when it is traced, so it also
holds inside a caller's `jax.jit`, `vmap` or `lax.scan`. The precision is baked into every dot_general and
convolution of the traced program, and `jax.jit`'s cache key includes it, so the estimator's own inner jit
retraces under it. Exact methods (`reverse`, `forward`, `backprop`: the capability `exact`) keep the caller's
precision unless `matmul_precision=` is given. On a CPU all of this changes nothing (XLA's CPU dots are float32).

A dot or convolution whose code names its own `precision=` keeps it: gdjax does not rewrite the caller's
program (an explicit `precision=lax.Precision.DEFAULT` still runs TF32 on such a GPU; leave it unset or name
HIGHEST in a cost meant for finite differences).

    >>> f = at_precision(cost, "highest")     # f(params, batch) == cost(params, batch), every dot at HIGHEST
    >>> resolve(None)                         # "highest": the default
    >>> gradient(cost, "fd-forward", matmul_precision="tensorfloat32")   # opt into TF32 passes for speed (GPU)
    >>> in_force(est)                         # the precision an estimator's matmuls run at, for the records

Names (JAX's): "highest" (= "float32": full float32), "high" (= "tensorfloat32", bf16_3x on TPUs),
"default" (= "bfloat16": the platform default, TF32 on Ampere+ GPUs).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import jax

from gdjax import _checks

PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16")
DEFAULT = "highest"
OPTION = "matmul_precision"  # the generic option `gradient()` takes for every method


def resolve(precision: str | None) -> str:
    """The precision name in force: `precision`, or the default "highest" for None; ValueError otherwise."""
    if precision is None:
        return DEFAULT
    return _checks.choice(precision, PRECISIONS, "matmul_precision")


def current() -> str | None:
    """JAX's `default_matmul_precision` in force here (inside any `jax.default_matmul_precision` context), as
    a string; None when nothing is set (then each platform uses its default: TF32 on Ampere+ GPUs)."""
    value = jax.config.jax_default_matmul_precision
    return None if value is None else str(value)


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


def apply(est, precision: str | None):
    """The estimator `est` with the policy applied once: its `fn` and `subset` programs run at `precision`
    ("highest" by default for a method that is not exact; an exact one keeps the caller's precision unless
    `precision` is given), recorded as `est.options["matmul_precision"]` (None: the caller's)."""
    if precision is None and est.exact:
        return dataclasses.replace(est, options={**est.options, OPTION: None})
    name = resolve(precision)
    inner = est.subset

    def subset(params, batch, n_directions):
        sub = inner(params, batch, n_directions)
        return sub._replace(fn=at_precision(sub.fn, name))

    return dataclasses.replace(est, fn=at_precision(est.fn, name), subset=None if inner is None else subset,
                               options={**est.options, OPTION: name})


def in_force(est=None) -> str:
    """The matmul precision `est` runs at, for the records: its `options["matmul_precision"]` where gdjax sets
    one, else JAX's setting in force here (`current()`), else "default" (the platform's)."""
    name = None if est is None else est.options.get(OPTION)
    return name or current() or "default"


_OP = re.compile(r"stablehlo\.(dot_general|convolution)\b")
_PRECISION = re.compile(r"precision(?:_config)? = \[([^\]]*)\]")
_NAME = re.compile(r"(DEFAULT|HIGHEST|HIGH)\b")


def program_precisions(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every dot_general and convolution of a lowered program (`jax.jit(f).lower(*args).as_text()`) with the
    precision of each operand: [("dot_general", ("HIGHEST", "HIGHEST")), ...]; () where the op names none
    (XLA then uses the platform default)."""
    out = []
    for line in text.splitlines():
        m = _OP.search(line)
        if m:
            p = _PRECISION.search(line, m.end())
            out.append((m.group(1), tuple(_NAME.findall(p.group(1))) if p else ()))
    return out
