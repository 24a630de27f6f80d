"""gdjax.report: the rendered tables of README.md and docs/ against their results files, the diff of --check,
and the provenance rule on a throw-away git repository."""

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gdjax import cli, report
from gdjax import provenance
from gdjax.report import _core, reproduce
from gdjax.results import load_results

ROOT = Path(__file__).resolve().parents[1]


# --- the real tree ------------------------------------------------------------------------------------------


def test_committed_pages_match_their_results():
    """`gdjax report --check --no-provenance` passes on the repository: every marked table of README.md and
    docs/*.md equals its rendering from the committed results file (fails when a table is edited by hand, or
    when a results file is regenerated without `make report`)."""
    out, err = io.StringIO(), io.StringIO()
    status = report.command(ROOT, check=True, provenance=False, stdout=out, stderr=err)
    assert status == 0, out.getvalue()[-3000:] + err.getvalue()
    assert cli.main(["report", "--check", "--no-provenance", "--root", str(ROOT)]) == 0


def test_readme_shows_the_headline_tables():
    """The README renders the headline table, its targets and the measured-error methods table (fails if a
    rewrite drops one of them), and stays a short page."""
    text = (ROOT / "README.md").read_text()
    names = report.markers(text)
    assert {"fd_vs_grad.headline", "fd_vs_grad.targets", "fd_vs_grad.methods"} <= set(names)
    assert len(text.splitlines()) <= 200
    assert "../shared" not in text and "http" not in text


COMMITTED = sorted(n for n, r in report.RENDERERS.items() if (ROOT / report.SOURCES[r.source].path).is_file())


def test_every_renderer_of_a_committed_file_is_used_by_a_page():
    """Each renderer whose results file is committed appears in some page (fails when a table's marker is lost
    in an edit). Renderers of files not committed yet are tested on planted data below."""
    used = {n for page in report.pages(ROOT) for n in report.markers(page.read_text())}
    assert set(COMMITTED) <= used, sorted(set(COMMITTED) - used)


@pytest.mark.parametrize("name", COMMITTED)
def test_each_renderer_renders_its_committed_file(name):
    """Every renderer builds a Markdown table with a header rule and at least one data row from its file, with
    no NaN or None leaking into a cell (fails on a renderer that reads a column its file lacks)."""
    src = report.SOURCES[report.RENDERERS[name].source]
    text = report.render(name, load_results(ROOT / src.path))
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3 and set(lines[1].replace("|", "").split()) <= {"---", "---:"}
    assert "nan" not in text.lower().split() and "None" not in text


def test_headline_marks_extrapolated_times_and_uses_the_files_errors():
    """The headline's error column is the file's rel_error and each extrapolated time carries `~`: on the
    committed file with one row changed (a distinctive error, extrapolated within the validated factor) and
    another one extrapolated beyond it, so that the test fails if a renderer read another column or file (the
    committed quick and full files give the same error at this point), ignored the flag, or did not mark an
    extrapolation that reaches further than any the run validated."""
    import copy

    from gdjax.bench import analysis

    data = copy.deepcopy(load_results(ROOT / report.SOURCES["fd_vs_grad"].path))
    rows = {r["method"]: r for r in data["rows"] if r["group"] == "sweep" and r["sizes"] == "784-30-10"}
    largest = analysis.validated_factor(data["validation"])
    rows["fd-forward"].update(rel_error=3.21e-3, extrapolated=True, total_directions=23861,
                              measured_directions=int(23861 / (largest * 0.5)) + 1)
    rows["fd-central"].update(extrapolated=True, total_directions=47720, measured_directions=int(47720 / (largest * 3)))
    text = report.render("fd_vs_grad.headline", data)
    line = {m: next(x for x in text.splitlines() if f"`{m}`" in x) for m in ("fd-forward", "fd-central", "reverse")}
    assert "3.2e-03" in line["fd-forward"] and "| ~" in line["fd-forward"] and "unvalidated" not in line["fd-forward"]
    assert "x: unvalidated)" in line["fd-central"] and "`unvalidated`" in text.splitlines()[0]
    assert "~" not in line["reverse"] and _core.fmt_e(rows["reverse"]["rel_error"]) in line["reverse"]


