#!/usr/bin/env python
"""gdjax.check_grad against jax.test_util.check_grads and torch.autograd.gradcheck: planted bugs, false alarms,
kinks, low precision, float32 1% errors, the localising mode, speed.

    python benchmarks/gradcheck.py                  # the reference run (needs torch for the torch rows)
    python benchmarks/gradcheck.py --quick          # tiny sizes, 1 seed; torch rows only where installed

Sections (one results file; every row has `section`): detection (bugs planted in hand-written custom_vjp rules,
one-entry bugs at an entry drawn uniformly; "named" = exactly the buggy leaf fails at the planted index; beside it
jax check_grads), detection_by_magnitude (one-entry bugs by |g_i| / max|g| of the planted entry), false_alarm
(correct rules, float32 and float64), kinks (correct float32 costs with kinks, zero biases), low_precision
(bfloat16: a doubled entry at the largest |g|, a 30% error at a uniform entry), float32 (a 1% one-entry error at
P = 72 and P ~ 16,000; correct cases), localising (mode "directions": a 1% error named; false alarms), speed (the
lecture's net, float64, N = 10: first call and repeated, jax check_grads, torch gradcheck slow / fast; --torch
require (default) fails without torch, auto (default with --quick) leaves its rows out, skip never imports it).

Output: <out>/gradcheck.json (+ .csv), gradcheck.{png,svg}. Errors: one line on stderr, exit status 2 or 1.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 cases (float32 ones are cast explicitly)

import gdjax  # noqa: E402
from gdjax import profiling, results  # noqa: E402
from gdjax.bench.report import human_time  # noqa: E402
from gdjax.data import Batch  # noqa: E402

COMMAND = "gradcheck"
TARGETS = {"first_vs_torch_slow": 5.0, "repeated_vs_torch_slow": 10.0}
BIG_P_SIZES = (128, 120, 10)  # float32 section's large net: P = 16,690
DEFAULTS = {"seeds": 20, "correct_per_config": 10, "sizes": "784,30,10", "batch": 10, "repeats": 3, "kinds": "all",
            "archs": "all", "acts": "all", "torch": "require", "kink_cases": 50, "float32_cases": 100,
            "localising_sizes": (784, 30, 10), "float32_sizes": ((8, 6, 4), BIG_P_SIZES)}
QUICK = {"seeds": 1, "correct_per_config": 1, "sizes": "20,8,4", "batch": 5, "repeats": 1, "kinds": "all",
         "archs": "mlp,conv", "acts": "all", "torch": "auto", "kink_cases": 1, "float32_cases": 1,
         "localising_sizes": (6, 5, 3), "float32_sizes": ((8, 6, 4),)}
MAGNITUDE_BINS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)  # |g_i| / max|g| of a planted entry
ARCHS = ("mlp", "deep-mlp", "dict-mlp", "conv")
ARCH_SIZES = {"mlp": (6, 8, 3), "deep-mlp": (6, 8, 6, 3), "dict-mlp": (6, 8, 3), "conv": None}
ACTIVATIONS = {  # name: (act, act')
    "sigmoid": (jax.nn.sigmoid, lambda z: jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z))),
    "tanh": (jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2),
    "relu": (jax.nn.relu, lambda z: (z > 0).astype(z.dtype)),
    "identity": (lambda z: z, jnp.ones_like)}
ACTS = ("sigmoid", "tanh", "relu")
# a dense rule's planted bug: (dw, db, ct, dz, z, mask) -> (dw, db); mask marks the one-entry bug's entry
DENSE_BUGS = {
    "one-entry": lambda dw, db, ct, dz, z, m: (dw * (1 + m), db),  # dw doubled at one entry
    "one-entry-10pct": lambda dw, db, ct, dz, z, m: (dw * (1 + 0.1 * m), db),  # dw 10% too large there
    "transposed": lambda dw, db, ct, dz, z, m: (dw.T, db),  # square w
    "missing-factor": lambda dw, db, ct, dz, z, m: (dw, jnp.sum(ct, 0)),  # db without act'(z)
    "off-by-one": lambda dw, db, ct, dz, z, m: (dw, jnp.sum(dz[:-1], 0)),  # db over all but the last example
    # act'(z) = e^-z / (1 + e^-z)^2: inf / inf = NaN in float32 where z < -88.7, correct in float64
    "overflow": lambda dw, db, ct, dz, z, m: (dw, jnp.sum(ct * jnp.exp(-z) / (1 + jnp.exp(-z)) ** 2, 0)),
}
CONV_BUGS = {"flipped": lambda dk, m: dk[::-1, ::-1], "one-entry": lambda dk, m: dk * (1 + m)}
# kind -> (architecture, sizes, activation, bug per layer or conv bug, dtype, expected leaf)
BUGS = {
    "mlp-one-entry": ("mlp", (6, 8, 3), "sigmoid", {0: "one-entry"}, "float64", "[0].w"),
    "mlp-one-entry-10pct-float32": ("mlp", (32, 32, 10), "sigmoid", {0: "one-entry-10pct"}, "float32", "[0].w"),
    "mlp-transposed": ("mlp", (6, 8, 8, 3), "tanh", {1: "transposed"}, "float64", "[1].w"),
    "mlp-missing-factor": ("mlp", (6, 8, 3), "sigmoid", {0: "missing-factor"}, "float64", "[0].b"),
    "dict-leaf-off-by-one": ("dict-mlp", (6, 8, 3), "tanh", {1: "off-by-one"}, "float64", "['decoder']['b']"),
    "float32-overflow": ("mlp", (6, 8, 3), "sigmoid", {0: "overflow"}, "float32", "[0].b"),
    "conv-flipped-kernel": ("conv", None, "tanh", "flipped", "float64", "['conv']['k']"),
    "conv-one-entry": ("conv", None, "sigmoid", "one-entry", "float64", "['conv']['k']"),
}
BUG_KINDS = tuple(BUGS)
ONE_ENTRY = ("mlp-one-entry", "mlp-one-entry-10pct-float32", "conv-one-entry")
KINK_COSTS = ("relu", "leaky-relu", "max-pool", "k-means")


def dense_op(act: str, bug: str | None = None):
    """`dense(w, b, x, mask) = act(x @ w + b)` with a hand-written VJP and an optional planted bug (DENSE_BUGS).

    x: (N, n_in), w: (n_in, n_out), b: (n_out,), mask: (n_in, n_out) marks the entry of the one-entry bug.
    """
    a, da = ACTIVATIONS[act]
    planted = DENSE_BUGS[bug] if bug else (lambda dw, db, *_: (dw, db))

    @jax.custom_vjp
    def dense(w, b, x, mask):
        return a(x @ w + b[None, :])

    def fwd(w, b, x, mask):
        z = x @ w + b[None, :]
        return a(z), (w, x, z, mask)

    def bwd(res, ct):
        w, x, z, mask = res
        dz = ct * da(z)
        dw, db = planted(x.T @ dz, jnp.sum(dz, 0), ct, dz, z, mask)
        return dw, db, dz @ w.T, jnp.zeros_like(mask)

    dense.defvjp(fwd, bwd)
    return dense


def conv_op(bug: str | None = None):
    """`conv(k, x, mask)`: VALID 2-D convolution, NHWC x HWIO, with a custom VJP (from the primal's vjp) and an
    optional bug (CONV_BUGS): the kernel gradient flipped in space, or doubled where mask = 1."""

    def primal(k, x):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    @jax.custom_vjp
    def conv(k, x, mask):
        return primal(k, x)

    def bwd(res, ct):
        k, x, mask = res
        dk, dx = jax.vjp(primal, k, x)[1](ct)
        return (CONV_BUGS[bug](dk, mask) if bug else dk), dx, jnp.zeros_like(mask)

    conv.defvjp(lambda k, x, mask: (primal(k, x), (k, x, mask)), bwd)
    return conv


def _layers(params):
    """The (w, b) pairs of an MLP's params, in order: a tuple of Layers or {"encoder": .., "decoder": ..}."""
    if isinstance(params, dict):
        return [(params[k]["w"], params[k]["b"]) for k in ("encoder", "decoder")]
    return [(layer.w, layer.b) for layer in params]


def _set_biases(params, biases):
    if isinstance(params, dict):
        return {k: {"w": params[k]["w"], "b": b} for k, b in zip(("encoder", "decoder"), biases)}
    return tuple(gdjax.Layer(layer.w, b) for layer, b in zip(params, biases))


def _quadratic(out, y):
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, -1))


