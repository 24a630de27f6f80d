"""`check_grad`: the FD kernel (`finite_diff.fd_multi_step`) as a gradient checker; see gdjax/check/__init__.py."""

from __future__ import annotations

import contextlib
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks, sharding
from gdjax.check import _estimate
from gdjax.check._report import GradCheck, leaf_check
from gdjax.gradients import finite_diff

MODES = ("auto", "full", "directions")
METHODS = ("fd-central", "fd-forward", "fd-complex")
COMPUTE_DTYPES = ("float32", "float64")


def _eps_m(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


@contextlib.contextmanager
def _precision(dtype):
    """Enable 64-bit types while the FD side runs in float64 if the user's configuration has them off."""
    if jnp.dtype(dtype) != jnp.float64 or jax.config.jax_enable_x64:
        yield
        return
    if hasattr(jax, "enable_x64"):  # jax >= 0.6
        enable = jax.enable_x64
    else:  # older jax (a GPU image's own)
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


def _options(f, grad, mode, method, eps, num_directions, key, time_budget, compute_dtype, multiple, atol, rtol):
    """Validate every option before any work; returns the normalised ones."""
    if not callable(f):
        raise TypeError(f"f must be a callable f(params, *args) -> scalar, got {type(f).__name__}")
    if grad is not None and not callable(grad):
        raise TypeError(f"grad must be None (jax.grad(f)) or a callable grad(params, *args), got {type(grad).__name__}")
    _checks.choice(mode, MODES, "mode")
    _checks.choice(method, METHODS, "check method")
    eps = None if eps is None else _checks.positive_float(eps, "eps")
    num_directions = _checks.positive_int(num_directions, "num_directions")
    if key is not None:
        key = _checks.prng_key(key, "key (for mode 'directions')")
    if mode == "directions" and key is None:
        raise ValueError("mode='directions' needs key=jax.random.key(seed) for its random directions")
    time_budget = _checks.positive_float(time_budget, "time_budget")
    if compute_dtype is not None:
        compute_dtype = _checks.choice(jnp.dtype(compute_dtype).name if not isinstance(compute_dtype, str)
                                       else compute_dtype, COMPUTE_DTYPES, "compute_dtype")
    multiple = _checks.positive_float(multiple, "multiple")
    atol = None if atol is None else _checks.positive_float(atol, "atol", allow_zero=True)
    rtol = None if rtol is None else _checks.positive_float(rtol, "rtol", allow_zero=True)
    return eps, num_directions, key, time_budget, compute_dtype, multiple, atol, rtol


def _params(params):
    """(paths, leaves as arrays, treedef); TypeError naming the path of a leaf that is not a real float array."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not flat:
        raise ValueError(f"params must contain at least one floating array, got {params!r}")
    paths, leaves = [], []
    for path, leaf in flat:
        name = jax.tree_util.keystr(path) or "<root>"
        try:
            arr = jnp.asarray(leaf)
        except TypeError:
            raise TypeError(f"params leaf {name} is a {type(leaf).__name__}, not an array; pass non-array data "
                            f"through *args") from None
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"params leaf {name} has dtype {arr.dtype}; check_grad differentiates real floating "
                            f"leaves only: pass integer or complex data through *args, or cast the leaf to float")
        paths.append(name)
        leaves.append(arr)
    return paths, leaves, treedef


def _working_dtype(leaves, compute_dtype):
    """The dtype the FD side evaluates f in: compute_dtype, else the leaves' common dtype."""
    common = jnp.result_type(*[leaf.dtype for leaf in leaves])
    if compute_dtype is None:
        return jnp.dtype(common)
    wd = jnp.dtype(compute_dtype)
    if _eps_m(wd) > _eps_m(common):
        raise ValueError(f"compute_dtype={compute_dtype!r} is less precise than the params ({common}); use a "
                         f"higher precision (float64) or compute_dtype=None")
    return wd


def _grad_under_test(f, grad, params, args, paths, leaves, treedef):
    """The gradient under test as flat float64 NumPy arrays, one per leaf, and their dtypes."""
    fn = _default_grad(f) if grad is None else grad
    g = fn(params, *args)
    g_leaves, g_def = jax.tree_util.tree_flatten(g)
    if g_def != treedef:
        raise ValueError(f"grad returned a pytree of structure {g_def}, but params have structure {treedef}; "
                         f"grad(params, *args) must return a pytree like params, as jax.grad(f) does")
    out, dtypes = [], []
    for name, leaf, gl in zip(paths, leaves, g_leaves):
        gl = jnp.asarray(gl)
        if gl.shape != leaf.shape:
            raise ValueError(f"grad leaf {name} has shape {gl.shape}, but the params leaf has shape {leaf.shape}; "
                             f"grad must return one entry per parameter")
        if not jnp.issubdtype(gl.dtype, jnp.floating):
            raise TypeError(f"grad leaf {name} has dtype {gl.dtype}; a gradient must be a real floating array")
        out.append(np.asarray(jax.device_get(gl)).astype(np.float64).ravel())
        dtypes.append(gl.dtype)
    return out, dtypes


CACHE_SIZE = 32  # programs of the last (f, method, step) combinations kept compiled, for repeated checks


@functools.lru_cache(maxsize=CACHE_SIZE)
def _cost(f):
    """`cost(params, args_tuple) = f(params, *args)`, one object per f so that its compiled programs are reused."""
    return lambda p, a: f(p, *a)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _jit(fn):
    return jax.jit(fn)


def _default_grad(f):
    """jax.jit(jax.grad(f)), one per f (an unhashable f gets a fresh one): compiled once for repeated checks."""
    try:
        return _jitted_grad(f)
    except TypeError:
        return jax.jit(jax.grad(f))


@functools.lru_cache(maxsize=CACHE_SIZE)
def _jitted_grad(f):
    return jax.jit(jax.grad(f))


@functools.lru_cache(maxsize=CACHE_SIZE)
def _multi_step(cost, method, eps, scales, chunk_size, devices):
    """The jitted FD kernel at every step scale in one program (`finite_diff.fd_multi_step`), one per arguments."""
    mesh = sharding.resolve_mesh(devices, None)
    fn = functools.partial(finite_diff.fd_multi_step, cost, scheme=method[3:], eps=eps, scales=scales,
                           chunk_size=chunk_size, mesh=mesh, method=method)
    return sharding.jit_replicated(fn, mesh)


def _build(cost, method, eps, scales, chunk_size, devices):
    """The multi-step program, from the cache when its arguments are hashable (a repeated check compiles nothing)."""
    try:
        return _multi_step(cost, method, eps, scales, chunk_size, devices)
    except TypeError:  # unhashable devices (a list) or f
        return _multi_step.__wrapped__(cost, method, eps, scales, chunk_size, devices)


def _base_value(cost, pw, args, wd, method):
    """f at the base point in dtype wd, after checking it is a finite real scalar (and complex-safe for fd-complex)."""
    try:
        out = jax.eval_shape(cost, pw, args)
    except Exception as e:  # noqa: BLE001  (re-raised with the fix)
        raise ValueError(f"f could not be evaluated with params in {wd.name} ({type(e).__name__}: {e}); "
                         f"pass compute_dtype=None to evaluate f in the params' own dtype") from e
    _check_output(out)
    if _eps_m(out.dtype) > _eps_m(wd):
        raise ValueError(f"f returned {out.dtype} for {wd.name} params, so it does not evaluate in {wd.name}; "
                         f"make f keep its params' dtype or use another compute_dtype")
    if method == "fd-complex":
        _check_complex(cost, pw, args)
    fn = _jit(cost)
    f0 = float(fn(pw, args))
    if not np.isfinite(f0):
        raise ValueError(f"f(params, *args) = {f0} at the base point (in {wd.name}); a gradient check needs a finite "
                         f"value there: check the params and inputs (or use a higher compute_dtype on overflow)")
    return fn, f0


def _check_output(out):
    """ValueError / TypeError unless `out` (from jax.eval_shape of f) is a real floating scalar."""
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        raise ValueError(f"f must return a scalar, got {getattr(out, 'shape', type(out).__name__)}; reduce it, "
                         f"e.g. with jnp.sum or jnp.mean")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f must return a real floating scalar for real params, got dtype {out.dtype}")


def _check_complex(cost, pw, args):
    cpw = jax.tree_util.tree_map(lambda a: a.astype(jnp.result_type(a.dtype, jnp.complex64)), pw)
    try:
        out = jax.eval_shape(cost, cpw, args)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"method 'fd-complex' needs f to accept complex params, but f raised "
                         f"{type(e).__name__}: {e}; use method='fd-central'") from e
    if not jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise ValueError(f"method 'fd-complex' needs f to return a complex value for complex params (f analytic and "
                         f"complex-safe), got {out.dtype}: the imaginary part is lost; use method='fd-central'")