def test_a_row_above_the_reference_is_flagged():
    """A method measured above 100% of the matmul reference (a reference that is no ceiling for that program)
    renders with '!' and a note saying so, never as a plain percentage (fails if the renderer printed 112%
    as if it were a rate under the ceiling)."""
    base = {"group": "sweep", "sizes": "784-30-10", "P": 23860, "batch_size": 1000, "dtype": "float32",
            "extrapolated": False, "rel_error": 1e-7, "forward_equivalents": 2.0}
    rows = [{**base, "method": "reverse", "median_s": 3e-3, "peak_fraction": 0.5},
            {**base, "method": "forward", "median_s": 2e-3, "peak_fraction": 1.12, "over_reference": True}]
    text = report.render("fd_vs_grad.headline", {"meta": {"device_kind": "cpu"}, "config": {}, "rows": rows})
    assert "| 110%! |" in text and "above 100% of the matmul reference" in text
    assert "| 50% |" in text


def _bench_rows(fd_s=3.0, loop_s=7.5, fwd_s=1e-3, rev_s=1.8e-3, peak=0.8):
    """Rows of a planted fd_vs_grad run at [784, 30, 10] (and two more nets for the slope)."""
    base = {"group": "sweep", "status": "ok", "dtype": "float32", "batch_size": 1000, "extrapolated": False}
    rows = [{**base, "sizes": "784-30-10", "P": 23860, "method": m, "median_s": t, "peak_fraction": p}
            for m, t, p in (("forward-pass", fwd_s, 0.2), ("reverse", rev_s, 0.25), ("fd-forward", fd_s, peak),
                            ("fd-loop", loop_s, 0.3))]
    for sizes, P, ratio in (("100-100-10", 11110, 800.0), ("200-200-10", 42210, 3000.0)):
        rows += [{**base, "sizes": sizes, "P": P, "method": "reverse", "median_s": 1e-3},
                 {**base, "sizes": sizes, "P": P, "method": "fd-forward", "median_s": ratio * 1e-3}]
    return rows


def _bench_data(**kw):
    from gdjax.bench import analysis

    rows = _bench_rows(**kw)
    validation = [{"method": "fd-forward", "sizes": "784-30-10", "P": 23860, "batch_size": 1000, "whole_s": 10.0,
                   "extrapolated_s": 11.5, "ratio": 1.15, "covered": 3000, "total": 23861},
                  {"method": "fd-loop", "sizes": "32-32-10", "P": 1386, "batch_size": 1000, "whole_s": 0.15,
                   "extrapolated_s": 0.1, "ratio": 0.1 / 0.15, "counted": False, "covered": 200, "total": 1387}]
    return {"meta": {}, "config": {"batch_size": 1000, "dtype": "float32"}, "rows": rows, "validation": validation,
            "targets": analysis.targets(rows, validation)}


def test_targets_are_recomputed_from_the_rows():
    """The targets table comes from the rows, not the stored list: a stored value edited to 'met' still renders
    the rows' value and status, and the consistency check names the edit, so that `--check` fails (fails if
    the renderer read `targets`, or the check compared nothing). The worst validation deviation is taken over
    every validated point and, labelled apart, over the counted ones; a '|' in a name is escaped."""
    data = _bench_data()
    assert _core.inconsistencies("fd_vs_grad", data) == []
    lines = report.render("fd_vs_grad.targets", data).splitlines()
    loop = next(x for x in lines if x.startswith("| fd-loop / FD kernel"))
    assert "| 2.50 | target >= 2.5: met |" in loop
    every = next(x for x in lines if "every validated point" in x)
    counted = next(x for x in lines if "points >= one subset call" in x)
    assert "| 0.333 | target <= 0.15: **short** |" in every and "\\|extrapolated / whole - 1\\|" in every
    assert "| 0.150 | target <= 0.15: met |" in counted and "1 of 2 points" in counted
    forged = _bench_data(loop_s=6.0)  # the rows say 2.0: short
    forged["targets"] = _bench_data()["targets"]  # ... the stored list says 2.5: met
    loop = next(x for x in report.render("fd_vs_grad.targets", forged).splitlines() if x.startswith("| fd-loop"))
    assert "| 2.00 | target >= 2.5: **short** |" in loop
    problems = _core.inconsistencies("fd_vs_grad", forged)
    assert any("fd-loop / FD kernel" in p and "value" in p for p in problems)
    assert any("fd-loop / FD kernel" in p and "status" in p for p in problems)