def cost_fn(arch: str, sizes, act: str, bug=None):
    """The cost f(params, x, y, mask(s)) of an architecture, with an optional planted bug. MLPs: hidden layers
    `act`, linear output, bugs {layer: bug}; conv: 3x3 conv (1 -> 3 channels) + bias, act, flatten, dense."""
    if arch == "conv":
        conv, a = conv_op(bug), ACTIVATIONS[act][0]

        def f(params, x, y, mask):
            h = a(conv(params["conv"]["k"], x, mask) + params["conv"]["b"][None, None, None, :])
            return _quadratic(jnp.reshape(h, (h.shape[0], -1)) @ params["out"]["w"] + params["out"]["b"][None, :], y)
        return f
    n_layers, bugs = len(sizes) - 1, bug or {}
    ops = [dense_op(act if i < n_layers - 1 else "identity", bugs.get(i)) for i in range(n_layers)]

    def f(params, x, y, masks):
        a = x
        for op, (w, b), m in zip(ops, _layers(params), masks):
            a = op(w, b, a, m)
        return _quadratic(a, y)
    return f


def _normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray((scale * rng.standard_normal(shape)).astype(dtype))


def away_from_kinks(rng, params, x, margin: float):
    """Redraw each hidden unit's bias until |pre-activation| > margin on every example (relu's kink uncrossed)."""
    a, biases = np.asarray(x, np.float64), []
    layers = _layers(params)
    for i, (w, b) in enumerate(layers):
        s, b = a @ np.asarray(w, np.float64), np.array(b)
        if i < len(layers) - 1:
            for u in range(b.size):
                while np.min(np.abs(s[:, u] + b[u])) <= margin:
                    b[u] = rng.standard_normal()
        biases.append(jnp.asarray(b))
        a = np.maximum(s + b, 0)
    return _set_biases(params, biases)


