"""The registry of results files and table renderers, the row helpers and number formats they share.

A *source* is one committed results file (a path relative to the repository root), the git pathspecs of the
code that writes it (its producers), and the reproduce step that regenerates it. A *renderer* is a small pure
function `data -> Markdown` (`data` as returned by `gdjax.results.load_results`), registered under a marker
name with the source it reads:

    @renderer("fd_vs_grad.headline", "fd_vs_grad")
    def headline(data): ...

A renderer reads columns as `row["column"]`; a missing column (`KeyError`) or a missing row (`MissingRow`)
becomes a `RenderError` naming the file and the column at render time (see `render`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

from gdjax.profiling import format_seconds, significant
from gdjax.provenance import DRIVERS, LIBRARY

__all__ = ["Source", "Renderer", "RenderError", "MissingRow", "SOURCES", "RENDERERS", "CHECKS", "source", "renderer",
           "consistency", "inconsistencies",
           "render", "select", "one", "table", "fmt_s", "fmt_g", "fmt_int", "fmt_e", "fmt_pct", "fmt_x", "median_spread", "stored_spread",
           "target_note"]



@dataclass(frozen=True)
class Source:
    """A committed results file: `path` (relative to the repository root), `producers` (git pathspecs of the
    code that writes it: a change there after the file's `meta.git_commit` makes it stale) and `step` (the
    name of the reproduce step that regenerates it, see `gdjax.report.reproduce.STEPS`)."""

    name: str
    path: str
    producers: tuple[str, ...]
    step: str


@dataclass(frozen=True)
class Renderer:
    """A table: marker `name`, the `source` name it reads, `fn(data) -> str` (Markdown, no trailing newline)."""

    name: str
    source: str
    fn: Callable[[dict], str]


class RenderError(ValueError):
    """A renderer could not build its table from its results file (a column or row missing)."""


class MissingRow(LookupError):
    """No row of a results file matches a renderer's selection."""


SOURCES: dict[str, Source] = {}
RENDERERS: dict[str, Renderer] = {}


def source(name: str, path: str, producers, step: str) -> Source:
    """Register a results file; `producers` are extra pathspecs besides the library (`LIBRARY`) and the
    drivers that choose the reference runs' options (`DRIVERS`: the Makefile, the reproduce driver)."""
    if name in SOURCES:
        raise ValueError(f"results source {name!r} is registered twice")
    src = Source(name, path, tuple(producers) + LIBRARY + DRIVERS, step)
    SOURCES[name] = src
    return src


def renderer(name: str, source_name: str):
    """Decorator: register `fn(data) -> Markdown` as the table of marker `name`, reading source `source_name`."""

    def register(fn):
        if name in RENDERERS:
            raise ValueError(f"renderer {name!r} is registered twice")
        if source_name not in SOURCES:
            raise ValueError(f"renderer {name!r}: unknown results source {source_name!r}")
        RENDERERS[name] = Renderer(name, source_name, fn)
        return fn

    return register


CHECKS: dict[str, list[Callable[[dict], list[str]]]] = {}


def consistency(source_name: str):
    """Decorator: register `fn(data) -> [one line per problem]`, which recomputes from a file's rows what the
    file also stores (its targets, its ratios) and names every stored value that disagrees. `gdjax report
    --check` fails on any (an edited target value is caught even though the tables render from the rows)."""

    def register(fn):
        if source_name not in SOURCES:
            raise ValueError(f"consistency check {fn.__name__}: unknown results source {source_name!r}")
        CHECKS.setdefault(source_name, []).append(fn)
        return fn

    return register


def inconsistencies(source_name: str, data: dict) -> list[str]:
    """Every problem the consistency checks of `source_name` find in `data` (a missing column is one too)."""
    out = []
    for fn in CHECKS.get(source_name, []):
        try:
            out += fn(data)
        except (KeyError, MissingRow, TypeError, ZeroDivisionError) as err:
            out.append(f"{fn.__name__}: cannot recompute from the rows ({type(err).__name__}: {err})")
    return out