def test_validation_table_on_planted_data():
    """The validation table: ratio from the times, the factor (whole / timed directions) of every point, the
    counted flag, and the worst deviation over all points and over the counted ones."""
    data = _bench_data()
    text = report.render("fd_vs_grad.validation", data)
    rows = text.splitlines()[2:4]
    assert rows[0] == "| `fd-forward` | [784, 30, 10] | 23,860 | 1000 | 10.0 s | 11.5 s | 1.15 | 7.95x | yes |"
    assert rows[1].endswith("| 0.667 | 6.93x | no (shorter than one subset call) |")
    assert "0.333 over all 2 points, 0.150 over the 1 that" in text and "validated: 7.95x" in text
    data["validation"][0]["ratio"] = 1.05  # a stored ratio its own times contradict
    assert any("ratio 1.05" in p for p in _core.inconsistencies("fd_vs_grad", data))


def test_check_fails_on_a_planted_target_value(tmp_path):
    """End to end: the committed quick run with one stored target value edited (the rows unchanged): the table
    still renders from the rows, and `report --check --no-provenance` exits 1 naming the file and the target
    (fails if an edited target value could pass the check)."""
    readme = _tree(tmp_path)
    report.update(tmp_path)
    path = tmp_path / report.SOURCES["fd_vs_grad"].path
    data = json.loads(path.read_text())
    out, err = io.StringIO(), io.StringIO()
    assert report.command(tmp_path, check=True, provenance=False, stdout=out, stderr=err) == 0, out.getvalue()
    data["targets"][1]["value"] = 2.9
    path.write_text(json.dumps(data))
    out, err = io.StringIO(), io.StringIO()
    assert report.command(tmp_path, check=True, provenance=False, stdout=out, stderr=err) == 1
    assert f"inconsistent: {report.SOURCES['fd_vs_grad'].path}: stored target " in out.getvalue()
    assert "2.9" in out.getvalue() and "contradict" in err.getvalue()
    assert readme.exists()


def test_version_mismatch_is_a_note_not_a_failure(tmp_path, monkeypatch):
    """A results file written under another jax: `report --check` prints a note and still passes (a user on a
    newer jax can check the committed tree), while the reproduce plan counts it as stale (a regeneration
    redoes it). Fails if versions were ignored, or made --check fail."""
    _tree(tmp_path)
    report.update(tmp_path)
    path = tmp_path / report.SOURCES["fd_vs_grad"].path
    data = json.loads(path.read_text())
    data["meta"]["jax"] = "0.0.1"
    path.write_text(json.dumps(data))
    out = io.StringIO()
    assert report.command(tmp_path, check=True, provenance=False, stdout=out, stderr=io.StringIO()) == 0
    assert "note: " in out.getvalue() and "written under jax 0.0.1" in out.getvalue()
    src = report.SOURCES["fd_vs_grad"]
    monkeypatch.setattr(report, "staleness", lambda *a: None)  # fresh by provenance: only the version differs
    assert report.stale_sources(tmp_path, [src]) == []
    assert "jax 0.0.1" in report.stale_sources(tmp_path, [src], versions=True)[0][1]


def test_producers_include_the_drivers():
    """The Makefile and the reproduce driver (which choose the reference runs' options) produce every file,
    the experiments' driver the experiments' (fails if changing `--repeats` or a target's flags left the
    results 'fresh')."""
    for src in report.SOURCES.values():
        assert {"Makefile", "gdjax/report/reproduce.py"} <= set(src.producers), src.name
    assert "experiments/run_all.py" in report.SOURCES["taylor"].producers


def _summary(**kw):
    """One equal_budget summary entry: every statistic of every key, overridden by `kw`."""
    entry = {"net": "lecture", "method": "reverse", "learning_rate": 3.0, "seeds": 3, "reached_target": 3}
    for key in ("acc_at_seconds", "acc_at_fpe", "seconds_to_target", "fpe_to_target", "best_acc"):
        entry.update({f"{key}_mean": 0.5, f"{key}_min": 0.4, f"{key}_max": 0.6})
    return {**entry, **kw}