def make_case(arch: str, sizes, act: str, dtype: str, seed: int, n: int = 8):
    """Random (params, (x, y, zero masks)): MLP weights N(0, 1/n_in), biases N(0, 1), as Layers or a nested
    dict; or the conv net on 5x5 inputs (N = 4); x ~ U[0, 1], one-hot y; relu nets kept away from their kinks."""
    rng = np.random.default_rng([seed, ARCHS.index(arch), ACTS.index(act), dtype == "float32"])
    if arch == "conv":
        params = {"conv": {"k": _normal(rng, (3, 3, 1, 3), dtype, 1 / 3), "b": _normal(rng, (3,), dtype, 0.1)},
                  "out": {"w": _normal(rng, (27, 3), dtype, 0.2), "b": _normal(rng, (3,), dtype)}}
        n, shape, masks = 4, (4, 5, 5, 1), jnp.zeros((3, 3, 1, 3), dtype)
    else:
        layers = [gdjax.Layer(_normal(rng, (i, o), dtype, i ** -0.5), _normal(rng, (o,), dtype))
                  for i, o in zip(sizes[:-1], sizes[1:])]
        params = tuple(layers) if arch != "dict-mlp" else {
            "encoder": dict(layers[0]._asdict()), "decoder": dict(layers[1]._asdict())}
        shape = (n, sizes[0])
    n_out = 3 if arch == "conv" else sizes[-1]
    x = jnp.asarray(rng.random(shape).astype(dtype))
    y = jnp.asarray(np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)])
    if arch != "conv":
        if act == "relu":
            params = away_from_kinks(rng, params, x, 0.1 if dtype == "float32" else 2e-3)
        masks = tuple(jnp.zeros_like(w) for w, _ in _layers(params))
    return params, (x, y, masks)


def _uniform_entry(rng, g: np.ndarray, min_rel: float = 0.0) -> tuple:
    """A random index of `g`, uniform over its entries with |g_i| >= min_rel max|g| (all entries for 0)."""
    flat = np.abs(np.asarray(g, np.float64)).ravel()
    idx = rng.choice(np.flatnonzero(flat >= min_rel * flat.max()))
    return tuple(int(i) for i in np.unravel_index(idx, g.shape))


def magnitude_bin(rel: float) -> str:
    """The label of the |g_i| / max|g| bin of `rel` (MAGNITUDE_BINS; the last bin closed)."""
    lo, hi = next((lo, hi) for lo, hi in zip(MAGNITUDE_BINS[:-1], MAGNITUDE_BINS[1:])
                  if rel < hi or hi == MAGNITUDE_BINS[-1])
    return f"[{lo:g}, {hi:g}]" if hi == MAGNITUDE_BINS[-1] else f"[{lo:g}, {hi:g})"


def _check(f, params, *args, grad=None, **opts):
    """gdjax.check_grad with its options in check={...} (full mode unless given)."""
    return gdjax.check_grad(f, params, *args, grad=grad, check=dict({"mode": "full"}, **opts))


def _leaf_of(tree, path: str):
    """The leaf of `tree` at keystr `path`."""
    return next(x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if jax.tree_util.keystr(p) == path)


