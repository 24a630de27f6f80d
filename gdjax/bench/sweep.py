"""The sweep: every point of a run in order, resumable from JSON-lines, with the matmul reference measured at
the start, middle and end, the validation of the extrapolation collected, and the FLOP rates set once.

    >>> out = run_sweep(config, done=results.read_jsonl(path), on_row=lambda r: results.append_jsonl(path, r))
    >>> out["rows"], out["validation"], out["reference"]

Nothing here writes files: `on_row` receives each finished row (the CLI appends it to JSON-lines).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import profiling
from gdjax.bench.config import FORWARD_PASS, LECTURE_NET, BenchConfig, Point, plan
from gdjax.bench.measure import _compile, base_row, measure_forward, measure_method
from gdjax.bench.problem import mlp_problem
from gdjax.gradients import gradient, method_info

DATA_BYTES = 1 << 30  # the most example data (inputs + activations of one pass) one point holds; beyond it the
#                       point is timed on the first examples and scaled by N / n (flagged `batch_scaled`)
VALIDATION_FIELDS = ("whole_s", "extrapolated_s", "ratio", "ratio_min", "ratio_cpu", "covered", "total",
                     "counted")

__all__ = ["run_sweep", "reference_shapes", "measure_reference", "apply_reference", "validation_rows",
           "DATA_BYTES"]


def reference_shapes(config: BenchConfig, quick: bool = False) -> list[tuple[int, int, int]]:
    """The matmul shapes of the reference: 1024^3 and 2048^3 (256^3 and 512^3 when `quick`), and the FD
    kernel's own batched first-layer matmul at the lecture's network, N x n_in x (chunk x h1), the chunk taken
    from the kernel's one-chunk subset (the first configured method that is a jittable, deterministic,
    truncating method with a subset: the FD kernel)."""
    shapes = [(256,) * 3, (512,) * 3] if quick else [(1024,) * 3, (2048,) * 3]
    kernel = next((m for m in config.methods if _is_kernel(method_info(m))), None)
    if kernel is not None and not quick and config.problem is None:  # the lecture's net: its own matmul shape
        prob = mlp_problem(LECTURE_NET, config.batch_size, config.dtype, config.seed)
        est = gradient(prob.cost, kernel, **config.method_options(kernel))
        chunk = est.subset(prob.params, prob.batch, 1).covered
        shapes.append((config.batch_size, LECTURE_NET[0], chunk * LECTURE_NET[1]))
    return shapes


def _is_kernel(info) -> bool:
    return info.subset and info.jittable and not info.exact and not info.stochastic and not info.structured


def measure_reference(shapes, dtype: str) -> dict[str, float]:
    """FLOP/s of each matmul shape now (`profiling.matmul_reference`), in GFLOP/s by "MxKxN"."""
    return {k: v / 1e9 for k, v in profiling.matmul_reference(shapes, dtype, repeats=3).items()}


def apply_reference(rows: Sequence[dict], reference_gflops: float) -> list[dict]:
    """Rows with `gflops`, `peak_fraction` (XLA FLOPs of the timed program / time / reference) and
    `analytic_fraction` (analytic FLOPs / time / reference), computed once here; a row above 100% of the
    reference gets `over_reference: True` and the reason."""
    out = []
    for r in rows:
        r = dict(r)
        r["matmul_gflops"] = reference_gflops
        t, xf, af = r.get("median_s"), r.get("xla_flops"), r.get("analytic_flops")
        r["gflops"] = xf / t / 1e9 if xf and t else None
        r["peak_fraction"] = r["gflops"] / reference_gflops if r["gflops"] is not None else None
        r["analytic_fraction"] = af / t / 1e9 / reference_gflops if af and t else None
        over = r["peak_fraction"] is not None and r["peak_fraction"] > 1.0
        r["over_reference"] = over
        r["over_reference_reason"] = _over_reason(r) if over else None
        out.append(r)
    return out


def _over_reason(r: dict) -> str:
    if r.get("analytic_fraction") is not None and r["analytic_fraction"] <= 1.0:
        return (f"XLA counts {r['xla_flops'] / r['analytic_flops']:.2g}x the analytic FLOPs (work it counts but "
                f"does not run at matmul cost); by the analytic count it runs at {r['analytic_fraction']:.0%}")
    if r.get("how") == "extrapolated":
        return "extrapolated: the subset's rate may differ from the whole gradient's (see the validation)"
    return ("faster than the best matmul shape measured in this run: its matmuls have a better shape than the "
            "reference, or the reference was measured while the machine was loaded")


def validation_rows(rows: Sequence[dict]) -> list[dict]:
    """The top-level `validation` list: per (method, network) measured whole and extrapolated from a subset:
    method, sizes, P, batch_size, whole_s, extrapolated_s, ratio = extrapolated / whole, covered, total."""
    return [{"method": r["method"], "sizes": r["sizes"], "P": r["P"], "batch_size": r["batch_size"],
             "group": r["group"], **{k: r[f"validation_{k}"] for k in VALIDATION_FIELDS}}
            for r in rows if r.get("validation_ratio") is not None]


def run_sweep(config: BenchConfig, *, done: Sequence[dict] = (), progress: bool = False, quick: bool = False,
              on_row: Callable[[dict], None] | None = None, deadline: float | None = None) -> dict:
    """Measure every point of `plan(config)` not already in `done` (rows with the same `id`).

    Args:
      deadline: a `time.perf_counter()` value after which no new point is started (a time-boxed run, e.g.
        `make bench-gpu`); the points left are listed in `not_run`.
    Returns {"rows": the rows in plan order with the FLOP rates set, "validation": `validation_rows`,
    "reference": {"start"/"middle"/"end": {shape: GFLOP/s}, "best_gflops", "best_shape"}, "not_run": ids}.
    """
    points = plan(config)
    by_id = {r["id"]: r for r in done if "id" in r}
    shapes = reference_shapes(config, quick)
    reference = {"start": measure_reference(shapes, config.dtype)}
    bar = _bar(len(points)) if progress else None
    rows: list[dict] = []
    not_run: list[str] = []
    cache: dict = {}
    try:
        for i, point in enumerate(points):
            if deadline is not None and time.perf_counter() > deadline and point.id(config.dtype) not in by_id:
                not_run.append(point.id(config.dtype))
                continue
            if i == len(points) // 2 and "middle" not in reference:
                reference["middle"] = measure_reference(shapes, config.dtype)
            if bar is not None:
                bar.set_postfix_str(f"{point.label()} N={point.batch_size} {point.method}")
            pid = point.id(config.dtype)
            if pid in by_id:
                rows.append(by_id[pid])
            else:
                t0 = time.perf_counter()
                row = _measure_point(point, config, rows, cache)
                row["wall_s"] = time.perf_counter() - t0  # everything this point cost (compile, reference, ...)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    reference.setdefault("middle", measure_reference(shapes, config.dtype))
    reference["end"] = measure_reference(shapes, config.dtype)
    best = max(((v, k) for when in ("start", "middle", "end") for k, v in reference[when].items()))
    reference.update(best_gflops=best[0], best_shape=best[1])
    rows = apply_reference(rows, best[0])
    return {"rows": rows, "validation": validation_rows(rows), "reference": reference, "not_run": not_run}


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="gdjax bench", unit="point", leave=False)


def _key_for(seed: int, n_params: int) -> jax.Array:
    return jax.random.key(np.random.default_rng([seed, n_params, 1]).integers(2**31))


def _problem(point: Point, config: BenchConfig, cache: dict):
    """(Problem with its batch on the device, reference()) of a point, one problem in memory at a time: the
    run's `config.problem`, or the lecture's MLP of `point.sizes` with never more than DATA_BYTES of examples
    (then fewer examples: the caller scales)."""
    key = (point.label(), point.batch_size)
    if cache.get("key") != key:
        cache.clear()
        if config.problem is not None:
            prob = config.problem
        else:
            per_example = sum(point.sizes) * jnp.dtype(config.dtype).itemsize
            n = int(min(point.batch_size, max(10, DATA_BYTES // per_example)))
            prob = mlp_problem(point.sizes, point.batch_size, config.dtype, config.seed, n=n)
        cache.update(key=key, problem=prob, ref=[], forward=None)
    prob = cache["problem"]
    ref = cache["ref"]

    def reference():
        if not ref:
            ref.append(prob.reference())
        return ref[0]

    return prob, reference


def _forward(prob, cache: dict):
    """The problem's cost compiled once per problem (run beside each whole gradient, `measure_method`)."""
    if cache.get("forward") is None:
        cache["forward"] = _compile(prob.cost, prob.params, prob.batch)[0]
    return cache["forward"]


