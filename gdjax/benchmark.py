"""The FD-vs-`jax.grad` benchmark as library functions: measure one (network, batch, method) point, return a
flat row dict. The `gdjax bench` command (and `benchmarks/fd_vs_grad.py`) drives them over a sweep and writes
the rows with `gdjax.results`; nothing here touches files.

    >>> cfg = BenchConfig(sizes=((784, 30, 10),), batch_size=1000, time_budget=0.5)
    >>> peaks = measure_peaks("float32")                      # same-run matmul ceiling
    >>> for row in run_sweep(cfg, peaks): print(row["method"], row["median_s"], row["extrapolated"])
    >>> print(format_targets(targets(rows)))

What one row holds (every time is per gradient, after warm-up; compilation is `compile_s`):
  median_s / min_s / max_s, evaluations (from the estimator), analytic_flops (= evaluations x forward FLOPs;
  None for structured estimators whose evaluations are partial passes),
  xla_flops (XLA's cost analysis of the timed program), gflops and peak_fraction (against the same run's
  matmul rate), memory of the compiled program, rel_error against a float64 `jax.grad` of the same params
  and batch, and `extrapolated`.

Extrapolation (never silent): when a full gradient would not fit the time budget, a black-box method is timed
on K of the P directions -- the method's own estimator applied to the cost restricted to K evenly spread
parameters (the others held at their values), so every evaluation is still a full forward pass of the whole
network -- and the time is scaled by evaluations(P) / evaluations(K). Structured methods (which need the
gdjax cost itself) are instead timed on a sub-batch and scaled by N / N'. Such rows carry
`extrapolated: True`, `measured_directions`, `measured_batch` and `scale`; their error is measured on the
timed subset (`error_on`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _checks, profiling
from gdjax.costs import make_cost
from gdjax.data import Batch
from gdjax.gradients import available_methods, gradient, method_info
from gdjax.nn import MLP, Layer, param_count

FORWARD_PASS = "forward-pass"
BENCH_NAME = "fd_vs_grad"
DTYPES = ("float32", "float64")

# P from ~1e2 to ~1e6: square nets [h, h, 10] plus the lecture's [784, 30, 10]; three points in [1e4, 1e5]
# (P = 10,282, 23,860, 93,310) for the FD/grad slope target.
DEFAULT_BATCH, DEFAULT_REPEATS, DEFAULT_TIME_BUDGET = 1000, 5, 0.5
DEFAULT_SIZES = ((8, 8, 10), (32, 32, 10), (96, 96, 10), (784, 30, 10), (300, 300, 10), (1024, 1024, 10))
QUICK_SIZES = ((4, 3, 2), (16, 12, 4))
LECTURE_NET = (784, 30, 10)

# The "million weights" table: the lecture's net and a ~1e6-parameter MLP on MNIST-sized data.
MILLION_NETS = ((784, 30, 10), (784, 1250, 10))  # P = 23,860 and 993,760
MILLION_EXAMPLES = 60_000
EPOCH_BATCH = 10  # an epoch = 60000 / 10 = 6000 gradient steps on mini-batches of 10, as in the lecture
EPOCH_STEPS = MILLION_EXAMPLES // EPOCH_BATCH
MILLION_FD = ("fd-forward", "fd-central")  # the first one registered is the table's FD method

TARGETS = {
    "fd_peak_fraction": 0.85,  # FD kernel rate / matmul rate at [784, 30, 10], N = 1000, f32
    "fd_vs_loop": 2.5,  # fd-loop time / FD kernel time
    "reverse_over_forward": 2.0,  # reverse / forward-pass time (at most)
    "ratio_slope": 0.9,  # fitted slope of log(FD / reverse) vs log P for P in [1e4, 1e5]
}


# --- configuration --------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[tuple[int, ...], ...]:
    """Parse `--sizes`: layer lists "784,30,10;784,100,10", or a P range "P=1e2:1e6[:n]" (n log-spaced
    square nets [h, h, 10], default n = 5), or "default" / "quick".

    Raises ValueError naming the bad part.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("sizes must be layer lists such as '784,30,10;784,100,10' or a range 'P=1e2:1e6:5'")
    text = text.strip()
    if text == "default":
        return DEFAULT_SIZES
    if text == "quick":
        return QUICK_SIZES
    m = re.fullmatch(r"[Pp]\s*=\s*([^:]+):([^:]+)(?::(\d+))?", text)
    if m:
        try:
            lo, hi = float(m.group(1)), float(m.group(2))
        except ValueError:
            raise ValueError(f"sizes range {text!r}: bounds must be numbers, e.g. P=1e2:1e6:5") from None
        n = int(m.group(3) or 5)
        if not (math.isfinite(lo) and math.isfinite(hi) and 30 <= lo <= hi) or n < 1:
            raise ValueError(f"sizes range {text!r}: need 30 <= low <= high and a count >= 1, e.g. P=1e2:1e6:5")
        targets_p = np.geomspace(lo, hi, n) if n > 1 else np.array([lo])
        nets = []
        for p in targets_p:
            net = square_net(float(p))
            if net not in nets:
                nets.append(net)
        return tuple(nets)
    nets = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            sizes = tuple(int(t) for t in part.split(","))
        except ValueError:
            raise ValueError(f"sizes {part!r}: expected comma-separated integers such as 784,30,10") from None
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes {part!r}: need at least two layer widths, each >= 1 (e.g. 784,30,10)")
        nets.append(sizes)
    if not nets:
        raise ValueError("sizes must name at least one network, e.g. '784,30,10'")
    return tuple(nets)


