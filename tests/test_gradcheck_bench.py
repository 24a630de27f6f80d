"""benchmarks/gradcheck.py: the planted bugs are real bugs of correct rules, a small run's rows and figure, bad
options refused before any work."""

import json
import sys

import jax
import numpy as np
import pytest
from conftest import load_script

SCRIPT = "benchmarks/gradcheck.py"


@pytest.fixture(scope="module")
def mod():
    return load_script(SCRIPT)


def _plain(mod, arch, sizes, act):
    """The same cost with jax's own derivative (no custom rule): the oracle for the hand-written VJPs."""
    if arch == "conv":
        def f(params, x, y, mask):
            k = params["conv"]["k"]
            z = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = mod.ACTIVATIONS[act][0](z + params["conv"]["b"][None, None, None, :])
            out = h.reshape(h.shape[0], -1) @ params["out"]["w"] + params["out"]["b"][None, :]
            return 0.5 * jax.numpy.mean(jax.numpy.sum((out - y) ** 2, -1))
        return f

    def f(params, x, y, masks):
        a, layers = x, mod._layers(params)
        for i, (w, b) in enumerate(layers):
            a = mod.ACTIVATIONS[act if i < len(layers) - 1 else "identity"][0](a @ w + b[None, :])
        return 0.5 * jax.numpy.mean(jax.numpy.sum((a - y) ** 2, -1))
    return f


@pytest.mark.parametrize("kind", ["mlp-one-entry", "mlp-one-entry-10pct-float32", "mlp-transposed",
                                  "mlp-missing-factor", "dict-leaf-off-by-one",
                                  "float32-overflow", "conv-flipped-kernel", "conv-one-entry"])
def test_planted_bugs_are_bugs_of_correct_rules(mod, kind):
    """The bug-free custom rule equals jax's derivative of the plain primal (float64), and the planted one differs
    from it in the named leaf only (at the planted index for one-entry bugs; NaN for the float32 overflow).
    Catches: a suite whose "correct" rules are wrong (false alarms would be real), or a bug that is no bug."""
    arch, sizes, act, bug, dtype, leaf = mod.BUGS[kind]
    f_ok, f_bug = mod.cost_fn(arch, sizes, act), mod.cost_fn(arch, sizes, act, bug)
    params, args, index = mod.plant(kind, 0, f_ok)
    oracle = jax.grad(_plain(mod, arch, sizes, act))(params, *args)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    ok, bad, ref = (jax.tree_util.tree_leaves(t) for t in
                    (jax.grad(f_ok)(params, *args), jax.grad(f_bug)(params, *args), oracle))
    tol = 1e-4 if dtype == "float32" else 1e-12
    for path, a, b, r in zip(paths, ok, bad, ref):
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol)
        differs = ~np.isclose(np.asarray(b, np.float64), np.asarray(r, np.float64), rtol=tol, atol=tol)
        assert differs.any() == (path == leaf), (path, leaf)
        if path == leaf and index is not None:
            assert np.flatnonzero(differs.ravel()).tolist() == [np.ravel_multi_index(index, r.shape)]


