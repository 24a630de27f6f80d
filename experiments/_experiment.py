"""What every experiment script shares: key=value config overrides, the output paths, the figure helpers.

Each experiment is `experiments/<name>.py` with a module-level `@dataclass Config`, a `QUICK` dict of overrides
for the smoke tests (`--quick`), `run(cfg) -> (rows, summary)`, `plot(data) -> Figure` (from the results file
only; the footer is added here) and `main = make_main(...)`. A run writes `<name>.json` (+ `.csv`, via
`gdjax.results.save_results`: meta = environment, config, rows) and `<name>.png` + `.svg` (via
`gdjax.plotting.save_figure`). The figure helpers for the
experiments live here (not in `gdjax/plotting.py`, which draws the benchmark figures).

Where a run writes: by default a fresh git-ignored folder `runs/<name>-<date>/` (`gdjax.results.output_dir`),
so a user's run never overwrites the committed reference; `--out DIR` writes both files to DIR;
`results_dir=... figures_dir=...` choose each; `--reference` regenerates the committed `results/` and `figures/`
(maintainers, `make reproduce-reference`).

    python experiments/taylor.py                      # default config, into runs/taylor-<date>/
    python experiments/taylor.py n_directions=3 h_min=1e-10 --out /tmp/taylor
    python experiments/taylor.py --quick results_dir=/tmp/r figures_dir=/tmp/f
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"
FIGURES_DIR = ROOT / "figures"


@dataclasses.dataclass
class BaseConfig:
    """Fields every experiment has: where to write (both empty: a fresh runs/<name>-<date>/; one empty: the
    other's folder) and the figure formats."""

    results_dir: str = ""
    figures_dir: str = ""
    figure_formats: tuple[str, ...] = ("png", "svg")


class ConfigError(ValueError):
    """A bad key=value override (unknown key, unparsable value)."""


def _convert(text: str, typ, key: str):
    origin = typing.get_origin(typ)
    if typ is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r}: expected true or false")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
    if typ is str:
        return text
    if origin is tuple:
        (inner, *rest) = typing.get_args(typ)
        parts = [t for t in text.split(",") if t.strip()]
        return tuple(_convert(t.strip(), inner, key) for t in parts)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _convert(text, args[0], key)
    raise ConfigError(f"{key}: cannot set a field of type {typ} from the command line")


def parse_overrides(config, argv: Sequence[str]):
    """Apply `key=value` overrides to a dataclass instance; unknown keys or bad values raise ConfigError.

    Values are converted by the field's annotation: int, float, str, bool (true/false), tuples (comma-separated:
    `etas=0.1,1,10`), optional fields (`none`).
    """
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"expected key=value, got {arg!r} (valid keys: {', '.join(sorted(fields))})")
        key, value = arg.split("=", 1)
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}")
        changes[key] = _convert(value, hints[key], key)
    return dataclasses.replace(config, **changes)


QUICK_COMMON = {"figure_formats": ("png",)}  # smoke tests: the PNG only (the SVG doubles the drawing time)


