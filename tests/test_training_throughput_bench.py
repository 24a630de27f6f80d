"""benchmarks/training_throughput.py: the NumPy baseline computes the same SGD step as gdjax, a quick run into
an output folder, the targets' status from planted times, and bad options refused before any work."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_script

import gdjax
from gdjax.data import Batch

SCRIPT = "benchmarks/training_throughput.py"


def test_numpy_baseline_is_the_same_sgd_step():
    """Catches: a NumPy baseline that is faster because it computes something else (a wrong delta, a missing
    average over the mini-batch, a transposed weight): one epoch of one mini-batch must equal one gdjax SGD step."""
    mod = load_script(SCRIPT)
    sizes, eta = (12, 5, 3), 3.0
    x, y, params = mod.numpy_problem(sizes, 10, 0)
    run = mod.numpy_epoch_fn(x, y, params, eta, 10)  # one mini-batch of all 10 examples
    run()
    p0 = tuple(gdjax.Layer(jnp.asarray(w), jnp.asarray(b)) for w, b in params)
    g = jax.grad(gdjax.make_cost(gdjax.MLP(sizes), "quadratic"))(p0, Batch(jnp.asarray(x), jnp.asarray(y)))
    for (w_np, b_np), layer, gl in zip(run.params(), p0, g):
        # float32, sums in a different order: agreement to ~1e-6 of the parameters' scale (N(0, 1))
        np.testing.assert_allclose(w_np, layer.w - eta * gl.w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b_np, layer.b - eta * gl.b, rtol=1e-5, atol=1e-5)


def test_quick_run_into_a_folder(tmp_path, capsys):
    """Catches the bug of issue 11: `--out FOLDER` ran the whole benchmark, then died because the path did
    not end in .json; also a ratio not taken against gdjax's own median, and meta without git_dirty."""
    mod = load_script(SCRIPT)
    assert mod.main(["--quick", "--no-torch", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "training_throughput.json").read_text())
    rows = {r["impl"]: r for r in data["rows"]}
    assert list(rows) == ["gdjax", "numpy"] and "git_dirty" in data["meta"]
    assert rows["gdjax"]["ratio_vs_gdjax"] == 1.0
    assert rows["numpy"]["ratio_vs_gdjax"] == pytest.approx(rows["numpy"]["median_s"] / rows["gdjax"]["median_s"])
    # --quick times NumPy on 50 of 200 examples: the times are scaled by 4, and say so
    assert rows["numpy"]["scaled"] and rows["numpy"]["measured_examples"] == 50
    assert "PyTorch comparison skipped" in capsys.readouterr().out


@pytest.mark.parametrize("torch_s, numpy_s, expected", [
    (9.0, 25.0, ("PASS", "PASS")),
    (7.0, 15.0, ("SHORT", "SHORT")),  # planted slower gdjax relative to both: both targets missed
])
def test_target_status_follows_the_ratios(torch_s, numpy_s, expected):
    """Catches: a status that does not depend on the measured ratio, or that reads the wrong target (8x for
    PyTorch, 20x for NumPy, from benchmarks/_common.TARGETS)."""
    mod = load_script(SCRIPT)
    rows = mod.add_ratios([mod._row("gdjax", [1.0, 1.0], 100), mod._row("torch", [torch_s], 100),
                           mod._row("numpy", [numpy_s], 100)])
    assert (rows[1]["target_status"], rows[2]["target_status"]) == expected
    assert rows[0]["target_status"] == "n/a" and rows[1]["target_ratio"] == 8.0 and rows[2]["target_ratio"] == 20.0


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--n", "5"], "larger than --n"),
    (["--eta", "nan"], "--eta must be > 0"),
    (["--sizes", "784"], "--sizes"),
    (["--numpy-examples", "5"], "--numpy-examples"),
    (["--out", "/dev/null/x"], "--out"),
])
def test_bad_options_refused_before_any_work(args, message, capsys):
    """Catches: an option checked only after the (minute-long) benchmark ran, or reported as a traceback."""
    t0 = time.perf_counter()
    assert load_script(SCRIPT).main(["--no-torch", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("training_throughput: error:")
    assert time.perf_counter() - t0 < 5  # nothing was measured
