"""Smoke test of benchmarks/estimators.py on a tiny net: rows, ratios, flags, figures; bad options."""

import json
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "estimators.py"


def load_script():
    return conftest.load_script("benchmarks/estimators.py")


def test_quick_run_writes_rows_and_figures(tmp_path):
    out = tmp_path / "estimators.json"
    mod = load_script()
    rc = mod.main(["--quick", "--sizes", "6,5,3", "--batch", "16", "--keys", "3", "--out", str(out),
                   "--methods", "fd-forward,fd-layerwise,spsa-k1,reverse",
                   "--train-methods", "reverse", "--n-train", "20", "--time-budget", "1e-9"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["meta"]["platform"] and data["meta"]["jax"]
    ladder = {r["label"]: r for r in data["rows"] if r["group"] == "ladder"}
    assert set(ladder) == {"fd-forward", "fd-layerwise", "spsa-k1", "reverse"}
    assert all(r["status"] == "ok" for r in ladder.values()), [r.get("note") for r in ladder.values()]
    p = ladder["reverse"]["P"]
    assert p == 6 * 5 + 5 + 5 * 3 + 3
    # a near-zero budget forces the FD kernel onto a subset of directions: flagged and scaled
    fd = ladder["fd-forward"]
    assert fd["extrapolated"] and fd["measured_directions"] < p and fd["scale"] > 1
    assert fd["median_s"] > fd["measured_median_s"]
    assert ladder["fd-layerwise"]["evaluations"] == p + 1 and not ladder["fd-layerwise"]["extrapolated"]
    assert ladder["fd-layerwise"]["rel_error"] < 1e-2 and ladder["reverse"]["rel_error"] < 1e-5
    assert ladder["spsa-k1"]["keys"] == 3 and ladder["spsa-k1"]["rel_error_std"] >= 0
    assert ladder["fd-forward"]["speedup_vs_fd"] == pytest.approx(1.0)
    for r in ladder.values():
        assert r["median_s"] > 0 and r["fp_equivalents"] > 0
        assert r["over_reverse"] == pytest.approx(r["median_s"] / ladder["reverse"]["median_s"])
    training = [r for r in data["rows"] if r["group"] == "training"]
    assert {r["label"] for r in training} == {"reverse"}
    assert {r["epoch"] for r in training} == {0, 1}
    for stem in ("estimators_ladder", "estimators_training"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 0 and (tmp_path / f"{stem}.svg").exists()
    assert (tmp_path / "estimators.csv").exists()  # (the figures above were drawn from the JSON: plot_all(out))


@pytest.mark.parametrize("args,message", [
    (["--sizes", "784,x"], "--sizes"),
    (["--sizes", "784,10"], "at least 3"),
    (["--methods", "fd-forward,bogus"], "--methods"),
    (["--repeats", "0"], "--repeats"),
    (["--n-train", "5"], "--n-train"),
    (["--time-budget", "-1"], "--time-budget"),
    (["--dtype", "float16"], "dtype"),
    (["--bogus"], "unrecognized"),
])
def test_bad_options_one_line_on_stderr(args, message, capsys):
    assert load_script().main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("estimators: error:") and message in lines[0], lines


def test_exit_status_from_the_command_line():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--keys", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "estimators: error: --keys must be >= 1, got 0"