def plant(kind: str, seed: int, f_correct):
    """(params, args, expected index or None) for one planted bug: the bug's entry drawn per seed."""
    arch, sizes, act, _, dtype, leaf = BUGS[kind]
    params, (x, y, masks) = make_case(arch, sizes, act, dtype, 1000 + seed)
    rng = np.random.default_rng([seed, BUG_KINDS.index(kind)])
    index = None
    if kind == "float32-overflow":  # one saturated unit: pre-activation ~ -120 on every example
        index = (int(rng.integers(0, sizes[1])),)
        params = _set_biases(params, [b.at[index].set(-120.0) if i == 0 else b
                                      for i, (_, b) in enumerate(_layers(params))])
    elif kind in ONE_ENTRY:
        index = _uniform_entry(rng, _leaf_of(jax.grad(f_correct)(params, x, y, masks), leaf))
        masks = masks.at[index].set(1.0) if arch == "conv" else (masks[0].at[index].set(1.0),) + masks[1:]
    return params, (x, y, masks), index


def jax_check_grads(f, params, args) -> bool:
    """True when jax.test_util.check_grads (order 1, reverse mode: custom_vjp has no JVP) raises AssertionError."""
    from jax.test_util import check_grads

    try:
        check_grads(lambda p: f(p, *args), (params,), order=1, modes=("rev",))
    except AssertionError:
        return True
    return False


def _verdicts(reports) -> dict:
    return {s: sum(r.status == s for r in reports) for s in ("ok", "kinks", "inconclusive", "failed")}


def detection_rows(seeds: int, log, kinds=BUG_KINDS) -> list[dict]:
    """One row per bug kind (verdicts of check_grad, flags of check_grads), then detection_by_magnitude rows for
    the one-entry bugs: check_grad's verdicts by the |g_i| / max|g| bin of the planted entry."""
    rows, bins = [], {}
    for kind in kinds:
        arch, sizes, act, bug, dtype, leaf = BUGS[kind]
        f, f_ok = cost_fn(arch, sizes, act, bug), cost_fn(arch, sizes, act)
        reports, named, ratios, jax_flagged = [], 0, [], 0
        for seed in range(seeds):
            params, args, index = plant(kind, seed, f_ok)
            report = _check(f, params, *args)
            reports.append(report)
            row = next(r for r in report.leaves if r.path == leaf)
            failing = {r.path for r in report.leaves if r.status == "failed"}
            named += failing == {leaf} and (index is None or row.worst_index == index)
            ratios.append(row.worst_err / row.worst_tol if row.worst_tol > 0 else np.inf)
            jax_flagged += jax_check_grads(f, params, args)
            if kind in ONE_ENTRY:
                g = np.abs(np.asarray(_leaf_of(jax.grad(f_ok)(params, *args), leaf), np.float64))
                b = bins.setdefault((kind, dtype, magnitude_bin(float(g[index] / g.max()))),
                                    {"planted": 0, "failed": 0, "inconclusive": 0, "ok": 0})
                b["planted"] += 1
                b[report.status if report.status in b else "ok"] += 1
        v = _verdicts(reports)
        rows.append({"section": "detection", "kind": kind, "arch": arch, "dtype": dtype, "leaf": leaf,
                     "seeds": seeds, "check_grad_flagged": v["failed"], "check_grad_named": named,
                     "check_grad_inconclusive": v["inconclusive"], "check_grad_ok": v["ok"] + v["kinks"],
                     "check_grads_flagged": jax_flagged, "check_grad_rate": named / seeds,
                     "check_grads_rate": jax_flagged / seeds, "min_err_over_tol": float(np.min(ratios))})
        log(f"detection {kind}: check_grad named {named}/{seeds} ({v}), check_grads flagged {jax_flagged}/{seeds}")
    return rows + [dict({"section": "detection_by_magnitude", "kind": k, "dtype": d, "bin": b}, **c)
                   for (k, d, b), c in sorted(bins.items())]


