"""benchmarks/equal_budget.py: the equal-budget training benchmark, on --quick budgets (tiny Fashion-MNIST subset).

Needs the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, or $GDJAX_DATA_DIR): without them the run
test skips outside CI and fails under CI=true.
"""

import json
import math
import os
import shutil
from pathlib import Path

import jax

import pytest

from conftest import load_script, skip_or_fail

eb = load_script("benchmarks/equal_budget.py")
# --quick with one seed (the seeds are independent runs of one code path, train_run per seed; the statistics over
# several seeds are checked on planted runs, test_summary_of_planted_runs), half its time budgets and fewer images
# (each checkpoint evaluates the test set): the same phases, rows and records, less waiting
QUICK = ["--quick", "--seeds", "1", "--seconds", "0.15", "--tune-seconds", "0.05", "--n-test", "100"]


def _have_fashion_mnist() -> bool:
    import gdjax

    try:
        gdjax.load_dataset("fashion-mnist", n_train=1, n_test=1)
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if not _have_fashion_mnist():
        skip_or_fail("Fashion-MNIST IDX files not found (`make data`: dataset-fashion-mnist, or GDJAX_DATA_DIR)")
    out = tmp_path_factory.mktemp("budget")
    assert eb.main([*QUICK, "--out", str(out)]) == 0
    return out, json.loads((out / "equal_budget.json").read_text())


def test_quick_run_schema_and_consistency(quick_run):
    """Catches: a missing figure or key, a learning rate not chosen by validation accuracy, an accuracy "at the
    budget" read from a checkpoint before the budget, a time-to-target that is not the first crossing."""
    out, data = quick_run
    assert set(data) == {"meta", "config", "rows", "summary", "tuning"}
    assert {"git_commit", "git_dirty", "command"} <= set(data["meta"])
    cfg = data["config"]
    assert cfg["quick"] and cfg["seconds"] > 0 and cfg["fpe"] > 0 and cfg["n_val"] > 0
    for stem in ("equal_budget_curves", "equal_budget_bars"):
        assert (out / f"{stem}.png").stat().st_size > 0
    assert len(data["rows"]) == len(cfg["methods"]) * len(cfg["nets"]) * cfg["seeds"]
    for t in data["tuning"]:
        assert len(t["grid"]) == cfg["lr_points"] == len(t["val_acc"])
        ranked = [(not d, a) for d, a in zip(t["diverged"], t["val_acc"])]
        assert t["learning_rate"] == t["grid"][ranked.index(max(ranked))]
    for r in data["rows"]:
        assert r["fpe_per_step"] > 1.0  # a step costs more than the forward pass alone
        curve = r["curve"]
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(curve, curve[1:]))
        first = next(p for p in curve if p[0] >= cfg["seconds"])
        assert r["acc_at_seconds"] == first[2]
        if r["reached_target"]:
            assert r["seconds_to_target"] == next(p[0] for p in curve if p[2] >= r["target"])
        else:
            assert r["seconds_to_target"] is None and r["best_acc"] < r["target"]
        assert math.isclose(r["final_fpe"], r["steps"] * r["fpe_per_step"])
    _assert_summary_matches_rows(data["summary"], data["rows"])


FIELDS = ("acc_at_seconds", "acc_at_fpe", "seconds_to_target", "fpe_to_target", "best_acc", "steps")


