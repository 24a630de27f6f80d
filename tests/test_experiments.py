"""Smoke tests: every experiment runs its tiny `--quick` config end to end (JSON + PNG + SVG) and its numbers
carry the expected signs; config overrides reject unknown keys. The scripts are imported from experiments/."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXP = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXP))


def _run(name, tmp_path, *extra):
    mod = importlib.import_module(name)
    rc = mod.main(["--quick", f"results_dir={tmp_path}", f"figures_dir={tmp_path}", *extra])
    assert rc == 0
    data = json.loads((tmp_path / f"{name}.json").read_text())
    for ext in ("png", "csv", *(["svg"] if "figure_formats=png,svg" in extra else [])):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    assert data["rows"] and data["config"]["results_dir"] == str(tmp_path)
    assert "jax" in data["meta"] and data["meta"]["wall_s"] > 0
    return data


def test_taylor(tmp_path):
    data = _run("taylor", tmp_path)
    s = data["meta"]["summary"]
    assert 1.8 < s["slope_float64"] < 2.2  # remainder ~ h^2 (quick: 2 points per decade, 2 directions)
    assert 1.7 < s["slope_float32"] < 2.3


def test_fd_step(tmp_path):
    data = _run("fd_step", tmp_path)
    s = data["meta"]["summary"]
    assert 0.8 < s["slope_forward_float64"] < 1.2 and 1.7 < s["slope_central_float64"] < 2.3
    assert s["best_err_central_float64"] < s["best_err_forward_float64"]
    assert any(r["default"] for r in data["rows"])


def test_learning_rate(tmp_path):
    data = _run("learning_rate", tmp_path)
    bowl = {r["eta_lambda_max"]: r["class"] for r in data["rows"] if r["part"] == "bowl"}
    assert bowl[0.05] == "slow" and bowl[1.0] == "converged" and bowl[1.95] == "oscillating"
    assert bowl[2.05] == "diverged" and bowl[2.3] == "diverged"
    assert {r["class"] for r in data["rows"] if r["part"] == "network"} <= {"slow", "converged", "oscillating",
                                                                          "diverged"}


def test_learning_rate_classifiers():
    import numpy as np

    lr = importlib.import_module("learning_rate")
    assert lr.classify_curve([1.0, 0.5, np.nan], 0.1) == "diverged"
    assert lr.classify_curve([1.0, 0.9, 0.8], 0.1) == "slow"
    assert lr.classify_curve([1.0, 0.3, 0.11], 0.1) == "converged"
    assert lr.classify_curve([1.0, 0.5, 0.6, 0.4, 0.5, 0.3], 0.3) == "oscillating"
    assert lr.classify_curve([1.0, 0.5, 0.5], 0.1, grad_ratio=1e-4) == "diverged"  # stuck on a plateau


def test_landscape(tmp_path):
    data = _run("landscape", tmp_path, "figure_formats=png,svg")  # one smoke test draws the SVG too
    s = data["meta"]["summary"]
    assert s["himmelblau_minima_reached"] >= 2  # different starts, different minima
    assert "diverged" in s["bowl_statuses"]  # eta = 0.205 > 2 / lambda_max = 0.2


def test_batch_average(tmp_path):
    data = _run("batch_average", tmp_path)
    s = data["meta"]["summary"]
    assert -1.4 < s["variance_slope[init]"] < -0.6
    rows = [r for r in data["rows"] if r["point"] == "init"]
    assert rows[0]["cos_mean"] < rows[-1]["cos_mean"]  # averaging more images aligns with the full gradient


def test_fd_training(tmp_path):
    data = _run("fd_training", tmp_path)
    s = data["meta"]["summary"]
    assert s["max_rel_train_cost_difference"] < 1e-2
    assert s["epoch_s_reverse"] > 0 and s["epoch_s_fd_central"] > 0  # timings: the full run, not a smoke test
    assert {r["method"] for r in data["rows"]} == {"reverse", "fd-central"}


def test_nielsen_mnist_quick_on_digits(tmp_path):
    data = _run("nielsen_mnist", tmp_path)
    s = data["meta"]["summary"]
    assert 0 <= s["lecture_test_accuracy[digits]"] <= 1 and 0 <= s["strong_test_accuracy[digits]"] <= 1
    assert {r["model"] for r in data["rows"]} == {"lecture", "strong"}


@pytest.mark.parametrize("arg, match", [("nope=1", "unknown config key 'nope'; valid keys:"),
                                        ("epochs=many", "epochs='many': expected an integer"),
                                        ("--fast", "unknown option '--fast'")])
def test_bad_override_is_one_line_and_exit_2(tmp_path, capsys, arg, match):
    mod = importlib.import_module("fd_training")
    assert mod.main([arg, f"results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert not (tmp_path / "fd_training.json").exists()


def test_overrides_convert_types():
    common = importlib.import_module("_common")
    lr = importlib.import_module("learning_rate")
    cfg = common.parse_overrides(lr.Config(), ["net_etas=0.1,1", "bowl_steps=7", "results_dir=x"])
    assert cfg.net_etas == (0.1, 1.0) and cfg.bowl_steps == 7 and cfg.results_dir == "x"


def test_run_all_rejects_unknown_experiment():
    out = subprocess.run([sys.executable, str(EXP / "run_all.py"), "--only", "nope"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "valid: taylor" in out.stderr and out.stderr.count("\n") == 1
