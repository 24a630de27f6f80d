"""gdjax.provenance: the stamp a run takes at its start and verifies when it writes, on throw-away git
repositories (the checkout of the script being run, edits during a run, the reference folders), and the
version notes."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdjax import provenance, results

ROOT = Path(__file__).resolve().parents[1]


def _git(root, *args):
    out = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org",
                          "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A checkout with a script, a library file, a results folder and a page, all committed."""
    root = tmp_path / "repo"
    for rel in ("bench.py", "lib/x.py", "benchmarks/results/cpu/r.jsonl", "results/e.json", "figures/f.svg",
                "docs/p.md", ".gitignore"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("runs/\n" if rel == ".gitignore" else "a\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def _stamp(repo):
    """The start stamp of the fixture's script, as if gdjax were the fixture checkout's own (it is this
    repository's here: the refusal for a foreign gdjax is tested on its own)."""
    return dataclasses.replace(provenance.take(repo / "bench.py"), gdjax_in_checkout=True)


def _rows():
    return [{"x": 1.0}]


def test_dirty_counts_code_not_results_or_pages(repo):
    """Catches: a sweep that rewrites its own committed JSON-lines file (or a rendered page) marking its result as
    written from a dirty tree, and a changed source file NOT marking it."""
    assert provenance.take(repo / "bench.py").dirty is False
    for rel in ("benchmarks/results/cpu/r.jsonl", "results/e.json", "figures/f.svg", "docs/p.md"):
        (repo / rel).write_text("b\n")
    assert provenance.take(repo / "bench.py").dirty is False  # outputs and pages only
    (repo / "lib/x.py").write_text("b\n")
    assert provenance.take(repo / "bench.py").dirty is True


def test_stamp_comes_from_the_scripts_checkout(repo):
    """The stamp names the commit of the script's checkout, not the imported gdjax's (fails when git runs next
    to gdjax's own files: a script of another checkout would be stamped with gdjax's commit), and says the
    imported gdjax is not inside that checkout."""
    s = provenance.take(repo / "bench.py")
    assert s.root == repo.resolve() and s.commit == _git(repo, "rev-parse", "HEAD") and s.script == "bench.py"
    assert s.gdjax_in_checkout is False and Path(s.gdjax_path).resolve() == ROOT / "gdjax"
    mine = provenance.take(ROOT / "benchmarks" / "fd_kernel.py")
    assert mine.root == ROOT and mine.gdjax_in_checkout is True and mine.gdjax_path == "gdjax"


def test_ignored_script_falls_back_to_gdjax_checkout(repo):
    """A console script inside a git-ignored folder (.venv/bin/gdjax) is not 'the checkout of the script': the
    stamp is the imported gdjax's checkout (fails if it named the ignored folder's repository)."""
    tool = repo / "runs" / "tool.py"
    tool.parent.mkdir()
    tool.write_text("print(1)\n")
    assert provenance.take(tool).root == provenance.repo_root(ROOT / "gdjax")


def _save(path, stamp):
    """Write a results file as a producer does, with the meta of `stamp` (the run's start)."""
    meta = {"device_kind": "cpu", **stamp.meta()}
    return provenance.finish(meta, path, stamp)


def test_unchanged_run_writes_the_reference(repo):
    s = _stamp(repo)
    meta = _save(repo / "benchmarks/results/cpu/b.json", s)
    assert meta["git_dirty"] is False and "changed" not in meta["provenance"]
    assert meta["git_commit"] == s.commit and meta["provenance"]["script"] == "bench.py"


@pytest.mark.parametrize("change", ["edit", "edit-and-restore", "commit"])
def test_changed_run_refuses_the_reference_and_marks_a_user_run(repo, change):
    """A script edited during the run (even if restored before the end, as in the issue: stamped clean at
    HEAD), or a commit during the run: writing the reference raises with one line; a user's run folder gets
    the file marked git_dirty with the reason (fails when only the state at save time were looked at)."""
    s = _stamp(repo)
    time.sleep(0.01)
    (repo / "bench.py").write_text("edited\n")
    if change == "edit-and-restore":
        (repo / "bench.py").write_text("a\n")
        assert provenance.take(repo / "bench.py").dirty is False  # the save-time state looks clean
    elif change == "commit":
        _git(repo, "commit", "-qam", "during the run")
    with pytest.raises(provenance.ProvenanceError, match="refusing to write the reference"):
        _save(repo / "results/e2.json", s)
    meta = _save(repo / "runs/mine/e2.json", s)
    assert meta["git_dirty"] is True and meta["provenance"]["changed"]
    assert "bench.py" in meta["provenance"]["changed"] or "HEAD moved" in meta["provenance"]["changed"] \
        or "uncommitted" in meta["provenance"]["changed"]


def test_dirty_at_start_stays_dirty(repo):
    """A run that started from an edited tree and saved after the edit was undone is still dirty (the issue's
    case: stamped when saved, it read clean)."""
    (repo / "lib/x.py").write_text("edited\n")
    s = provenance.take(repo / "bench.py")
    assert s.dirty is True
    subprocess.run(["git", "-C", str(repo), "checkout", "--", "lib/x.py"], check=True)
    meta = _save(repo / "runs/r.json", s)
    assert meta["git_dirty"] is True


def test_reference_refused_when_gdjax_is_not_the_checkouts(repo):
    """A script of this fixture checkout runs with the gdjax of another one: its results may not become the
    fixture's reference (fails if the imported library were not compared with the checkout)."""
    s = provenance.take(repo / "bench.py")
    with pytest.raises(provenance.ProvenanceError, match="outside the checkout"):
        _save(repo / "benchmarks/results/cpu/b.json", s)
    assert _save(repo / "runs/b.json", s)["git_dirty"] is False


def test_write_json_verifies_results_files(repo, monkeypatch):
    """`results.save_results` (every producer's writer) goes through `finish`: with the run's stamp replaced by
    one from before an edit, a reference write raises and leaves no file (fails if save_results wrote without
    verifying)."""
    s = _stamp(repo)
    monkeypatch.setattr(provenance, "_RUN", s)
    time.sleep(0.01)
    (repo / "lib/x.py").write_text("edited\n")
    env = results.environment()
    assert env["git_commit"] == s.commit and env["git_dirty"] is False  # the start, not the save
    target = repo / "results" / "t.json"
    with pytest.raises(provenance.ProvenanceError):
        results.save_results(target, _rows(), meta=env)
    assert not target.exists() and not results.csv_path(target).exists()
    out = repo / "runs" / "t.json"
    results.save_results(out, _rows(), meta=env)
    assert json.loads(out.read_text())["meta"]["git_dirty"] is True
    results.save_results(repo / "runs" / "plain.json", _rows(), meta={"device_kind": "cpu"})  # not a stamped meta
    assert json.loads((repo / "runs" / "plain.json").read_text())["meta"] == {"device_kind": "cpu"}


def test_staleness_rejects_foreign_gdjax(repo):
    head = _git(repo, "rev-parse", "HEAD")
    meta = {"git_commit": head, "git_dirty": False, "provenance": {"gdjax_in_checkout": False, "gdjax": "/x/gdjax"}}
    assert "outside its checkout" in provenance.staleness(meta, ("bench.py",), repo)
    meta["provenance"]["gdjax_in_checkout"] = True
    assert provenance.staleness(meta, ("bench.py",), repo) is None


def test_version_notes():
    """Versions recorded in a file against the installed ones: a note per differing package, none for a
    package the run did not use (fails if torch were demanded of a file without torch rows)."""
    meta = {"jax": "0.4.30", "jaxlib": "0.4.30", "torch": None}
    have = {"jax": "0.4.30", "jaxlib": "0.4.31", "torch": None}
    assert provenance.version_notes(meta, have) == ["written under jaxlib 0.4.30, installed: 0.4.31"]
    assert provenance.version_notes({**meta, "torch": "2.1"}, have)[-1] == "written under torch 2.1, installed: none"
    rows = [{"tool": "torch.autograd.gradcheck", "torch": "2.1"}]  # an older file: torch's version in its rows only
    assert provenance.version_notes(meta, have, rows)[-1] == "written under torch 2.1, installed: none"


def test_a_script_stamps_its_own_start(repo, tmp_path):
    """End to end in a subprocess: a script of the fixture checkout, run with this gdjax, writes into runs/ a
    file stamped with the fixture's HEAD and the start time, and marks itself dirty when the script's checkout
    is edited while it runs (fails if the stamp were taken at save time or from gdjax's checkout)."""
    script = repo / "bench.py"
    script.write_text(
        "import sys, time, pathlib\n"
        "from gdjax import provenance, results\n"
        "provenance.start()\n"
        "pathlib.Path(sys.argv[1]).write_text('started')\n"
        "while pathlib.Path(sys.argv[1]).read_text() != 'go': time.sleep(0.05)\n"
        # the stamp's fields as environment() writes them (environment() itself would import jax: slow here)
        "results.save_results(sys.argv[2], [{'x': 1}], meta=provenance.current().meta())\n")
    _git(repo, "commit", "-qam", "script")
    flag, out = tmp_path / "flag", repo / "runs" / "r.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(flag), str(out)], env=env)
    deadline = time.time() + 60
    while not (flag.exists() and flag.read_text() == "started") and time.time() < deadline:
        time.sleep(0.05)
    (repo / "lib/x.py").write_text("edited during the run\n")
    flag.write_text("go")
    assert proc.wait(timeout=120) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["git_commit"] == _git(repo, "rev-parse", "HEAD") and meta["provenance"]["script"] == "bench.py"
    assert meta["git_dirty"] is True
    assert "lib/x.py" in meta["provenance"]["changed"] or "uncommitted" in meta["provenance"]["changed"]


@pytest.mark.parametrize("extra", [["--no-torch"], []])
def test_reference_throughput_run_needs_torch(extra, capsys, monkeypatch):
    """A run into the committed reference folder without the PyTorch rows (switched off, or torch not installed)
    fails with one line before any work, instead of writing a reference without them and their targets; the
    same options into another folder are accepted (fails if rows were dropped silently)."""
    import importlib.util

    from conftest import load_script

    mod = load_script("benchmarks/training_throughput.py")
    if not extra:  # torch missing, whether or not this machine has it
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setattr(mod, "numpy_problem", lambda *a: pytest.fail("worked before checking the options"))
    assert mod.main(["--quick", *extra, "--out", str(ROOT / "benchmarks" / "results" / "cpu")]) == 2
    err = capsys.readouterr().err.strip()
    assert "committed reference" in err and "PyTorch" in err and "\n" not in err
    assert mod.parse_args(["--quick", *extra, "--out", "/tmp/elsewhere"]).no_torch == bool(extra)


def test_run_all_reference_fails_when_the_checkout_changed(monkeypatch, capsys):
    """`run_all.py --reference` stamps itself at the start and, when the checkout changed by the end, exits 1 with
    one line (the committed experiments would mix states of the code); the same change on a user's run is no
    error. The experiments themselves are not run here (subprocess.call is a stub)."""
    from conftest import load_script

    run_all = load_script("experiments/run_all.py")
    monkeypatch.setattr(run_all.subprocess, "call", lambda *a, **k: 0)
    monkeypatch.setattr(provenance, "changes", lambda stamp: "HEAD moved during the run (from a to b)")
    assert run_all.main(["--only", "taylor", "--reference"]) == 1
    err = capsys.readouterr().err.strip()
    assert "checkout changed" in err and "HEAD moved" in err and "\n" not in err
    assert run_all.main(["--only", "taylor", "--out", "/tmp/not-run"]) == 0


def test_a_benchmark_run_that_changed_refuses_the_reference(monkeypatch, capsys, tmp_path):
    """Through a benchmark's `run_main`: the run starts its stamp, the checkout 'changes' during the run (stubbed),
    and writing into the committed reference folder fails with one line and exit 1, writing nothing; the same
    run into a user's folder writes, marked dirty (fails if the stamp were not verified on the producers' path)."""
    from conftest import load_script

    common = load_script("benchmarks/_common.py")
    target = ROOT / "benchmarks" / "results" / "cpu" / "_provenance_test_refused.json"
    monkeypatch.setattr(provenance, "changes", lambda stamp: "bench.py was modified during the run")

    def run(path):
        results.save_results(path, _rows(), meta=common.meta(None))
        return 0

    try:
        assert common.run_main("probe", lambda argv: target, run, []) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("probe: error: ProvenanceError: refusing to write the reference") and "\n" not in err
        assert not target.exists() and not results.csv_path(target).exists()
    finally:
        for p in (target, results.csv_path(target)):
            p.unlink(missing_ok=True)
    out = tmp_path / "mine.json"
    assert common.run_main("probe", lambda argv: out, run, []) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["git_dirty"] is True and "modified during the run" in meta["provenance"]["changed"]