def false_alarm_rows(per_config: int, log, archs=ARCHS, acts=ACTS) -> list[dict]:
    """One row per (architecture, activation, dtype): failures of check_grad and check_grads on correct rules
    (conv nets: sigmoid and tanh only)."""
    rows = []
    for arch in archs:
        for act in [a for a in acts if arch != "conv" or a != "relu"]:
            f = cost_fn(arch, ARCH_SIZES[arch], act)
            for dtype in ("float32", "float64"):
                cases = [make_case(arch, ARCH_SIZES[arch], act, dtype, seed) for seed in range(per_config)]
                reports = [_check(f, params, *args) for params, args in cases]
                rows.append({"section": "false_alarm", "arch": arch, "act": act, "dtype": dtype,
                             "cases": per_config, "check_grad_failures": sum(r.failed for r in reports),
                             "check_grads_failures": sum(jax_check_grads(f, *case) for case in cases),
                             "check_grad_inconclusive": sum(r.status == "inconclusive" for r in reports),
                             "max_err_over_tol": max([0.0] + [leaf.worst_err / leaf.worst_tol
                                                              for r in reports for leaf in r.leaves])})
        log(f"false alarms {arch}: {sum(r['check_grad_failures'] for r in rows if r['arch'] == arch)} (check_grad)")
    return rows


def kink_cost(name: str):
    """A cost with kinks: a one-hidden-layer net (relu / leaky relu, zero biases), max-pool over pairs of a
    linear map, or the k-means cost mean_i min_k |x_i - c_k|^2."""
    if name in ("relu", "leaky-relu"):
        act = jax.nn.relu if name == "relu" else (lambda z: jnp.where(z > 0, z, 0.1 * z))
        return lambda p, x, y: _quadratic(act(x @ p["w1"] + p["b1"][None, :]) @ p["w2"] + p["b2"][None, :], y)
    if name == "max-pool":
        return lambda p, x, y: _quadratic(jnp.max((x @ p["w"]).reshape(x.shape[0], -1, 2), axis=-1), y)
    return lambda p, x, y: jnp.mean(jnp.min(jnp.sum((x[:, None, :] - p["c"][None, :, :]) ** 2, -1), axis=1))


def kink_case(name: str, seed: int, n: int = 64):
    """float32 params with zero biases and inputs x ~ N(0, 1) (N = n): the FD step crosses kinks."""
    rng = np.random.default_rng([seed, KINK_COSTS.index(name), 7])
    if name in ("relu", "leaky-relu"):
        p = {"w1": _normal(rng, (8, 16), "float32", 8 ** -0.5), "b1": jnp.zeros(16, "float32"),
             "w2": _normal(rng, (16, 3), "float32", 0.25), "b2": jnp.zeros(3, "float32")}
        return p, (_normal(rng, (n, 8), "float32"), _normal(rng, (n, 3), "float32"))
    if name == "max-pool":
        return {"w": _normal(rng, (8, 16), "float32", 8 ** -0.5)}, (_normal(rng, (n, 8), "float32"),
                                                                     _normal(rng, (n, 8), "float32"))
    return {"c": _normal(rng, (4, 2), "float32")}, (_normal(rng, (n, 2), "float32"), jnp.zeros((), "float32"))


def kink_rows(cases: int, log, names=KINK_COSTS) -> list[dict]:
    """Correct gradients of costs with kinks: check_grad verdicts over `cases` cases per cost (failed: target 0)."""
    rows = []
    for name in names:
        f = kink_cost(name)
        reports = [_check(f, p, *args) for p, args in (kink_case(name, seed) for seed in range(cases))]
        v = _verdicts(reports)
        rows.append({"section": "kinks", "cost": name, "dtype": "float32", "cases": cases,
                     "check_grad_failures": v["failed"], "check_grad_kinks": v["kinks"],
                     "check_grad_inconclusive": v["inconclusive"], "check_grad_ok": v["ok"],
                     "kink_entries": sum(leaf.n_kink for r in reports for leaf in r.leaves), "target_failures": 0})
        log(f"kinks {name}: {v}")
    return rows


def _net(p, x, y):
    """A one-hidden-layer tanh net with a quadratic cost (params {"w", "v"}), for the planted-error sections."""
    return _quadratic(jnp.tanh(x @ p["w"]) @ p["v"], y)


def _net_case(rng, sizes, dtype, n=16):
    n_in, n_hid, n_out = sizes
    p = {"w": _normal(rng, (n_in, n_hid), dtype, n_in ** -0.5), "v": _normal(rng, (n_hid, n_out), dtype,
                                                                               n_hid ** -0.5)}
    return p, _normal(rng, (n, n_in), dtype), _normal(rng, (n, n_out), dtype)


