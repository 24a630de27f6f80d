"""`gdjax report`: every results table of README.md and docs/*.md, rendered from the committed results files.

A table lives between two marker comments, each on a line of its own; the text between them is the renderer's
output and nothing else:

    <!-- report:fd_vs_grad.headline -->
    | method | ... |
    <!-- /report:fd_vs_grad.headline -->

`update(root)` rewrites every marked block in place; `update(root, check=True)` changes nothing and returns a
unified diff of every block that differs from its rendering. `stale_sources(root)` applies the provenance rule
of `gdjax.provenance` to every results file the pages use. Renderers: `gdjax.report.benchmarks`,
`gdjax.report.experiments` (one small function per table, registered with the file it reads). A new table is
one more function there (or in a new module imported below), and its marker in a page.

    >>> from gdjax import report
    >>> report.render("fd_vs_grad.headline", load_results("benchmarks/results/cpu/fd_vs_grad.json"))
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from gdjax.report import benchmarks as _benchmarks  # noqa: F401  (registers the renderers)
from gdjax.report import experiments as _experiments  # noqa: F401
from gdjax.report import problems as _problems  # noqa: F401
from gdjax.report._core import RENDERERS, SOURCES, RenderError, Renderer, Source, inconsistencies, render
from gdjax.provenance import staleness, version_notes

__all__ = ["RENDERERS", "SOURCES", "RenderError", "Renderer", "Source", "render", "pages", "markers", "render_text",
           "update", "used_sources", "stale_sources", "inconsistent_sources", "version_mismatches", "command"]

_OPEN = re.compile(r"^<!-- report:(?P<name>[\w.\-]+) -->$", re.MULTILINE)
_BLOCK = re.compile(r"^(?P<open><!-- report:(?P<name>[\w.\-]+) -->\n)(?P<body>.*?)(?P<close>^<!-- /report:(?P=name) -->$)",
                    re.DOTALL | re.MULTILINE)


def pages(root=".") -> list[Path]:
    """The Markdown pages that carry tables: README.md and docs/*.md under `root` (those that exist)."""
    root = Path(root)
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def markers(text: str, where: str = "<text>") -> list[str]:
    """The marker names of `text`, in order; ValueError for an unclosed or unknown marker."""
    names = [m.group("name") for m in _BLOCK.finditer(text)]
    opened = [m.group("name") for m in _OPEN.finditer(text)]
    if sorted(opened) != sorted(names):
        unclosed = sorted(set(opened) - set(names)) or opened
        raise ValueError(f"{where}: marker <!-- report:{unclosed[0]} --> has no <!-- /report:{unclosed[0]} --> "
                         f"on a later line")
    unknown = [n for n in names if n not in RENDERERS]
    if unknown:
        raise ValueError(f"{where}: unknown report marker {unknown[0]!r}; known: {', '.join(sorted(RENDERERS))}")
    return names


def render_text(text: str, root=".", where: str = "<text>", cache=None) -> str:
    """`text` with every marked block replaced by its rendering from the results files under `root`."""
    from gdjax.results import load_results

    markers(text, where)
    cache = {} if cache is None else cache

    def block(m):
        src = SOURCES[RENDERERS[m.group("name")].source]
        if src.name not in cache:
            path = Path(root) / src.path
            if not path.is_file():
                raise RenderError(f"{where}: report:{m.group('name')} reads {src.path}, which does not exist")
            cache[src.name] = load_results(path)
        return m.group("open") + render(m.group("name"), cache[src.name]) + "\n" + m.group("close")

    return _BLOCK.sub(block, text)


def update(root=".", check: bool = False) -> str:
    """Render every page under `root`; write the changed ones (unless `check`). Returns the unified diff
    (empty when every table already matches its results file)."""
    root = Path(root)
    diffs, cache = [], {}
    for page in pages(root):
        old = page.read_text(encoding="utf-8")
        rel = str(page.relative_to(root))
        new = render_text(old, root, rel, cache)
        if new != old:
            diffs.append("".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                      f"{rel} (committed)", f"{rel} (rendered)")))
            if not check:
                from gdjax.results import write_bytes

                write_bytes(page, new.encode("utf-8"))
    return "".join(diffs)


def used_sources(root=".") -> list[Source]:
    """The results sources that the pages under `root` render from, in first-use order."""
    names = []
    for page in pages(root):
        for m in markers(page.read_text(encoding="utf-8"), str(page)):
            names.append(RENDERERS[m].source)
    return [SOURCES[n] for n in dict.fromkeys(names)]


def _existing(root, sources):
    from gdjax.results import load_results

    for src in used_sources(root) if sources is None else sources:
        path = Path(root) / src.path
        yield src, (load_results(path) if path.is_file() else None)


def stale_sources(root=".", sources=None, versions: bool = False) -> list[tuple[Source, str]]:
    """(source, reason) for every results file (default: those the pages use) that is not fresh by the
    provenance rule; with `versions`, also every file written under other versions of jax, jaxlib or torch
    than the installed ones (`gdjax.provenance.version_notes`: what a regeneration must redo)."""
    out = []
    for src, data in _existing(root, sources):
        if data is None:
            out.append((src, "the file does not exist"))
            continue
        reason = staleness(data["meta"], src.producers, root)
        if reason is None and versions:
            reason = "; ".join(version_notes(data["meta"], rows=data["rows"])) or None
        if reason:
            out.append((src, reason))
    return out


def version_mismatches(root=".", sources=None) -> list[tuple[Source, str]]:
    """(source, note) for every existing results file written under other package versions than installed."""
    return [(src, note) for src, data in _existing(root, sources) if data is not None
            for note in version_notes(data["meta"], rows=data["rows"])]


def inconsistent_sources(root=".", sources=None) -> list[tuple[Source, str]]:
    """(source, problem) for every stored value of a results file (targets, ratios) that its own rows
    contradict (`gdjax.report._core.consistency`)."""
    return [(src, problem) for src, data in _existing(root, sources) if data is not None
            for problem in inconsistencies(src.name, data)]


def command(root=".", check: bool = False, provenance: bool = True, stdout=None, stderr=None) -> int:
    """What `gdjax report [--check] [--no-provenance]` does; returns the exit status.

    Without `check`: rewrite the tables in place, print what changed, 0. With `check`: 1 and the diff when a
    table differs from its rendering; 1 and the values when a used results file stores a target or ratio its
    own rows contradict; 1 and the reasons when a used results file is stale (unless not `provenance`);
    else 0. A file written under other versions of jax, jaxlib or torch than the installed ones is a `note:`
    line, not a failure (the committed tree checks on any machine; `make reproduce-all` regenerates such files).
    """
    import sys

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    diff = update(root, check=check)
    status = 0
    if check and diff:
        stdout.write(diff)
        print("gdjax report: error: a table differs from its results file; run `gdjax report` (make report) "
              "to rewrite it", file=stderr)
        status = 1
    elif diff:
        changed = sorted({line[4:].split(" (")[0] for line in diff.splitlines() if line.startswith("+++ ")})
        print(f"rewrote the tables of {', '.join(changed)}", file=stdout)
    else:
        print("every table matches its results file", file=stdout)
    if check:
        bad = inconsistent_sources(root)
        for src, problem in bad:
            print(f"inconsistent: {src.path}: {problem}", file=stdout)
        if bad:
            print(f"gdjax report: error: {len(bad)} stored value(s) contradict their own rows (see above): the "
                  f"file was edited, or written by other code; regenerate it (make reproduce-all, step "
                  f"{bad[0][0].step})", file=stderr)
            status = 1
        for src, note in version_mismatches(root):
            print(f"note: {src.path}: {note} (renders as committed; make reproduce-all regenerates it)", file=stdout)
    if check and provenance:
        stale = stale_sources(root)
        for src, reason in stale:
            print(f"stale: {src.path}: {reason} (regenerate: make reproduce-all, step {src.step})", file=stdout)
        if stale:
            print(f"gdjax report: error: {len(stale)} results file(s) are not fresh (see above); "
                  f"--no-provenance checks the rendering only", file=stderr)
            status = 1
    return status
