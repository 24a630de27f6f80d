"""One run of `gdjax bench`: the sweep, its results files (JSON, CSV, JSON-lines, figures) and the text a
user reads, including this run beside the committed reference of its platform.

    >>> data, written = run(config, out_dir, resume=False)
    >>> print(summary(data, reference_path("cpu")))

Files go through `gdjax.results` (atomic); the output folder is chosen by the caller
(`gdjax.results.output_dir("bench", out)`: a git-ignored runs/ folder unless --out is given).
"""

from __future__ import annotations

from pathlib import Path

from gdjax import provenance, results
from gdjax.bench import analysis, report
from gdjax.bench.config import BENCH_NAME, BenchConfig
from gdjax.bench.sweep import run_sweep

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "benchmarks" / "results"  # the committed reference results, one folder per platform

__all__ = ["run", "summary", "reference_path", "committed_dir", "COMMITTED"]


def committed_dir(platform: str) -> Path:
    """The folder of the committed reference results of `platform` (cpu, gpu)."""
    return COMMITTED / platform


def reference_path(platform: str, name: str = BENCH_NAME) -> Path:
    """The committed reference results file of `platform` (it may not exist)."""
    return committed_dir(platform) / f"{name}.json"


def run(config: BenchConfig, out_dir, *, name: str = BENCH_NAME, resume: bool = False, quick: bool = False,
        progress: bool = True, plots: bool = True, writer: bool = True, extra_meta: dict | None = None,
        deadline: float | None = None, draw=None):
    """Measure `config` and write `<out_dir>/<name>.json` (+ .csv, .jsonl, figures) when `writer`.

    The JSON holds meta (`results.environment()`, the matmul reference), config (the options as given), rows,
    and the top-level `validation` (each point measured whole and extrapolated), `reference` (matmul rates by
    shape at start/middle/end) and `targets`. `deadline` (a perf_counter value) time-boxes the sweep: points
    not started by then are listed in meta["not_run"]. Figures: `draw(data, out_dir, name) -> paths` when
    `plots` (the CLI passes `gdjax.cli.draw_bench`; gdjax.bench imports no plotting, which reads gdjax.bench).
    Returns (data, written paths).
    """
    out_dir = Path(out_dir)
    json_path, jsonl_path = out_dir / f"{name}.json", out_dir / f"{name}.jsonl"
    provenance.start()  # the stamp of this run, verified when its JSON is written
    env = results.environment()
    stamp = results.row_stamp(env)
    producers = (f"benchmarks/{BENCH_NAME}.py", *provenance.LIBRARY)
    done = results.resume_jsonl(jsonl_path, stamp, producers, "points", rewrite=writer) if resume else []
    if writer and jsonl_path.exists():
        results.write_jsonl(jsonl_path, done)  # a fresh sweep (no rows), or one resumed from the rows kept
    on_row = (lambda r: results.append_jsonl(jsonl_path, {**r, **stamp})) if writer else None
    out = run_sweep(config, done=done, progress=progress, quick=quick, on_row=on_row, deadline=deadline)
    ref = out["reference"]
    meta = {**env, "benchmark": BENCH_NAME, "dtype": config.dtype,
            "matmul_gflops": {config.dtype: ref["best_gflops"]}, "matmul_shape": ref["best_shape"],
            "resumed_points": sum(1 for r in done if r.get("id") in {x["id"] for x in out["rows"]}),
            "not_run": out["not_run"],
            **(extra_meta or {})}
    tg = analysis.targets(out["rows"], out["validation"], config.batch_size, config.dtype)
    data = {"meta": meta, "config": config.as_dict(), "rows": out["rows"], "validation": out["validation"],
            "reference": ref, "targets": tg}
    written = []
    if writer:
        results.save_results(json_path, out["rows"], meta=meta, config=config.as_dict())  # JSON + CSV
        results.write_json(json_path, data)  # the same JSON with the top-level validation, reference, targets
        written = [json_path, results.csv_path(json_path), jsonl_path]
        if plots and draw is not None:
            written += draw(data, out_dir, name)
    return data, written


def summary(data: dict, reference: Path | None = None) -> str:
    """What a user reads at the end of a run: the matmul reference, the sweep table, the validation, the
    targets, the million-weights table, and, when `reference` is a results file, this run beside it."""
    cfg = data["config"]
    if cfg.get("problem") is not None:  # `gdjax bench --problem`: one problem, no MLP targets
        return "\n\n".join([report.format_reference(data["reference"]), format_problem(data),
                             report.format_validation(data["validation"])])
    parts = [report.format_reference(data["reference"]), report.format_table(data["rows"]),
             report.format_validation(data["validation"]),
             report.format_targets(data["targets"], cfg["batch_size"], cfg["dtype"])]
    table = analysis.million_table(data["rows"])
    if table:
        parts.append(report.format_million(table))
    if reference is not None and Path(reference).is_file():
        parts.append(report.format_compare(analysis.compare(data, results.load_results(reference))))
    elif reference is not None:
        parts.append(f"no committed reference at {reference} to compare with")
    return "\n\n".join(parts)


def format_problem(data: dict) -> str:
    """The rows of a `gdjax bench --problem` run as a text table: per method the time per gradient ('~'
    extrapolated), its ratio to the forward pass (median of per-round ratios, interleaved, with its spread),
    forward-pass equivalents by all XLA FLOPs and by dot/convolution FLOPs only, the error against float64
    `jax.grad`; skips and errors with their note."""
    cfg = data["config"]
    fmt = report.human_time
    head = (f"{'method':<28}{'time/grad':>11}{'/ forward':>11}{'(min-max)':>15}{'fwd-eq':>10}{'fwd-eq dot':>11}"
            f"{'rel.err':>10}  note")
    lines = [f"problem {cfg['problem']} ({cfg.get('description') or cfg.get('problem_spec') or ''}): "
             f"P = {cfg['P']}, N = {cfg['batch_size']}, {cfg['dtype']}", head, "-" * len(head)]

    def num(v, spec):
        return "-" if v is None else format(v, spec)

    for r in data["rows"]:
        if r.get("status") != "ok":
            lines.append(f"{r['method']:<28}{r['status'].upper():>11}  {r.get('note', '')}")
            continue
        spread = ("-" if r.get("over_forward_min") is None
                  else f"{r['over_forward_min']:.3g}-{r['over_forward_max']:.3g}")
        lines.append(f"{r['method']:<28}{('~' if r.get('extrapolated') else ' ') + fmt(r['median_s']):>11}"
                     f"{num(r.get('over_forward'), '.3g'):>11}{spread:>15}{num(r.get('forward_equivalents'), '.4g'):>10}"
                     f"{num(r.get('forward_equivalents_dot'), '.4g'):>11}{num(r.get('rel_error'), '.1e'):>10}")
    return "\n".join(lines)