def _plant_run(seed_words, sizes, dtype, factor, min_rel, **opts):
    """(report, index): a fresh `_net` case (rng from `seed_words`), checked with one entry of p["w"]'s gradient
    multiplied by `factor`: at a uniform entry with |g| >= min_rel max|g|, or the largest |g| (min_rel None)."""
    rng = np.random.default_rng(seed_words)
    p, x, y = _net_case(rng, sizes, dtype)
    g = np.abs(np.asarray(jax.grad(_net)(p, x, y)["w"], np.float64))
    index = _uniform_entry(rng, g, min_rel) if min_rel is not None else tuple(
        int(i) for i in np.unravel_index(np.argmax(g), g.shape))

    def planted(p, *args):
        out = dict(jax.grad(_net)(p, *args))
        out["w"] = out["w"].at[index].multiply(factor)
        return out
    return _check(_net, p, x, y, grad=planted, **opts), index


def _false_alarms(cases: int, words: tuple, sizes, dtype, directions: bool = False) -> int:
    """Verdicts other than ok of check_grad on `cases` correct `_net` cases (rng [case, *words]); `directions`:
    the localising mode with the key of the case."""
    opts = (lambda case: {"mode": "directions", "key": jax.random.key(case)}) if directions else (lambda case: {})
    return sum(_check(_net, *_net_case(np.random.default_rng([case, *words]), sizes, dtype), **opts(case)).status
               != "ok" for case in range(cases))


def _named(report, index) -> bool:
    """check_grad failed and named exactly p["w"] at `index` (the localising mode: its named entries)."""
    if report.mode == "directions":
        return report.failed and [(e.path, e.index) for e in report.named if e.status == "failed"] == [
            ("['w']", index)]
    bad = [leaf for leaf in report.leaves if leaf.status == "failed"]
    return report.failed and [b.path for b in bad] == ["['w']"] and bad[0].worst_index == index


def low_precision_rows(seeds: int, log) -> list[dict]:
    """bfloat16: a doubled entry at the largest |g| (target failed on every seed) and a 30% error at a uniform
    entry (target: never ok)."""
    rows = []
    for bug, factor, where in (("doubled-largest", 2.0, None), ("30pct-uniform", 1.3, 0.0)):
        reports = [_plant_run([seed, 30], (8, 6, 3), "bfloat16", factor, where)[0] for seed in range(seeds)]
        v = _verdicts(reports)
        rows.append({"section": "low_precision", "bug": bug, "dtype": "bfloat16", "seeds": seeds,
                     "failed": v["failed"], "inconclusive": v["inconclusive"], "ok": v["ok"] + v["kinks"],
                     "compute_dtype": reports[0].compute_dtype})
        log(f"low precision {bug}: {v}")
    return rows


def float32_rows(seeds: int, cases: int, log, sizes_list=((8, 6, 4), BIG_P_SIZES)) -> list[dict]:
    """float32 params: a 1% error at one entry with |g| >= 1e-2 max|g|, failed and named; correct cases."""
    rows = []
    for sizes in sizes_list:
        runs = [_plant_run([seed, 32, sizes[1]], sizes, "float32", 1.01, 1e-2) for seed in range(seeds)]
        named, fa = sum(_named(r, i) for r, i in runs), _false_alarms(cases, (33, sizes[1]), sizes, "float32")
        p_count = sizes[0] * sizes[1] + sizes[1] * sizes[2]
        rows.append({"section": "float32", "sizes": "-".join(map(str, sizes)), "n_params": p_count,
                     "seeds": seeds, "failed": sum(r.failed for r, _ in runs), "named": named,
                     "correct_cases": cases, "false_alarms": fa, "compute_dtype": runs[-1][0].compute_dtype})
        log(f"float32 P = {p_count}: named {named}/{seeds}, not ok on {fa}/{cases} correct cases")
    return rows


def localising_rows(seeds: int, cases: int, sizes, log) -> list[dict]:
    """mode "directions" on a float64 net: a 1% error at one entry (|g| >= 1e-2 max|g|) named; false alarms."""
    runs = [_plant_run([seed, 34], sizes, "float64", 1.01, 1e-2, mode="directions", key=jax.random.key(seed))
            for seed in range(seeds)]
    named, fa = sum(_named(r, i) for r, i in runs), _false_alarms(cases, (35,), sizes, "float64", True)
    report = runs[-1][0]
    row = {"section": "localising", "sizes": "-".join(map(str, sizes)), "n_params": report.n_params,
           "seeds": seeds, "named": named, "evaluations_median": float(np.median([r.evaluations for r, _ in runs])),
           "seconds_median": float(np.median([r.seconds for r, _ in runs])), "correct_cases": cases,
           "false_alarms": fa, "num_directions": report.num_directions}
    log(f"localising {row['sizes']}: named {named}/{seeds}, {row['evaluations_median']:.0f} evaluations, "
        f"{fa}/{cases} false alarms")
    return [row]