def _measure_point(point: Point, config: BenchConfig, rows: list, cache: dict) -> dict:
    prob, reference = _problem(point, config, cache)
    n = int(np.shape(jax.tree_util.tree_leaves(prob.batch)[0])[0]) if config.problem is None else prob.batch_size
    common = dict(dtype=config.dtype, repeats=config.repeats, budget=config.time_budget)
    try:
        if point.method != FORWARD_PASS and method_info(point.method).structured and not prob.structured:
            row = base_row(point, config.dtype, prob)
            row.update({"status": "skipped", "how": None, "kind": method_info(point.method).kind,
                        "note": "a structured method: it needs a cost built by gdjax.make_cost from a gdjax MLP, "
                                "and this problem's cost is a black box"})
            return row
        if point.method == FORWARD_PASS:
            row = measure_forward(point, prob, **common)
        else:
            fid = Point(point.group, point.sizes, point.batch_size, FORWARD_PASS, point.name).id(config.dtype)
            fwd = next((r for r in rows if r["id"] == fid), None)
            if fwd is None or fwd.get("status") != "ok":
                raise RuntimeError("the forward pass of this network was not measured, so its time cannot be predicted")
            history = [(r["P"], r["batch_size"], r["median_s"]) for r in rows
                       if r["method"] == point.method and r["group"] == point.group and r.get("status") == "ok"]
            row, check = measure_method(
                point, prob, t_forward=fwd["measured_median_s"], forward_flops=fwd["xla_flops_raw"],
                forward_dot_flops=fwd.get("dot_flops_raw"), forward_row=fwd, forward=_forward(prob, cache),
                reference=reference, key=_key_for(config.seed, prob.n_params), history=history,
                validate=config.validate, options=config.method_options(point.method), **common)
            if check is not None:
                row.update({f"validation_{k}": check[k] for k in VALIDATION_FIELDS})
            row.update(_loop_over_kernel(point, prob, row, config))
    except Exception as err:  # recorded in the results and printed, never silently dropped
        row = base_row(point, config.dtype, prob)
        msg = " ".join(str(err).split())[:300]
        row.update({"status": "error", "how": None, "extrapolated": None, "note": f"{type(err).__name__}: {msg}"})
        return row
    row["extrapolated"] = row.get("how") == "extrapolated" if row.get("status") == "ok" else None
    _scale_batch(row, n, point.batch_size)
    return row


