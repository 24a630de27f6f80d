"""The any-cost benchmark: `gdjax.bench.problem.Problem` and `load_problem`, `gdjax bench --problem` on a suite
problem, its one-line errors, the suite's problems (benchmarks/problems/) against independent oracles and their
PyTorch versions, and benchmarks/problems.py on a tiny problem."""

import importlib
import json
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IN_CI, ROOT, load_script

from gdjax import cli
from gdjax.bench.problem import Problem, flat_numpy, load_problem

SUITE = ("gmm", "convnet", "transformer", "ode")


def _suite(name):
    return importlib.import_module(f"benchmarks.problems.{name}")


def _torch_or_skip():
    try:
        import torch
    except (ImportError, OSError) as err:  # OSError: a broken install
        if IN_CI:
            pytest.fail(f"torch is needed for the checker comparison under CI ({err})")
        pytest.skip(f"torch not importable here ({err}); CI runs this")
    return torch


# --- Problem and load_problem -------------------------------------------------------------------------------------

def test_problem_counts_only_floating_leaves_and_refuses_bad_input():
    """P counts the floating leaves only (an int step and a bool mask pass through); a cost that is not callable,
    params without a floating leaf, and a name with the id separator are refused before any work."""
    params = {"w": jnp.ones((3, 2)), "step": jnp.int32(7), "mask": jnp.array([True, False])}
    prob = Problem(lambda p, x: jnp.sum((x @ p["w"]) ** 2), params, jnp.ones((5, 3)), name="ls")
    assert prob.n_params == 6 and prob.batch_size == 5 and prob.dtype == "float64"
    ref = prob.reference()
    assert ref.shape == (6,)
    np.testing.assert_allclose(ref, flat_numpy(jax.grad(lambda w: prob.cost({**params, "w": w}, prob.batch))(
        params["w"])), rtol=1e-12)
    with pytest.raises(TypeError, match="cost must be callable"):
        Problem(3, params, prob.batch)
    with pytest.raises(ValueError, match="no floating-point array leaf"):
        Problem(prob.cost, {"step": jnp.int32(1)}, prob.batch)
    with pytest.raises(ValueError, match="name"):
        Problem(prob.cost, params, prob.batch, name="a|b")


def test_load_problem_forms_and_errors(tmp_path, monkeypatch):
    """A factory returning (cost, params, batch) is named after itself; each bad spec is one ValueError /
    TypeError line naming the spec and what is wrong."""
    (tmp_path / "myprob.py").write_text(
        "import jax.numpy as jnp\n"
        "def good():\n    return (lambda p, x: jnp.sum(p * x), jnp.ones(3), jnp.arange(3.0))\n"
        "def wrong():\n    return 3\n"
        "def two():\n    return (1, 2)\n"
        "def boom():\n    raise RuntimeError('no data')\n"
        "not_callable = 5\n")
    monkeypatch.chdir(tmp_path)  # importable from the working directory, as with `python -m`
    prob = load_problem("myprob:good")
    assert prob.name == "good" and prob.n_params == 3
    for spec, err, text in (("myprob", ValueError, "expected 'package.module:factory'"),
                            ("a:b:c", ValueError, "expected"),
                            ("nosuchmodule_xyz:f", ValueError, "cannot be imported"),
                            ("myprob:missing", ValueError, "has no attribute 'missing'"),
                            ("myprob:not_callable", TypeError, "not a factory"),
                            ("myprob:wrong", TypeError, "got int"),
                            ("myprob:two", TypeError, "a tuple of 2 items"),
                            ("myprob:boom", ValueError, "the factory raised RuntimeError: no data")):
        with pytest.raises(err, match=text) as info:
            load_problem(spec)
        assert "\n" not in str(info.value) and spec in str(info.value)


