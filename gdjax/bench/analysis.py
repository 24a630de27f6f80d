"""What a run's rows say: slope fits, FD / reverse ratios, the targets, the million-weights table, and a run
compared with the committed reference of its platform. Pure functions of rows (dicts); nothing measured here.

    >>> targets(rows)                                  # [{"target", "value", "threshold", "status", ...}]
    >>> compare(run_data, reference_data)              # per method at [784, 30, 10]: this machine vs reference
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from gdjax.bench.config import (EPOCH_BATCH, EPOCH_STEPS, FORWARD_PASS, LECTURE_NET, MILLION_EXAMPLES, TARGETS)
from gdjax.gradients import methods_where, reference_method

__all__ = ["fit_slope", "ok_rows", "find", "fd_kernel_candidates", "fd_kernel_method", "naive_loop_method", "ratio_rows", "targets", "million_table",
           "compare", "status", "extrapolation_factor", "validated_factor", "unvalidated", "validation_worst"]

LECTURE = "-".join(map(str, LECTURE_NET))


def fit_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x; None with fewer than two distinct positive points."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


def status(value: float | None, threshold: float, comparison: str = ">=") -> str:
    """"PASS" / "SHORT" for a measured value against its threshold, "n/a" when it was not measured (None)."""
    if comparison not in (">=", "<="):
        raise ValueError(f"comparison must be '>=' or '<=', got {comparison!r}")
    if value is None:
        return "n/a"
    return "PASS" if (value >= threshold if comparison == ">=" else value <= threshold) else "SHORT"


def ok_rows(rows: Iterable[dict], group: str = "sweep") -> list[dict]:
    return [r for r in rows if r.get("group") == group and r.get("status") == "ok"]


def find(rows, sizes: str, method: str, batch_size=None) -> dict | None:
    """The first row of `method` at network `sizes` ("784-30-10") and, if given, `batch_size`."""
    for r in rows:
        if r["sizes"] == sizes and r["method"] == method and (batch_size is None or r["batch_size"] == batch_size):
            return r
    return None


def fd_kernel_candidates() -> tuple[str, ...]:
    """The FD kernel's methods by their registry entries: deterministic black-box FD methods that run inside
    jax.jit with a fixed scheme, the forward scheme (the lecture's one-sided difference) first, then central."""
    kernel = {"kind": "fd", "stochastic": False, "structured": False, "jittable": True}
    return methods_where(scheme="forward", **kernel) + methods_where(scheme="central", **kernel)


def fd_kernel_method(rows: Iterable[dict]) -> str | None:
    """The FD kernel the targets use: the first of `fd_kernel_candidates()` (fd-forward) measured in `rows`."""
    methods = {r["method"] for r in rows}
    return next((m for m in fd_kernel_candidates() if m in methods), None)


def naive_loop_method() -> str | None:
    """The naive FD baseline the targets compare the kernel with: the registry's deterministic FD method driven
    from Python, one call per direction (not jittable: fd-loop)."""
    return next(iter(methods_where(kind="fd", stochastic=False, jittable=False)), None)


def ratio_rows(rows: Iterable[dict], method: str, baseline: str | None = None) -> list[dict]:
    """Per network: time(method) / time(baseline), with P and whether either side was extrapolated; the baseline
    defaults to the registry's reference method (reverse)."""
    baseline = reference_method() if baseline is None else baseline
    rows = ok_rows(rows)
    out = []
    for r in rows:
        b = find(rows, r["sizes"], baseline, r["batch_size"]) if r["method"] == method else None
        if b is not None:
            out.append({"sizes": r["sizes"], "P": r["P"], "ratio": r["median_s"] / b["median_s"],
                        "extrapolated": bool(r.get("extrapolated") or b.get("extrapolated"))})
    return sorted(out, key=lambda d: d["P"])


def extrapolation_factor(row: dict) -> float | None:
    """How far an extrapolated row reaches: the whole gradient's directions over the directions timed
    (`total_directions / measured_directions`); None for a row timed whole (or without the counts)."""
    if not row.get("extrapolated") or not row.get("measured_directions") or not row.get("total_directions"):
        return None
    return row["total_directions"] / row["measured_directions"]


def validated_factor(validation: Sequence[dict]) -> float | None:
    """The largest factor (total / covered directions) at which the run checked its extrapolation against a
    whole gradient; None when it validated nothing."""
    return max((v["total"] / v["covered"] for v in validation if v.get("covered") and v.get("total")), default=None)


def unvalidated(row: dict, validation: Sequence[dict]) -> bool:
    """True when `row` is extrapolated further (`extrapolation_factor`) than the largest factor the run
    validated (`validated_factor`), or the run validated nothing: its time is a model's reach, not a checked
    measurement."""
    factor = extrapolation_factor(row)
    if factor is None:
        return False
    largest = validated_factor(validation)
    return largest is None or factor > largest


def validation_worst(validation: Sequence[dict], counted_only: bool = False) -> tuple[float | None, int]:
    """(worst |extrapolated / whole - 1| over the validated points, how many points), from each entry's `ratio`
    (extrapolated_s / whole_s, which `gdjax report --check` verifies against the times); `counted_only`: only
    the points whose whole gradient takes at least one subset call of an extrapolated point (`counted`)."""
    pts = [v for v in validation if v.get("counted", True) or not counted_only]
    worst = max((abs(v["ratio"] - 1) for v in pts), default=None)
    return worst, len(pts)


def targets(rows: Sequence[dict], validation: Sequence[dict] = (), batch_size: int = 1000,
            dtype: str = "float32") -> list[dict]:
    """The issue's targets with the measured values: target, value, threshold, comparison, status (PASS /
    SHORT / n/a when the run did not measure it), and how it was measured."""
    rows = [r for r in ok_rows(rows) if r["dtype"] == dtype]
    fd = fd_kernel_method(rows)
    out = []

    def add(name, value, threshold, comparison, how):
        out.append({"target": name, "value": value, "threshold": threshold, "comparison": comparison,
                    "status": status(value, threshold, comparison), "how": how})

    def at_lecture(method):
        return find(rows, LECTURE, method, batch_size) if method else None

    def flag(*rs):
        return " (extrapolated)" if any(r and r.get("extrapolated") for r in rs) else " (whole)"

    naive, ref = naive_loop_method(), reference_method()
    fdr, loop = at_lecture(fd), at_lecture(naive)
    add("FD kernel / matmul reference at [784,30,10]", fdr and fdr.get("peak_fraction"), TARGETS["fd_peak_fraction"],
        ">=", f"{fd or next(iter(fd_kernel_candidates()), 'FD kernel')}: XLA FLOPs of the timed program / time vs the run's best matmul" + flag(fdr))
    add("fd-loop / FD kernel time at [784,30,10]", loop and fdr and loop["median_s"] / fdr["median_s"],
        TARGETS["fd_vs_loop"], ">=", "time per gradient" + flag(loop, fdr))
    rev, fwd = at_lecture(ref), at_lecture(FORWARD_PASS)
    if rev and rev.get("over_forward") is not None:  # timed in the same rounds as the forward pass
        add("reverse / forward-pass time at [784,30,10]", rev["over_forward"], TARGETS["reverse_over_forward"], "<=",
            f"median over {rev.get('over_forward_rounds')} rounds of the per-round ratio (spread "
            f"{rev.get('over_forward_min', 0):.3g}-{rev.get('over_forward_max', 0):.3g})")
    else:
        add("reverse / forward-pass time at [784,30,10]", rev and fwd and rev["median_s"] / fwd["median_s"],
            TARGETS["reverse_over_forward"], "<=", "medians of calls timed apart")
    rr = [d for d in ratio_rows(rows, fd) if 1e4 <= d["P"] <= 1e5] if fd else []
    n_ex = sum(d["extrapolated"] for d in rr)
    add("FD/grad ratio slope, P in [1e4, 1e5]", fit_slope([d["P"] for d in rr], [d["ratio"] for d in rr]),
        TARGETS["ratio_slope"], ">=", f"{len(rr)} networks" + (f", {n_ex} extrapolated" if n_ex else ""))
    worst, n = validation_worst(validation)
    largest = validated_factor(validation)
    add("worst |extrapolated / whole - 1|, every validated point", worst, TARGETS["validation"], "<=",
        f"{n} points, extrapolated up to {largest:.3g}x their timed directions" if largest else f"{n} points")
    worst_c, n_c = validation_worst(validation, counted_only=True)
    add("worst |extrapolated / whole - 1|, points >= one subset call", worst_c, TARGETS["validation"], "<=",
        f"{n_c} of {n} points: those whose whole gradient takes at least one extrapolation subset's time")
    return out


def million_table(rows: Sequence[dict]) -> list[dict]:
    """The "million weights" table from the million-group rows: per network and method, one full-batch
    gradient on 60,000 examples and one epoch = 6000 steps on mini-batches of 10 (6000 x the measured
    mini-batch gradient time; update and data costs not included)."""
    rows = ok_rows(rows, "million")
    out = []
    for sizes in dict.fromkeys(r["sizes"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["sizes"] == sizes):
            if method == FORWARD_PASS:
                continue
            full, mini = find(rows, sizes, method, MILLION_EXAMPLES), find(rows, sizes, method, EPOCH_BATCH)
            out.append({
                "sizes": sizes, "P": (full or mini)["P"], "method": method,
                "gradient_s": full and full["median_s"], "gradient_extrapolated": full and full["extrapolated"],
                "step_s": mini and mini["median_s"], "epoch_s": mini and mini["median_s"] * EPOCH_STEPS,
                "epoch_extrapolated": mini and mini["extrapolated"],
            })
    return out


def compare(run: dict, reference: dict, sizes: str = LECTURE) -> dict:
    """This run beside the committed reference of its platform: per method at `sizes` (both measured),
    this machine's seconds, the reference's, and run / reference; and both machines' matmul reference rates.

    Args:
      run, reference: results dicts (`gdjax.results.load_results`) of two `gdjax bench` runs.
    Returns:
      {"rows": [{method, run_s, reference_s, ratio, run_extrapolated, reference_extrapolated}],
       "run_matmul_gflops", "reference_matmul_gflops", "run_device", "reference_device", "sizes"}.
    """
    def matmul(data):
        ref = data.get("reference") or {}
        mm = data.get("meta", {}).get("matmul_gflops")
        return ref.get("best_gflops") or (max(mm.values()) if isinstance(mm, dict) and mm else mm)

    ref_rows = ok_rows(reference["rows"])
    out = []
    for r in ok_rows(run["rows"]):
        if r["sizes"] != sizes:
            continue
        q = find(ref_rows, sizes, r["method"], r["batch_size"])
        if q is not None and q.get("dtype") == r.get("dtype"):
            out.append({"method": r["method"], "run_s": r["median_s"], "reference_s": q["median_s"],
                        "ratio": r["median_s"] / q["median_s"], "run_extrapolated": bool(r.get("extrapolated")),
                        "reference_extrapolated": bool(q.get("extrapolated"))})
    return {"rows": out, "sizes": sizes, "run_matmul_gflops": matmul(run), "reference_matmul_gflops": matmul(reference),
            "run_device": run.get("meta", {}).get("device_kind"),
            "reference_device": reference.get("meta", {}).get("device_kind")}