def square_net(p: float, n_out: int = 10) -> tuple[int, int, int]:
    """The [h, h, n_out] MLP whose parameter count h^2 + h + h n_out + n_out is closest to `p`."""
    h = max(1, round((-(1 + n_out) + math.sqrt((1 + n_out) ** 2 + 4 * max(p - n_out, 0))) / 2))
    return (h, h, n_out)


def default_methods() -> tuple[str, ...]:
    """Every registered gradient method (estimators added later join automatically)."""
    return tuple(available_methods())


@dataclass(frozen=True)
class BenchConfig:
    """What one run measures. Validated on construction (ValueError/TypeError naming the option).

    Attributes:
      sizes: networks, each a tuple of layer widths.
      batch_size: examples N in the cost (sweep points).
      dtype: float32 or float64 parameters and data.
      methods: gradient methods (registry names); the forward pass alone is always measured too.
      repeats: timed calls per point (after warm-up).
      time_budget: seconds of timed calls per point; beyond it, time a subset and extrapolate.
      seed: PRNG seed of params and data.
      million: also measure the "million weights" table.
    """

    sizes: tuple = DEFAULT_SIZES
    batch_size: int = DEFAULT_BATCH
    dtype: str = "float32"
    methods: tuple = field(default_factory=default_methods)
    repeats: int = DEFAULT_REPEATS
    time_budget: float = DEFAULT_TIME_BUDGET
    seed: int = 0
    million: bool = True

    def __post_init__(self):
        sizes = tuple(tuple(s) for s in self.sizes)
        if not sizes:
            raise ValueError("sizes must name at least one network")
        for s in sizes:
            param_count(s)  # validates the widths
        object.__setattr__(self, "sizes", sizes)
        _checks.positive_int(self.batch_size, "batch_size")
        _checks.choice(self.dtype, DTYPES, "dtype")
        methods = tuple(self.methods)
        if not methods:
            raise ValueError(f"methods must name at least one gradient method; valid: {', '.join(available_methods())}")
        for m in methods:
            _checks.choice(m, available_methods(), "gradient method")
        object.__setattr__(self, "methods", tuple(dict.fromkeys(methods)))
        _checks.positive_int(self.repeats, "repeats")
        _checks.positive_float(self.time_budget, "time_budget")
        _checks.positive_int(self.seed, "seed", minimum=0)

    def as_dict(self) -> dict:
        return {"sizes": [list(s) for s in self.sizes], "batch_size": self.batch_size, "dtype": self.dtype,
                "methods": list(self.methods), "repeats": self.repeats, "time_budget": self.time_budget,
                "seed": self.seed, "million": self.million, "loss": "quadratic",
                "net": "sigmoid hidden and output units", "data": "x ~ U[0, 1], one-hot random labels"}


@dataclass(frozen=True)
class Point:
    """One measurement: a network, a batch size, a method, and the table it belongs to."""

    group: str  # "sweep" or "million"
    sizes: tuple
    batch_size: int
    method: str

    def id(self, dtype: str) -> str:
        return f"{self.group}|{'-'.join(map(str, self.sizes))}|N={self.batch_size}|{dtype}|{self.method}"


def plan(config: BenchConfig) -> list[Point]:
    """Every point of a run, in order: per network the forward pass first (its time predicts the others)."""
    points = [Point("sweep", s, config.batch_size, m) for s in config.sizes for m in (FORWARD_PASS, *config.methods)]
    if config.million:
        fd = [m for m in MILLION_FD if m in available_methods()][:1]
        for s in MILLION_NETS:
            for n in (MILLION_EXAMPLES, EPOCH_BATCH):
                points += [Point("million", s, n, m) for m in (FORWARD_PASS, *fd, "reverse")]
    return points


# --- problem set-up -------------------------------------------------------------------------------------------


from gdjax.bench.problem import (  # noqa: E402  (moved; re-exported for old callers)
    flat_numpy, make_problem, reference_gradient, relative_error, restrict_cost, spread_indices, sub_batch)


def apply_peaks(rows: Sequence[dict], peaks: dict) -> list[dict]:
    """Rows with `matmul_gflops` and `peak_fraction` recomputed against `peaks` (FLOP/s by dtype), e.g. the
    larger of the matmul rates measured at the start and at the end of a run (the machine's ceiling)."""
    out = []
    for r in rows:
        r = dict(r)
        if r.get("dtype") in peaks:
            r["matmul_gflops"] = peaks[r["dtype"]] / 1e9
            if r.get("gflops") is not None:
                r["peak_fraction"] = r["gflops"] / r["matmul_gflops"]
        out.append(r)
    return out


def measure_peaks(dtypes: Iterable[str] = ("float32", "float64"), n: int = 1024, repeats: int = 5) -> dict:
    """Same-run matmul rates in FLOP/s, one per dtype: {"float32": ..., "float64": ...}."""
    return {dt: profiling.matmul_rate(n, dt, repeats=repeats) for dt in dtypes}