def _assert_summary_matches_rows(summary, rows):
    """Every summary row against an independent recomputation from the runs (statistics, not the script's
    numpy): one row per (net, method) in order, its seeds, targets reached, divergences, and mean / std / min /
    max / n of every field over the seeds that have it (None where no seed has it)."""
    import statistics

    keys = list(dict.fromkeys((r["net"], r["method"]) for r in rows))
    assert [(s["net"], s["method"]) for s in summary] == keys
    for s in summary:
        runs = [r for r in rows if (r["net"], r["method"]) == (s["net"], s["method"])]
        assert s["seeds"] == len(runs) and s["learning_rate"] == runs[0]["learning_rate"]
        assert s["reached_target"] == sum(bool(r["reached_target"]) for r in runs)
        assert s["diverged"] == sum(bool(r["diverged"]) for r in runs)
        for field in FIELDS:
            vals = [r[field] for r in runs if r[field] is not None]
            assert s[f"{field}_n"] == len(vals), field
            if not vals:
                assert s[f"{field}_mean"] is None and s[f"{field}_min"] is None, field
                continue
            assert math.isclose(s[f"{field}_mean"], statistics.fmean(vals), rel_tol=1e-12), field
            assert s[f"{field}_min"] == min(vals) and s[f"{field}_max"] == max(vals), field
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            assert math.isclose(s[f"{field}_std"], std, rel_tol=1e-9, abs_tol=1e-15), field


def test_summary_of_planted_runs():
    """`summarise` on planted runs (two methods, three seeds, one seed that never reached the target, one
    diverged): every summary row equals the independent recomputation, so that a mean over the wrong seeds, a
    None counted as 0, a min / max swap or a population std fails (runs here without the dataset)."""
    rows = []
    for method, lr in (("reverse", 3.0), ("spsa-k1", 0.03)):
        for seed in range(3):
            reached = not (method == "spsa-k1" and seed == 1)
            rows.append({"net": "lecture", "method": method, "learning_rate": lr, "seed": seed,
                         "fpe_per_step": 3.0, "reached_target": reached, "diverged": method == "spsa-k1" and seed == 2,
                         "acc_at_seconds": 0.5 + 0.1 * seed + (0.2 if method == "reverse" else 0.0),
                         "acc_at_fpe": None if seed == 0 else 0.3 * seed,
                         "seconds_to_target": (1.0 + seed ** 2) if reached else None,
                         "fpe_to_target": (100.0 * (seed + 1)) if reached else None,
                         "best_acc": 0.9 - 0.05 * seed, "steps": 10 * (seed + 1)})
    summary = eb.summarise(rows)
    _assert_summary_matches_rows(summary, rows)
    spsa = summary[1]
    assert spsa["reached_target"] == 2 and spsa["seconds_to_target_n"] == 2 and spsa["acc_at_fpe_n"] == 2


