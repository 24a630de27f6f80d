"""`check_grad`: the argument routing, the compute dtype, the mode; see gdjax/check/__init__.py."""

from __future__ import annotations

import contextlib
import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks
from gdjax.check import _full, _localise
from gdjax.check._full import locate as _locate
from gdjax.check._problem import Problem, jitted, jitted_grad
from gdjax.check._report import FIXES, GradCheck, NamedEntry, leaf_check, overall
from gdjax import precision as _precision
from gdjax.gradients import finite_diff, method_info, methods_where

MODES = ("auto", "full", "directions")
COMPUTE_DTYPES = ("float32", "float64", "params")
DEFAULT_KEY_SEED = 0  # mode "directions" / auto's fallback without a key: jax.random.key(0)

#: check_grad's own options and their defaults (pass them as check={...}; see `check_grad`)
OPTIONS = {"mode": "auto", "method": "fd-central", "eps": None, "richardson": False, "num_directions": 16,
           "key": None, "time_budget": 20.0, "compute_dtype": None, "matmul_precision": None, "multiple": 10.0,
           "atol": None, "rtol": None, "max_rel_tol": 0.1, "noise_floor": 1e-3, "chunk_size": None,
           "devices": None}
RESERVED = ("grad", "has_aux", "check")  # check_grad's own keyword parameters


def check_methods() -> tuple[str, ...]:
    """The methods `check_grad` offers, by their registry entries: deterministic FD methods that take any f (not
    structured) and have a fixed scheme of truncation order >= 2 (fd-central, fd-complex). The check takes the
    scheme from the entry and the steps from the one step rule (`gradients._steps`); a first-order scheme's O(h)
    error would widen every tolerance."""
    return tuple(m for m in methods_where(kind="fd", stochastic=False, structured=False)
                 if (method_info(m).order or 0) >= 2)


def _scheme(method) -> str:
    """The FD scheme of check_grad's `method` (its registry entry's); refuses any other method with the fix."""
    offered = check_methods()
    if method in offered:
        return method_info(method).scheme
    use = f"use method='{OPTIONS['method']}' (the default) or one of {', '.join(repr(m) for m in offered)}"
    if isinstance(method, str) and method_info(method).order == 1:  # method_info refuses an unknown name
        raise ValueError(f"method {method!r} is not offered by check_grad (its first-order error "
                         f"{method_info(method).error_order} widens every tolerance); {use}")
    raise ValueError(f"method {method!r} is not offered by check_grad: it takes a deterministic FD method that "
                     f"accepts any f and has a fixed scheme of order >= 2 (its registry entry: kind 'fd', not "
                     f"stochastic, not structured, scheme 'central' or 'complex'); {use}")