def _output_flags(argv: list[str]) -> list[str]:
    """`--out DIR` / `--out=DIR` -> results_dir=DIR figures_dir=DIR; `--reference` -> the committed folders."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--reference":
            out += [f"results_dir={RESULTS_DIR}", f"figures_dir={FIGURES_DIR}"]
        elif a == "--out" or a.startswith("--out="):
            d = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            if not d or d.startswith("-"):
                raise ConfigError("--out needs a folder, e.g. --out /tmp/run")
            i += 0 if "=" in a else 1
            out += [f"results_dir={d}", f"figures_dir={d}"]
        else:
            out.append(a)
        i += 1
    return out


def config_from_argv(config_cls, argv: Sequence[str], quick: dict | None = None):
    """`--quick` applies the script's QUICK overrides first; `--out DIR` / `--reference` choose the output
    folders; then key=value pairs (see parse_overrides)."""
    argv = _output_flags(list(argv))
    cfg = config_cls()
    if "--quick" in argv:
        argv.remove("--quick")
        cfg = dataclasses.replace(cfg, **{**QUICK_COMMON, **(quick or {})})
    for a in argv:
        if a.startswith("-"):
            raise ConfigError(f"unknown option {a!r}; use --quick, --out DIR, --reference and key=value overrides")
    return parse_overrides(cfg, argv)


def output_dirs(name: str, cfg) -> tuple[Path, Path]:
    """(results folder, figures folder) of a run: as configured, else a fresh git-ignored runs/<name>-<date>/."""
    from gdjax import results

    if not cfg.results_dir and not cfg.figures_dir:
        d = results.output_dir(name, root=ROOT)
        return d, d
    res = Path(cfg.results_dir or cfg.figures_dir)
    return res, Path(cfg.figures_dir or cfg.results_dir)


def main_wrapper(name: str, config_cls, quick: dict, run: Callable, plot: Callable, argv=None) -> int:
    """Parse argv, run, save results and figure, print where they went; errors: one line on stderr, exit 2."""
    from gdjax import plotting, provenance, results

    provenance.start()  # the run's stamp, verified when its results are written
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        fields = ", ".join(f"{f.name}={getattr(config_cls(), f.name)!r}" for f in dataclasses.fields(config_cls))
        print(f"usage: python experiments/{name}.py [--quick] [--out DIR | --reference] [key=value ...]\n"
              f"  default output: a fresh runs/{name}-<date>/ (the committed results/ and figures/ stay as they are)\n"
              f"  keys and defaults: {fields}")
        return 0
    try:
        cfg = config_from_argv(config_cls, argv, quick)
        bad = [f for f in cfg.figure_formats if f not in ("png", "svg", "pdf")]
        if bad or not cfg.figure_formats:
            raise ConfigError(f"figure_formats must be png, svg and/or pdf, got {cfg.figure_formats}")
        res_dir, fig_dir = output_dirs(name, cfg)
        t0 = time.perf_counter()
        rows, summary = run(cfg)
        wall = time.perf_counter() - t0
        meta = results.environment()
        meta["wall_s"] = wall
        meta["summary"] = summary
        path = results.save_results(res_dir / f"{name}.json", rows, meta=meta, config=dataclasses.asdict(cfg))
        data = results.load_results(path)
        fig = plot(data)
        footer(fig, data)
        figs = plotting.save_figure(fig, fig_dir / name, formats=tuple(cfg.figure_formats))
    except (ValueError, TypeError, OSError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    for k, v in summary.items():
        print(f"{name}: {k} = {_fmt(v)}")
    print(f"{name}: {wall:.1f} s; wrote {path} and {', '.join(str(f) for f in figs)}")
    return 0


def make_main(name: str, config_cls, quick: dict, run: Callable, plot: Callable) -> Callable[..., int]:
    """The script's `main(argv=None) -> int`: `main_wrapper` with the script's name, config, run and plot."""

    def main(argv=None) -> int:
        return main_wrapper(name, config_cls, quick, run, plot, argv)

    return main


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# --- small numerical helpers ------------------------------------------------------------------------------


def loglog_slope(x, y) -> float:
    """Least-squares slope of log|y| against log x over the points where both are finite and positive (the
    library's one log-log fit, `gdjax.bench.analysis.fit_slope`); NaN when fewer than two points remain."""
    from gdjax.bench.analysis import fit_slope

    x, y = np.asarray(x, float), np.abs(np.asarray(y, float))
    ok = np.isfinite(x) & np.isfinite(y)
    slope = fit_slope(x[ok].tolist(), y[ok].tolist())
    return math.nan if slope is None else slope


def digits_problem(sizes, n_train: int | None, *, dtype: str = "float32", name: str = "sizes"):
    """(digits dataset, `MLP(sizes)`, its quadratic cost): the lecture's problem on the offline digits.

    The sizes are checked first (64 inputs, 10 classes), so a bad override fails before any data is loaded.
    """
    import gdjax

    net = gdjax.MLP(sizes)
    if net.n_in != 64 or net.n_out != 10:
        raise ValueError(f"{name} must start with 64 and end with 10 (digits), got {tuple(sizes)}")
    ds = gdjax.data.load_dataset("digits", n_train=n_train, dtype=dtype)
    return ds, net, gdjax.make_cost(net, "quadratic")


def rows_where(rows, **eq) -> list[dict]:
    """The rows whose fields equal the given values."""
    return [r for r in rows if all(r.get(k) == v for k, v in eq.items())]


def figure(n_panels: int, width: float = 5.0, height: float = 3.8):
    """A figure with `n_panels` side by side; returns (fig, axes list)."""
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, list(axes[0])


def footer(fig, data: dict) -> None:
    """A small line at the bottom: device, jax version, date, wall time of the run (added to every figure)."""
    m = data.get("meta", {})
    fig.text(0.01, -0.02, f"{m.get('device_kind', '?')} | jax {m.get('jax', '?')} | {m.get('date', '?')} | "
             f"run {m.get('wall_s', float('nan')):.1f} s", fontsize=7, color="0.4", ha="left", va="top")