def test_equal_budget_and_gradcheck_on_planted_data():
    """The renderers of files the newer benchmarks write (not committed yet), on rows shaped as
    benchmarks/equal_budget.py and benchmarks/gradcheck.py write them: a run that never reached the target
    says so instead of a time, a speed ratio short of its target is marked short, the detection rate is the
    file's (fails on a renderer that dropped a column or mislabelled a target)."""
    budget = {"meta": {}, "rows": [], "config": {"target": 0.8, "dataset": "fashion-mnist", "seconds": 30,
                                                   "fpe": 1e5, "seeds": 3},
              "summary": [_summary(), _summary(method="spsa-k1", reached_target=0, seconds_to_target_mean=None)]}
    lines = report.render("equal_budget.table", budget).splitlines()
    assert "| lecture | `reverse` | 3 | 0.500 (0.400-0.600) |" in lines[4] and "(3/3 seeds)" in lines[4]
    assert "| not reached |" in lines[5] and "to 80%" in lines[2]
    rows = [{"section": "detection", "kind": "one-entry", "arch": "mlp", "dtype": "float32", "leaf": "[0].w",
             "seeds": 20, "check_grad_rate": 1.0, "check_grad_named": 20, "check_grads_rate": 0.15},
            {"section": "false_alarm", "arch": "conv", "act": "tanh", "dtype": "float64", "cases": 25,
             "check_grad_failures": 0, "check_grads_failures": 2, "max_err_over_tol": 0.3},
            {"section": "speed", "sizes": "784-30-10", "batch": 10, "dtype": "float64", "n_params": 23860,
             "tool": "gdjax.check_grad", "call": "first", "seconds": 2.0, "torch_slow_over_this": 4.0, "target": 5.0,
             "status": "SHORT"},
            {"section": "speed", "sizes": "784-30-10", "batch": 10, "dtype": "float64", "n_params": 23860,
             "tool": "torch.autograd.gradcheck", "call": "slow mode", "seconds": 8.0}]
    data = {"meta": {}, "config": {}, "rows": rows}
    assert report.render("gradcheck.detection", data).splitlines()[2] == (
        "| `one-entry` | mlp | float32 | `[0].w` | 20 | 100% | 20/20 | 15% |")
    assert report.render("gradcheck.false_alarms", data).splitlines()[2] == "| conv | tanh | float64 | 25 | 0 | 2 | 0.300 |"
    speed = report.render("gradcheck.speed", data)
    assert speed.startswith("[784, 30, 10], N = 10, float64, P = 23,860") and "4.00x | target >= 5: **short**" in speed
    assert _core.inconsistencies("gradcheck", data) == []
    rows[3]["seconds"] = 12.0  # torch slow mode: the ratio from the times is now 6: met; the stored 4.0 and SHORT contradict it
    assert "6.00x | target >= 5: met" in report.render("gradcheck.speed", data)
    assert len(_core.inconsistencies("gradcheck", data)) == 2


# --- rendering and --check on a temporary tree ---------------------------------------------------------------


def _tree(tmp_path, body="| stale | table |\n"):
    """A repository-like folder with the committed fd_vs_grad results and a README carrying one marker."""
    src = report.SOURCES["fd_vs_grad"].path
    (tmp_path / src).parent.mkdir(parents=True)
    shutil.copy(ROOT / src, tmp_path / src)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n<!-- report:fd_vs_grad.quick_targets -->\n{body}<!-- /report:fd_vs_grad.quick_targets -->\n"
                      "after\n")
    return readme


def test_check_prints_a_diff_and_changes_nothing(tmp_path):
    """--check on a hand-edited table: exit 1, a unified diff with the old line removed and the rendered one
    added, the file untouched; `report` then rewrites only the block and --check passes (fails if the
    check writes, the diff is empty, or the rewrite touches text outside the markers)."""
    readme = _tree(tmp_path)
    before = readme.read_text()
    out, err = io.StringIO(), io.StringIO()
    assert report.command(tmp_path, check=True, provenance=False, stdout=out, stderr=err) == 1
    diff = out.getvalue()
    assert "-| stale | table |" in diff and "+| target | measured | status | how |" in diff
    assert "README.md (committed)" in diff and "differs" in err.getvalue()
    assert readme.read_text() == before
    assert report.command(tmp_path, stdout=io.StringIO()) == 0
    after = readme.read_text()
    assert after.startswith("# title\n\n<!-- report:fd_vs_grad.quick_targets -->\n| target |") and after.endswith(
        "<!-- /report:fd_vs_grad.quick_targets -->\nafter\n")
    assert report.update(tmp_path, check=True) == ""


