"""`make reproduce-all`: regenerate every committed result in order, then render the tables (`gdjax report`).

    python -m gdjax.report.reproduce              # run the steps whose results are not fresh, then report
    python -m gdjax.report.reproduce --dry-run    # print the plan: each step, fresh or why it will run
    python -m gdjax.report.reproduce --force      # rerun every step
    python -m gdjax.report.reproduce --only bench-fd-kernel,experiments

Resumable: a step is skipped when every results file it writes is fresh by the provenance rule
(`gdjax.provenance`) and was written under the installed versions of jax, jaxlib (and torch, where the run
used it), so after an interruption the same command continues with the first step that has
not finished. Each step is a Makefile target (the maintainers' targets that write the committed reference, not
a user's run); the total wall time is printed at the end.

`--commit` (the Makefile's default) commits the results folders after each step, together with the pages
re-rendered from them (`gdjax report`: README.md and docs/*.md), and nothing else, so that each step's results
land as soon as it finishes and every commit is consistent (each table matches its committed results file, even
when a later step is interrupted); `git_dirty` ignores results folders and Markdown pages, so the pending
results of earlier steps never make a later step's results dirty. Without it, a step does not start while
results written earlier are uncommitted (commit them by hand, so that each lands as its own commit).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gdjax.report import SOURCES, stale_sources
from gdjax.provenance import REFERENCE_DIRS, git

__all__ = ["Step", "STEPS", "plan", "main"]

OUTPUT_DIRS = REFERENCE_DIRS  # what the steps write (and --commit commits)


@dataclass(frozen=True)
class Step:
    """One regeneration: `name`, the `command` (argv, run in the repository root), the `sources` it writes."""

    name: str
    command: tuple[str, ...]
    sources: tuple[str, ...]


REFERENCE = "--out=benchmarks/results/cpu"  # where the scripts without a reference target write the committed files


def _make(target, *args) -> tuple[str, ...]:
    return ("make", "--no-print-directory", target, *args)


STEPS = (
    Step("bench", _make("bench-reference"), ("fd_vs_grad",)),
    Step("bench-fd-kernel", _make("bench-fd-kernel", f"BENCH_ARGS={REFERENCE}"), ("fd_kernel",)),
    Step("bench-estimators", _make("bench-estimators", f"BENCH_ARGS={REFERENCE}"), ("estimators",)),
    Step("bench-budget", _make("bench-budget", f"BENCH_ARGS={REFERENCE} --resume"), ("equal_budget",)),
    Step("gradcheck", _make("gradcheck", f"BENCH_ARGS={REFERENCE}"), ("gradcheck",)),
    Step("bench-throughput", _make("bench-throughput", f"BENCH_ARGS={REFERENCE}"), ("training_throughput",)),
    Step("bench-problems", _make("bench-problems"), ("problems",)),
    Step("scaling-devices", (sys.executable, "benchmarks/scaling_devices.py", "--repeats", "9", REFERENCE),
         ("scaling_devices",)),
    Step("experiments", _make("reproduce-reference"),
         ("taylor", "fd_step", "learning_rate", "landscape", "batch_average", "fd_training", "nielsen_mnist")),
    # last: hours long, so that an interrupted reproduce-all has everything else; the target resumes (--resume)
    Step("bench-full", _make("bench-full"), ("fd_vs_grad_full",)),
)


def plan(root=".", steps=STEPS, force: bool = False) -> list[tuple[Step, str | None]]:
    """(step, why it runs) per step; why is None when every results file of the step is fresh (skipped)."""
    out = []
    for step in steps:
        stale = stale_sources(root, [SOURCES[n] for n in step.sources], versions=True)
        more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
        why = "--force" if force else (f"{stale[0][0].path}: {stale[0][1]}{more}" if stale else None)
        out.append((step, why))
    return out


def _dirty(root, outputs: bool) -> list[str]:
    """Tracked files with uncommitted changes inside the results folders (`outputs`) or outside them."""
    spec = OUTPUT_DIRS if outputs else (".", *(f":(exclude){d}" for d in OUTPUT_DIRS))
    out = git(root, "status", "--porcelain", "--untracked-files=no", "--", *spec)
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def _commit(root, message: str) -> None:
    """Render the pages from the results (`gdjax.report.update`), then commit the changed and new files of the
    results folders and the pages, and only them, with `message`."""
    from gdjax.report import pages, update

    update(root)
    dirs = [d for d in OUTPUT_DIRS if (Path(root) / d).exists()]
    dirs += [str(p.relative_to(Path(root).resolve())) for p in (q.resolve() for q in pages(root))]
    status = git(root, "status", "--porcelain", "--untracked-files=all", "--", *dirs).stdout if dirs else ""
    paths = [line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip()]
    if not paths:
        return
    git(root, "add", "-A", "--", *paths)
    out = git(root, "commit", "-q", "-m", f"reproduce-all: {message}", "--", *paths)
    if out.returncode != 0:
        raise OSError(f"git commit of the results ({message}) failed: {out.stderr.strip()}")


def _run(step: Step, root, commit: bool) -> int:
    """Run one step from a clean tree (committing pending results first when `commit`): 0 when it succeeded,
    2 when uncommitted results stop it, 1 when its command failed."""
    pending = _dirty(root, outputs=True)
    if pending and not commit:
        print(f"reproduce-all: error: uncommitted results (e.g. {pending[0]}) would make step {step.name} record "
              f"git_dirty: true; commit them, or run with --commit (as make reproduce-all does)", file=sys.stderr)
        return 2
    if pending:
        _commit(root, f"results pending before {step.name}")
    t0 = time.perf_counter()
    print(f"== {step.name}: {' '.join(step.command)}", flush=True)
    rc = subprocess.call(list(step.command), cwd=root)
    print(f"== {step.name}: exit {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
    if rc != 0:
        print(f"reproduce-all: error: step {step.name} failed (exit {rc}); rerun to resume from it", file=sys.stderr)
        return 1
    if commit:
        _commit(root, f"{step.name} (results of {' '.join(step.command)})")
    return 0


def _parse(argv):
    p = argparse.ArgumentParser(prog="reproduce-all", description=__doc__.split("\n")[0])
    p.add_argument("--force", action="store_true", help="rerun every step, fresh or not")
    p.add_argument("--only", default=None, help="comma-separated step names (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--commit", action="store_true", help="commit each step's results after it finishes")
    p.add_argument("--root", default=".", help="repository root (default: the current directory)")
    args = p.parse_args(argv)
    names = [s.name for s in STEPS]
    if args.only is not None:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in only if n not in names]
        if bad or not only:
            p.exit(2, f"reproduce-all: error: unknown step(s) {bad or args.only!r}; valid: {', '.join(names)}\n")
        args.steps = tuple(s for s in STEPS if s.name in only)
    else:
        args.steps = STEPS
    if not (Path(args.root) / "Makefile").is_file():
        p.exit(2, f"reproduce-all: error: no Makefile in --root {args.root!r}: run it from the repository root\n")
    return args


def main(argv=None) -> int:
    """Run the plan; returns the exit status (2: bad option or dirty tree, 1: a step failed)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    todo = plan(args.root, args.steps, args.force)
    for step, why in todo:
        print(f"{step.name:18s} {'skip (fresh)' if why is None else 'run: ' + why}")
    if args.dry_run:
        return 0
    dirty = _dirty(args.root, outputs=False)
    if dirty and any(why for _, why in todo):
        print(f"reproduce-all: error: uncommitted changes to {len(dirty)} tracked file(s) (e.g. {dirty[0]}): "
              f"commit them first, results from a dirty tree are no reference", file=sys.stderr)
        return 2
    start = time.perf_counter()
    status = 0
    for step, why in todo:
        status = _run(step, args.root, args.commit) if why is not None else 0
        if status:
            break
    if not status:
        from gdjax.report import command

        try:
            status = command(args.root)
        except (ValueError, OSError) as err:  # a renderer that does not fit a regenerated file
            print(f"reproduce-all: error: the results are written, but a table does not render: {err}",
                  file=sys.stderr)
            status = 1
    total = time.perf_counter() - start
    print(f"reproduce-all: total wall time {total:.0f} s ({total / 60:.1f} min)")
    return status


if __name__ == "__main__":
    sys.exit(main())
