"""Figures drawn from results files only (never from live state), so `gdjax plot RESULTS` redraws them.

    >>> paths = plot_results("benchmarks/results/cpu/fd_vs_grad.json")   # PNG + SVG beside the JSON
    >>> paths = plot_fd_vs_grad(load_results(path), out_dir="figs")

Extrapolated points (timed on a subset of the method's own program, see `gdjax.bench`) are always drawn
differently from measured ones: hollow markers joined by dashed lines, hatched bars. `reference=` overlays a
second results file (the committed reference of the platform) in grey on the time figure.

Files are written through `gdjax.results.write_bytes` (atomic). Matplotlib runs on the Agg backend.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gdjax import results  # noqa: E402
from gdjax.bench.analysis import fit_slope as _fit_slope  # noqa: E402
from gdjax.bench.report import human_time as _human  # noqa: E402

__all__ = ["plot_results", "plot_fd_vs_grad", "PLOTTERS", "save_figure"]

FORMATS = ("png", "svg")


def save_figure(fig, path_stem, formats=FORMATS) -> list[Path]:
    """Save `fig` as `<path_stem>.<fmt>` for each format (atomically) and close it; returns the paths."""
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=130, bbox_inches="tight", metadata=_metadata(fmt))
        out.append(results.write_bytes(Path(f"{path_stem}.{fmt}"), buf.getvalue()))
    plt.close(fig)
    return out


def _metadata(fmt):
    # no creation dates: redrawing the same results gives byte-identical SVGs (clean git diffs)
    return {"Date": None} if fmt == "svg" else {}


def _color(method: str, methods: list[str]):
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    return cmap(methods.index(method) % cmap.N)


def _series(ax, xs, ys, extra, color, label, marker="o"):
    """One line: solid between measured points, dashed where either end is extrapolated; hollow markers for
    extrapolated points."""
    order = np.argsort(xs)
    xs, ys, extra = np.asarray(xs, float)[order], np.asarray(ys, float)[order], np.asarray(extra, bool)[order]
    for i in range(len(xs) - 1):
        ls = "--" if (extra[i] or extra[i + 1]) else "-"
        ax.plot(xs[i:i + 2], ys[i:i + 2], ls, color=color, lw=1.4)
    ax.plot(xs[~extra], ys[~extra], marker, color=color, ms=5, ls="none")
    ax.plot(xs[extra], ys[extra], marker, mfc="white", mec=color, ms=5, ls="none")
    ax.plot([], [], "-" + marker, color=color, label=label)  # legend entry


def _sweep_rows(data: dict) -> list[dict]:
    return [r for r in data["rows"] if r.get("group", "sweep") == "sweep" and r.get("status", "ok") == "ok"
            and r.get("median_s")]


def _title_suffix(data: dict) -> str:
    meta, cfg = data.get("meta", {}), data.get("config", {})
    dev = meta.get("device_kind") or meta.get("platform") or "?"
    return f"{dev}, N = {cfg.get('batch_size', '?')}, {cfg.get('dtype', '?')}"


def _loglog_vs_p(ax, ylabel: str, title: str) -> None:
    """The log-log axes of a quantity against P, with the legend entry for extrapolated points."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters P")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.plot([], [], "o", mfc="white", mec="gray", label="hollow / dashed: extrapolated")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def figure_time_vs_p(data: dict, reference: dict | None = None):
    """Time per gradient vs P (log-log), one line per method, fitted slopes in the legend, and the
    matmul-peak limit of the FD kernel: (P + 1) x forward FLOPs / the same run's matmul rate; a `reference`
    results dict is drawn beside it as thin grey lines (same methods)."""
    rows = _sweep_rows(data)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 5.5))
    if reference is not None:
        ref_rows = _sweep_rows(reference)
        for m in methods:
            rs = sorted((r for r in ref_rows if r["method"] == m), key=lambda r: r["P"])
            ax.plot([r["P"] for r in rs], [r["median_s"] for r in rs], "-", color="0.6", lw=0.8, alpha=0.8)
        ax.plot([], [], "-", color="0.6", lw=0.8,
                label=f"reference: {reference.get('meta', {}).get('device_kind', '?')}, "
                      f"{str(reference.get('meta', {}).get('date', ''))[:10]}")
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        measured = [r for r in rs if not r.get("extrapolated")]
        slope = _fit_slope([r["P"] for r in measured], [r["median_s"] for r in measured])
        how = "measured"
        if slope is None or len(measured) < 3:
            slope, how = _fit_slope([r["P"] for r in rs], [r["median_s"] for r in rs]), "incl. extrapolated"
        label = m if slope is None else f"{m} (slope {slope:.2f}, {how})"
        _series(ax, [r["P"] for r in rs], [r["median_s"] for r in rs], [bool(r.get("extrapolated")) for r in rs],
                _color(m, methods), label)
    by_p = {}
    for r in rows:
        by_p.setdefault(r["P"], r)
    if by_p:
        ps = np.array(sorted(by_p))
        limit = [(p + 1) * by_p[p]["forward_flops"] / (by_p[p]["matmul_gflops"] * 1e9) if by_p[p].get("matmul_gflops")
                 else np.nan for p in ps]
        ax.plot(ps, limit, ":", color="black", lw=2, label="matmul-peak limit: (P+1) x forward FLOPs / matmul rate")
    _loglog_vs_p(ax, "seconds per gradient (median)", f"Cost of one gradient vs network size ({_title_suffix(data)})")
    return fig


