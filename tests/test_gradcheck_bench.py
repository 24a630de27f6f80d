"""benchmarks/gradcheck.py: the planted bugs are real bugs of correct rules, a small run's rows and figure, bad
options refused before any work."""

import json

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
            h = mod._act(act)[0](z + params["conv"]["b"][None, None, None, :])
            out = h.reshape(h.shape[0], -1) @ params["out"]["w"] + params["out"]["b"][None, :]
            return 0.5 * jax.numpy.mean(jax.numpy.sum((out - y) ** 2, -1))
        return f

    def f(params, x, y, masks):
        a, layers = x, mod._layers(params)
        for i, (w, b) in enumerate(layers):
            a = mod._act(act if i < len(layers) - 1 else "identity")[0](a @ w + b[None, :])
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
    """One bug kind and one architecture end to end: check_grad names the bug, no false alarm, the speed rows of
    both jax tools (and torch's two modes where torch is installed) with ratios and target status, the JSON,
    CSV and figures. Catches: rows missing the fields the lead's tables read, a detection counted without the
    leaf being named, an output folder refused."""
    argv = ["--quick", "--kinds", "float32-overflow", "--archs", "mlp", "--acts", "tanh", "--sizes", "6,4,2",
            "--out", str(tmp_path)]
    assert mod.main(argv) == 0
    data = json.loads((tmp_path / "gradcheck.json").read_text())
    assert "git_dirty" in data["meta"] and data["config"]["kinds"] == ["float32-overflow"]
    rows = {r["section"]: [] for r in data["rows"]}
    for r in data["rows"]:
        rows[r["section"]].append(r)
    (det,) = rows["detection"]
    assert det["check_grad_named"] == det["seeds"] == 1 and det["check_grad_rate"] == 1.0
    assert det["leaf"] == "[0].b" and det["min_err_over_tol"] is None  # inf: the NaN entry, None in JSON
    assert [(r["act"], r["dtype"], r["check_grad_failures"]) for r in rows["false_alarm"]] == [
        ("tanh", "float32", 0), ("tanh", "float64", 0)]
    tools = {(r["tool"], r["call"]): r for r in rows["speed"]}
    assert {("gdjax.check_grad", "first"), ("gdjax.check_grad", "repeated"), ("jax.test_util.check_grads", "first"),
            ("jax.test_util.check_grads", "repeated")} <= set(tools)
    first = tools[("gdjax.check_grad", "first")]
    assert first["ok"] and first["n_params"] == 6 * 4 + 4 + 4 * 2 + 2 and first["evaluations"] == 4 * 38 + 1
    if ("torch.autograd.gradcheck", "slow mode") in tools:
        slow = tools[("torch.autograd.gradcheck", "slow mode")]["seconds"]
        assert first["torch_slow_over_this"] == pytest.approx(slow / first["seconds"])
        assert first["status"] in ("PASS", "SHORT") and first["target"] == 5.0
    for name in ("gradcheck.csv", "gradcheck.png", "gradcheck.svg"):
        assert (tmp_path / name).stat().st_size > 0


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
