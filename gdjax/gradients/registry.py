"""The registry of gradient estimators: every method behind one signature.

    >>> grad_fn = gradient(cost, "fd-central", chunk_size=256)
    >>> g = grad_fn(params, batch)                # a pytree like params, as jax.grad(cost)(params, batch)
    >>> grad_fn.evaluations(n_params(params))     # cost evaluations (forward-pass equivalents) per gradient
    >>> gradient(cost, "spsa")(params, batch, key)  # stochastic methods take an explicit PRNG key

A method module registers a builder with `@register(name, ...)`. A builder takes `(cost, **options)` and
returns an `Estimator`; it validates its options and raises ValueError/TypeError naming the bad one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax

from gdjax import _checks


@dataclass(frozen=True)
class Estimator:
    """A built gradient estimator: `est(params, batch[, key]) -> pytree like params`.

    Attributes:
      method: the registry name.
      fn: `fn(params, batch, key) -> grads`; `key` is None for deterministic methods.
      evaluations: `evaluations(n_params) -> float`, cost evaluations (or forward-pass equivalents) per gradient.
      stochastic: True when the estimate depends on a PRNG key (which is then required).
      jittable: False only for methods driven from Python (fd-loop); those cannot sit inside jax.jit.
      options: the resolved options (eps, chunk_size, ...) for the record.
    """

    method: str
    fn: Callable
    evaluations: Callable[[int], float]
    stochastic: bool = False
    jittable: bool = True
    options: dict = field(default_factory=dict, compare=False)

    def __call__(self, params, batch, key=None):
        if self.stochastic:
            key = _checks.prng_key(key, f"key (method {self.method!r} is stochastic and needs a PRNG key)")
        return self.fn(params, batch, key)

    def __hash__(self):  # identity hash: jit may take an Estimator as a static argument
        return id(self)


@dataclass(frozen=True)
class Method:
    """A registry entry: how to build the estimator and what to say about it."""

    name: str
    builder: Callable[..., Estimator]
    summary: str
    kind: str  # "exact" (autodiff / backprop), "fd" (deterministic, truncation error), "stochastic"
    structured: bool  # needs a cost built by gdjax.make_cost (reads the MLP structure)


_REGISTRY: dict[str, Method] = {}
KINDS = ("exact", "fd", "stochastic")


def register(name: str, *, summary: str, kind: str, structured: bool = False):
    """Decorator: register `builder(cost, **options) -> Estimator` under `name`."""
    _checks.choice(kind, KINDS, "kind")

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"gradient method {name!r} is already registered")
        _REGISTRY[name] = Method(name, builder, summary, kind, structured)
        return builder

    return deco


def available_methods() -> tuple[str, ...]:
    """Names of every registered gradient method, in registration order."""
    return tuple(_REGISTRY)


def method_info(method: str) -> Method:
    """The registry entry of `method` (summary, kind, structured)."""
    return _REGISTRY[_checks.choice(method, _REGISTRY, "gradient method")]


def gradient(cost: Callable, method: str = "reverse", **options) -> Estimator:
    """Build a gradient estimator for `cost(params, batch) -> scalar`.

    Args:
      cost: the cost; structured methods need one from `gdjax.make_cost`.
      method: one of `available_methods()`.
      **options: method options (eps, chunk_size, num_directions, ...), validated by the method.
    Returns:
      an `Estimator`, called as `est(params, batch[, key])`, returning a pytree like `params`.
    """
    info = method_info(method)
    if not callable(cost):
        raise TypeError(f"cost must be a callable cost(params, batch) -> scalar, got {type(cost).__name__}")
    return info.builder(cost, **options)


def n_params(params) -> int:
    """Number of scalar parameters in a pytree."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
