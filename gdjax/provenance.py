"""Is a committed results file fresh: written by the current code, from a clean tree?

The rule (`staleness`), for a results file whose `meta` records `git_commit` and `git_dirty`
(`gdjax.results.environment()`), and whose source declares its producers (git pathspecs: the script that
writes it, the library `gdjax/` except `gdjax/report/`, `benchmarks/_*.py`, `pyproject.toml`):

1. `meta.git_dirty` must be `false`: a run from a tree with uncommitted changes to tracked files is no
   reference (`null`, as in files written before the field existed, counts as unknown, hence stale);
2. `meta.git_commit` must be a commit of this repository;
3. the last commit that touched a producer, `git log -1 --format=%H -- <producers>`, must be an ancestor of
   (or equal to) `meta.git_commit` (`git merge-base --is-ancestor`): otherwise the code changed after the run;
4. the working tree must have no uncommitted change to a producer (the file cannot come from code that is not
   committed yet).

Fresh means `staleness(...)` is None; otherwise it returns the reason in one line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["LIBRARY", "git", "staleness", "reusable"]

# Code that writes every result: the library (minus gdjax/report, which only reads results), the benchmarks'
# shared helpers and the package metadata (git pathspecs).
LIBRARY = ("gdjax", ":(exclude)gdjax/report", ":(glob)benchmarks/_*.py", "pyproject.toml")


def git(root, *args) -> subprocess.CompletedProcess:
    """Run `git -C root ARGS` (text, captured); OSError when git itself cannot run."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise OSError(f"cannot run git in {root} ({err}); provenance needs a git checkout "
                      f"(or use --no-provenance)") from None


def _last_change(root, producers) -> str | None:
    out = git(root, "log", "-1", "--format=%H", "--", *producers)
    if out.returncode != 0:
        raise OSError(f"git log failed in {root}: {out.stderr.strip()}")
    return out.stdout.strip() or None


def staleness(meta: dict, producers, root=".") -> str | None:
    """Why a results file with this `meta` is not fresh for its `producers` (pathspecs), or None if fresh.

    Args:
      meta: the file's meta dict (`git_commit`, `git_dirty`).
      producers: git pathspecs of the code that writes the file.
      root: the repository root.
    Returns:
      None when fresh, else a one-line reason.
    """
    root = Path(root)
    commit, dirty = meta.get("git_commit"), meta.get("git_dirty")
    if dirty is None:
        return "meta.git_dirty is not recorded (written before gdjax recorded it): rerun from a clean tree"
    if dirty:
        return "written from a tree with uncommitted changes (meta.git_dirty is true): rerun from a clean tree"
    if not commit:
        return "meta.git_commit is not recorded: rerun from a git checkout"
    if git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return f"its commit {commit[:12]} is not in this repository"
    last = _last_change(root, producers)
    if last is None:
        return None  # no commit touches the producers: nothing can be newer than the run
    if git(root, "merge-base", "--is-ancestor", last, commit).returncode != 0:
        subject = git(root, "log", "-1", "--format=%h %s", last).stdout.strip()
        return f"the code that writes it changed after the run (written at {commit[:12]}; later change: {subject})"
    status = git(root, "status", "--porcelain", "--untracked-files=no", "--", *producers)
    if status.stdout.strip():
        first = status.stdout.strip().splitlines()[0][3:]
        return f"the code that writes it has uncommitted changes (e.g. {first})"
    return None


def reusable(stamp: dict, current: dict, producers, root=".") -> bool:
    """May a resumed run reuse a row stamped `{git_commit, git_dirty}` by an earlier run? Yes when it was
    written by this very state of the code (same commit, same dirty flag: e.g. a user's own interrupted run),
    or when it is fresh by `staleness` for `producers`; no when that cannot be decided (no git)."""
    if stamp.get("git_commit") == current.get("git_commit") and stamp.get("git_dirty") == current.get("git_dirty"):
        return True
    try:
        return staleness(stamp, producers, root) is None
    except OSError:
        return False