# --- measuring one point --------------------------------------------------------------------------------------


_spread_indices = spread_indices


def _key_for(seed: int, point: Point) -> jax.Array:
    return jax.random.key(np.random.default_rng([seed, param_count(point.sizes), 1]).integers(2**31))


def _base_row(point: Point, dtype: str, peak: float) -> dict:
    p = param_count(point.sizes)
    return {
        "id": point.id(dtype), "group": point.group, "sizes": "-".join(map(str, point.sizes)), "P": p,
        "batch_size": point.batch_size, "dtype": dtype, "method": point.method,
        "forward_flops": float(MLP(point.sizes).forward_flops(point.batch_size)),
        "matmul_gflops": peak / 1e9, "status": "ok",
    }


def _finish_row(row: dict, timing: profiling.Timing, scale: float, compile_s: float | None) -> dict:
    row.update({
        "median_s": timing.median_s * scale, "min_s": timing.min_s * scale, "max_s": timing.max_s * scale,
        "measured_median_s": timing.median_s, "repeats": len(timing.times), "scale": scale,
        "compile_s": compile_s,
        "extrapolated": scale != 1.0,
    })
    if row.get("analytic_flops") is None:
        row["gflops"] = row["peak_fraction"] = None
    else:
        row["gflops"] = row["analytic_flops"] / row["median_s"] / 1e9
        row["peak_fraction"] = row["gflops"] / row["matmul_gflops"]
    return row


def _timed(fn, args, repeats, time_budget):
    """Warm-up call (its output kept for the error), then `time_fn`. Returns (Timing, output, first-call seconds)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    return profiling.time_fn(fn, *args, repeats=repeats, warmup=0, max_time=time_budget), out, first


def _aot(fn, *args):
    """jit + lower + compile `fn` for `args`; returns (executable, seconds spent compiling)."""
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


_WHILE = re.compile(r"= [^\n]*\bwhile\(")


def _stats(exe, row: dict, scale: float) -> None:
    flops = profiling.xla_flops(None, executable=exe)
    row["xla_flops"] = flops
    row["xla_flops_per_gradient"] = None if flops is None else flops * scale
    try:  # XLA's count covers a loop body once: flag programs with loops (lax.map / scan over chunks)
        row["xla_loop"] = bool(_WHILE.search(exe.as_text()))
    except Exception:
        row["xla_loop"] = None
    mem = profiling.memory_bytes(None, executable=exe) or {}
    for k in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes", "device_peak_bytes"):
        row[f"memory_{k}"] = mem.get(k)
    row["peak_memory_bytes"] = mem.get("device_peak_bytes") or mem.get("total_bytes")


def _no_stats(row: dict) -> None:
    row.update({"xla_flops": None, "xla_flops_per_gradient": None, "xla_loop": None,
                "memory_argument_bytes": None, "memory_output_bytes": None, "memory_temp_bytes": None,
                "memory_total_bytes": None, "memory_device_peak_bytes": None, "peak_memory_bytes": None})


def _budget_batch(n: int, predicted_s: float, budget: float, minimum: int = 10) -> int:
    """Largest batch n' <= n whose predicted call time fits twice into the budget (>= min(n, minimum))."""
    m = int(n * budget / (2 * predicted_s)) if predicted_s > 0 else n
    if m >= n / 2:  # within a factor 2 of the budget: measure it all rather than extrapolate
        return n
    return max(min(n, minimum), m)


def _note(row: dict, k: int, n: int, scale: float) -> None:
    parts = []
    if k < row["P"]:
        parts.append(f"{k} of {row['P']} directions (the method on the cost restricted to them)")
    if n < row["batch_size"]:
        parts.append(f"{n} of {row['batch_size']} examples")
    if parts:
        row["note"] = "timed on " + " and ".join(parts) + f", scaled by {scale:.4g}"


def measure_forward(point: Point, cost, params, batch, *, dtype: str, peak: float, repeats: int,
                    time_budget: float) -> dict:
    """The forward pass alone (the jitted cost): one row. On a sub-batch (flagged, scaled by N/n) when a
    call is predicted (at half the matmul rate) not to fit the budget, or when `batch` holds fewer than
    `point.batch_size` examples."""
    row = _base_row(point, dtype, peak)
    row.update({"kind": "cost", "evaluations": 1.0, "analytic_flops": row["forward_flops"],
                "rel_error": None, "error_on": None, "options": ""})
    nb = int(batch.x.shape[0])
    predicted = float(MLP(point.sizes).forward_flops(nb)) / (0.5 * peak)
    n = _budget_batch(nb, predicted, time_budget)
    b = sub_batch(batch, n)
    exe, compile_s = _aot(cost, params, b)
    scale = point.batch_size / n
    _stats(exe, row, scale)
    timing, _, _ = _timed(exe, (params, b), repeats, time_budget)
    row["measured_directions"] = None
    row["measured_batch"] = n
    _note(row, row["P"], n, scale)
    return _finish_row(row, timing, scale, compile_s)