def test_missing_column_names_the_file_and_the_column(tmp_path):
    """A results file without a column a renderer reads: the error names the marker, the file and the column
    (fails on a bare KeyError)."""
    readme = _tree(tmp_path)
    readme.write_text(readme.read_text().replace("fd_vs_grad.quick_targets", "fd_vs_grad.methods"))
    data = json.loads((tmp_path / report.SOURCES["fd_vs_grad"].path).read_text())
    for row in data["rows"]:
        row.pop("rel_error", None)
    (tmp_path / report.SOURCES["fd_vs_grad_full"].path).write_text(json.dumps(data))  # the methods table's file
    with pytest.raises(report.RenderError, match=r"fd_vs_grad.methods.*fd_vs_grad_full.json.*'rel_error'"):
        report.update(tmp_path, check=True)


@pytest.mark.parametrize("text, message", [
    ("<!-- report:fd_vs_grad.quick_targets -->\nx\n", "has no <!-- /report:fd_vs_grad.quick_targets -->"),
    ("<!-- report:no.such -->\nx\n<!-- /report:no.such -->\n", "unknown report marker 'no.such'"),
])
def test_bad_markers_are_errors(text, message):
    """An unclosed or unknown marker is a ValueError naming it (fails if it were silently left alone)."""
    with pytest.raises(ValueError, match=message):
        report.markers(text, "page.md")


def test_markers_only_on_their_own_lines():
    """A marker quoted inside prose is not a marker (fails if documentation about markers broke the page)."""
    assert report.markers("see `<!-- report:NAME -->` in the text\n") == []


@pytest.mark.parametrize("values, expected", [([2.0, 1.0, 3.0], "2.00 (1.00-3.00)"), ([5.0], "5.00"), ([], "-")])
def test_median_spread(values, expected):
    """Median with the min-max spread (fails on a mean or a swapped order)."""
    assert _core.median_spread(values) == expected


@pytest.mark.parametrize("value, threshold, comparison, met", [
    (0.83, 0.85, ">=", False), (0.86, 0.85, ">=", True), (1.8, 2.0, "<=", True), (2.1, 2.0, "<=", False)])
def test_target_note_from_the_measured_value(value, threshold, comparison, met):
    """A target reads as met only when the value meets it, in either direction (fails on a flipped sign)."""
    note = _core.target_note(value, threshold, comparison)
    assert note.endswith("met") == met and ("**short**" in note) == (not met)


# --- provenance on a fixture repository ----------------------------------------------------------------------