def test_small_run_rows_and_figure(mod, tmp_path):
    """One bug kind and one architecture end to end at tiny sizes: check_grad names the bug, no false alarm, every
    new section present with its counts, the speed rows of the full and localising checks and jax's tool, the
    JSON, CSV and figures. Catches: rows missing the fields the tables read, a detection counted without the
    leaf being named, a section dropped."""
    argv = ["--quick", "--kinds", "float32-overflow,mlp-one-entry", "--archs", "mlp", "--acts", "tanh",
            "--sizes", "6,4,2", "--torch", "skip", "--out", str(tmp_path)]
    assert mod.main(argv) == 0
    data = json.loads((tmp_path / "gradcheck.json").read_text())
    assert "git_dirty" in data["meta"] and data["config"]["kinds"] == ["float32-overflow", "mlp-one-entry"]
    assert data["config"]["torch"] == "skip" and data["config"]["torch_rows"] is False
    rows = {}
    for r in data["rows"]:
        rows.setdefault(r["section"], []).append(r)
    det = {r["kind"]: r for r in rows["detection"]}
    over = det["float32-overflow"]
    assert over["check_grad_named"] == over["seeds"] == 1 and over["check_grad_rate"] == 1.0
    assert over["leaf"] == "[0].b" and over["min_err_over_tol"] is None  # inf: the NaN entry, None in JSON
    (mag,) = rows["detection_by_magnitude"]
    assert mag["kind"] == "mlp-one-entry" and mag["planted"] == 1 and mag["ok"] == 0
    assert mag["bin"] in {mod.magnitude_bin(v) for v in (0.0, 1e-3, 1e-2, 0.5)}
    assert [(r["act"], r["dtype"], r["check_grad_failures"]) for r in rows["false_alarm"]] == [
        ("tanh", "float32", 0), ("tanh", "float64", 0)]
    assert [r["cost"] for r in rows["kinks"]] == list(mod.KINK_COSTS)
    assert all(r["check_grad_failures"] == 0 and r["cases"] == 1 for r in rows["kinks"])
    low = {r["bug"]: r for r in rows["low_precision"]}
    assert low["doubled-largest"]["failed"] == 1 and low["30pct-uniform"]["ok"] == 0
    (f32,) = rows["float32"]
    assert f32["named"] == f32["seeds"] == 1 and f32["false_alarms"] == 0 and f32["n_params"] == 8 * 6 + 6 * 4
    (loc,) = rows["localising"]
    assert loc["named"] == 1 and loc["false_alarms"] == 0 and loc["n_params"] == 6 * 5 + 5 * 3
    tools = {(r["tool"], r["call"]): r for r in rows["speed"]}
    assert set(tools) == {(t, c) for t in ("gdjax.check_grad", "gdjax.check_grad directions",
                                           "jax.test_util.check_grads") for c in ("first", "repeated")}
    first = tools[("gdjax.check_grad", "first")]
    assert first["ok"] and first["n_params"] == 6 * 4 + 4 + 4 * 2 + 2 and first["evaluations"] == 2 * 38 + 1
    assert tools[("gdjax.check_grad directions", "first")]["evaluations"] == 1 + 4 * 16
    for name in ("gradcheck.csv", "gradcheck.png", "gradcheck.svg"):
        assert (tmp_path / name).stat().st_size > 0


def test_magnitude_bins(mod):
    """Every |g_i| / max|g| in [0, 1] falls in exactly one labelled bin, the bins in order."""
    labels = [mod.magnitude_bin(v) for v in (0.0, 5e-4, 1e-3, 0.05, 0.1, 1.0)]
    assert labels == ["[0, 0.001)", "[0, 0.001)", "[0.001, 0.01)", "[0.01, 0.1)", "[0.1, 1]", "[0.1, 1]"]


def test_torch_rows_arithmetic_without_torch(mod):
    """The torch rows and ratios from a fake torch timing (no torch needed): slow / this for every check_grad row,
    targets and status on the full check's rows only. Catches: ratios inverted or attached to the wrong rows."""
    base = {"section": "speed"}
    rows = [dict(base, tool="gdjax.check_grad", call="first", seconds=2.0),
            dict(base, tool="gdjax.check_grad", call="repeated", seconds=0.5),
            dict(base, tool="gdjax.check_grad directions", call="first", seconds=0.25),
            dict(base, tool="jax.test_util.check_grads", call="first", seconds=1.0)]
    fake = {"version": "fake", "slow": 8.0, "fast": 0.1, "slow_ok": True, "fast_ok": True}
    extra = mod.torch_rows(base, rows, fake)
    assert [(r["call"], r["seconds"]) for r in extra] == [("slow mode", 8.0), ("fast mode", 0.1)]
    assert [r.get("torch_slow_over_this") for r in rows] == [4.0, 16.0, 32.0, None]
    assert rows[0]["target"] == mod.TARGETS["first_vs_torch_slow"] and rows[0]["status"] == "SHORT"
    assert rows[1]["target"] == mod.TARGETS["repeated_vs_torch_slow"] and rows[1]["status"] == "PASS"
    assert "target" not in rows[2]


def test_torch_required_by_default_fails_with_one_line(mod, tmp_path, capsys, monkeypatch):
    """Without torch, a run that needs its rows (the default --torch require) exits 1 with one line before any
    work, instead of silently dropping the rows; --torch auto is the explicit way to leave them out."""
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError, whether or not it is installed
    assert mod.main(["--kinds", "mlp-one-entry", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch is required" in err and not any(tmp_path.iterdir())
    assert mod.torch_checks(None, None, None, "auto") is None


@pytest.mark.parametrize("argv,match", [
    (["--kinds", "nope"], "--kinds"),
    (["--seeds", "0"], "--seeds"),
    (["--acts", "relu,swish"], "--acts"),
    (["--sizes", "5"], "--sizes"),
])
def test_bad_options_exit_2_before_work(mod, argv, match, tmp_path, capsys):
    assert mod.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err and not any(tmp_path.iterdir())