def _eps_m(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def _signature(f):
    """(names f accepts by keyword, whether it takes **kwargs), or None when its signature is unknown."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    names = {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if params and params[0].kind == params[0].KEYWORD_ONLY:
        names.add(params[0].name)
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _route(f, kwargs: dict, check, reserved_given: dict):
    """Split check_grad's keywords into (options, f_kwargs); refuse every ambiguous one with the fix."""
    if check is not None and not isinstance(check, dict):
        raise TypeError(f"check must be a dict of check_grad's options, e.g. check={{'mode': 'full'}}, got "
                        f"{type(check).__name__}")
    opts = dict(check or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"check: unknown option(s) {unknown}; valid: {', '.join(OPTIONS)}")
    sig = _signature(f)
    for name, given in reserved_given.items():
        if given and sig is not None and name in sig[0]:
            raise ValueError(f"{name}= is check_grad's own argument, but f also has a parameter {name!r}: pass f's "
                             f"with functools.partial(f, {name}=...) so that it cannot be taken for check_grad's")
    f_kwargs = {}
    for name, value in kwargs.items():
        if name not in OPTIONS:
            if sig is not None and name not in sig[0] and not sig[1]:
                raise TypeError(f"f does not accept the keyword argument {name!r} (its parameters: "
                                f"{sorted(sig[0])}); check_grad's own options are {', '.join(OPTIONS)}")
            f_kwargs[name] = value
        elif sig is not None and name in sig[0]:
            f_kwargs[name] = value  # f names it: it is f's (check_grad's own goes in check={...})
        elif sig is None or sig[1]:
            raise ValueError(
                f"{name}= is ambiguous: it is an option of check_grad and f takes **kwargs (or its signature is "
                f"unknown); pass check_grad's as check={{{name!r}: ...}} and f's with functools.partial(f, "
                f"{name}=...)")
        else:
            if name in opts:
                raise ValueError(f"{name} given twice (as {name}= and in check={{...}}); give it once")
            opts[name] = value  # f does not take it: check_grad's option, as it always was
    return dict(OPTIONS, **opts), f_kwargs


def _validate(f, grad, o):
    if not callable(f):
        raise TypeError(f"f must be a callable f(params, *args, **kwargs) -> scalar, got {type(f).__name__}")
    if grad is not None and not callable(grad):
        raise TypeError(f"grad must be None (jax.grad(f)) or a callable grad(params, *args, **kwargs), got "
                        f"{type(grad).__name__}")
    _checks.choice(o["mode"], MODES, "mode")
    o["scheme"] = _scheme(o["method"])
    o["eps"] = None if o["eps"] is None else _checks.positive_float(o["eps"], "eps")
    o["num_directions"] = _checks.positive_int(o["num_directions"], "num_directions")
    if o["key"] is not None:
        o["key"] = _checks.prng_key(o["key"], "key (the random directions' key)")
    o["time_budget"] = _checks.positive_float(o["time_budget"], "time_budget")
    cd = o["compute_dtype"]
    if cd is not None:
        name = cd if isinstance(cd, str) else jnp.dtype(cd).name
        o["compute_dtype"] = _checks.choice(name, COMPUTE_DTYPES, "compute_dtype")
    o["matmul_precision"] = _precision.resolve(o["matmul_precision"])
    o["multiple"] = _checks.positive_float(o["multiple"], "multiple")
    for name in ("atol", "rtol"):
        o[name] = None if o[name] is None else _checks.positive_float(o[name], name, allow_zero=True)
    o["max_rel_tol"] = _checks.positive_float(o["max_rel_tol"], "max_rel_tol")
    o["noise_floor"] = _checks.positive_float(o["noise_floor"], "noise_floor", allow_zero=True)
    o["richardson"] = bool(o["richardson"])
    return o


@contextlib.contextmanager
def _x64(dtype):
    """Enable 64-bit types while the FD side runs in float64 when asked for with the user's x64 off."""
    if jnp.dtype(dtype) != jnp.float64 or jax.config.jax_enable_x64:
        yield
        return
    if hasattr(jax, "enable_x64"):  # jax >= 0.6
        enable = jax.enable_x64
    else:  # older jax
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


def _compute_dtype(leaves, paths, asked):
    """(dtype, note, default?): float64 by default where x64 is on, else float32 (16-bit params) or their own."""
    for path, leaf in zip(paths, leaves):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            raise TypeError(f"params leaf {path} is complex ({leaf.dtype}); check_grad checks real floating leaves: "
                            f"store the real and imaginary parts as two real leaves")
    common = jnp.dtype(jnp.result_type(*[leaf.dtype for leaf in leaves]))
    x64 = bool(jax.config.jax_enable_x64)
    if asked == "params":
        return common, f"params' dtype, as asked", False
    if asked is not None:
        wd = jnp.dtype(asked)
        if _eps_m(wd) > _eps_m(common):
            raise ValueError(f"compute_dtype={asked!r} is less precise than the params ({common.name}); use "
                             f"'float64' or leave compute_dtype unset")
        return wd, "as asked", False
    if common == jnp.float64:
        return common, "params' dtype", True
    if x64:
        return jnp.dtype(jnp.float64), f"params {common.name}, x64 on: float64 by default", True
    return (jnp.dtype(jnp.float32), f"params {common.name}, x64 off: float32; for float64 set "
            f"jax.config.update('jax_enable_x64', True) at start-up", True)


def _grad_under_test(problem, grad, params, args, kwargs, has_aux):
    """The gradient under test at the differentiable leaves: flat float64 per leaf, and each leaf's dtype.

    Default: jax.grad of f over the differentiable leaves (custom rules included), jitted once per f and
    structure, under the check's matmul precision."""
    if grad is None:
        g_leaves = jitted_grad(problem.cost)(list(problem.leaves), problem.inputs)
        return _flat_grad(problem, g_leaves)
    g = grad(params, *args, **kwargs)
    if has_aux:
        if not (isinstance(g, tuple) and len(g) == 2):
            raise ValueError("with has_aux=True, grad must return (gradient, aux) as jax.grad(f, has_aux=True) "
                             "does")
        g = g[0]
    try:
        picked = jax.tree_util.tree_map(lambda d, gl: None if d is None else gl, problem.diff, g,
                                        is_leaf=lambda x: x is None)
        g_leaves = jax.tree_util.tree_leaves(picked)
    except (ValueError, TypeError) as e:
        raise ValueError(f"grad returned a pytree whose structure differs from params' ({e}); grad must return a "
                         f"pytree like params, as jax.grad(f) does (None or anything at leaves not "
                         f"differentiated)") from None
    if len(g_leaves) != len(problem.leaves):
        raise ValueError(f"grad returned {len(g_leaves)} arrays at params' {len(problem.leaves)} floating leaves "
                         f"({problem.paths}); grad must return an array at each")
    return _flat_grad(problem, g_leaves)


def _flat_grad(problem, g_leaves):
    out, dtypes = [], []
    for name, leaf, gl in zip(problem.paths, problem.leaves, g_leaves):
        gl = jnp.asarray(gl)
        if gl.shape != leaf.shape:
            raise ValueError(f"grad leaf {name} has shape {gl.shape}, but the params leaf has shape {leaf.shape}; "
                             f"grad must return one entry per parameter")
        if not jnp.issubdtype(gl.dtype, jnp.floating):
            raise TypeError(f"grad leaf {name} has dtype {gl.dtype}; a gradient must be a real floating array")
        out.append(np.asarray(jax.device_get(gl)).astype(np.float64).ravel())
        dtypes.append(gl.dtype)
    return out, dtypes


def _check_output(out, has_aux):
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError(f"has_aux=True: f must return (scalar, aux), got {type(out).__name__}")
        out = out[0]
    elif isinstance(out, tuple | list):
        raise ValueError(f"f must return a scalar, got a {type(out).__name__}; if f returns (loss, aux), pass "
                         f"has_aux=True")
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        raise ValueError(f"f must return a scalar, got {getattr(out, 'shape', type(out).__name__)}; reduce it, "
                         f"e.g. with jnp.sum or jnp.mean")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f must return a real floating scalar for real params, got dtype {out.dtype}")
    return out


def _check_complex(problem, leaves_w, method):
    cw = [a.astype(jnp.result_type(a.dtype, jnp.complex64)) for a in leaves_w]
    try:
        out = jax.eval_shape(problem.cost, cw, problem.inputs)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"method {method!r} needs f to accept complex params, but f raised "
                         f"{type(e).__name__}: {e}; use method='fd-central'") from e
    if not jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise ValueError(f"method {method!r} needs f to return a complex value for complex params (f analytic and "
                         f"complex-safe), got {out.dtype}: the imaginary part is lost; use method='fd-central'")