def test_resume_trains_nothing_again(quick_run, monkeypatch):
    """Catches a --resume that retrains finished runs (or loses them): training is made impossible here."""
    out, data = quick_run
    monkeypatch.setattr(eb, "train_run", lambda *a, **k: pytest.fail("--resume trained a finished run again"))
    monkeypatch.setattr(eb, "setup", lambda *a, **k: pytest.fail("--resume set up a finished run again"))
    assert eb.main([*QUICK, "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "equal_budget.json").read_text())
    assert again["rows"] == data["rows"] and again["tuning"] == data["tuning"]


def test_resume_retrains_only_runs_of_other_code(quick_run, tmp_path, monkeypatch):
    """Catches a --resume that reuses a run written by other code (a stale commit), or one that throws away the
    runs of the current code: one line of the .jsonl gets a foreign commit, and exactly that run is trained again."""
    src, data = quick_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    jsonl = out / "equal_budget.jsonl"
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert all({"git_commit", "git_dirty"} <= set(r) for r in lines)  # every line is stamped
    i = next(k for k, r in enumerate(lines) if r["phase"] == "run")
    lines[i]["git_commit"] = "f" * 40  # not a commit of this repository
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines))
    calls = []
    real = eb.train_run

    def counting(s, train, test, seed, lr, *args, **kwargs):
        calls.append((seed, lr))
        return real(s, train, test, seed, lr, *args, **kwargs)

    monkeypatch.setattr(eb, "train_run", counting)
    assert eb.main([*QUICK, "--out", str(out), "--resume"]) == 0
    assert calls == [(lines[i]["seed"], lines[i]["learning_rate"])]
    again = json.loads((out / "equal_budget.json").read_text())
    assert [(r["net"], r["method"], r["seed"]) for r in again["rows"]] == [
        (r["net"], r["method"], r["seed"]) for r in data["rows"]]
    stamps = {r["git_commit"] for r in map(json.loads, jsonl.read_text().splitlines())}
    assert "f" * 40 not in stamps and len(stamps) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--methods", "reverse,bogus"], "--methods"),
    (["--seconds", "0"], "--seconds"),
    (["--nets", "vgg"], "--nets"),
    (["--resume"], "--resume"),
    (["--lr-points", "0"], "--lr-points"),
])
def test_bad_options_one_line_before_work(argv, needle, capsys, monkeypatch):
    """Catches an option checked only after data loading (or not at all) and a traceback instead of one line."""
    monkeypatch.setattr(eb, "load_data", lambda args: pytest.fail("worked before checking the options"))
    assert eb.main(["--quick", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_methods_take_any_registered_method(monkeypatch):
    """--methods resolves a configured label to its (method, options) and any other registered method to itself
    with its default options (a new estimator needs no edit here); an unregistered name is refused."""
    monkeypatch.setattr(eb, "load_data", lambda args: pytest.fail("no data needed"))
    args = eb.parse_args(["--quick", "--methods", "spsa-k16,fd-central"])
    assert args.method_list == ["spsa-k16", "fd-central"]
    assert eb.spec("spsa-k16") == ("spsa", {"num_directions": 16}) and eb.spec("fd-central") == ("fd-central", {})
    assert "fd-central" not in eb.METHODS  # resolved through the registry, not the table
    with pytest.raises(eb.common.UsageError, match="--methods"):
        eb.parse_args(["--quick", "--methods", "fd-nonexistent"])


def test_grid_and_budget_helpers():
    """Catches a grid with fewer than 6 values or off its range, and at_budget reading the wrong axis."""
    for net in eb.NETS:
        grid = eb.lr_grid(net, eb.DEFAULTS["lr_points"])
        lo, hi = eb.NETS[net][5]
        assert len(grid) >= 6 and math.isclose(grid[0], 10**lo) and math.isclose(grid[-1], 10**hi)
        ratios = [b / a for a, b in zip(grid, grid[1:])]
        assert max(ratios) / min(ratios) < 1 + 1e-9  # log-spaced
    curve = [(0.5, 10.0, 0.1), (1.0, 30.0, 0.5), (2.0, 40.0, 0.7)]
    assert eb.at_budget(curve, 0, 1.0) == (0.5, 1.0)
    assert eb.at_budget(curve, 1, 25.0) == (0.5, 30.0)
    assert eb.at_budget(curve, 0, 3.0) == (None, None)


def test_committed_summary_matches_its_runs():
    """The committed reference's summary (what the README's table renders) against its own runs: fails when a
    summary row was edited, or the file was written by a summarise that disagrees with its rows."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cpu" / "equal_budget.json"
    data = json.loads(path.read_text())
    _assert_summary_matches_rows(data["summary"], data["rows"])


# --- golden numbers of one tiny, timing-free run ------------------------------------------------------------
# Regenerate with GDJAX_WRITE_GOLDEN=1, only in a commit that says why the numbers changed.
FIXTURE = Path(__file__).parent / "fixtures" / "golden_equal_budget.json"
METHODS, SEED, LR, STEPS, BATCH = ("reverse", "spsa-k1"), 0, 0.5, 8, 10
# float32 throughout; the same program on the same backend gives the same bits, but XLA may fuse and sum in
# another order on another backend or jax version: a few float32 ulps per step, compounded over 8 steps.
REL_TOL = 1e-5


def _data():
    kx, ky, ex, ey = jax.random.split(jax.random.key(7), 4)
    onehot = lambda k, n: jax.nn.one_hot(jax.random.randint(k, (n,), 0, 10), 10)  # noqa: E731
    return (jax.random.uniform(kx, (60, 784)), onehot(ky, 60), jax.random.uniform(ex, (40, 784)), onehot(ey, 40))


def golden_run(label: str) -> dict:
    """The per-record test costs and accuracies of one run through the benchmark's `setup` and `train_run`."""
    import types

    import gdjax

    x, y, vx, vy = _data()
    train = gdjax.Batch(x, y)
    s = eb.setup("lecture", label, types.SimpleNamespace(train=train), BATCH, fpe=1.0)  # a record every step
    # seconds tiny and the FPE budget between steps STEPS - 1 and STEPS: both are spent after step STEPS
    records, diverged = eb.train_run(s, train, gdjax.Batch(vx, vy), SEED, LR, 1e-9, (STEPS - 0.5) * s.fpe_step,
                                     cap=1e12)
    assert s.record_every == 1 and not diverged
    return {"steps": records[-1]["step"], "costs": [r["test_cost"] for r in records],
            "accuracies": [r["test_accuracy"] for r in records], "fpe_per_step": s.fpe_step}


def test_golden_equal_budget_run():
    """Catches any change of the benchmark's training stream (init, data order, key stream, update rule)."""
    got = {label: golden_run(label) for label in METHODS}
    if os.environ.get("GDJAX_WRITE_GOLDEN"):
        old = json.loads(FIXTURE.read_text()).get("old_loop_first_epoch")  # kept: written by other code
        FIXTURE.write_text(json.dumps({"config": {"net": "lecture", "methods": list(METHODS), "seed": SEED,
                                                  "learning_rate": LR, "steps": STEPS, "batch_size": BATCH},
                                       "runs": got, "old_loop_first_epoch": old}, indent=1) + "\n")
    want = json.loads(FIXTURE.read_text())["runs"]
    for label in METHODS:
        g, w = got[label], want[label]
        assert g["steps"] == w["steps"], label
        assert len(g["costs"]) == len(w["costs"]), label
        for a, b in zip(g["costs"], w["costs"]):
            assert math.isclose(a, b, rel_tol=REL_TOL), (label, g["costs"], w["costs"])
        # accuracies on 40 examples move in steps of 0.025: the same costs to 1e-5 give the same accuracies
        assert g["accuracies"] == w["accuracies"], label
    # the two methods differ (a test that compared one method's numbers to themselves would not see it)
    assert got["reverse"]["costs"][-1] != got["spsa-k1"]["costs"][-1]


def test_golden_first_epoch_of_the_old_loop():
    """The benchmark's former training loop drew its mini-batches from `numpy.random.default_rng(seed)`
    permutations; `fit` shuffles with `epoch_key`. With the training set put in the old order (so that fit's
    first epoch sees the old loop's batches), fit reproduces the old loop's first epoch: the same init, key
    stream and (traced) SGD update. Catches a change of any of them hidden behind the new data order."""
    import types

    import numpy as np

    import gdjax
    from gdjax.step import epoch_key

    x, y, vx, vy = _data()
    k_run = jax.random.split(jax.random.key(1000 + SEED))[1]  # the run key of seed SEED (eb.train_run)
    fit_order = np.asarray(jax.random.permutation(epoch_key(k_run, 0), x.shape[0]))
    old_order = np.random.default_rng(SEED).permutation(x.shape[0])
    idx = old_order[np.argsort(fit_order)]  # x[idx][fit_order] == x[old_order]
    train = gdjax.Batch(x[idx], y[idx])
    want = json.loads(FIXTURE.read_text())["old_loop_first_epoch"]
    for label in METHODS:
        s = eb.setup("lecture", label, types.SimpleNamespace(train=train), BATCH, fpe=1.0)
        records, _ = eb.train_run(s, train, gdjax.Batch(vx, vy), SEED, LR, 1e-9, 5.5 * s.fpe_step, cap=1e12)
        got = [r["test_cost"] for r in records]
        assert len(got) == len(want[label]) == 6
        for a, b in zip(got, want[label]):
            assert math.isclose(a, b, rel_tol=REL_TOL), (label, got, want[label])