TORCH_MISSING = ("torch is required for the torch.autograd.gradcheck rows of this run (pip install 'gdjax[torch]'), "
                 "or pass --torch auto / --torch skip to leave them out")


def torch_checks(params, x, y, policy: str = "require"):
    """{"slow": seconds, "fast": seconds, ...} of torch.autograd.gradcheck on the same network; None when torch is
    missing and policy is "auto", or policy is "skip"; RuntimeError (one line) when it is missing under "require"."""
    if policy == "skip":
        return None
    try:
        import torch
    except ImportError:
        if policy == "require":
            raise RuntimeError(TORCH_MISSING) from None
        return None
    ps = tuple(torch.tensor(np.asarray(a, np.float64), requires_grad=True) for layer in params for a in layer)
    xt, yt = torch.tensor(np.asarray(x, np.float64)), torch.tensor(np.asarray(y, np.float64))

    def cost(*flat):
        a = xt
        for w, b in zip(flat[::2], flat[1::2]):
            a = torch.sigmoid(a @ w + b)
        return 0.5 * torch.mean(torch.sum((a - yt) ** 2, -1))

    out = {"version": torch.__version__}
    for mode in ("slow", "fast"):
        ok = []
        t = profiling.time_fn(lambda: ok.append(torch.autograd.gradcheck(cost, ps, fast_mode=mode == "fast",
                                                                         raise_exception=False)), repeats=1, warmup=0)
        out[mode], out[f"{mode}_ok"] = t.median_s, bool(ok[0])
    return out


def torch_rows(base: dict, rows: list[dict], torch_t: dict) -> list[dict]:
    """The torch rows, and each check_grad row's torch slow / this ratio with its target and status (in place)."""
    out = [dict(base, tool="torch.autograd.gradcheck", call=f"{m} mode", seconds=torch_t[m], ok=torch_t[f"{m}_ok"],
                torch=torch_t["version"]) for m in ("slow", "fast")]
    for row in rows:
        if row["tool"].startswith("gdjax.check_grad"):
            row["torch_slow_over_this"] = torch_t["slow"] / row["seconds"]
            if row["tool"] == "gdjax.check_grad":
                row["target"] = TARGETS[f"{row['call']}_vs_torch_slow"]
                row["status"] = common.target_status(row["torch_slow_over_this"], row["target"])
    return out


def speed_rows(sizes, n: int, repeats: int, log, torch_policy: str = "require") -> list[dict]:
    """Seconds of one full and one localising check of the lecture's net (float64) by each tool, first call
    (`profiling.time_fn`'s warm-up: compilation included) and the median of `repeats` repeated calls; ratios
    against torch's slow mode."""
    cost, params, batch = common.problem(sizes, n, "float64")
    x, y = jnp.asarray(batch.x), jnp.asarray(batch.y)
    torch_t = torch_checks(params, x, y, torch_policy)  # first: a missing torch fails before the long part
    base = {"section": "speed", "sizes": "-".join(map(str, sizes)), "batch": n, "dtype": "float64",
            "n_params": gdjax.n_params(params)}
    rows = []
    for tool, check in (("gdjax.check_grad", lambda f: _check(f, params, x, y)),
                        ("gdjax.check_grad directions", lambda f: _check(f, params, x, y, mode="directions")),
                        ("jax.test_util.check_grads", lambda f: jax_check_grads(f, params, (x, y)))):
        def f(p, x, y):  # a new function object per tool: nothing compiled for it yet
            return cost(p, Batch(x, y))

        out = []
        t = profiling.time_fn(lambda: out.append(check(f)), repeats=repeats)
        extra = {} if tool.startswith("jax") else {"ok": out[0].ok, "evaluations": out[0].evaluations}
        rows += [dict(base, tool=tool, call="first", seconds=t.compile_s, **extra),
                 dict(base, tool=tool, call="repeated", seconds=t.median_s, **extra)]
    if torch_t is None:
        log(f"speed: torch rows left out (--torch {torch_policy})")
    else:
        rows += torch_rows(base, rows, torch_t)
    for row in rows:
        log(f"speed {row['tool']} {row['call']}: {human_time(row['seconds'])}")
    return rows