def subset_plan(p: int, nb: int, t_forward: float, evaluations: Callable[[int], float], budget: float,
                directional: bool, min_directions: int = 8) -> tuple[int, int]:
    """How much of a gradient to time: (k directions of p, n examples of nb).

    Full (p, nb) when 2 x evaluations(p) x t_forward fits the budget. Otherwise, for methods whose cost
    grows with the number of directions (and that accept any cost), fewer directions first (at least
    `min_directions`), then a sub-batch if even those do not fit; for the others, a sub-batch only.
    """
    predicted = float(evaluations(p)) * t_forward
    if 2 * predicted <= budget:
        return p, nb
    if directional:
        k = int(min(p, max(min_directions, budget / 2 / t_forward / max(1.0, evaluations(p) / p))))
        if k >= p / 2:  # within a factor 2 of the budget: measure all directions rather than extrapolate
            k = p
        return k, _budget_batch(nb, float(evaluations(k)) * t_forward, budget)
    return p, _budget_batch(nb, predicted, budget)


def measure_method(point: Point, cost, params, batch, *, dtype: str, peak: float, repeats: int,
                   time_budget: float, t_forward: float, reference: Callable[[int], np.ndarray],
                   key: jax.Array, history: Sequence[tuple[int, int, float]] = ()) -> dict:
    """One gradient method at one point: one row (see the module docstring for the fields).

    Args:
      batch: the examples available (may be fewer than `point.batch_size`: times are then scaled by N/n).
      t_forward: the measured forward-pass seconds on all of `batch` (predicts the gradient's time as
        evaluations x t_forward, to choose between a full and an extrapolated measurement).
      reference: `reference(n) -> float64 flat gradient` on the first n examples.
      history: (P, N, seconds per gradient) of this method at earlier points of the run; for a structured
        method, whose evaluation count says little about its time, the largest one also predicts this point's
        time, as t x (P / P')^2 x (n / N') (an upper bound: no estimator here grows faster than FD's P^2);
        the smaller of the two predictions is used.
    """
    info = method_info(point.method)
    est = gradient(cost, point.method)
    p = param_count(point.sizes)
    nb = int(batch.x.shape[0])
    evals = float(est.evaluations(p))
    row = _base_row(point, dtype, peak)
    # evaluations x forward FLOPs is the work of black-box methods and of autodiff; a structured estimator's
    # evaluations are partial passes (layer-aware FD recomputes only a suffix), so its FLOPs are not known here
    partial = info.structured and info.kind != "exact"
    row.update({"kind": info.kind, "evaluations": evals,
                "analytic_flops": None if partial else evals * row["forward_flops"],
                "options": _options_text(est.options)})
    # a direction subset is only meaningful when the cost grows with the number of directions
    directional = not info.structured and float(est.evaluations(2 * p)) > 1.5 * evals
    evaluations = est.evaluations  # evaluations(q) x t_forward: the predicted seconds at nb examples
    if info.structured and history:  # both predictions are upper bounds: take the smaller
        p0, n0, t0 = max(history)
        factor = min(1.0, t0 * (p / p0) ** 2 * nb / n0 / (max(evals, 1.0) * t_forward))

        def evaluations(q):
            return factor * float(est.evaluations(q))
    k, n = subset_plan(p, nb, t_forward, evaluations, time_budget, directional)
    smallest = 2 * float(evaluations(k)) * t_forward * n / nb  # warm-up + one timed call of the subset
    # a structured method's evaluation count says little about its time (layer-aware FD does P evaluations of
    # a small suffix of the network): allow far more before giving up on it, and correct the sub-batch below
    limit = max(20 * time_budget, SKIP_FLOOR_S)
    if info.structured and not history:  # the evaluation-count prediction may be far too high: allow more
        limit = max(1000 * time_budget, 60 * SKIP_FLOOR_S)
    if smallest > limit:
        how = f"from this method's time at P = {max(history)[0]:,}" if info.structured and history else \
            "evaluations x forward-pass time"
        row.update({"status": "skipped", "extrapolated": None,
                    "note": f"predicted {float(evaluations(p)) * t_forward:.3g} s per gradient ({how}): far over "
                            f"the time budget even "
                            f"on {n} examples" + ("" if directional else "; this method cannot be timed on a "
                                                  "subset of directions") + " (raise --time-budget)"})
        return row
    b = sub_batch(batch, n)
    key = key if est.stochastic else None
    if _fd_scheme(point.method):
        row["chunk_size"] = _subset_options(point.method, cost, params, b)["chunk_size"]
    if k == p:
        first = _measure_all(dict(row), est, params, b, repeats, time_budget, reference, key, point.batch_size / n)
        if n < nb:  # the prediction may have been pessimistic: if so, time a larger sub-batch
            n2 = _budget_batch(nb, first["measured_median_s"] * nb / n, time_budget)
            if n2 >= 4 * n:
                second = _measure_all(dict(row), est, params, sub_batch(batch, n2), repeats, time_budget, reference,
                                      key, point.batch_size / n2)
                second["note"] = second.get("note", "") + f" (after a first try on {n} examples)"
                return second
        return first
    scheme = _fd_scheme(point.method)  # fd-loop: its own estimator on a restricted cost (_measure_directions)
    if scheme is not None:
        return _measure_fd_subset(row, cost, point.method, scheme, params, b, k, repeats, time_budget, reference,
                                  point.batch_size / n, t_forward * n / nb)
    return _measure_directions(row, cost, point.method, params, b, k, repeats, time_budget, reference, key,
                               evals, point.batch_size / n)


