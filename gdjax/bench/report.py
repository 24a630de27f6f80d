"""The benchmark's results as text: the sweep table, the validation of the extrapolation, the targets, the
million-weights table and the comparison with the committed reference (README tables: `gdjax report`). Pure
functions of results (rows, dicts) returning strings; durations read as `gdjax.profiling.format_seconds` writes them.

    >>> print(format_table(rows)); print(format_validation(validation)); print(format_compare(compare(run, ref)))
"""

from __future__ import annotations

from collections.abc import Sequence

from gdjax import profiling
from gdjax.bench.analysis import validated_factor, validation_worst
from gdjax.bench.config import EPOCH_BATCH, EPOCH_STEPS, MILLION_EXAMPLES

__all__ = ["human_time", "format_table", "format_validation", "format_targets", "format_million",
           "format_compare", "format_reference"]

LEGEND = "~ extrapolated from a subset of the method's own program; ! above 100% of the matmul reference"


human_time = profiling.format_seconds  # the one duration formatter (gdjax.profiling)


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def _pct(r: dict) -> str:
    return _fmt(r.get("peak_fraction"), ".0%") + ("!" if r.get("over_reference") else "")


def format_table(rows: Sequence[dict]) -> str:
    """The sweep as a fixed-width text table: time per gradient ('~' extrapolated), spread, compilation,
    forward-pass equivalents (XLA FLOPs / forward FLOPs), % of the matmul reference by XLA FLOPs ('!' above
    100%) and by the analytic count, error against float64 jax.grad; errors and skips noted."""
    head = (f"{'network':<16}{'P':>10} {'method':<26}{'fwd-eq':>10}{'time/grad':>12}{'spread':>8}{'compile':>9}"
            f"{'%ref':>7}{'%an.':>6}{'rel.err':>9}  note")
    lines = [LEGEND, head, "-" * len(head)]
    for r in rows:
        if r.get("group") != "sweep":
            continue
        if r.get("status") != "ok":
            lines.append(f"{r['sizes']:<16}{r['P']:>10} {r['method']:<26}{'':>10}{r['status'].upper():>12}  "
                         f"{r.get('note', '')}")
            continue
        mark = "~" if r.get("extrapolated") else " "
        spread = (r["max_s"] - r["min_s"]) / r["median_s"] / 2 if r["median_s"] else 0.0
        lines.append(
            f"{r['sizes']:<16}{r['P']:>10} {r['method']:<26}{_fmt(r.get('forward_equivalents'), '.4g'):>10}"
            f"{mark + human_time(r['median_s']):>12}{'±' + format(spread, '.0%'):>8}"
            f"{human_time(r.get('compile_s')):>9}{_pct(r):>7}{_fmt(r.get('analytic_fraction'), '.0%'):>6}"
            f"{_fmt(r.get('rel_error'), '.1e'):>9}  {r.get('note', '') if r.get('extrapolated') else ''}")
    return "\n".join(lines)


def format_validation(validation: Sequence[dict]) -> str:
    """Each point measured whole and also extrapolated from a subset: both times and their ratio."""
    lines = ["validation of the extrapolation (the same point, whole and from a subset of its directions;",
             "  * = shorter than one extrapolation subset call: listed, not counted toward the target):",
             f"  {'network':<16}{'N':>7} {'method':<22}{'whole':>10}{'extrap.':>10}{'ratio':>8}{'subset':>16}"]
    for v in validation:
        mark = "" if v.get("counted", True) else " *"
        lines.append(f"  {v['sizes']:<16}{v['batch_size']:>7} {v['method']:<22}{human_time(v['whole_s']):>10}"
                     f"{human_time(v['extrapolated_s']):>10}{v['ratio']:>8.3f}{v['covered']:>8}/{v['total']:<7}"
                     f"{mark}")
    if not validation:
        lines.append("  (no point was both measured whole and large enough to extrapolate)")
    else:
        worst, n = validation_worst(validation)
        worst_c, n_c = validation_worst(validation, counted_only=True)
        lines.append(f"  worst |extrapolated / whole - 1|: {worst:.3f} over all {n} points, "
                     + (f"{worst_c:.3f} over the {n_c} counted" if worst_c is not None else "none counted")
                     + f"; largest factor validated (whole / timed directions): {validated_factor(validation):.3g}x"
                     + " (an extrapolation further out is unvalidated)")
    return "\n".join(lines)


def format_targets(tg: Sequence[dict], batch_size: int = 1000, dtype: str = "float32") -> str:
    lines = [f"targets ([784,30,10], N={batch_size}, {dtype}; the issue states them for N=1000, float32):"]
    for t in tg:
        pct = "matmul" in t["target"]
        val = "-" if t["value"] is None else (f"{t['value']:.0%}" if pct else f"{t['value']:.3g}")
        thr = f"{t['threshold']:.0%}" if pct else f"{t['threshold']:g}"
        lines.append(f"  {t['status']:<6}{t['target']:<46}{val:>8}  (target {t['comparison']} {thr}; {t['how']})")
    return "\n".join(lines)


def format_million(table: Sequence[dict]) -> str:
    lines = [f"the million weights: one gradient on {MILLION_EXAMPLES:,} examples, and one epoch = "
             f"{EPOCH_STEPS} steps of mini-batch {EPOCH_BATCH} (6000 x one mini-batch gradient); ~ = extrapolated",
             f"  {'network':<14}{'P':>10}  {'method':<20}{'gradient (N=60000)':>20}{'epoch (6000 x N=10)':>22}"]
    for t in table:
        g = ("~" if t["gradient_extrapolated"] else "") + human_time(t["gradient_s"])
        e = ("~" if t["epoch_extrapolated"] else "") + human_time(t["epoch_s"])
        lines.append(f"  {t['sizes']:<14}{t['P']:>10,}  {t['method']:<20}{g:>20}{e:>22}")
    return "\n".join(lines)


def format_reference(reference: dict) -> str:
    """The matmul reference: each shape at the start, middle and end of the run, and the best."""
    parts = []
    for when in ("start", "middle", "end"):
        if when in reference:
            parts.append(f"{when} " + ", ".join(f"{k} {v:.1f}" for k, v in reference[when].items()))
    return (f"matmul reference {reference.get('best_gflops', float('nan')):.1f} GFLOP/s "
            f"(best: {reference.get('best_shape')}; GFLOP/s by shape: " + "; ".join(parts) + ")")


def format_compare(cmp: dict) -> str:
    """`analysis.compare` as text: this machine beside the committed reference, per method."""
    lines = [f"this run beside the committed reference at [{cmp['sizes'].replace('-', ', ')}] "
             f"(ratio > 1: slower here):",
             f"  matmul reference: this machine {_fmt(cmp['run_matmul_gflops'], '.1f')} GFLOP/s ({cmp['run_device']}), "
             f"reference {_fmt(cmp['reference_matmul_gflops'], '.1f')} GFLOP/s ({cmp['reference_device']})",
             f"  {'method':<26}{'this machine':>14}{'reference':>12}{'ratio':>8}"]
    for r in cmp["rows"]:
        a = ("~" if r["run_extrapolated"] else "") + human_time(r["run_s"])
        b = ("~" if r["reference_extrapolated"] else "") + human_time(r["reference_s"])
        lines.append(f"  {r['method']:<26}{a:>14}{b:>12}{r['ratio']:>8.2f}")
    if not cmp["rows"]:
        lines.append("  (no method measured at this network in both runs)")
    return "\n".join(lines)