def _passes(method, eps1, wd):
    """Step factors of the FD passes: (eps1, eps1 / 2), or (eps1,) for the complex step."""
    if method == "fd-complex":
        return (eps1,)
    if eps1 / 2 <= _eps_m(wd):
        raise ValueError(f"eps={eps1:g} is too small: the error estimate also takes the step eps/2, which must exceed "
                         f"the machine epsilon of {wd.name} ({_eps_m(wd):.3g}); use eps=None (the default)")
    return (eps1, eps1 / 2)


def _run_passes(cost, point, batch, method, epss, chunk_size, devices):
    """FD gradients of `cost` at `point` for each step factor (one compiled program) and the evaluations."""
    devices = tuple(devices) if isinstance(devices, list) else devices
    scales = tuple(e / epss[0] for e in epss)  # (1.0, 0.5): eps1 * 0.5 is eps1 / 2 exactly
    outs = _build(cost, method, epss[0], scales, chunk_size, devices)(point, batch)
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(point))
    evals = len(epss) * int(finite_diff.n_directions(method[3:], n))
    return [[np.asarray(x).astype(np.float64).ravel() for x in jax.tree_util.tree_leaves(o)]
            for o in jax.device_get(outs)], evals


def _default_floor(g_dtype, scale, atol, rtol):
    """atol / rtol of an entry: given, else 10 eps_m of the gradient's dtype (its own rounding) at the gradient's
    scale (`scale` = max |fd|)."""
    e = 10 * _eps_m(g_dtype)
    return (e * scale if atol is None else atol), (e if rtol is None else rtol)