def figure_ratio(data: dict, baseline: str | None = None):
    """Time(FD method) / time(baseline) vs P, with the FLOP ratio P/2 (P evaluations against ~2 forward passes);
    the FD methods are the rows of kind "fd" (the registry's kind, recorded in each row); the baseline defaults
    to the registry's reference method (reverse)."""
    if baseline is None:
        from gdjax.gradients import reference_method

        baseline = reference_method()
    rows = _sweep_rows(data)
    base = {(r["sizes"], r["batch_size"]): r for r in rows if r["method"] == baseline}
    fd_methods = list(dict.fromkeys(r["method"] for r in rows if r.get("kind") == "fd"))  # the registry's kind
    all_methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(10.5, 5))
    ps_all = []
    for m in fd_methods:
        pts = []
        for r in rows:
            b = base.get((r["sizes"], r["batch_size"]))
            if r["method"] == m and b is not None:
                pts.append((r["P"], r["median_s"] / b["median_s"], bool(r.get("extrapolated") or b.get("extrapolated"))))
        if not pts:
            continue
        ps, ratio, extra = zip(*pts)
        ps_all += ps
        in_range = [(p, q) for p, q in zip(ps, ratio) if 1e4 <= p <= 1e5]
        slope = _fit_slope(*zip(*in_range)) if len(in_range) >= 2 else None
        label = m if slope is None else f"{m} / {baseline} (slope {slope:.2f} for P in [1e4, 1e5])"
        _series(ax, ps, ratio, extra, _color(m, all_methods), label)
    if ps_all:
        ps = np.geomspace(min(ps_all), max(ps_all), 50)
        ax.plot(ps, ps / 2, ":", color="black", lw=2, label="FLOP ratio P/2 (P evaluations vs ~2 passes)")
    _loglog_vs_p(ax, f"time(method) / time({baseline})", f"How much slower than jax.grad? ({_title_suffix(data)})")
    return fig


def figure_bars(data: dict, sizes: str = "784-30-10"):
    """Every method's time per gradient at one network (default the lecture's [784, 30, 10]), log scale;
    hatched bars are extrapolated."""
    rows = [r for r in _sweep_rows(data) if r["sizes"] == sizes]
    rows = sorted(rows, key=lambda r: r["median_s"])
    all_methods = list(dict.fromkeys(r["method"] for r in _sweep_rows(data)))
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(rows), 3) + 1.2))
    y = np.arange(len(rows))
    for i, r in enumerate(rows):
        extra = bool(r.get("extrapolated"))
        ax.barh(i, r["median_s"], color=_color(r["method"], all_methods), hatch="//" if extra else None,
                edgecolor="black" if extra else None, alpha=0.6 if extra else 0.9)
        lo, hi = r["median_s"] - r["min_s"], r["max_s"] - r["median_s"]
        ax.errorbar(r["median_s"], i, xerr=[[max(lo, 0)], [max(hi, 0)]], color="black", capsize=2, lw=0.8)
        ax.text(r["max_s"] * 1.15, i, _human(r["median_s"]) + (" (extrapolated)" if extra else ""), va="center",
                fontsize=7)
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.set_xscale("log")
    if rows:
        ax.set_xlim(min(r["min_s"] for r in rows) / 2, max(r["max_s"] for r in rows) * 20)
    ax.set_xlabel("seconds per gradient (median, whiskers min-max)")
    p = rows[0]["P"] if rows else "?"
    ax.set_title(f"[{sizes.replace('-', ', ')}], P = {p:,} ({_title_suffix(data)})" if rows else f"no rows at {sizes}")
    ax.grid(True, axis="x", which="both", alpha=0.25)
    return fig