def _time_one(problem, leaves_w):
    fn = jitted(problem.cost)
    jax.block_until_ready(fn(list(leaves_w), problem.inputs))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(list(leaves_w), problem.inputs))
        times.append(time.perf_counter() - t0)
    return min(times)


def _mode(o, problem, leaves_w, n):
    """(mode, reason, extra evaluations): auto predicts the full check's time from one timed evaluation."""
    if o["mode"] != "auto":
        return o["mode"], "as asked", 0
    per = finite_diff.n_directions(o["scheme"], n) + 1
    t = _time_one(problem, leaves_w)
    predicted = per * t
    if predicted <= o["time_budget"]:
        return "full", (f"auto: {per} evaluations x {t * 1e6:.0f} us = {predicted:.3g} s <= time_budget "
                        f"{o['time_budget']:g} s"), 4
    return "directions", (f"auto: the full check ({per} evaluations x {t * 1e6:.0f} us = {predicted:.3g} s) exceeds "
                          f"time_budget {o['time_budget']:g} s, so the localising mode ran"), 4


def _inconclusive(status, reason, g, value, est, tol, atol, rtol, o, scale):
    """Entries that passed with a tolerance above max_rel_tol x max(|g|, |fd|) (above the noise floor)."""
    with np.errstate(invalid="ignore"):
        mag = np.maximum(np.abs(g), np.abs(value))
        inc = (status == _full.OK) & (mag > o["noise_floor"] * scale) & (tol > o["max_rel_tol"] * mag)
    status[inc] = _full.INCONCLUSIVE
    floor = atol + rtol * np.abs(value)
    reason[inc] = np.where(floor >= o["multiple"] * est, "grad", "fd")[inc]