def _check_full(cost, pw, args, g, g_dtypes, paths, o):
    """Every entry: FD values, estimates and tolerances leaf by leaf.

    Returns (LeafChecks, fd pytree of float64 NumPy arrays, evaluations, largest atol, largest rtol used)."""
    scheme = o["method"][3:]
    outs, evals = _run_passes(cost, pw, args, o["method"], o["epss"], o["chunk_size"], o["devices"])
    leaves, treedef = jax.tree_util.tree_flatten(pw)
    est = []
    for k, leaf in enumerate(leaves):
        h = _estimate.steps(np.asarray(leaf, np.float64).ravel(), o["epss"][0])
        d2 = outs[1][k] if len(outs) > 1 else None
        est.append(_estimate.fd_estimate(scheme, outs[0][k], d2, h, abs(o["f0"]), o["eps_m"], o["richardson"]))
    scale = max(float(np.max(np.abs(e[0]))) for e in est)
    rows, floors = [], []
    for k, leaf in enumerate(leaves):
        value, trunc, rnd = est[k]
        floors.append(_default_floor(g_dtypes[k], scale, o["atol"], o["rtol"]))
        tol = _estimate.tolerance(value, trunc, rnd, o["multiple"], *floors[-1])
        rows.append(leaf_check(paths[k], leaf.shape, g_dtypes[k], g[k], value, trunc, rnd, tol))
    fd = jax.tree_util.tree_unflatten(treedef, [e[0].reshape(leaf.shape) for e, leaf in zip(est, leaves)])
    return rows, fd, evals, max(a for a, _ in floors), max(r for _, r in floors)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _direction_cost(cost, treedef):
    """`cost_dir(alpha, (base_leaves, directions, args)) = cost(base + sum_j alpha_j u_j, args)`, alpha: (k,)."""

    def cost_dir(alpha, batch):
        base, us, a = batch
        return cost(jax.tree_util.tree_unflatten(treedef, [b + jnp.tensordot(alpha, u, axes=1)
                                                           for b, u in zip(base, us)]), a)

    return cost_dir


def _check_directions(cost, pw, args, g, g_dtypes, o):
    """k random unit directions u_j: FD of t -> f(v + t u_j) at t = 0 against grad . u_j, one row for all."""
    leaves, treedef = jax.tree_util.tree_flatten(pw)
    k, wd = o["num_directions"], o["wd"]
    keys = jax.random.split(o["key"], len(leaves))
    dirs = [jax.random.normal(kk, (k,) + leaf.shape, wd) for kk, leaf in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(jnp.reshape(u, (k, -1)) ** 2, axis=1) for u in dirs))
    dirs = [u / jnp.reshape(norm, (k,) + (1,) * (u.ndim - 1)) for u in dirs]

    outs, evals = _run_passes(_direction_cost(cost, treedef), jnp.zeros((k,), wd), (leaves, dirs, args),
                              o["method"], o["epss"], o["chunk_size"], o["devices"])
    us = [np.asarray(u, np.float64).reshape(k, -1) for u in dirs]
    gv = sum(u @ gk for u, gk in zip(us, g))  # a non-finite grad entry makes its directions fail
    # the point v + t u_j itself rounds: add eps_m sum |g_i v_i| to |f| in the rounding term
    finite = [np.nan_to_num(gk, nan=0.0, posinf=0.0, neginf=0.0) for gk in g]
    vg = sum(float(np.sum(np.abs(np.asarray(leaf, np.float64).ravel() * gk))) for leaf, gk in zip(leaves, finite))
    h = np.full(k, o["epss"][0])
    d2 = outs[1][0] if len(outs) > 1 else None
    value, trunc, rnd = _estimate.fd_estimate(o["method"][3:], outs[0][0], d2, h, abs(o["f0"]) + vg, o["eps_m"],
                                              o["richardson"])
    g_dtype = min(g_dtypes, key=lambda d: -_eps_m(d))  # the least precise leaf of the gradient
    atol, rtol = _default_floor(g_dtype, float(np.max(np.abs(value))), o["atol"], o["rtol"])
    tol = _estimate.tolerance(value, trunc, rnd, o["multiple"], atol, rtol)
    row = leaf_check(f"<{k} random directions>", (k,), wd, gv, value, trunc, rnd, tol)
    return [row], (value, gv), evals, atol, rtol


