"""Provenance of results: the stamp a run takes when it starts and verifies when it saves, and whether a
committed results file is fresh (written by the current code, from a clean tree).

**The stamp** (`start`, `finish`). A producer (a benchmark or experiment script, `gdjax bench`) calls `start()`
first: it records, from the git checkout of the script being run (the `__main__` file; the imported gdjax's
checkout when that file is in none or in a git-ignored folder, e.g. a console script in .venv/bin), HEAD (`git_commit`), whether tracked code
has uncommitted changes (`git_dirty`: results folders and Markdown pages do not count, `NOT_CODE`), a
fingerprint of those changes, the time, and the path of the imported gdjax with whether it lies inside that
checkout. `gdjax.results` writes it into every results file's `meta` (`git_commit`, `git_dirty`,
`provenance`) and, when it writes the file, calls `finish`: the checkout is looked at again, and a run during
which HEAD moved, the uncommitted changes differ, or a tracked code file was modified (even if restored since)
is *changed*. A changed run, or one whose gdjax was imported from outside the checkout, refuses to write into
the committed reference folders (`REFERENCE_DIRS`: `ProvenanceError`, one line); into any other folder (a
user's `runs/`) it writes, marked `git_dirty: true` with the reason in `meta.provenance.changed`.

**Staleness** (`staleness`), for a committed results file whose source declares its producers (git pathspecs:
the script that writes it, the library `gdjax/` except `gdjax/report/` (but with `gdjax/report/reproduce.py`),
`benchmarks/_*.py`, `pyproject.toml`, the Makefile and the drivers that choose the scripts' options):

1. `meta.git_dirty` must be `false`: a run from a tree with uncommitted changes to tracked files is no
   reference (`null`, as in files written before the field existed, counts as unknown, hence stale);
2. `meta.git_commit` must be a commit of this repository;
3. the last commit that touched a producer, `git log -1 --format=%H -- <producers>`, must be an ancestor of
   (or equal to) `meta.git_commit` (`git merge-base --is-ancestor`): otherwise the code changed after the run;
4. the working tree must have no uncommitted change to a producer (the file cannot come from code that is not
   committed yet);
5. `meta.provenance.gdjax_in_checkout` must not be `false` (the library that ran was this checkout's).

Fresh means `staleness(...)` is None; otherwise it returns the reason in one line. `version_notes` compares the
versions a file was written under (jax, jaxlib, torch where the run imported it) with the installed ones.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIBRARY", "DRIVERS", "REFERENCE_DIRS", "NOT_CODE", "ProvenanceError", "Stamp", "git", "repo_root",
           "take", "start", "current", "changes", "is_reference", "finish", "staleness", "reusable",
           "version_notes", "installed_version", "VERSIONED"]

# Code that writes every result: the library (minus gdjax/report, which only reads results), the benchmarks'
# shared helpers and the package metadata (git pathspecs).
LIBRARY = ("gdjax", ":(exclude)gdjax/report", ":(glob)benchmarks/_*.py", "pyproject.toml")
# What chooses the options of the reference runs: the Makefile's targets (e.g. `--chunks`, `--full --committed
# --resume`) and the reproduce driver (e.g. `--repeats`). The experiments' driver is a producer of theirs.
DRIVERS = ("Makefile", "gdjax/report/reproduce.py")
# The committed reference folders (relative to the checkout): only a verified run writes there.
REFERENCE_DIRS = ("benchmarks/results", "results", "figures")
# What a run writes, or prose: changes there do not make a tree "dirty" for a result (a sweep rewrites its own
# committed JSON-lines file while it runs, and the pages are rendered from the results).
NOT_CODE = (*(f":(exclude){d}" for d in REFERENCE_DIRS), ":(exclude,glob)**/*.md")

_GDJAX = Path(__file__).resolve().parent  # the imported gdjax package


class ProvenanceError(OSError):
    """A run that may not write the committed reference (its checkout changed while it ran, or its gdjax was
    not the checkout's). An OSError, so every command prints it as its one-line error."""


def git(root, *args) -> subprocess.CompletedProcess:
    """Run `git -C root ARGS` (text, captured); OSError when git itself cannot run."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise OSError(f"cannot run git in {root} ({err}); provenance needs a git checkout "
                      f"(or use --no-provenance)") from None


def _git_out(root, *args) -> str | None:
    """stdout of a git command (stripped), None when git fails or cannot run."""
    try:
        out = git(root, *args)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def repo_root(path) -> Path | None:
    """The top of the git checkout holding `path` (a file or folder), None outside one."""
    path = Path(path).resolve()
    where = path if path.is_dir() else path.parent
    if not where.exists():
        return None
    top = _git_out(where, "rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else None


# --- the stamp ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """The state of a checkout when a run started.

    Attributes:
      root: the checkout (None outside git); commit: HEAD (None outside git); dirty: uncommitted changes to
      tracked code (None when unknown); tree: a fingerprint of those changes; script: the script run (relative
      to `root` when inside it); gdjax_path: the imported gdjax package (relative when inside `root`);
      gdjax_in_checkout: whether it is inside `root`; started: UTC ISO date; t0: `time.time()` at the start.
    """

    root: Path | None
    commit: str | None
    dirty: bool | None
    tree: str | None
    script: str | None
    gdjax_path: str
    gdjax_in_checkout: bool | None
    started: str
    t0: float

    def meta(self) -> dict:
        """The fields a results file's meta carries: git_commit, git_dirty, provenance {...}."""
        return {"git_commit": self.commit, "git_dirty": self.dirty,
                "provenance": {"script": self.script, "gdjax": self.gdjax_path,
                               "gdjax_in_checkout": self.gdjax_in_checkout, "started": self.started,
                               "tree": self.tree}}


def _rel(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def _main_file() -> Path | None:
    f = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(f).resolve() if f else None


def _tree(root: Path) -> tuple[str | None, bool | None]:
    """(fingerprint of the uncommitted changes to tracked code, whether there are any)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--no-ext-diff", "--binary", "--", ".",
                              *NOT_CODE], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if out.returncode != 0:
        return None, None
    return hashlib.sha1(out.stdout).hexdigest()[:16], bool(out.stdout.strip())


def take(script=None) -> Stamp:
    """The stamp of the checkout of `script` (default: the `__main__` file) now; see the module docstring."""
    t0 = time.time()
    script = Path(script).resolve() if script is not None else _main_file()
    root = repo_root(script) if script is not None else None
    if root is not None and git(root, "check-ignore", "-q", str(script)).returncode == 0:
        root = None  # a console script or a tool inside an ignored folder (.venv/bin/gdjax, pytest)
    if root is None:  # ... or no checkout, an interactive session: the imported gdjax's checkout
        root = repo_root(_GDJAX)
    commit = _git_out(root, "rev-parse", "HEAD") if root is not None else None
    tree, dirty = _tree(root) if commit else (None, None)
    in_checkout = None if root is None else root in _GDJAX.parents
    return Stamp(root, commit or None, dirty, tree, _rel(script, root) if script else None, _rel(_GDJAX, root),
                 in_checkout, _dt.datetime.fromtimestamp(t0, _dt.timezone.utc).isoformat(timespec="seconds"), t0)


_RUN: Stamp | None = None  # the stamp of the run in progress in this process


def start(script=None) -> Stamp:
    """Take the stamp of the run that starts now (a producer's first call) and keep it for `current`."""
    global _RUN
    _RUN = take(script)
    return _RUN


def current() -> Stamp:
    """The stamp of the run in progress; taken now when no producer called `start` (a script of its own)."""
    return _RUN if _RUN is not None else start()


def _touched(stamp: Stamp) -> str | None:
    """A tracked code file modified after the run started (even if its content was restored since)."""
    out = _git_out(stamp.root, "ls-files", "--", ".", *NOT_CODE)
    for rel in (out or "").splitlines():
        try:
            if os.stat(stamp.root / rel).st_mtime > stamp.t0:
                return rel
        except OSError:
            return rel  # deleted during the run
    return None


def changes(stamp: Stamp) -> str | None:
    """How the checkout changed since `stamp` was taken (one line), or None: HEAD moved, the uncommitted
    changes differ, or a tracked code file was modified during the run. None outside git (nothing to tell)."""
    if stamp.root is None or stamp.commit is None:
        return None
    head = _git_out(stamp.root, "rev-parse", "HEAD")
    if head != stamp.commit:
        return f"HEAD moved during the run (from {stamp.commit[:12]} to {(head or '?')[:12]})"
    tree, _ = _tree(stamp.root)
    if tree != stamp.tree:
        return "the uncommitted changes to tracked code differ from those at the start of the run"
    touched = _touched(stamp)
    if touched:
        return f"{touched} was modified during the run"
    return None


def is_reference(path, stamp: Stamp | None = None) -> bool:
    """Whether `path` lies in a committed reference folder (`REFERENCE_DIRS`) of the stamp's checkout (default:
    the checkout holding `path`)."""
    path = Path(path).resolve()
    root = stamp.root if stamp is not None else None
    if root is None:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        root = repo_root(existing) if existing is not None else None
    if root is None:
        return False
    return any(root / d == path or root / d in path.parents for d in REFERENCE_DIRS)


def finish(meta: dict, path, stamp: Stamp | None = None) -> dict:
    """`meta` with the run's stamp (default: `current()`), verified now, for a results file written to `path`.

    Returns a new dict: `git_commit`, `git_dirty` and `provenance` of the stamp, `git_dirty` true and the reason
    in `provenance.changed` when the checkout changed during the run. Raises ProvenanceError when `path` is in
    a committed reference folder and the run changed, or imported gdjax from outside its checkout.
    """
    stamp = current() if stamp is None else stamp
    out = {**meta, **stamp.meta()}
    why = changes(stamp)
    reference = is_reference(path, stamp)
    if reference and stamp.gdjax_in_checkout is False:
        raise ProvenanceError(f"refusing to write the reference {path}: the run imported gdjax from "
                              f"{stamp.gdjax_path}, outside the checkout {stamp.root}; run it with this checkout's "
                              f"gdjax (pip install -e . or PYTHONPATH)")
    if why:
        if reference:
            raise ProvenanceError(f"refusing to write the reference {path}: {why}; rerun from a checkout that "
                                  f"stays unchanged while it runs")
        out["git_dirty"] = True
        out["provenance"] = {**out["provenance"], "changed": why}
    return out


# --- staleness of committed files ---------------------------------------------------------------------------


def _last_change(root, producers) -> str | None:
    out = git(root, "log", "-1", "--format=%H", "--", *producers)
    if out.returncode != 0:
        raise OSError(f"git log failed in {root}: {out.stderr.strip()}")
    return out.stdout.strip() or None


def staleness(meta: dict, producers, root=".") -> str | None:
    """Why a results file with this `meta` is not fresh for its `producers` (pathspecs), or None if fresh.

    Args:
      meta: the file's meta dict (`git_commit`, `git_dirty`, `provenance`).
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
        changed = (meta.get("provenance") or {}).get("changed")
        return ("written from a tree with uncommitted changes (meta.git_dirty is true" +
                (f": {changed}" if changed else "") + "): rerun from a clean tree")
    if not commit:
        return "meta.git_commit is not recorded: rerun from a git checkout"
    if (meta.get("provenance") or {}).get("gdjax_in_checkout") is False:
        return (f"the run imported gdjax from outside its checkout ({meta['provenance'].get('gdjax')}): rerun with "
                f"the checkout's gdjax")
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
    """May a resumed run reuse a row stamped `{git_commit, git_dirty, cpu_model}` by an earlier run? Not when
    `current` names a processor (`cpu_model`) and the row was measured on another (or on an unrecorded) one:
    its times do not compare. Otherwise yes when it was written by this very state of the code (same commit,
    same dirty flag: e.g. a user's own interrupted run), or when it is fresh by `staleness` for `producers`; no
    when that cannot be decided (no git)."""
    if current.get("cpu_model") is not None and stamp.get("cpu_model") != current["cpu_model"]:
        return False
    if stamp.get("git_commit") == current.get("git_commit") and stamp.get("git_dirty") == current.get("git_dirty"):
        return True
    try:
        return staleness(stamp, producers, root) is None
    except OSError:
        return False


# --- versions -----------------------------------------------------------------------------------------------

VERSIONED = ("jax", "jaxlib", "torch")  # the packages whose version changes a measurement


def installed_version(package: str) -> str | None:
    """The installed version of `package` (from its metadata, without importing it), None when absent."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def version_notes(meta: dict, installed=None, rows=()) -> list[str]:
    """One line per package of `VERSIONED` that the file records (`meta[package]`, None or absent when the run
    did not use it; for a file without it in meta, a `rows` entry's own `package` column, as the torch rows of
    the checker's benchmark carry) at another version than the installed one (`installed`: package -> version,
    default read from the environment). A results file written under other versions still renders; whether that
    is stale is the caller's choice (`gdjax report --check` notes it, `make reproduce-all` regenerates it)."""
    notes = []
    for pkg in VERSIONED:
        wrote = meta.get(pkg) or next((r[pkg] for r in rows if isinstance(r.get(pkg), str)), None)
        if not wrote:
            continue
        have = installed.get(pkg) if installed is not None else installed_version(pkg)
        if have != wrote:
            notes.append(f"written under {pkg} {wrote}, installed: {have or 'none'}")
    return notes