def render(name: str, data: dict) -> str:
    """The Markdown of marker `name` from its results `data`; RenderError naming file and column on a gap."""
    if name not in RENDERERS:
        raise RenderError(f"unknown report marker {name!r}; known: {', '.join(sorted(RENDERERS))}")
    r = RENDERERS[name]
    path = SOURCES[r.source].path
    try:
        return r.fn(data).rstrip("\n")
    except KeyError as err:
        raise RenderError(f"report:{name}: {path} has no column {err.args[0]!r} in a row it needs "
                          f"(was the file written by an older or newer script? adapt the renderer "
                          f"in gdjax/report/ or rerun the script)") from None
    except MissingRow as err:
        raise RenderError(f"report:{name}: {path}: {err}") from None


# --- rows ---------------------------------------------------------------------------------------------------


def select(rows, **where) -> list[dict]:
    """The rows whose columns equal every `where` value (a missing column does not match)."""
    return [r for r in rows if all(k in r and r[k] == v for k, v in where.items())]


def one(rows, **where) -> dict:
    """The first row matching `where`; MissingRow naming the selection when there is none."""
    found = select(rows, **where)
    if not found:
        raise MissingRow("no row with " + ", ".join(f"{k}={v!r}" for k, v in where.items()))
    return found[0]


def table(header, rows, align=None) -> str:
    """A Markdown table. header: column titles; rows: lists of cells (a '|' in a cell is escaped);
    align: 'l'/'r' per column."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- numbers ------------------------------------------------------------------------------------------------


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_g(x, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated: 0.0123, 4.46, 4,460; None -> '-'."""
    return "-" if _missing(x) else significant(float(x), digits)


def fmt_int(x) -> str:
    """An integer-valued count with thousands separators: 23,861; None -> '-'."""
    return "-" if _missing(x) else f"{float(x):,.0f}"


def fmt_e(x, digits: int = 2) -> str:
    """Scientific notation with `digits` significant digits: 8.8e-02; None -> '-'."""
    return "-" if _missing(x) else f"{float(x):.{digits - 1}e}"


fmt_s = format_seconds  # the one duration formatter (gdjax.profiling): 53.0 us, 1.54 ms, 12.5 s, 14.0 min


def fmt_pct(fraction, digits: int = 2) -> str:
    """A fraction as a percentage with `digits` significant digits: 0.8305 -> 83%; None -> '-'."""
    return "-" if _missing(fraction) else f"{fmt_g(100.0 * float(fraction), digits)}%"


def fmt_x(ratio, digits: int = 3) -> str:
    """A ratio: 2.25x."""
    return "-" if _missing(ratio) else f"{fmt_g(ratio, digits)}x"


def stored_spread(row: dict, key: str, fmt=fmt_g) -> str:
    """A row's stored median of per-round ratios with its min-max (`key`, `key_min`, `key_max`): '0.78 (0.74-0.81)'."""
    return f"{fmt(row[key])} ({fmt(row[f'{key}_min'])}-{fmt(row[f'{key}_max'])})"


def median_spread(values, fmt=fmt_g) -> str:
    """Median over rounds with the spread beside it: '2.25 (1.92-2.71)'; one value -> just it."""
    vals = [float(v) for v in values if not _missing(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{fmt(statistics.median(vals))} ({fmt(min(vals))}-{fmt(max(vals))})"


def target_note(value, threshold, comparison: str, fmt="{:g}".format) -> str:
    """'met' or '**short** of the target' for a measured `value` against `threshold` ('>=' or '<=')."""
    if _missing(value):
        return "not measured"
    if comparison not in (">=", "<="):
        raise KeyError("comparison")
    met = value >= threshold if comparison == ">=" else value <= threshold
    return f"target {comparison} {fmt(threshold)}: " + ("met" if met else "**short**")