def _git(root, *args):
    out = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org",
                          "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git repository with a producer script, a library module and a docs page, all committed."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "gdjax").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "fd_vs_grad.py").write_text("print(1)\n")
    (tmp_path / "gdjax" / "nn.py").write_text("x = 1\n")
    (tmp_path / "docs" / "page.md").write_text("text\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "code")
    return tmp_path


PRODUCERS = report.SOURCES["fd_vs_grad"].producers


def _commit_change(root, rel, text):
    (root / rel).write_text(text)
    _git(root, "commit", "-q", "-am", f"change {rel}")


def test_fresh_results_pass(repo):
    """Written at HEAD from a clean tree: fresh; a later commit to a non-producer keeps it fresh, and so does
    a change to gdjax/report/ (fails if any commit at all made results stale)."""
    meta = {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": False}
    assert provenance.staleness(meta, PRODUCERS, repo) is None
    _commit_change(repo, "docs/page.md", "more text\n")
    (repo / "gdjax" / "report").mkdir()
    (repo / "gdjax" / "report" / "x.py").write_text("y = 2\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "report change")
    assert provenance.staleness(meta, PRODUCERS, repo) is None


def test_dirty_results_fail(repo):
    """git_dirty true, or not recorded: stale (fails if the flag were ignored)."""
    head = _git(repo, "rev-parse", "HEAD")
    assert "uncommitted" in provenance.staleness({"git_commit": head, "git_dirty": True}, PRODUCERS, repo)
    assert "not recorded" in provenance.staleness({"git_commit": head}, PRODUCERS, repo)


@pytest.mark.parametrize("rel", ["benchmarks/fd_vs_grad.py", "gdjax/nn.py"])
def test_code_changed_after_the_run_fails(repo, rel):
    """A commit to the script or to the library after the run: stale, naming the later commit (fails if the
    ancestor test were reversed or only the script counted)."""
    meta = {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": False}
    _commit_change(repo, rel, "changed = True\n")
    reason = provenance.staleness(meta, PRODUCERS, repo)
    assert reason is not None and "changed after the run" in reason and f"change {rel}" in reason


def test_uncommitted_producer_and_unknown_commit_fail(repo):
    """An uncommitted edit of a producer, or a commit this repository lacks: stale."""
    meta = {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": False}
    (repo / "gdjax" / "nn.py").write_text("x = 2\n")
    assert "uncommitted changes" in provenance.staleness(meta, PRODUCERS, repo)
    assert "not in this repository" in provenance.staleness({"git_commit": "0" * 40, "git_dirty": False},
                                                            PRODUCERS, repo)


def test_check_fails_on_stale_results_and_passes_on_fresh(repo):
    """End to end on the fixture: `report --check` is 0 with fresh results, 1 with a 'stale:' line after a
    producer changes, and `--no-provenance` still passes (fails if provenance were not part of --check)."""
    readme = _tree(repo)
    path = repo / report.SOURCES["fd_vs_grad"].path
    report.update(repo)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "results")
    data = json.loads(path.read_text())
    data["meta"].update(git_commit=_git(repo, "rev-parse", "HEAD"), git_dirty=False)
    path.write_text(json.dumps(data))
    _git(repo, "commit", "-q", "-am", "results written at the previous commit")
    assert report.command(repo, check=True, stdout=io.StringIO(), stderr=io.StringIO()) == 0
    _commit_change(repo, "gdjax/nn.py", "x = 3\n")
    out = io.StringIO()
    assert report.command(repo, check=True, stdout=out, stderr=io.StringIO()) == 1
    assert f"stale: {report.SOURCES['fd_vs_grad'].path}" in out.getvalue()
    assert report.command(repo, check=True, provenance=False, stdout=io.StringIO()) == 0
    assert readme.exists()


def test_reproduce_plan_skips_fresh_steps(repo):
    """The reproduce plan runs a step whose results are stale or missing and skips one whose results are fresh
    (fails if resuming reran finished steps or skipped stale ones)."""
    path = repo / report.SOURCES["fd_kernel"].path
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"meta": {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": False},
                                "rows": []}))
    steps = [s for s in reproduce.STEPS if s.name in ("bench-fd-kernel", "bench-estimators")]
    why = {s.name: w for s, w in reproduce.plan(repo, steps)}
    assert why["bench-fd-kernel"] is None and "does not exist" in why["bench-estimators"]
    assert all(w == "--force" for _, w in reproduce.plan(repo, steps, force=True))


def test_reproduce_rejects_unknown_steps(capsys):
    """`--only` with an unknown step: exit 2 and one line naming the valid steps, before any work."""
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--only", "nope", "--root", str(ROOT)])
    assert exc.value.code == 2
    assert "unknown step" in capsys.readouterr().err


def test_pages_link_only_inside_the_repository():
    """No page of README.md / docs/ links outside the repository or to ../shared (fails on a URL or a path
    that leaves the checkout)."""
    import re

    for page in report.pages(ROOT):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            where = f"{page.relative_to(ROOT)} -> {target}"
            assert "://" not in target and not target.startswith(("www.", "mailto:")), where
            path = (page.parent / target.split("#")[0]).resolve()
            assert ROOT in path.parents and "shared" not in path.relative_to(ROOT).parts[:1], where


def test_reproduce_runs_stale_steps_once_and_resumes(repo, monkeypatch, capsys):
    """reproduce.main runs a step whose results are missing, then, run again, skips it because the file it
    wrote is fresh; --force reruns it; --dry-run runs nothing (fails if resuming reran finished work or a
    dry run did work). The step is a tiny command that writes its results file as a benchmark would."""
    import sys

    (repo / "Makefile").write_text("all:\n")
    _git(repo, "add", "Makefile")
    _git(repo, "commit", "-q", "-m", "make")
    out = repo / report.SOURCES["fd_kernel"].path
    log = repo / "ran.txt"
    code = (f"import json, pathlib, subprocess; p = pathlib.Path({str(out)!r}); p.parent.mkdir(parents=True, "
            f"exist_ok=True); c = subprocess.check_output(['git', '-C', {str(repo)!r}, 'rev-parse', 'HEAD'], "
            f"text=True).strip(); p.write_text(json.dumps({{'meta': {{'git_commit': c, 'git_dirty': False}}, "
            f"'rows': []}})); open({str(log)!r}, 'a').write('x')")
    monkeypatch.setattr(reproduce, "STEPS", (reproduce.Step("bench-fd-kernel", (sys.executable, "-c", code),
                                                            ("fd_kernel",)),))
    args = ["--root", str(repo)]
    assert reproduce.main(args + ["--dry-run"]) == 0 and not log.exists()
    assert reproduce.main(args) == 0 and log.read_text() == "x"
    assert reproduce.main(args) == 0 and log.read_text() == "x"
    assert "skip (fresh)" in capsys.readouterr().out
    assert reproduce.main(args + ["--force"]) == 0 and log.read_text() == "xx"
    assert "total wall time" in capsys.readouterr().out


def test_reproduce_commits_pending_results_or_refuses(repo, monkeypatch, capsys):
    """With a tracked results file modified (an earlier step's output), a step would record git_dirty: true:
    without --commit the run stops (exit 2, one line), with --commit the results folders are committed first
    and after the step, leaving the tree clean (fails if a step ran from a dirty tree)."""
    import sys

    (repo / "Makefile").write_text("all:\n")
    pending = repo / "results" / "taylor.json"
    pending.parent.mkdir()
    pending.write_text("{}")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "make, results")
    pending.write_text('{"rows": []}')
    step = reproduce.Step("bench-fd-kernel", (sys.executable, "-c", "print('step ran')"), ("fd_kernel",))
    monkeypatch.setattr(reproduce, "STEPS", (step,))
    assert reproduce.main(["--root", str(repo)]) == 2
    captured = capsys.readouterr()
    assert "git_dirty" in captured.err and "step ran" not in captured.out
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(var, "t")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(var, "t@example.org")
    assert reproduce.main(["--root", str(repo), "--commit"]) == 0
    assert _git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert "results pending before bench-fd-kernel" in _git(repo, "log", "--format=%s")


def test_reproduce_commits_each_step_with_its_rendered_pages(repo, monkeypatch):
    """With --commit, a step's results and the README re-rendered from them land in one commit, and the tree is
    clean after it (fails if the pages were left stale beside committed results, or committed apart)."""
    import sys

    (repo / "Makefile").write_text("all:\n")
    readme = _tree(repo)  # the committed fd_vs_grad results and a README whose table is stale
    src = report.SOURCES["fd_vs_grad"].path
    results_file = repo / src
    kept = results_file.read_bytes()
    results_file.unlink()
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "make, README")
    code = f"import shutil; shutil.copy({str(ROOT / src)!r}, {src!r})"
    monkeypatch.setattr(reproduce, "STEPS", (reproduce.Step("bench", (sys.executable, "-c", code), ("fd_vs_grad",)),))
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(var, "t")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(var, "t@example.org")
    reproduce.main(["--root", str(repo), "--commit", "--only", "bench"])
    assert results_file.read_bytes() == kept
    assert _git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    changed = _git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert set(changed) == {src, "README.md"}
    assert "| stale | table |" not in readme.read_text() and "| target |" in readme.read_text()


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_resolve():
    """Every relative link or image of README.md / docs/ names a file of the repository, and a #fragment names
    a heading of that page (fails on a dead link after a page, a heading or a figure moves)."""
    import re

    for page in report.pages(ROOT):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            file, _, frag = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            assert path.exists(), f"{page.relative_to(ROOT)} -> {target}"
            if frag:
                heads = [_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)]
                assert frag in heads, f"{page.relative_to(ROOT)} -> {target}: no such heading"