def figure_validation(data: dict):
    """The validation of the extrapolation: extrapolated / whole time at every point measured both ways, vs P,
    one marker per method (hollow where the point is not counted toward the target), with the +-15% band."""
    val = data.get("validation") or []
    methods = list(dict.fromkeys(v["method"] for v in val))
    fig, ax = plt.subplots(figsize=(8, 4))
    for m in methods:
        vs = [v for v in val if v["method"] == m]
        for counted in (True, False):  # hollow: shorter than one subset call, not counted toward the target
            pts = [v for v in vs if v.get("counted", True) == counted]
            if pts:
                ax.plot([v["P"] for v in pts], [v["ratio"] for v in pts], "o", color=_color(m, methods),
                        mfc=None if counted else "none", label=m if counted or len(pts) == len(vs) else None)
    ax.axhline(1.0, color="black", lw=1)
    ax.axhspan(0.85, 1.15, color="green", alpha=0.1, label="target: within 15%")
    ax.set_xscale("log")
    ax.set_xlabel("parameters P")
    ax.set_ylabel("extrapolated / whole time")
    ax.set_title(f"Extrapolation checked against whole gradients ({_title_suffix(data)})"
                 if val else "no validated points in this run")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_fd_vs_grad(data: dict, out_dir, stem: str = "fd_vs_grad", reference: dict | None = None) -> list[Path]:
    """The figures of the FD-vs-grad benchmark from its results dict: `<stem>_time` (with `reference`
    overlaid when given), `<stem>_ratio`, `<stem>_bars`, `<stem>_validation` (PNG and SVG) in `out_dir`.
    Returns the written paths."""
    out_dir = Path(out_dir)
    paths = []
    paths += save_figure(figure_time_vs_p(data, reference), out_dir / f"{stem}_time")
    paths += save_figure(figure_ratio(data), out_dir / f"{stem}_ratio")
    paths += save_figure(figure_bars(data), out_dir / f"{stem}_bars")
    paths += save_figure(figure_validation(data), out_dir / f"{stem}_validation")
    return paths


# benchmark name (results meta["benchmark"]) -> plotter(data, out_dir, stem) -> paths; others add theirs
PLOTTERS: dict[str, Callable] = {"fd_vs_grad": plot_fd_vs_grad}


def plot_results(path, out_dir=None, reference=None) -> list[Path]:
    """Redraw the figures of a results JSON (beside it unless `out_dir`), by its meta["benchmark"];
    `reference` (a results JSON of the same benchmark) is overlaid where the plotter supports it."""
    path = Path(path)
    data = _load(path)
    name = data["meta"].get("benchmark") or path.stem
    if name not in PLOTTERS:
        raise ValueError(f"no figures known for benchmark {name!r} ({path}); known: {', '.join(PLOTTERS)}")
    kwargs = {}
    if reference is not None:
        ref = _load(Path(reference))
        if (ref["meta"].get("benchmark") or Path(reference).stem) != name:
            raise ValueError(f"--reference {reference} is not a {name!r} results file")
        kwargs["reference"] = ref
    return PLOTTERS[name](data, path.parent if out_dir is None else Path(out_dir), stem=path.stem, **kwargs)


def _load(path: Path) -> dict:
    """A results JSON (top-level extras such as `validation` kept); OSError naming a missing file."""
    if not path.is_file():
        raise OSError(f"results file {str(path)!r} not found")
    return results.load_results(path)
