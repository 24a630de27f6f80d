"""The registry of gradient estimators: every method behind one signature, with its capabilities.

    >>> grad_fn = gradient(cost, "fd-central", chunk_size=256)
    >>> g = grad_fn(params, batch)                # a pytree like params, as jax.grad(cost)(params, batch)
    >>> grad_fn.evaluations(n_params(params))     # cost evaluations per gradient (None for autodiff / backprop)
    >>> gradient(cost, "spsa")(params, batch, key)  # stochastic methods take an explicit PRNG key
    >>> method_info("fd-loop").jittable           # static capabilities, without building anything: False
    >>> g, aux = gradient(loss_and_aux, "fd-central", has_aux=True)(params, batch)   # as jax.grad(has_aux=True)

The leaf policy (`gdjax.gradients._leaves`), applied here once for every method: only the inexact (floating)
array leaves of `params` are differentiated; the method sees only those (`partition`) and a cost closed over
the others (ints, bools, PRNG keys, functions and static fields of an Equinox module, NNX RNG state), which
pass through untouched. The gradient has the structure of `params`, with None at every leaf not differentiated
(as `equinox.filter_grad`). Params with no floating leaf are refused. Structured methods (a gdjax MLP's
params, floating arrays only) get `params` as given.

The call: `est(params, batch, key=None)`. Only `params` and `batch` reach the cost, as `cost(params, batch)`;
extra data for the cost goes into the batch (any pytree, e.g. `(x, y, mask)`) or is closed over
(`functools.partial`). Stochastic methods need `key`, a PRNG key (positional or keyword); deterministic methods
accept a key and ignore it, so that every method can be called alike, and refuse any other third argument.

A method module registers a builder with `@register(name, summary=..., kind=..., <capabilities>, <theory>)`. A
builder takes `(cost, **options)` and returns an `Estimator`; it validates its options and raises
ValueError/TypeError naming the bad one. An option the builder does not take is refused by `gradient` with a
TypeError listing the method's options. The entry also carries what the documentation and the benchmarks say
about the method (`Method`: its cost formula, its error order, a short label, its FD scheme, whether the
million-weights table measures it), so callers decide what to do with a method, and what to print about it,
from its entry (`method_info`, `methods_where`, `reference_method`), never from its name.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import jax

from gdjax import _checks
from gdjax import precision as _precision
from gdjax.gradients import _leaves, _steps, _validate


class Subset(NamedTuple):
    """A method's own program restricted to its first directions: for timing a part and extrapolating.

    Attributes:
      fn: `fn(params, batch) -> array` running the method's program (same chunk size, same loop body, whole
        chunks) over its first `covered` directions; block on the result to time it.
      covered: directions `fn` evaluates (>= the number asked for, rounded up to whole chunks).
      total: directions the whole gradient evaluates, padded as the whole program pads them.
      jittable: False when `fn` is driven from Python (fd-loop): then do not wrap it in jax.jit.
    The whole gradient takes about time(fn) * total / covered.
    """

    fn: Callable
    covered: int
    total: int
    jittable: bool = True


def no_count(n_params: int) -> None:
    """`evaluations` of autodiff / backprop: their cost is not a number of cost evaluations (measure it)."""
    return None


@dataclass(frozen=True)
class Estimator:
    """A built gradient estimator: `est(params, batch[, key]) -> pytree like params` (`(grads, aux)` with has_aux).

    Attributes:
      method: the registry name.
      fn: `fn(params, batch, key) -> grads`; `key` is None for deterministic methods.
      evaluations: `evaluations(n_params) -> float | None`, the cost evaluations one gradient makes where that
        is a true count (FD: P + 1 / 2P / P; SPSA: 2k; node perturbation: units + 1); None for autodiff and
        backprop, whose cost is measured (XLA FLOPs of the gradient program over those of the cost).
      stochastic: True when the estimate depends on a PRNG key (which is then required).
      jittable: False only for methods driven from Python (fd-loop); those cannot sit inside jax.jit.
      structured: True when the method needs a cost from `gdjax.make_cost` (it reads the network).
      exact: True for autodiff / backprop (no truncation error; equal to jax.grad to rounding).
      subset: None, or `subset(params, batch, n_directions) -> Subset` (see `Subset`).
      plan: None, or `plan(params, batch) -> KernelPlan`: the layout the estimator runs with for these
        arguments and how it was chosen (the FD kernel's measured plan, `gradients._plan`).
      options: the resolved options (eps, chunk_size, ...) for the record.
      has_aux: the cost returns `(scalar, aux)`; the estimator returns `(grads, aux)`.
    The capability fields are the registry entry's (`Method`); `gradient` fills them in from it, and wraps
    `fn` in the leaf policy (module docstring).
    """

    method: str
    fn: Callable
    evaluations: Callable[[int], float | None]
    stochastic: bool = False
    jittable: bool = True
    options: dict = field(default_factory=dict, compare=False)
    structured: bool = False
    exact: bool = False
    subset: Callable | None = field(default=None, compare=False)
    plan: Callable | None = field(default=None, compare=False)
    has_aux: bool = False

    def __call__(self, params, batch, *args, key=None, **kwargs):
        """`est(params, batch, key=None)`: the gradient of `cost(params, batch)` at `params` (module docstring)."""
        return self.fn(params, batch, self._key(args, key, kwargs))

    def _key(self, args: tuple, key, kwargs: dict):
        """The PRNG key of a call (None for deterministic methods); refuses any other argument, with the fix."""
        fix = ("only params and batch reach the cost, as cost(params, batch): put extra data into the batch "
               "(any pytree, e.g. (x, y, mask)) or close over it (functools.partial(cost, ...)) before gradient()")
        if kwargs:
            raise TypeError(f"estimator {self.method!r} got unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))}; it is called as est(params, batch, key=None): {fix}")
        if len(args) > 1 or (args and key is not None):
            raise TypeError(f"estimator {self.method!r} takes est(params, batch, key=None), got "
                            f"{2 + len(args) + (key is not None)} arguments: {fix}")
        key = args[0] if args else key
        if self.stochastic:
            return _checks.prng_key(key, f"key (method {self.method!r} is stochastic and needs a PRNG key)")
        if key is not None:
            try:
                _checks.prng_key(key)
            except TypeError:
                raise TypeError(
                    f"estimator {self.method!r} is deterministic: est(params, batch) takes no third argument "
                    f"(a PRNG key is accepted and ignored), got {type(key).__name__}"
                    f"{getattr(key, 'shape', '')}; {fix}") from None
        return None

    def __hash__(self):  # identity hash: jit may take an Estimator as a static argument
        return id(self)


@dataclass(frozen=True)
class Method:
    """A registry entry: how to build the estimator, what to say about it, and its static capabilities.

    Attributes:
      name, builder, summary: the registry name, `builder(cost, **options) -> Estimator`, one line.
      kind: "exact" (autodiff / backprop), "fd" (deterministic, truncation error), "stochastic".
      structured: needs a cost built by `gdjax.make_cost` (reads the MLP structure).
      stochastic: needs a PRNG key; exact: no truncation error; jittable: can sit inside jax.jit.
      subset: its estimators have a `subset` (timeable on part of their directions).
      options: the option names the builder takes.
    What the documentation and the benchmarks say about it (its theory; no measured numbers):
      cost_formula: the cost of one gradient as a formula, for tables: "P + 1", "2 per direction", "about 2-3 F
        (`jax.grad`)" (P parameters, F one forward pass, k directions, units the hidden and output units).
      evaluations: None, or `evaluations(n_params, sizes=None, **options) -> float | None`, the cost
        evaluations one gradient makes where that is a count (the formula as a function: P, the network's layer
        widths `sizes` where it needs them, the method's options with their defaults); equal to the built
        estimator's `evaluations(n_params)`. None for methods whose cost is measured, not counted.
      error_order: the error of the estimate in theory: "O(h), h ~ sqrt(eps_m)", "exact to rounding",
        "stochastic: relative error ~ sqrt(P / k)".
      label: a few words shown beside the name in tables ("FD kernel", "naive"), or "".
      scheme: the finite-difference scheme of a deterministic FD method when it is fixed ("forward", "central",
        "complex"; its truncation order `_steps`), else None (not FD, or the scheme is an option).
      affordable_at_million: the "million weights" benchmark table measures it (one method per cost family;
        those beyond a time budget are timed on part of their directions and extrapolated).
      reference: the method every other is compared with in tables and targets ("/ reverse"); one entry.
    """

    name: str
    builder: Callable[..., Estimator]
    summary: str
    kind: str
    structured: bool = False
    stochastic: bool = False
    exact: bool = False
    jittable: bool = True
    subset: bool = False
    options: tuple[str, ...] = ()
    cost_formula: str = "-"
    evaluations: Callable[..., float | None] | None = field(default=None, compare=False)
    error_order: str = "-"
    label: str = ""
    scheme: str | None = None
    affordable_at_million: bool = False
    reference: bool = False

    @property
    def deterministic(self) -> bool:
        """Not stochastic: the same arguments give the same gradient (no PRNG key)."""
        return not self.stochastic

    @property
    def order(self) -> int | None:
        """The truncation order p of its fixed FD scheme (error O(h^p)), else None."""
        return None if self.scheme is None else _steps.ORDER[self.scheme]


_REGISTRY: dict[str, Method] = {}
KINDS = ("exact", "fd", "stochastic")
CAPABILITIES = ("stochastic", "jittable", "structured", "exact")


def _option_names(builder: Callable) -> tuple[str, ...]:
    params = list(inspect.signature(builder).parameters.values())[1:]  # after `cost`
    if any(p.kind is p.VAR_KEYWORD for p in params):
        raise TypeError(f"builder {builder.__name__} must name its options (no **kwargs): gradient() checks them")
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def register(name: str, *, summary: str, kind: str, structured: bool = False, stochastic: bool | None = None,
             exact: bool | None = None, jittable: bool = True, subset: bool = False, cost_formula: str = "-",
             evaluations: Callable[..., float | None] | None = None, error_order: str = "-", label: str = "",
             scheme: str | None = None, affordable_at_million: bool = False, reference: bool = False):
    """Decorator: register `builder(cost, **options) -> Estimator` under `name` with its capabilities and theory.

    `stochastic` and `exact` default to `kind == "stochastic"` and `kind == "exact"`; `subset=True` promises
    that the built estimators carry a `subset` function. `cost_formula`, `evaluations`, `error_order`, `label`,
    `scheme`, `affordable_at_million`, `reference`: see `Method`.
    """
    _checks.choice(kind, KINDS, "kind")
    stochastic = kind == "stochastic" if stochastic is None else bool(stochastic)
    exact = kind == "exact" if exact is None else bool(exact)
    if scheme is not None:
        _checks.choice(scheme, tuple(_steps.ORDER), "scheme")
        if kind != "fd" or stochastic:
            raise ValueError(f"method {name!r}: scheme={scheme!r} is for deterministic FD methods (kind 'fd'), "
                             f"got kind {kind!r}")
    for arg, text in (("summary", summary), ("cost_formula", cost_formula), ("error_order", error_order),
                      ("label", label)):
        if not isinstance(text, str):
            raise TypeError(f"method {name!r}: {arg} must be a string, got {type(text).__name__}")
    if evaluations is not None and not callable(evaluations):
        raise TypeError(f"method {name!r}: evaluations must be None or a callable evaluations(n_params, sizes=None, "
                        f"**options), got {type(evaluations).__name__}")

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"gradient method {name!r} is already registered")
        if reference and any(m.reference for m in _REGISTRY.values()):
            raise ValueError(f"method {name!r}: reference=True, but {reference_method()!r} is the reference already")
        _REGISTRY[name] = Method(name, builder, summary, kind, bool(structured), stochastic, exact, bool(jittable),
                                 bool(subset), _option_names(builder), cost_formula, evaluations, error_order,
                                 label, scheme, bool(affordable_at_million), bool(reference))
        return builder

    return deco


def count_per_direction(scheme: str | None = None) -> Callable[..., float]:
    """`evaluations(n_params, sizes=None, **options)` of a method with one FD direction per parameter:
    `_steps.n_directions` (P + 1 forward, 2P central, P complex), `scheme` fixed or, when None, the method's
    `scheme` option (default "forward")."""
    def evaluations(n_params, sizes=None, **options):
        return float(_steps.n_directions(scheme or options.get("scheme") or "forward", n_params))

    return evaluations


def count_per_unit() -> Callable[..., float | None]:
    """`evaluations(n_params, sizes=None, **options)` of a method with one FD direction per hidden and output
    unit (node perturbation): units + 1 (forward) or 2 units (central) by its `scheme` option, units =
    sum(sizes[1:]); None without the network's `sizes`."""
    def evaluations(n_params, sizes=None, **options):
        units = None if sizes is None else sum(sizes[1:])
        return None if units is None else float(_steps.n_directions(options.get("scheme") or "forward", units))

    return evaluations


def import_modules(package: str, path) -> tuple[str, ...]:
    """Import every public module (no leading underscore) of `package` (its `__path__`), in name order, so that
    each registers its methods; returns their names. `gdjax.gradients` calls it on itself."""
    names = tuple(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_") and m.name != "registry")
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def available_methods() -> tuple[str, ...]:
    """Names of every registered gradient method, in registration order."""
    return tuple(_REGISTRY)


def method_info(method: str) -> Method:
    """The registry entry of `method`: summary, kind, capabilities and theory (see `Method`)."""
    return _REGISTRY[_checks.choice(method, _REGISTRY, "gradient method")]


def methods_where(**fields) -> tuple[str, ...]:
    """Names of the registered methods whose entry has every given field (or property) equal to the value
    given, in registration order: `methods_where(kind="fd", structured=False, jittable=True, scheme="forward")`."""
    probe = Method("", None, "", "fd")
    for f in fields:
        if not hasattr(probe, f):
            raise TypeError(f"methods_where: {f!r} is not a field of a registry entry (gdjax.gradients.Method)")
    return tuple(n for n, m in _REGISTRY.items() if all(getattr(m, f) == v for f, v in fields.items()))


def reference_method() -> str:
    """The name of the method every other is compared with in tables and targets (the entry registered with
    `reference=True`: jax.grad)."""
    found = methods_where(reference=True)
    if len(found) != 1:
        raise RuntimeError(f"the registry holds {len(found)} reference methods, expected exactly one")
    return found[0]


def gradient(cost: Callable, method: str = "reverse", *, has_aux: bool = False, **options) -> Estimator:
    """Build a gradient estimator for `cost(params, batch) -> scalar`.

    Args:
      cost: the cost; structured methods need one from `gdjax.make_cost`. Params may be any pytree: only
        their floating array leaves are differentiated (module docstring).
      method: one of `available_methods()`.
      has_aux: the cost returns `(scalar, aux)` (aux any pytree), as for `jax.grad(has_aux=True)`; the
        estimator then returns `(grads, aux)`, aux from the cost at the unperturbed params (one more cost
        evaluation, which XLA shares with the method's own unperturbed evaluation when both run in one jitted
        program). Structured methods refuse it.
      **options: method options (eps, chunk_size, num_directions, ...), validated by the method; an option
        the method does not take raises TypeError listing its options. Every method also takes
        `matmul_precision` ("highest" by default for methods that are not exact; see `_precision.apply`).
    Returns:
      an `Estimator`, called as `est(params, batch, key=None)`, returning a pytree like `params` (None at the
      leaves not differentiated), carrying the method's capabilities.
    Raises (at the call, before any work): ValueError for params with no floating leaf, an empty batch
    (`_validate.check_batch`) or a cost output of the wrong form; TypeError for fd-loop under a trace and for
    arguments other than params, batch and key.
    """
    info = method_info(method)
    if not callable(cost):
        raise TypeError(f"cost must be a callable cost(params, batch) -> scalar, got {type(cost).__name__}")
    if not isinstance(has_aux, bool):
        raise TypeError(f"has_aux must be True or False, got {type(has_aux).__name__}")
    precision = options.pop(_precision.OPTION, None)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join(info.options) if info.options else "none"
        raise TypeError(f"method {method!r} got unknown option(s) {', '.join(unknown)}; its options: {valid} "
                        f"(and {_precision.OPTION}, which every method takes)")
    if precision is not None:
        _precision.resolve(precision)  # a bad name fails before any work
    if has_aux and info.structured:
        raise ValueError(f"method {method!r} reads a gdjax MLP cost, which returns a scalar: has_aux=True is for "
                         f"black-box methods; use e.g. 'reverse' or 'fd-central' with a (loss, aux) cost")
    est = _with_capabilities(info.builder(cost, **options), info)  # validates the options against the cost
    if not info.structured:  # the method runs on the differentiable leaves, its cost closed over the others
        est = _with_capabilities(info.builder(_leaves.bound_cost(cost, has_aux=has_aux), **options), info)
    est = _precision.apply(est, precision)
    if info.structured:
        return dataclasses.replace(est, fn=_leaf_policy(cost, est, info, has_aux), has_aux=has_aux)
    return dataclasses.replace(est, fn=_leaf_policy(cost, est, info, has_aux), has_aux=has_aux,
                               subset=_subset_on_diff(est.subset), plan=_on_diff(est.plan))


def _split(params, batch) -> tuple:
    """`(diff, Bound(static, batch))`: what a black-box method's own program takes (module docstring)."""
    diff, static = _leaves.partition(params)
    return diff, _leaves.Bound(static, batch)


def _on_diff(plan: Callable | None) -> Callable | None:
    """`plan(params, batch)` of the method's program on the differentiable leaves, called with the user's params."""
    return None if plan is None else (lambda params, batch: plan(*_split(params, batch)))


def _subset_on_diff(subset: Callable | None) -> Callable | None:
    """`subset(params, batch, n)` of the method's program on the differentiable leaves: the same program the
    gradient runs (its plan, its cost), called with the user's params and batch."""
    if subset is None:
        return None

    def on_diff(params, batch, n_directions):
        sub = subset(*_split(params, batch), n_directions)
        fn = sub.fn
        return sub._replace(fn=lambda params, batch: fn(*_split(params, batch)))

    return on_diff


def _leaf_policy(cost: Callable, inner: Estimator, info: Method, has_aux: bool) -> Callable:
    """`fn(params, batch, key)`: the checks, then `inner` on the differentiable leaves (module docstring)."""
    checked = set()  # (structure, shapes, dtypes) whose has_aux output form was checked (abstractly, once)

    def fn(params, batch, key):
        _validate.check_batch(batch, info.name)
        if not info.jittable:
            _validate.check_not_traced(params, batch, info.name)
        _validate.check_differentiable(params, info.name)
        if info.structured:
            return inner.fn(params, batch, key)
        diff, static = _leaves.partition(params)
        bound = _leaves.Bound(static, batch)
        if has_aux:
            leaves, treedef = jax.tree_util.tree_flatten((diff, bound))
            sig = (treedef, tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x)))) for x in leaves))
            if sig not in checked:
                _validate.check_aux_cost(lambda d, b: cost(_leaves.combine(d, b.static), b.batch), diff, bound,
                                         info.name)
                checked.add(sig)
        grads = inner.fn(diff, bound, key)
        if has_aux:  # on a rebuilt pytree, as the method's cost: a cost writing into its argument changes nothing
            return grads, cost(_leaves.combine(diff, static), batch)[1]
        return grads

    return fn


def _with_capabilities(est: Estimator, info: Method) -> Estimator:
    """The estimator with the registry entry's capabilities; a builder that contradicts them is a bug."""
    defaults = {f.name: f.default for f in dataclasses.fields(Estimator) if f.name in CAPABILITIES}
    for cap in CAPABILITIES:
        got = getattr(est, cap)
        if got != defaults[cap] and got != getattr(info, cap):
            raise RuntimeError(f"method {info.name!r}: its builder set {cap}={got}, its registry entry says "
                               f"{getattr(info, cap)}")
    if info.subset != (est.subset is not None):
        raise RuntimeError(f"method {info.name!r}: registered subset={info.subset} but its builder "
                           f"{'gave no' if est.subset is None else 'gave a'} subset function")
    return dataclasses.replace(est, **{cap: getattr(info, cap) for cap in CAPABILITIES})


def n_params(params) -> int:
    """Number of scalars a gradient method differentiates in `params`: the sizes of its floating array leaves
    (the leaf policy; ints, bools, keys and non-array leaves are not counted). P in `evaluations(P)`."""
    return _leaves.n_differentiable(params)