LOOP_ROUNDS = 3  # fd-loop / FD kernel from at least this many interleaved rounds


def _loop_over_kernel(point: Point, prob, row: dict, config: BenchConfig) -> dict:
    """For a method driven from Python (fd-loop: deterministic, not jittable, with a subset) timed whole: its time
    over the FD kernel's (the first configured jittable deterministic method with a subset and the same
    evaluations: the same directions, batched), both called in the same rounds (`profiling.interleaved`,
    max(LOOP_ROUNDS, repeats) rounds, while they fit the budget): `over_kernel` (median of per-round ratios),
    `over_kernel_min` / `over_kernel_max`, `over_kernel_rounds`, `kernel_method`. {} where it does not apply or
    the rounds would not fit the budget."""
    info = method_info(point.method)
    if (row.get("status") != "ok" or row.get("how") != "whole" or info.jittable or not info.subset
            or info.stochastic or info.exact):
        return {}
    loop = gradient(prob.cost, point.method, **config.method_options(point.method))
    for m in config.methods:
        if not _is_kernel(method_info(m)):
            continue
        kernel = gradient(prob.cost, m, **config.method_options(m))
        if kernel.evaluations(prob.n_params) != row.get("evaluations"):
            continue
        rounds = max(LOOP_ROUNDS, config.repeats)
        if rounds * 2 * row["median_s"] > config.time_budget:  # the loop dominates each round
            return {"over_kernel": None, "over_kernel_rounds": 0, "kernel_method": m}
        exe, _ = _compile(lambda p, b, k=kernel: k(p, b), prob.params, prob.batch)
        wall, _ = profiling.interleaved([(exe, (prob.params, prob.batch)),
                                         (lambda p, b: loop(p, b), (prob.params, prob.batch))], rounds, warm=True)
        r = profiling.round_ratios(wall[1], wall[0])
        return {"over_kernel": r["median"], "over_kernel_min": r["min"], "over_kernel_max": r["max"],
                "over_kernel_rounds": r["rounds"], "kernel_method": m}
    return {}


def _scale_batch(row: dict, n: int, batch_size: int) -> None:
    """A point timed on n < N examples (DATA_BYTES): times and FLOPs scaled by N / n, flagged."""
    row["measured_batch"] = n
    row["batch_scaled"] = n < batch_size
    if n < batch_size and row.get("status") == "ok":
        s = batch_size / n
        for k in ("median_s", "min_s", "max_s", "xla_flops", "validation_whole_s", "validation_extrapolated_s"):
            if row.get(k) is not None:
                row[k] *= s
        row["note"] = (row.get("note", "") + f"; timed on {n} of {batch_size} examples, scaled by {s:.3g}").lstrip("; ")