def _choose_mode(mode, fn, pw, args, n, o):
    """(mode, reason): auto predicts the full check's time from one timed evaluation of f."""
    if mode != "auto":
        return mode, "as asked"
    per_eval = {"fd-central": 2 * n, "fd-forward": n + 1, "fd-complex": n}[o["method"]] * len(o["epss"])
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(pw, args))
        times.append(time.perf_counter() - t0)
    predicted = per_eval * min(times)
    choice = "full" if predicted <= o["time_budget"] else "directions"
    reason = (f"auto: {per_eval} evaluations x {min(times) * 1e6:.0f} us predicted {predicted:.3g} s "
              f"{'<=' if choice == 'full' else '>'} time_budget {o['time_budget']:g} s")
    if choice == "directions" and o["key"] is None:
        raise ValueError(f"mode='auto' chose 'directions' ({reason}); pass key=jax.random.key(seed) for the random "
                         f"directions, or mode='full' (or a larger time_budget) to check every entry")
    return choice, reason


def check_grad(f, params, *args, grad=None, mode: str = "auto", method: str = "fd-central", eps: float | None = None,
               richardson: bool = False, num_directions: int = 16, key=None, time_budget: float = 20.0,
               compute_dtype=None, multiple: float = 10.0, atol: float | None = None, rtol: float | None = None,
               chunk_size: int | None = None, devices=None) -> GradCheck:
    """Check `grad(params, *args)` (default `jax.grad(f)`) against finite differences of `f`; see the package
    docstring for the modes, the error estimate and the tolerance rule, and `GradCheck` for the report.

    Shapes: params any pytree of real floating arrays (P entries); f(params, *args) -> scalar; grad returns a
    pytree like params. Returns a `GradCheck` (`report.ok`, `str(report)`, `report.assert_ok()`).
    """
    t_start = time.perf_counter()
    (eps, num_directions, key, time_budget, compute_dtype, multiple, atol, rtol) = _options(
        f, grad, mode, method, eps, num_directions, key, time_budget, compute_dtype, multiple, atol, rtol)
    paths, leaves, treedef = _params(params)
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    wd = _working_dtype(leaves, compute_dtype)
    try:
        cost = _cost(f)
    except TypeError:  # an unhashable callable: no reuse of compiled programs
        cost = _cost.__wrapped__(f)
    _check_output(jax.eval_shape(cost, params, args))  # before jax.grad(f), whose own error is less helpful
    g, g_dtypes = _grad_under_test(f, grad, params, args, paths, leaves, treedef)
    with _precision(wd):
        pw = jax.tree_util.tree_map(lambda a: a.astype(wd), params)
        fn, f0 = _base_value(cost, pw, args, wd, method)
        eps1 = _estimate.default_eps(method[3:], _eps_m(wd)) if eps is None else eps
        o = {"method": method, "epss": _passes(method, eps1, wd), "eps_m": _eps_m(wd), "wd": wd, "f0": f0,
             "richardson": bool(richardson), "multiple": multiple, "atol": atol, "rtol": rtol, "key": key,
             "num_directions": num_directions, "time_budget": time_budget, "chunk_size": chunk_size,
             "devices": devices}
        n = sum(int(leaf.size) for leaf in leaves)
        used, reason = _choose_mode(mode, fn, pw, args, n, o)
        if used == "full":
            rows, fd, evals, atol, rtol = _check_full(cost, pw, args, g, g_dtypes, paths, o)
            g_out = jax.tree_util.tree_unflatten(treedef, [gk.reshape(leaf.shape) for gk, leaf in zip(g, leaves)])
        else:
            rows, (fd, g_out), evals, atol, rtol = _check_directions(cost, pw, args, g, g_dtypes, o)
    return GradCheck(
        ok=all(r.ok for r in rows), leaves=tuple(rows), mode=used, mode_reason=reason, method=method, eps=eps1,
        richardson=bool(richardson), compute_dtype=wd.name, multiple=multiple, atol=float(atol), rtol=float(rtol),
        f_value=f0, n_params=n, num_directions=num_directions if used == "directions" else None,
        evaluations=int(evals) + 1, seconds=time.perf_counter() - t_start, fd=fd, grad=g_out)