def test_readme_five_lines_run_as_written():
    """The README's example runs as written and gives a gradient shaped like the params (fails when an API it
    spells is renamed, or the page's example drifts from the library)."""
    import re

    import jax

    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Five lines\n+```python\n(.*?)```", text, re.DOTALL).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (the README's own example)
    assert jax.tree.map(lambda a: a.shape, scope["grads"]) == jax.tree.map(lambda a: a.shape, scope["params"])


def test_headline_uses_measured_forward_equivalents_when_the_file_has_them():
    """Rows of the reworked bench carry `forward_equivalents` (XLA FLOPs / forward FLOPs) and no evaluation
    count for autodiff: the headline shows the measured column, not the counted one (fails if it fell back to
    the counted evaluations, or printed None)."""
    base = {"group": "sweep", "sizes": "784-30-10", "P": 23860, "batch_size": 1000, "dtype": "float32",
            "extrapolated": False, "peak_fraction": 0.5, "rel_error": 1e-7}
    rows = [{**base, "method": "forward-pass", "median_s": 1e-3, "evaluations": 1.0, "forward_equivalents": 1.0},
            {**base, "method": "reverse", "median_s": 3e-3, "evaluations": None, "forward_equivalents": 2.14}]
    text = report.render("fd_vs_grad.headline", {"meta": {"device_kind": "cpu"}, "config": {}, "rows": rows})
    assert "| method | forward-pass equivalents (XLA FLOPs) |" in text
    assert "| `reverse` (`jax.grad`) | 2.14 | 3.00 ms | 1.00 | 50% | 1.0e-07 |" in text