def figure(rows, stem):
    """Detection rate per bug kind (check_grad named vs check_grads flagged) and seconds per tool (log scale)."""
    from gdjax import plotting

    det = [r for r in rows if r["section"] == "detection"]
    speed = [r for r in rows if r["section"] == "speed"]
    fig, (ax1, ax2) = plotting.plt.subplots(1, 2, figsize=(12, 4.2))
    pos = np.arange(len(det))
    ax1.bar(pos - 0.2, [r["check_grad_rate"] for r in det], 0.4, label="gdjax.check_grad (flagged and named)")
    ax1.bar(pos + 0.2, [r["check_grads_rate"] for r in det], 0.4, label="jax check_grads (flagged)")
    ax1.set_xticks(pos, [r["kind"] for r in det], rotation=35, ha="right", fontsize=8)
    ax1.set(ylabel=f"detection rate over {det[0]['seeds'] if det else 0} seeds", ylim=(0, 1.05))
    ax1.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax2.barh([f"{r['tool']}\n{r['call']}" for r in speed], [r["seconds"] for r in speed])
    ax2.set(xscale="log", xlabel="seconds per check" + (f" ({speed[0]['sizes']}, N = {speed[0]['batch']}, float64)"
                                                        if speed else ""))
    ax2.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return plotting.save_figure(fig, stem)


def _names(text: str, valid: tuple, what: str) -> tuple:
    names = valid if text == "all" else tuple(s.strip() for s in str(text).split(",") if s.strip())
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise common.UsageError(f"{what}: unknown {', '.join(bad) or 'empty list'}; valid: all or {','.join(valid)}")
    return names


def parse_args(argv):
    ap = common.Parser(COMMAND, __doc__, out_name="gradcheck.json",
                       quick="1 seed per bug, 1 correct case per config (mlp, conv), a [20,8,4] net, one repeat")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per planted bug (default 20)")
    ap.add_argument("--correct-per-config", type=int, default=None,
                    help="correct cases per (architecture, activation, dtype): 22 configs (default 10: 220 cases)")
    for name, valid in (("kinds", BUG_KINDS), ("archs", ARCHS), ("acts", ACTS)):
        ap.add_argument(f"--{name}", default=None, help=f"comma-separated, or all: {','.join(valid)}")
    ap.add_argument("--sizes", default=None, help="the speed net's widths (default 784,30,10)")
    ap.add_argument("--batch", type=int, default=None, help="the speed net's batch size N (default 10)")
    ap.add_argument("--repeats", type=int, default=None, help="repeated checks timed (median; default 3)")
    ap.add_argument("--torch", choices=("require", "auto", "skip"), default=None,
                    help="torch rows: require (default; fail without torch), auto (default with --quick), skip")
    args = ap.parse(argv, DEFAULTS, QUICK)
    common.require(args, 1, "seeds", "correct_per_config", "batch", "repeats")
    args.sizes = common.sizes_list(args.sizes, one=True)[0]
    args.kinds, args.archs, args.acts = (_names(getattr(args, n), valid, f"--{n}") for n, valid in
                                         (("kinds", BUG_KINDS), ("archs", ARCHS), ("acts", ACTS)))
    return args


def run(args) -> int:
    load = common.load_average()
    if args.torch == "require" and importlib.util.find_spec("torch") is None:  # fail before the long sections
        raise RuntimeError(TORCH_MISSING)
    log = print
    rows = detection_rows(args.seeds, log, args.kinds) + false_alarm_rows(args.correct_per_config, log, args.archs,
                                                                       args.acts)
    rows += kink_rows(args.kink_cases, log) + low_precision_rows(1 if args.quick else max(args.seeds, 10), log)
    rows += float32_rows(args.seeds, args.float32_cases, log, args.float32_sizes)
    rows += localising_rows(args.seeds, args.float32_cases, args.localising_sizes, log)
    rows += speed_rows(args.sizes, args.batch, args.repeats, log, args.torch)
    config = {k: getattr(args, k) for k in ("seeds", "correct_per_config", "batch", "repeats", "quick", "seed",
                                            "kinds", "archs", "acts", "torch", "kink_cases", "float32_cases")}
    config.update(torch_rows=any(r.get("tool") == "torch.autograd.gradcheck" for r in rows),
                  localising_sizes=list(args.localising_sizes), sizes=list(args.sizes), bug_kinds=list(BUG_KINDS),
                  targets=TARGETS, check_grad_options={k: v for k, v in gdjax.check.OPTIONS.items()
                                                       if k not in ("key", "devices")})
    path = results.save_results(args.path, rows, meta=common.meta(load), config=config)
    return common.wrote(path, *figure(rows, str(path.with_suffix(""))))


def main(argv=None) -> int:
    return common.run_main(COMMAND, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
