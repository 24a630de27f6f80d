"""benchmarks/estimators.py: a quick run on a tiny net (rows recomputable from their own fields, extrapolation
through the method's own subset program, stochastic errors recomputed key by key), a known-wrong estimator and
a wrong reference reported as large errors, FLOPs counted through loops, and bad options."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, load_script

import gdjax
import jax.flatten_util
from gdjax.bench import policy

SCRIPT = "benchmarks/estimators.py"


def _mod():
    return load_script(SCRIPT)


def test_quick_run_rows_extrapolation_and_figures(tmp_path):
    """Catches: an extrapolated time not the median of the per-round extrapolations of its timed parts
    (recomputed here with `policy.extrapolate`); fp_equivalents not flops / the forward pass's XLA flops; a
    stochastic rung's error from one key reused (std 0) or not the mean over its keys (recomputed here
    independently, key by key); evaluations invented for autodiff; --out FOLDER refused."""
    mod = _mod()
    rc = mod.main(["--quick", "--sizes", "6,5,3", "--batch", "16", "--keys", "3", "--out", str(tmp_path),
                   "--methods", "fd-forward,fd-layerwise,spsa-k1,reverse",
                   "--train-methods", "reverse", "--n-train", "20", "--time-budget", "1e-9"])
    assert rc == 0
    data = json.loads((tmp_path / "estimators.json").read_text())
    assert "git_dirty" in data["meta"] and data["meta"]["platform"]
    ladder = {r["label"]: r for r in data["rows"] if r["group"] == "ladder"}
    assert set(ladder) == {"fd-forward", "fd-layerwise", "spsa-k1", "reverse"}
    assert all(r["status"] == "ok" for r in ladder.values()), [r.get("note") for r in ladder.values()]
    p = ladder["reverse"]["P"]
    assert p == 6 * 5 + 5 + 5 * 3 + 3
    fd = ladder["fd-forward"]  # a near-zero budget: parts of the directions are the result
    assert fd["extrapolated"] and fd["measured_directions"] < p + 1 and fd["scale"] > 1
    assert fd["total_directions"] == p + 1  # forward: P + 1 directions
    assert fd["median_s"] == pytest.approx(fd["measured_median_s"] * fd["scale"])
    small = fd["subset_small_times"] or [None] * len(fd["subset_times"])
    per_round = [policy.extrapolate(b, fd["measured_directions"], p + 1, s, fd["measured_directions_small"])
                 for b, s in zip(fd["subset_times"], small)]
    assert fd["median_s"] == pytest.approx(float(np.median(per_round)))
    assert fd["rel_error"] < 1e-2 and "components" in fd["error_on"]
    assert fd["evaluations"] == p + 1 and ladder["reverse"]["evaluations"] is None
    lw = ladder["fd-layerwise"]  # structured and timeable on a subset (its own loop's first steps)
    assert lw["evaluations"] == p + 1 and lw["extrapolated"] and lw["scale"] > 1
    assert lw["median_s"] == pytest.approx(lw["measured_median_s"] * lw["scale"])
    assert lw["rel_error"] is None and lw["error_on"].startswith("none")  # no restricted MLP cost to measure on
    assert ladder["reverse"]["rel_error"] < 1e-5
    for r in ladder.values():
        assert r["fp_equivalents"] == pytest.approx(r["flops"] / r["forward_xla_flops"])
        assert r["flops"] == r["xla_flops"] and r["fp_equivalents"] == r["forward_equivalents"]  # one row type
        assert r["over_reverse"] == pytest.approx(r["median_s"] / ladder["reverse"]["median_s"])
    assert fd["speedup_vs_fd"] == pytest.approx(1.0)
    # the stochastic rung's error, recomputed key by key with numpy (not the harness's code path): the keys are
    # split from the script's key(seed + 1), the spread is the sample std (ddof 1), k is stated
    cost, params, batch = mod.common.problem((6, 5, 3), 16, "float32", 0)
    ref = np.asarray(jax.flatten_util.ravel_pytree(jax.grad(cost)(params, batch))[0], np.float64)
    est = gdjax.gradient(cost, "spsa", num_directions=1)
    errs = []
    for k in jax.random.split(jax.random.key(1), 3):
        g = np.asarray(jax.flatten_util.ravel_pytree(est(params, batch, k))[0], np.float64)
        errs.append(np.linalg.norm(g - ref) / np.linalg.norm(ref))
    spsa = ladder["spsa-k1"]
    assert spsa["keys"] == 3 and spsa["num_directions"] == 1
    # float32 reference here against the float64 one in the row: both errors are O(1), the references differ ~1e-6
    assert spsa["rel_error"] == pytest.approx(np.mean(errs), rel=1e-4)
    assert spsa["rel_error_std"] == pytest.approx(np.std(errs, ddof=1), rel=1e-3) and spsa["rel_error_std"] > 0
    training = [r for r in data["rows"] if r["group"] == "training"]
    assert {r["label"] for r in training} == {"reverse"} and {r["epoch"] for r in training} == {0, 1}
    for stem in ("estimators_ladder", "estimators_training"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 0 and (tmp_path / f"{stem}.svg").exists()


def _problem(mod, sizes=(8, 6, 3), n=16):
    args = mod.parse_args(["--quick", "--sizes", ",".join(map(str, sizes)), "--batch", str(n)])
    return mod.setup(sizes, args), args


def test_known_wrong_estimator_and_wrong_reference_are_reported_large():
    """Catches: an error computed against the estimate itself or against the wrong reference. A forward
    difference with h = 0.5 on sigmoids is a bad gradient (truncation error O(h |C''|)): reported >= 5%, while
    the default step is < 1%; `reverse` against a reference planted at twice the true gradient must read
    |g - 2g| / |2g| = 0.5 exactly (to float32 rounding)."""
    mod = _mod()
    prob, args = _problem(mod)
    good = mod.measure_rung(("fd-forward", "fd-forward", {}), prob, args)
    bad = mod.measure_rung(("bad-eps", "fd-forward", {"eps": 0.5}), prob, args)
    assert good["how"] == bad["how"] == "whole"  # the --quick budget fits: errors on every component
    assert good["rel_error"] < 1e-2 and bad["rel_error"] > 5e-2, (good["rel_error"], bad["rel_error"])
    planted = prob._replace(ref=2 * prob.ref)
    assert mod.measure_rung(("reverse", "reverse", {}), planted, args)["rel_error"] == pytest.approx(0.5, abs=1e-5)


def test_flops_count_every_chunk_of_the_kernel():
    """Catches XLA's loop-once count flowing into fp_equivalents: the FD kernel at chunk size 4 runs its chunks
    under a loop (tens of trips here); one forward difference costs about one forward pass, so its forward-pass
    equivalents must be about its P + 1 evaluations (loop body counted once would give a few)."""
    mod = _mod()
    prob, args = _problem(mod, sizes=(20, 8, 4))
    row = mod.measure_rung(("fd-forward-c4", "fd-forward", {"chunk_size": 4}), prob, args)
    assert 0.7 * row["evaluations"] <= row["fp_equivalents"] <= 3 * row["evaluations"], row["fp_equivalents"]


@pytest.mark.parametrize("args,message", [
    (["--sizes", "784,x"], "--sizes"),
    (["--sizes", "784,10"], "at least 3"),
    (["--methods", "fd-forward,bogus"], "--methods"),
    (["--repeats", "0"], "--repeats"),
    (["--n-train", "5"], "--n-train"),
    (["--time-budget", "-1"], "--time-budget"),
    (["--dtype", "float16"], "dtype"),
    (["--replot", "/nonexistent.json"], "--replot"),
    (["--out", "/dev/null/x"], "--out"),
    (["--bogus"], "unrecognized"),
])
def test_bad_options_one_line_on_stderr(args, message, capsys):
    """Catches: a bad option found after the (minutes-long) ladder, or reported as a traceback."""
    assert _mod().main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("estimators: error:") and message in lines[0], lines


def test_exit_status_from_the_command_line():
    """Catches: a script that prints the error but exits 0 (make would carry on)."""
    proc = subprocess.run([sys.executable, str(ROOT / SCRIPT), "--keys", "0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "estimators: error: --keys must be >= 1, got 0"