def test_ci_script_sets_ci_itself():
    """`.ci/run` exports CI=true before running the tests (fails if a runner that does not set CI would let the
    tests that need a dataset, torch or a GPU skip instead of failing), and installs the torch extra they need."""
    import re

    text = (ROOT / ".ci" / "run").read_text()
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]
    ci = next(i for i, x in enumerate(lines) if re.fullmatch(r"export CI=(true|1)", x))
    test = next(i for i, x in enumerate(lines) if x.startswith("make test"))
    assert ci < test and "torch" in next(x for x in lines if x.startswith("export EXTRAS"))


def test_stochastic_errors_say_how_many_keys():
    """A stochastic estimator's error is one random draw unless the row has a spread over keys: the methods
    table says '(one key)' for the former and 'mean +- std (n keys, k = ...)' for the latter, and nothing for a
    deterministic method (fails if a single draw read as the method's error)."""
    base = {"group": "sweep", "sizes": "784-30-10", "P": 23860, "batch_size": 1000, "dtype": "float32",
            "extrapolated": False, "median_s": 1e-3}
    rows = [{**base, "method": "spsa", "rel_error": 4.1},
            {**base, "method": "forward-gradient", "rel_error": 110.0, "rel_error_std": 94.0, "keys": 20,
             "num_directions": 1},
            {**base, "method": "reverse", "rel_error": 2e-7}]
    text = report.render("fd_vs_grad.methods", {"meta": {}, "config": {}, "rows": rows})
    line = {m: next(x for x in text.splitlines() if x.startswith(f"| `{m}`")) for m in ("spsa", "forward-gradient",
                                                                                         "reverse")}
    assert line["spsa"].endswith("| 4.1e+00 (one key) |")
    assert line["forward-gradient"].endswith("| 110 +- 94 (20 keys, k = 1) |")
    assert line["reverse"].endswith("| 2.0e-07 |")
    # the sweep's own columns (benchmarks/fd_vs_grad.py): the mean over `error_keys`, not the row's one draw
    rows[0] = {**base, "method": "spsa", "rel_error": 4.1, "rel_error_mean": 120.0, "rel_error_std": 69.0,
               "error_keys": 10, "num_directions": 1}
    text = report.render("fd_vs_grad.methods", {"meta": {}, "config": {}, "rows": rows})
    assert next(x for x in text.splitlines() if x.startswith("| `spsa`")).endswith("| 120 +- 69 (10 keys, k = 1) |")


def test_headline_shows_both_forward_equivalents_when_the_rows_have_them():
    """Rows that carry forward-pass equivalents by dot/convolution FLOPs beside all XLA FLOPs (the random-number
    generator's integer operations count among the latter) get both columns, each labelled (fails if the
    generator's work were shown as forward passes without saying so)."""
    base = {"group": "sweep", "sizes": "784-30-10", "P": 23860, "batch_size": 1000, "dtype": "float32",
            "extrapolated": False, "peak_fraction": 0.2, "rel_error": 4.0}
    rows = [{**base, "method": "reverse", "median_s": 3e-3, "forward_equivalents": 2.0, "forward_equivalents_dot": 2.0},
            {**base, "method": "spsa", "median_s": 9e-3, "forward_equivalents": 19.0, "forward_equivalents_dot": 2.1}]
    text = report.render("fd_vs_grad.headline", {"meta": {"device_kind": "cpu"}, "config": {}, "rows": rows})
    header = next(x for x in text.splitlines() if x.startswith("| method |"))
    assert header.startswith("| method | forward-pass equivalents (all XLA FLOPs, random-number generation included) "
                             "| forward-pass equivalents (dot and convolution FLOPs) | time per gradient |")
    assert "| `spsa` | 19.0 | 2.10 | 9.00 ms |" in text