def check_grad(f, params, *args, grad=None, has_aux: bool = False, check: dict | None = None, **kwargs) -> GradCheck:
    """Check `grad` (default `jax.grad(f)`) against finite differences of `f(params, *args, **kwargs)`.

    Arguments: f returns a scalar (or `(scalar, aux)` with has_aux=True); params any pytree: only its inexact
    (floating) array leaves are checked, every other leaf (ints, bools, keys, functions, static fields) is
    passed to f untouched. Every positional argument after params, and every keyword that is not one of
    check_grad's options, goes to f (and to `grad`). check_grad's options go in `check={...}` (see `OPTIONS` and
    docs/gradcheck.md); an option name given as a plain keyword goes to f when f names it, is check_grad's when
    f does not take it, and is refused as ambiguous when f takes **kwargs.

    Returns a `GradCheck`: `report.status` ("ok", "kinks", "inconclusive", "failed"), `str(report)`,
    `report.assert_ok()`.
    """
    t_start = time.perf_counter()
    o, f_kwargs = _route(f, kwargs, check, {"grad": grad is not None, "has_aux": bool(has_aux)})
    o = _validate(f, grad, o)
    problem = Problem(f, params, args, f_kwargs, has_aux, o["matmul_precision"])
    out = jax.eval_shape(problem.raw, problem.leaves, problem.inputs)
    _check_output(out, has_aux)
    g, g_dtypes = _grad_under_test(problem, grad, params, args, f_kwargs, has_aux)
    wd, note, default = _compute_dtype(problem.leaves, problem.paths, o["compute_dtype"])
    with _x64(wd):
        leaves_w = [jnp.asarray(leaf).astype(wd) for leaf in problem.leaves]
        try:
            res = jax.eval_shape(problem.cost, leaves_w, problem.inputs)
        except Exception as e:  # noqa: BLE001  (re-raised with the fix, or the default falls back, said so)
            own = jnp.dtype(jnp.result_type(*[leaf.dtype for leaf in problem.leaves]))
            if not default or own == wd:
                raise ValueError(f"f could not be evaluated with params in {wd.name} ({type(e).__name__}: {e}); "
                                 f"pass check={{'compute_dtype': 'params'}} to evaluate f in the params' own "
                                 f"dtype") from e
            # the float64 default meets a cost that mixes dtypes strictly (lax.conv of float32 inputs): check in
            # the params' own dtype, and say why and how to get float64
            note = (f"f fails with {wd.name} params ({type(e).__name__}), so it is checked in {own.name}; pass its "
                    f"inputs in {wd.name} to check in {wd.name}")
            wd = own
            leaves_w = [jnp.asarray(leaf).astype(wd) for leaf in problem.leaves]
            res = jax.eval_shape(problem.cost, leaves_w, problem.inputs)
        if _eps_m(res.dtype) > _eps_m(wd):
            if not default:
                raise ValueError(f"f returned {res.dtype} for {wd.name} params, so it does not evaluate in "
                                 f"{wd.name}; make f keep its params' dtype or use another compute_dtype")
            wd = jnp.dtype(res.dtype)
            note = f"f returns {wd.name} for float64 params, so it is checked in {wd.name}"
            leaves_w = [jnp.asarray(leaf).astype(wd) for leaf in problem.leaves]
        if o["scheme"] == "complex":
            _check_complex(problem, leaves_w, o["method"])
        f0 = float(jitted(problem.cost)(leaves_w, problem.inputs))
        if not np.isfinite(f0):
            raise ValueError(f"f = {f0} at the base point (in {wd.name}); a gradient check needs a finite value "
                             f"there: check the params and inputs")
        scheme = o["scheme"]
        o.update(wd=wd, eps_m=_eps_m(wd), eps1=finite_diff.step_factor(scheme, o["eps"], wd, o["method"]))
        if scheme != "complex" and o["eps1"] / 2 <= o["eps_m"]:
            raise ValueError(f"eps={o['eps1']:g} is too small: the check also takes the step eps/2, which must "
                             f"exceed the machine epsilon of {wd.name}; leave eps unset (the default)")
        n = sum(problem.sizes)
        mode, reason, evals = _mode(o, problem, leaves_w, n)
        evals += 1  # f at the base point
        key_note = ""
        if mode == "directions":
            if o["key"] is None:
                o["key"] = jax.random.key(DEFAULT_KEY_SEED)
                key_note = (f"directions from the fixed default key jax.random.key({DEFAULT_KEY_SEED}); pass "
                            f"check={{'key': ...}} for others")
            else:
                key_note = "directions from the given key"
        g_flat = np.concatenate(g)
        eps_g = np.concatenate([np.full(gk.size, _eps_m(d)) for gk, d in zip(g, g_dtypes)])
        sizes = problem.sizes
        cuts = np.cumsum(sizes)[:-1]
        if mode == "full":
            e, ev, scale, atol, rtol = _full.check_full(problem, leaves_w, g_flat, eps_g, f0, o)
            evals += ev
            _inconclusive(e.status, e.reason, g_flat, e.value, e.est, e.tol, atol, rtol, o, scale)
            rows = []
            for k, (path, leaf, sl) in enumerate(zip(problem.paths, problem.leaves, np.split(np.arange(n), cuts))):
                rows.append(leaf_check(path, leaf.shape, g_dtypes[k], g_flat[sl], e.value[sl], e.est[sl], e.tol[sl],
                                       e.status[sl], e.forward[sl], e.backward[sl], e.refined[sl]))
            reasons = set(e.reason[e.status == _full.INCONCLUSIVE])
            status = overall(list(e.status))
            fd = jax.tree_util.tree_unflatten(problem.diff_def, [x.reshape(leaf.shape) for x, leaf in
                                                                 zip(np.split(e.value, cuts), problem.leaves)])
            g_out = jax.tree_util.tree_unflatten(problem.diff_def, [x.reshape(leaf.shape) for x, leaf in
                                                                    zip(g, problem.leaves)])
            named, unresolved = (), ()
        else:
            dirs, found, unresolved, ev = _localise.check_directions(problem, leaves_w, g_flat, eps_g, f0, o)
            evals += ev
            k = o["num_directions"]
            d_status = np.where(dirs["fail"], _full.FAIL, _full.OK).astype(object)
            d_reason = np.full(k, "", dtype=object)
            scale = float(np.nanmax(np.maximum(np.abs(dirs["grad"]), np.abs(dirs["fd"]))))
            _inconclusive(d_status, d_reason, dirs["grad"], dirs["fd"], dirs["est"], dirs["tol"],
                          dirs["atol"], np.zeros(k), o, scale)
            rows = [leaf_check(f"<{k} random directions>", (k,), wd, dirs["grad"], dirs["fd"], dirs["est"],
                               dirs["tol"], d_status)]
            named = ()
            entry_status = []
            if found is not None:
                named = tuple(NamedEntry(path=problem.paths[kk], index=_unravel(problem.leaves[kk].shape, loc),
                                         status=found["status"][j], grad=float(g_flat[i]),
                                         fd=float(found["value"][j]), tol=float(found["tol"][j]),
                                         forward=float(found["forward"][j]), backward=float(found["backward"][j]))
                              for j, i in enumerate(found["index"]) for kk, loc in [_locate(sizes, int(i))])
                entry_status = list(found["status"])
            unresolved = tuple(_describe_range(problem, sizes, lo, hi) for lo, hi in unresolved)
            if dirs["fail"].any():
                status = overall(entry_status + (["failed"] if unresolved or not entry_status else []))
            else:
                status = overall(list(d_status))
            reasons = set(d_reason[d_status == _full.INCONCLUSIVE]) | (
                {found["reason"][j] for j in range(len(found["index"])) if found["status"][j] == "inconclusive"}
                if found is not None else set())
            fd, g_out = dirs["fd"], dirs["grad"]
    gdtype = ", ".join(sorted({jnp.dtype(d).name for d in g_dtypes}))
    fixes = tuple(FIXES[r].format(wd=wd.name, gdtype=gdtype, frac=o["max_rel_tol"]) for r in sorted(reasons) if r)
    return GradCheck(
        status=status, ok=status == "ok", leaves=tuple(rows), mode=mode, mode_reason=reason, method=o["method"],
        eps=float(o["eps1"]), richardson=o["richardson"], compute_dtype=wd.name, compute_note=note,
        matmul_precision=o["matmul_precision"], multiple=o["multiple"], atol=o["atol"], rtol=o["rtol"],
        max_rel_tol=o["max_rel_tol"], noise_floor=o["noise_floor"], f_value=f0, n_params=n,
        passed_through=problem.static_note, num_directions=o["num_directions"] if mode == "directions" else None,
        key_note=key_note, evaluations=int(evals), seconds=time.perf_counter() - t_start, fixes=fixes, named=named,
        unresolved=tuple(unresolved), fd=fd, grad=g_out)


def _unravel(shape, i):
    return tuple(int(x) for x in np.unravel_index(i, shape)) if len(shape) else ()


def _describe_range(problem, sizes, lo, hi):
    (k0, a), (k1, b) = _locate(sizes, lo), _locate(sizes, hi - 1)
    return f"flat entries {lo}..{hi - 1} ({problem.paths[k0]}{list(_unravel(problem.leaves[k0].shape, a))} to " \
           f"{problem.paths[k1]}{list(_unravel(problem.leaves[k1].shape, b))})"