def _measure_fd_subset(row, cost, method, scheme, params, batch, k, repeats, time_budget, reference, batch_scale,
                       t_eval):
    """Time the FD kernel itself on a subset of its directions and scale to all of them.

    Runs `finite_diff.fd_components`, the kernel's own per-leaf programs restricted to k spread components, with
    at least one whole chunk of the size the full kernel uses (a narrower vmap runs at another rate) unless one
    chunk is far over the time budget; scaled by the kernel's direction count over the directions timed.
    """
    from gdjax.gradients import finite_diff

    p = row["P"]
    n_all = finite_diff.n_directions(scheme, p)
    per_comp = 2 if scheme == "central" else 1  # directions per component
    full_chunk = finite_diff.fd_chunk_size(cost, params, batch, scheme)
    small_chunk = full_chunk * t_eval > 10 * time_budget
    n_comp = min(p, k if small_chunk else max(k, -(-full_chunk // per_comp)))
    comp = _spread_indices(p, n_comp)
    timed_dirs = finite_diff.n_directions(scheme, int(comp.size))
    scale = n_all / timed_dirs * batch_scale
    exe, compile_s = _aot(lambda prm, b: finite_diff.fd_components(cost, prm, b, comp, scheme=scheme),
                          params, batch)
    _stats(exe, row, scale)
    timing, out, _ = _timed(exe, (params, batch), repeats, time_budget)
    n = int(batch.x.shape[0])
    row["rel_error"] = relative_error(np.asarray(out), reference(n)[comp])
    row["error_on"] = f"{comp.size} of {p} components" + ("" if n == row["batch_size"] else f", {n} examples")
    row["measured_directions"] = timed_dirs
    row["measured_batch"] = n
    parts = [f"{timed_dirs} of {n_all} directions (the kernel's own programs, full chunk {full_chunk}"
             + (", fewer directions than one full chunk: it is over the budget" if small_chunk else "") + ")"]
    if n < row["batch_size"]:
        parts.append(f"{n} of {row['batch_size']} examples")
    row["note"] = "timed on " + " and ".join(parts) + f", scaled by {scale:.4g}"
    return _finish_row(row, timing, scale, compile_s)


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((options or {}).items()))


def _measure_all(row, est, params, batch, repeats, time_budget, reference, key, batch_scale):
    n = int(batch.x.shape[0])
    args = (params, batch, key)
    if est.jittable:
        exe, compile_s = _aot(lambda p, b, kk: est(p, b, kk), *args)
        _stats(exe, row, batch_scale)
        fn = exe
    else:
        fn, compile_s = (lambda p, b, kk: est(p, b, kk)), None
        _no_stats(row)
    timing, out, first = _timed(fn, args, repeats, time_budget)
    compile_s = first if compile_s is None else compile_s
    row["rel_error"] = relative_error(flat_numpy(out), reference(n))
    row["error_on"] = "all directions" + ("" if n == row["batch_size"] else f", {n} examples")
    row["measured_directions"] = row["P"]
    row["measured_batch"] = n
    _note(row, row["P"], n, batch_scale)
    return _finish_row(row, timing, batch_scale, compile_s)


def _fd_scheme(method: str) -> str | None:
    return {"fd-forward": "forward", "fd-central": "central", "fd-complex": "complex"}.get(method)


def _subset_options(method, cost, params, batch) -> dict:
    """Options for the estimator on a subset of directions: the FD kernel keeps the chunk size it would use on
    the whole problem (it caps it at the number of directions itself)."""
    scheme = _fd_scheme(method)
    if scheme is None:
        return {}
    from gdjax.gradients import finite_diff

    return {"chunk_size": finite_diff.fd_chunk_size(cost, params, batch, scheme)}


def _measure_directions(row, cost, method, params, batch, k, repeats, time_budget, reference, key, evals_p,
                        batch_scale):
    """Time `method`'s own estimator on the cost restricted to k spread parameters; scale to P (and N)."""
    n = int(batch.x.shape[0])
    idx = _spread_indices(row["P"], k)
    k = int(idx.size)
    sub_cost, theta0 = restrict_cost(cost, params, idx)
    options = _subset_options(method, cost, params, batch)
    est_k = gradient(sub_cost, method, **options)
    scale = evals_p / float(est_k.evaluations(k)) * batch_scale
    if est_k.jittable:
        exe, compile_s = _aot(lambda th, b, kk: est_k(th, b, kk), theta0, batch, key)
        _stats(exe, row, scale)
        fn = exe
    else:
        fn, compile_s = (lambda th, b, kk: est_k(th, b, kk)), None
        _no_stats(row)
    timing, out, first = _timed(fn, (theta0, batch, key), repeats, time_budget)
    compile_s = first if compile_s is None else compile_s
    row["rel_error"] = relative_error(out, reference(n)[idx])
    row["error_on"] = f"{k} of {row['P']} directions" + ("" if n == row["batch_size"] else f", {n} examples")
    row["measured_directions"] = k
    row["measured_batch"] = n
    _note(row, k, n, scale)
    return _finish_row(row, timing, scale, compile_s)


# --- the sweep ------------------------------------------------------------------------------------------------


def run_sweep(config: BenchConfig, peaks: dict, *, done: Sequence[dict] = (), progress: bool = False,
              on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Measure every point of `plan(config)` not already in `done` (rows with the same `id`).

    Args:
      peaks: `measure_peaks(...)`, FLOP/s by dtype (rows report their fraction of peaks[config.dtype]).
      done: rows of an interrupted earlier run (resume); their points are not measured again.
      progress: show a tqdm bar.
      on_row: called with each new row as soon as it is finished (append it to JSON-lines there).
    Returns:
      all rows in plan order, the finished ones from `done` included.
    """
    points = plan(config)
    by_id = {r["id"]: r for r in done if "id" in r}
    peak = float(peaks[config.dtype])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(points), desc="gdjax bench", unit="point", leave=False)
    rows: list[dict] = []
    cache: dict = {}
    try:
        for point in points:
            pid = point.id(config.dtype)
            if bar is not None:
                bar.set_postfix_str(f"{'-'.join(map(str, point.sizes))} N={point.batch_size} {point.method}")
            if pid in by_id:
                rows.append(by_id[pid])
            else:
                t0 = time.perf_counter()
                row = _measure_point(point, config, peak, rows, cache)
                row["wall_s"] = time.perf_counter() - t0  # everything this point cost (compile, reference, ...)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows


SKIP_FLOOR_S = 5.0  # a point is skipped only if even its smallest subset needs more than this and 20 budgets
DATA_BYTES = 256 * 2**20  # the most example data (inputs + activations of one pass) one point materialises


def _measure_point(point: Point, config: BenchConfig, peak: float, rows: list, cache: dict) -> dict:
    pkey = (point.sizes, point.batch_size)
    if cache.get("key") != pkey:
        cache.clear()  # one problem (params + data) in memory at a time
        # never more examples than DATA_BYTES allows (the million table's 60,000 x 784 batches): beyond it,
        # points are timed on the first n examples and scaled by N / n, flagged
        per_example = sum(point.sizes) * jnp.dtype(config.dtype).itemsize
        n_data = int(min(point.batch_size, max(10, DATA_BYTES // per_example)))
        cache.update(key=pkey, problem=make_problem(point.sizes, n_data, config.dtype, config.seed), refs={})
    cost, params, batch = cache["problem"]
    refs = cache["refs"]

    def reference(n):
        if n not in refs:
            refs[n] = reference_gradient(cost, params, sub_batch(batch, n))
        return refs[n]

    common = dict(dtype=config.dtype, peak=peak, repeats=config.repeats, time_budget=config.time_budget)
    try:
        if point.method == FORWARD_PASS:
            return measure_forward(point, cost, params, batch, **common)
        fid = Point(point.group, point.sizes, point.batch_size, FORWARD_PASS).id(config.dtype)
        fwd = next((r for r in rows if r["id"] == fid), None)
        history = [(r["P"], r["batch_size"], r["median_s"]) for r in rows
                   if r["method"] == point.method and r["group"] == point.group and r.get("status") == "ok"]
        if fwd is None or fwd.get("status") != "ok":
            raise RuntimeError("the forward pass of this network was not measured, so its time cannot be predicted")
        t_forward = fwd["median_s"] * batch.x.shape[0] / point.batch_size
        return measure_method(point, cost, params, batch, t_forward=t_forward, reference=reference,
                              key=_key_for(config.seed, point), history=history, **common)
    except Exception as err:  # recorded in the results and printed, never silently dropped
        row = _base_row(point, config.dtype, peak)
        msg = " ".join(str(err).split())[:300]
        row.update({"status": "error", "extrapolated": None, "note": f"{type(err).__name__}: {msg}"})
        return row


# --- analysis -------------------------------------------------------------------------------------------------


def fit_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x; None with fewer than two distinct positive points."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


def ok_rows(rows: Iterable[dict], group: str = "sweep") -> list[dict]:
    return [r for r in rows if r.get("group") == group and r.get("status") == "ok"]


def _find(rows, sizes: str, method: str, batch_size=None) -> dict | None:
    for r in rows:
        if r["sizes"] == sizes and r["method"] == method and (batch_size is None or r["batch_size"] == batch_size):
            return r
    return None


def fd_kernel_method(rows: Iterable[dict]) -> str | None:
    """The FD kernel the targets use: "fd-forward" (the lecture's one-sided difference) when measured."""
    methods = {r["method"] for r in rows}
    return next((m for m in ("fd-forward", "fd-central") if m in methods), None)


def ratio_rows(rows: Iterable[dict], method: str, baseline: str = "reverse") -> list[dict]:
    """Per network: time(method) / time(baseline), with P and whether either side was extrapolated."""
    rows = ok_rows(rows)
    out = []
    for r in rows:
        if r["method"] != method:
            continue
        b = _find(rows, r["sizes"], baseline, r["batch_size"])
        if b is None:
            continue
        out.append({"sizes": r["sizes"], "P": r["P"], "ratio": r["median_s"] / b["median_s"],
                    "extrapolated": bool(r.get("extrapolated") or b.get("extrapolated"))})
    return sorted(out, key=lambda d: d["P"])


def targets(rows: Sequence[dict], batch_size: int = 1000, dtype: str = "float32") -> list[dict]:
    """The issue's targets with the measured values: name, value, threshold, comparison, status
    (PASS / SHORT / n/a when the run did not measure it), and how it was measured."""
    rows = ok_rows(rows)
    lect = "-".join(map(str, LECTURE_NET))
    fd = fd_kernel_method(rows)
    out = []

    def add(name, value, threshold, better, how):
        if value is None:
            status = "n/a"
        else:
            status = "PASS" if (value >= threshold if better == ">=" else value <= threshold) else "SHORT"
        out.append({"target": name, "value": value, "threshold": threshold, "comparison": better,
                    "status": status, "how": how})

    def at_lecture(method):
        r = _find(rows, lect, method, batch_size)
        return r if r is not None and r["dtype"] == dtype else None

    fdr = at_lecture(fd) if fd else None
    add("FD kernel / matmul rate at [784,30,10]", fdr and fdr["peak_fraction"], TARGETS["fd_peak_fraction"], ">=",
        f"{fd}: evaluations x forward FLOPs / time, vs same-run {dtype} matmul"
        + (" (extrapolated)" if fdr and fdr.get("extrapolated") else ""))
    loop = at_lecture("fd-loop")
    add("fd-loop / FD kernel time at [784,30,10]", loop and fdr and loop["median_s"] / fdr["median_s"],
        TARGETS["fd_vs_loop"], ">=", "time per gradient" + (" (extrapolated)" if (loop and loop.get("extrapolated"))
                                                             or (fdr and fdr.get("extrapolated")) else ""))
    rev, fwd = at_lecture("reverse"), at_lecture(FORWARD_PASS)
    add("reverse / forward-pass time at [784,30,10]", rev and fwd and rev["median_s"] / fwd["median_s"],
        TARGETS["reverse_over_forward"], "<=", "both measured in full")
    rr = [d for d in ratio_rows(rows, fd) if 1e4 <= d["P"] <= 1e5] if fd else []
    add("FD/grad ratio slope, P in [1e4, 1e5]", fit_slope([d["P"] for d in rr], [d["ratio"] for d in rr]),
        TARGETS["ratio_slope"], ">=", f"{len(rr)} networks" + (
            f", {sum(d['extrapolated'] for d in rr)} extrapolated" if any(d["extrapolated"] for d in rr) else ""))
    return out


def million_table(rows: Sequence[dict]) -> list[dict]:
    """The "million weights" table from the million-group rows: per network and method, one full-batch
    gradient on 60,000 examples and one epoch = 6000 steps on mini-batches of 10 (6000 x the measured
    mini-batch gradient time; update and data costs not included)."""
    rows = [r for r in rows if r.get("group") == "million" and r.get("status") == "ok"]
    out = []
    for sizes in dict.fromkeys(r["sizes"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["sizes"] == sizes):
            if method == FORWARD_PASS:
                continue
            full = _find(rows, sizes, method, MILLION_EXAMPLES)
            mini = _find(rows, sizes, method, EPOCH_BATCH)
            out.append({
                "sizes": sizes, "P": (full or mini)["P"], "method": method,
                "gradient_s": full and full["median_s"], "gradient_extrapolated": full and full["extrapolated"],
                "step_s": mini and mini["median_s"], "epoch_s": mini and mini["median_s"] * EPOCH_STEPS,
                "epoch_extrapolated": mini and mini["extrapolated"],
            })
    return out


# --- text output ----------------------------------------------------------------------------------------------


def human_time(s: float | None) -> str:
    """Seconds as a short human string: 12.3 us, 4.5 ms, 6.7 s, 8.9 min, 1.2 h, 3.4 days, 5.6 years."""
    if s is None or not math.isfinite(s):
        return "-"
    for limit, div, unit in ((1e-3, 1e-6, "us"), (1, 1e-3, "ms"), (120, 1, "s"), (7200, 60, "min"),
                             (2 * 86400, 3600, "h"), (2 * 365.25 * 86400, 86400, "days")):
        if s < limit:
            return f"{s / div:.3g} {unit}"
    return f"{s / (365.25 * 86400):.3g} years"


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def format_table(rows: Sequence[dict]) -> str:
    """The sweep as a fixed-width text table (extrapolated times marked with '~', errors and skips noted)."""
    head = f"{'network':<16}{'P':>10} {'method':<22}{'evals':>10}{'time/grad':>12}{'spread':>9}" \
           f"{'compile':>9}{'GFLOP/s':>9}{'%peak':>7}{'rel.err':>9}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("group") != "sweep":
            continue
        if r.get("status") != "ok":
            lines.append(f"{r['sizes']:<16}{r['P']:>10} {r['method']:<22}{'':>10}{r['status'].upper():>12}  "
                         f"{r.get('note', '')}")
            continue
        mark = "~" if r.get("extrapolated") else " "
        spread = (r["max_s"] - r["min_s"]) / r["median_s"] if r["median_s"] else 0.0
        lines.append(
            f"{r['sizes']:<16}{r['P']:>10} {r['method']:<22}{r['evaluations']:>10.4g}"
            f"{mark + human_time(r['median_s']):>12}{'±' + format(spread / 2, '.0%'):>9}"
            f"{human_time(r.get('compile_s')):>9}{_fmt(r.get('gflops')):>9}{_fmt(r.get('peak_fraction'), '.0%'):>7}"
            f"{_fmt(r.get('rel_error'), '.1e'):>9}  {'extrapolated' if r.get('extrapolated') else ''}")
    return "\n".join(lines)


def format_targets(tg: Sequence[dict], batch_size: int = DEFAULT_BATCH, dtype: str = "float32") -> str:
    lines = [f"targets ([784,30,10], N={batch_size}, {dtype}; the issue states them for N=1000, float32):"]
    for t in tg:
        val = "-" if t["value"] is None else (f"{t['value']:.0%}" if "matmul" in t["target"] else f"{t['value']:.3g}")
        thr = f"{t['threshold']:.0%}" if "matmul" in t["target"] else f"{t['threshold']:g}"
        lines.append(f"  {t['status']:<6}{t['target']:<44}{val:>8}  (target {t['comparison']} {thr}; {t['how']})")
    return "\n".join(lines)


def format_million(table: Sequence[dict]) -> str:
    lines = [f"the million weights: one gradient on {MILLION_EXAMPLES:,} examples, and one epoch = "
             f"{EPOCH_STEPS} steps of mini-batch {EPOCH_BATCH} (6000 x one mini-batch gradient); ~ = extrapolated",
             f"  {'network':<14}{'P':>10}  {'method':<12}{'gradient (N=60000)':>20}{'epoch (6000 x N=10)':>22}"]
    for t in table:
        g = ("~" if t["gradient_extrapolated"] else "") + human_time(t["gradient_s"])
        e = ("~" if t["epoch_extrapolated"] else "") + human_time(t["epoch_s"])
        lines.append(f"  {t['sizes']:<14}{t['P']:>10,}  {t['method']:<12}{g:>20}{e:>22}")
    return "\n".join(lines)


def markdown_summary(data: dict) -> str:
    """The headline tables of a results dict (`gdjax.results.load_results`) as Markdown, for the README:
    every method at [784, 30, 10], the targets, and the million-weights table. `~` marks extrapolated times."""
    rows = data["rows"]
    cfg, meta = data.get("config", {}), data.get("meta", {})
    lect = "-".join(map(str, LECTURE_NET))
    at = [r for r in ok_rows(rows) if r["sizes"] == lect]
    rev = _find(at, lect, "reverse")
    mm = meta.get("matmul_gflops", {})
    lines = [f"[784, 30, 10], N = {cfg.get('batch_size')}, {cfg.get('dtype')}, {meta.get('device_kind')} "
             f"({meta.get('cpu_count')} CPUs; matmul {mm.get(cfg.get('dtype'), float('nan')):.0f} GFLOP/s), "
             f"{meta.get('date', '')[:10]}, commit {str(meta.get('git_commit'))[:8]}:", "",
             "| method | evaluations | time per gradient | / reverse | % of matmul rate | rel. error vs f64 grad |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(at, key=lambda r: r["median_s"]):
        mark = "~" if r.get("extrapolated") else ""
        ratio = f"{r['median_s'] / rev['median_s']:.3g}" if rev else "-"
        lines.append(f"| {r['method']} | {r['evaluations']:.6g} | {mark}{human_time(r['median_s'])} | {mark}{ratio} | "
                     f"{_fmt(r.get('peak_fraction'), '.0%')} | {_fmt(r.get('rel_error'), '.1e')} |")
    tg = cfg.get("targets") or targets(rows, cfg.get("batch_size", 1000), cfg.get("dtype", "float32"))
    lines += ["", "| target | measured | required | |", "| --- | ---: | ---: | --- |"]
    for t in tg:
        pct = "matmul" in t["target"]
        val = "-" if t["value"] is None else (f"{t['value']:.0%}" if pct else f"{t['value']:.3g}")
        thr = f"{t['threshold']:.0%}" if pct else f"{t['threshold']:g}"
        lines.append(f"| {t['target']} | {val} | {t['comparison']} {thr} | {t['status']} |")
    table = million_table(rows)
    if table:
        lines += ["", f"One gradient on {MILLION_EXAMPLES:,} examples, and one epoch = {EPOCH_STEPS} steps of "
                      f"mini-batch {EPOCH_BATCH} (6000 x one mini-batch gradient):", "",
                  "| network | P | method | one gradient (N = 60,000) | one epoch (6000 x N = 10) |",
                  "| --- | ---: | --- | ---: | ---: |"]
        for t in table:
            g = ("~" if t["gradient_extrapolated"] else "") + human_time(t["gradient_s"])
            e = ("~" if t["epoch_extrapolated"] else "") + human_time(t["epoch_s"])
            lines.append(f"| [{t['sizes'].replace('-', ', ')}] | {t['P']:,} | {t['method']} | {g} | {e} |")
    return "\n".join(lines)