@pytest.mark.parametrize("spec, text", [
    ("benchmarks.problems.ode", "expected 'package.module:factory'"),
    ("benchmarks.problems.nosuch:tiny", "cannot be imported"),
    ("benchmarks.problems.ode:nosuch", "has no attribute 'nosuch'"),
    ("benchmarks.problems.ode:SUITE", "cannot be imported|has no attribute|not a factory"),
    ("benchmarks.problems.ode:require_x64", "the factory raised TypeError"),
])
def test_cli_bad_problem_is_one_line_exit_2(spec, text, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert cli.main(["bench", "--problem", spec, "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gdjax bench: error: problem")
    assert re.search(text, err), err


def test_cli_refuses_mlp_options_with_a_problem(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert cli.main(["bench", "--problem", "benchmarks.problems.ode:tiny", "--sizes", "4,3,2",
                     "--out", str(tmp_path)]) == 2
    assert "--sizes does not apply" in capsys.readouterr().err


def test_cli_bench_problem_runs_the_sweep_on_any_cost(tmp_path, monkeypatch, capsys):
    """`gdjax bench --problem` on the RK4 ODE (a lax.scan inside the cost): the forward pass, reverse, the FD
    kernel and fd-loop measured whole with XLA FLOPs (the scan's body x its trip count), their error against
    float64 jax.grad, the interleaved ratio to the forward pass, and the structured method skipped with why."""
    monkeypatch.chdir(ROOT)
    rc = cli.main(["bench", "--problem", "benchmarks.problems.ode:tiny", "--dtype", "float64", "--quick",
                   "--methods", "reverse,fd-central,fd-forward,fd-loop,backprop", "--no-progress", "--no-plots",
                   "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "problem_ode-rk4-d3-s5-n4.json").read_text())  # named after the problem
    assert data["config"]["problem"] == "ode-rk4-d3-s5-n4" and data["config"]["P"] == 12
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == ["forward-pass", "reverse", "fd-central", "fd-forward", "fd-loop", "backprop"]
    assert rows["backprop"]["status"] == "skipped" and "structured" in rows["backprop"]["note"]
    fwd = rows["forward-pass"]
    assert fwd["forward_flops_source"] == "xla" and fwd["forward_flops"] == fwd["xla_flops"] > 0
    # 5 RK4 steps, each 4 (4x3 @ 3x3) dots: 5 x 4 x 2 x 4 x 3 x 3 = 1440 dot FLOPs, counted through the scan
    assert fwd["dot_flops"] == 1440
    for m in ("reverse", "fd-central", "fd-loop"):
        r = rows[m]
        assert r["status"] == "ok" and r["how"] == "whole" and r["P"] == 12, r
        # float64: reverse to rounding; central differences to truncation h^2 ~ 4e-11 relative (x |f'''|)
        assert r["rel_error"] < (1e-12 if m == "reverse" else 1e-6), r
        assert r["over_forward_rounds"] >= 3 and r["over_forward_min"] <= r["over_forward"] <= r["over_forward_max"]
    # 2P evaluations of the cost: about 24 forward passes by dots (each direction runs the forward's dots)
    assert rows["fd-central"]["forward_equivalents_dot"] == pytest.approx(24, rel=0.05)
    assert rows["fd-loop"]["xla_flops_source"] == "one-direction program x evaluations"
    # fd-loop over the FD kernel with the same directions (fd-forward, not fd-central), in the same rounds
    loop = rows["fd-loop"]
    assert loop["kernel_method"] == "fd-forward" and loop["over_kernel_rounds"] >= 3
    assert loop["over_kernel_min"] <= loop["over_kernel"] <= loop["over_kernel_max"]
    assert rows["fd-loop"]["evaluations"] == 13 and rows["fd-loop"]["dot_flops"] == pytest.approx(13 * 1440)  # P + 1


# --- the suite ----------------------------------------------------------------------------------------------------

def test_gmm_is_the_mixture_log_likelihood_plus_adbenchs_wishart_term():
    """Independent oracle: scipy's multivariate normal densities with precision Q^T Q, mixed by softmax(alpha),
    plus ADBench's Wishart term written out from Q (gamma = 1, m = 0: sum_j ||Q_j||_F^2 / 2 - k C); catches a
    wrong triangle layout, sign or constant."""
    from scipy.special import gammaln, logsumexp
    from scipy.stats import multivariate_normal

    prob = _suite("gmm").tiny()
    p = {k: np.asarray(v) for k, v in prob.params.items()}
    x = np.asarray(prob.batch)
    n, d = x.shape
    k = p["alphas"].shape[0]
    logs = np.empty((n, k))
    wishart = 0.0
    for j in range(k):
        q = np.diag(np.exp(p["icf"][j, :d]))
        idx = d
        for col in range(d):  # the strictly lower triangle, column by column
            for row in range(col + 1, d):
                q[row, col] = p["icf"][j, idx]
                idx += 1
        logs[:, j] = multivariate_normal(p["means"][j], np.linalg.inv(q.T @ q)).logpdf(x)
        wishart += 0.5 * np.sum(q**2)
    m = d + 1  # d + wishart_m + 1
    c = m * d * (-0.5 * np.log(2)) - (0.25 * d * (d - 1) * np.log(np.pi)
                                      + sum(gammaln(0.5 * m + 0.5 * (1 - i)) for i in range(1, d + 1)))
    expected = np.sum(logsumexp(logs + p["alphas"] - logsumexp(p["alphas"]), axis=1)) + wishart - k * c
    # float64 evaluation of the same sums in another order: rounding only (|value| ~ 1e2, eps 2e-16)
    assert float(jax.jit(prob.cost)(prob.params, prob.batch)) == pytest.approx(expected, rel=1e-10)
    assert prob.n_params == 4 + 4 * 3 + 4 * 6


@pytest.mark.parametrize("name", SUITE)
def test_suite_problem_jax_side(name):
    """Each problem's factory: float64 params, a finite value, and its float64 reference gradient (jax.grad)
    along two random directions equal to central differences of the cost (h = 1e-4: truncation h^2 ~ 1e-8
    relative, rounding eps |f| / h ~ 1e-12; so 1e-6 catches a cost that is not differentiable as written, e.g.
    a stop_gradient, or a reference taken over other leaves)."""
    prob = _suite(name).tiny()
    cost = jax.jit(prob.cost)
    assert prob.dtype == "float64" and np.isfinite(float(cost(prob.params, prob.batch)))
    ref = prob.reference()
    flat, unravel = jax.flatten_util.ravel_pytree(prob.params)
    rng = np.random.default_rng(0)
    for _ in range(2):
        v = rng.standard_normal(flat.shape)
        v /= np.linalg.norm(v)
        h = 1e-4
        fd = (float(cost(unravel(flat + h * v), prob.batch)) - float(cost(unravel(flat - h * v), prob.batch))) / (2 * h)
        assert fd == pytest.approx(float(v @ ref), rel=1e-6, abs=1e-9)


def test_suite_refuses_without_x64():
    """Without x64 the float64 arrays would silently be float32: the factory says how to switch it on."""
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="float64: switch x64 on"):
            _suite("ode").tiny()
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("name", SUITE)
def test_suite_problem_torch_side_is_the_same_objective(name):
    """The PyTorch version (for the checker comparison) gives the JAX value and gradient to float64 rounding."""
    torch = _torch_or_skip()
    mod = _suite(name)
    prob = mod.tiny()
    f, inputs = mod.torch_cost(prob)
    value = f(*inputs)
    grads = torch.autograd.grad(value, inputs)
    assert float(value.detach()) == pytest.approx(float(jax.jit(prob.cost)(prob.params, prob.batch)), rel=1e-10)
    flat = np.concatenate([g.numpy().ravel() for g in grads])
    np.testing.assert_allclose(flat, prob.reference(), rtol=1e-8, atol=1e-12)


# --- benchmarks/problems.py ---------------------------------------------------------------------------------------

def test_problems_script_tiny(tmp_path):
    """One tiny problem through the script: the ratios are the medians of per-round ratios of the recorded raw
    times (not ratios of medians), every gradient agrees with float64 jax.grad, check_grad's modes are present
    or absent with a reason, and torch rows are absent with the reason when left out."""
    mod = load_script("benchmarks/problems.py")
    out = tmp_path / "problems.json"
    assert mod.main(["--problems", "ode", "--tiny", "--rounds", "3", "--repeats", "1", "--no-torch",
                     "--localising", "ode", "--seeds", "2", "--cases", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    t = next(r for r in rows if r["section"] == "timing")
    obj, kernel, loop, rev = (np.array(t[f"{k}_times_s"]) for k in ("objective", "kernel", "loop", "reverse"))
    assert len(obj) == 3
    assert t["kernel_over_P_objective"] == pytest.approx(np.median(kernel / (t["P"] * obj)))
    assert t["kernel_over_loop"] == pytest.approx(np.median(kernel / loop))
    assert t["reverse_over_objective"] == pytest.approx(np.median(rev / obj))
    assert t["kernel_over_loop_min"] <= t["kernel_over_loop"] <= t["kernel_over_loop_max"]
    assert t["rel_error_reverse"] < 1e-12 and t["rel_error_kernel"] < 1e-4 and t["rel_error_loop"] < 1e-4
    assert t["loop_dot_flops"] == pytest.approx(t["evaluations_loop"] * t["objective_dot_flops"])
    # the plan against fixed widths: per round, kernel / the fastest fixed width, then the median
    fixed = np.array([t[f"chunk{c}_times_s"] for c in t["chunks"]])
    assert t["best_chunk"] in t["chunks"] and t["plan_s"] >= 0
    assert t["plan_over_one_gradient"] == pytest.approx(t["plan_s"] / np.median(kernel))
    assert t["kernel_over_best_chunk_min"] <= t["kernel_over_best_chunk"] <= t["kernel_over_best_chunk_max"]
    assert t["kernel_over_best_chunk"] == pytest.approx(np.median(kernel / fixed.min(0)))
    # the localising section: 1% errors planted at uniform entries named, no false alarm on correct cases
    loc = next(r for r in rows if r["section"] == "localising")
    assert (loc["seeds"], loc["correct_cases"]) == (2, 3)
    assert loc["named"] == 2 and loc["false_alarms"] == 0
    cache = next(r for r in rows if r["section"] == "cache")
    assert cache["first_process_s"] > 0 and cache["second_process_s"] > 0
    assert cache["speedup"] == pytest.approx(cache["first_process_s"] / cache["second_process_s"])
    checks = [r for r in rows if r["section"] == "checker"]
    full = [r for r in checks if r["tool"] == "gdjax.check_grad" and r["mode"] == "full"]
    assert {r["call"] for r in full} == {"first", "repeated"} and all(r["ok"] and not r["absent"] for r in full)
    assert all(r["evaluations"] >= 2 * t["P"] for r in full)
    local = [r for r in checks if r["tool"] == "gdjax.check_grad" and r["mode"] == "directions"]
    assert local and all(r["absent"] is False or r["reason"] for r in local)
    torch_rows = [r for r in checks if r["tool"] == "torch.autograd.gradcheck"]
    assert len(torch_rows) == 4 and all(r["absent"] and "--no-torch" in r["reason"] for r in torch_rows)
    assert all(r.get("torch_slow_over_this") is None for r in full)
    # the docs' tables render from this file (gdjax/report/problems.py)
    from gdjax.report import problems as report_problems

    data = json.loads(out.read_text())
    timing = report_problems.problems_timing(data)
    assert "ode-rk4-d3-s5-n4" in timing and f"{t['kernel_over_loop']:.3g}"[:4] in timing
    checker = report_problems.problems_checker(data)
    assert checker.count("absent") >= 4 and "--no-torch" in checker
    assert "2/2" in report_problems.problems_localising(data)
    # the targets are recomputed from the rows: a row contradicting a target reads short, whatever is stored
    targets = {x["target"]: x for x in report_problems.problem_targets(data)}
    named = targets[f"{loc['problem']}: localising, planted errors named (of 2)"]
    assert named["value"] == 2
    next(r for r in data["rows"] if r["section"] == "localising")["named"] = 1
    assert "planted errors named (of 2) | 1 | target >= 2: **short**" in report_problems.problems_targets(data)


@pytest.mark.parametrize("argv", [["--problems", "gmm,nope"], ["--problems", "ode", "--localising", "gmm"],
                                  ["--problems", "ode", "--cases", "0"]])
def test_problems_script_bad_option(argv, capsys):
    mod = load_script("benchmarks/problems.py")
    assert mod.main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_stochastic_errors_are_over_ten_keys_with_k_stated():
    """A stochastic method's row: the error's mean and std (ddof 1) over 10 keys split from the point's key,
    recomputed here (fails for one key reused, a single draw, or a missing k), beside the forward-pass
    equivalents by all FLOPs (the random number generator's included) and by dots only (2 evaluations)."""
    import statistics

    import gdjax
    from gdjax.bench import config as bc
    from gdjax.bench import sweep
    from gdjax.bench.problem import relative_error

    prob = _suite("ode").tiny()
    cfg = bc.BenchConfig(methods=("spsa",), problem=prob, time_budget=5.0, repeats=2)
    row = sweep.run_sweep(cfg, quick=True)["rows"][1]
    assert row["method"] == "spsa" and row["error_keys"] == 10 and row["num_directions"] == 1
    est = gdjax.gradient(prob.cost, "spsa")
    ref = prob.reference()
    errs = [relative_error(flat_numpy(est(prob.params, prob.batch, k)), ref)
            for k in jax.random.split(sweep._key_for(cfg.seed, prob.n_params), 10)]
    assert row["rel_error_mean"] == pytest.approx(statistics.mean(errs), rel=1e-6)
    assert row["rel_error_std"] == pytest.approx(statistics.stdev(errs), rel=1e-6) and row["rel_error_std"] > 0
    assert row["forward_equivalents_dot"] == pytest.approx(2.0)  # two cost evaluations' dots, no RNG
    assert row["forward_equivalents"] > row["forward_equivalents_dot"]  # the generator's integer work counted
