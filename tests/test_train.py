"""Training: the step is exact gradient descent, epochs scan shuffled batches, divergence stops, runs resume,
and the `gdjax train` command validates its options. Tiny networks, float64 unless stated."""

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import conftest
import pytest

import gdjax
from gdjax import cli, profiling, train
from gdjax import step as step_module
from gdjax.data import Batch, synthetic
from gdjax.gradients.registry import Estimator

NET = gdjax.MLP((5, 4, 3))
COST = gdjax.make_cost(NET, "quadratic")


@functools.lru_cache
def _pool(dtype):
    b = synthetic(jax.random.key(1), 100, n_in=5, n_classes=3, hidden=(6,), dtype=dtype)
    return Batch(np.asarray(b.x), np.asarray(b.y))


def _data(n=24, seed=1, dtype="float64"):
    """n examples of one cached teacher-student pool (seed 1: the first n, seed 2: the last n)."""
    b = _pool(dtype)
    sl = slice(0, n) if seed == 1 else slice(100 - n, 100)
    return Batch(jnp.asarray(b.x[sl]), jnp.asarray(b.y[sl]))


@functools.lru_cache
def _params(seed=0, dtype="float64"):
    return NET.init(jax.random.key(seed), dtype=dtype)


# --- the step ---------------------------------------------------------------------------------------------


def test_sgd_step_is_exactly_v_minus_eta_grad():
    eta, params, batch = 0.7, _params(), _data()
    state = train.init(params, optax.sgd(eta), jax.random.key(3))
    step = jax.jit(train.make_step(COST, optax.sgd(eta)))
    new, metrics = step(state, batch)
    g = jax.jit(jax.grad(COST))(params, batch)
    # bit for bit the update v - eta * grad C, compiled by the same compiler
    expected = jax.jit(lambda p, g: jax.tree_util.tree_map(lambda a, b: a - eta * b, p, g))(params, g)
    chex.assert_trees_all_equal(new.params, expected)
    assert int(new.step) == 1
    # and against NumPy's two roundings: XLA may fuse the multiply-add (one rounding), so allow 2 ulp of the terms
    for p_new, p_old, gi in zip(*(jax.tree_util.tree_leaves(t) for t in (new.params, params, g))):
        p_old, gi = np.asarray(p_old), np.asarray(gi)
        bound = 2 * np.finfo(np.float64).eps * (np.abs(p_old) + np.abs(eta * gi))
        assert np.all(np.abs(np.asarray(p_new) - (p_old - eta * gi)) <= bound)
    np.testing.assert_allclose(metrics["cost"], COST(params, batch), rtol=1e-14)
    np.testing.assert_allclose(metrics["grad_norm"], np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in
                                                                 jax.tree_util.tree_leaves(g))), rtol=1e-14)


def test_fd_step_has_the_magnitude_of_the_reverse_step():
    """With SGD the update is -eta * g, so the FD step's size and direction are the gradient's, leaf by leaf.

    Catches: an FD gradient off by a constant factor (central difference divided by eps instead of 2 eps: 2x
    too large), leaves swapped or transposed when the flat FD vector is unflattened, the wrong eta applied, or
    the estimator's options not reaching the step. A sign-only check (as after a normalising Adam step) misses
    all of the first three. Tolerance: central FD in float64 at the default eps has a truncation + rounding error
    ~1e-10 of the gradient; 1e-7 relative leaves a wide margin and is 7 orders below a factor-2 bug.
    """
    eta, params, batch = 0.7, _params(), _data()
    opt = optax.sgd(eta)
    state = train.init(params, opt, jax.random.key(0))
    s_rev, m_rev = jax.jit(train.make_step(COST, opt, "reverse"))(state, batch)
    s_fd, m_fd = jax.jit(train.make_step(COST, opt, "fd-central"))(state, batch)
    delta = lambda s: jax.tree_util.tree_map(lambda a, b: a - b, s.params, params)  # noqa: E731
    d_rev, d_fd = delta(s_rev), delta(s_fd)
    g = jax.grad(COST)(params, batch)  # the independent expectation: -eta * grad
    chex.assert_trees_all_close(d_rev, jax.tree_util.tree_map(lambda x: -eta * x, g), rtol=1e-12, atol=1e-15)
    chex.assert_trees_all_close(d_fd, d_rev, rtol=1e-7, atol=1e-12)
    assert float(train.tree_norm(d_fd)) > 1e-3  # a real step, not two zero updates agreeing
    g_norm = np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree_util.tree_leaves(g)))
    np.testing.assert_allclose(m_fd["grad_norm"], g_norm, rtol=1e-7)
    np.testing.assert_allclose(m_fd["cost"], m_rev["cost"], rtol=1e-14)


def test_step_computes_the_cost_without_a_second_forward_pass():
    """The step evaluates the cost beside the gradient (no method-name special case); under jit XLA must merge it
    with reverse mode's own forward pass. Catches a step that pays one extra forward pass per update (the
    compiled step would have the FLOPs of value_and_grad plus one cost evaluation, ~a third more)."""
    params, batch, opt = _params(), _data(), optax.sgd(0.1)
    state = train.init(params, opt, jax.random.key(0))
    step = train.make_step(COST, opt, "reverse")

    def reference(state, batch):  # the same update with the cost from jax.value_and_grad
        c, g = jax.value_and_grad(COST)(state.params, batch)
        updates, o = opt.update(g, state.opt_state, state.params)
        return train.TrainState(optax.apply_updates(state.params, updates), o, state.step + 1, state.key), {
            "cost": c, "grad_norm": train.tree_norm(g)}

    flops_step = profiling.xla_flops(step, state, batch)
    flops_ref = profiling.xla_flops(reference, state, batch)
    flops_cost = profiling.xla_flops(COST, params, batch)
    if flops_step is None or flops_ref is None:
        conftest.skip_or_fail("XLA reports no FLOP counts on this backend")
    assert flops_step <= flops_ref + 0.25 * flops_cost, (flops_step, flops_ref, flops_cost)


def _fake_estimator(stochastic=False, jittable=True):
    def fn(params, batch, key):  # a "gradient" that is the key's random draw: shows which key was used
        if key is None:
            return jax.tree_util.tree_map(jnp.zeros_like, params)
        leaves, tree = jax.tree_util.tree_flatten(params)
        ks = jax.random.split(key, len(leaves))
        return tree.unflatten([jax.random.normal(k, p.shape, p.dtype) for k, p in zip(ks, leaves)])

    return Estimator("fake", fn, lambda n: 1.0, stochastic=stochastic, jittable=jittable)


def test_stochastic_method_gets_fold_in_key_per_step(monkeypatch):
    monkeypatch.setattr(step_module, "gradient", lambda cost, method, **o: _fake_estimator(stochastic=True))
    params, batch, key = _params(), _data(), jax.random.key(5)
    step = jax.jit(train.make_step(COST, optax.sgd(1.0), "fake"))
    state = train.init(params, optax.sgd(1.0), key)
    s1, _ = step(state, batch)
    s2, _ = step(s1, batch)
    grad_key = jax.random.split(key)[1]
    fake = jax.jit(_fake_estimator(True).fn)
    for t, (before, after) in enumerate([(state, s1), (s1, s2)]):
        g = fake(params, batch, jax.random.fold_in(grad_key, t))
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a, b: a - b, before.params, after.params), g,
                                    rtol=1e-12, atol=1e-12)
    assert not np.allclose(s1.params[0].w - state.params[0].w, s2.params[0].w - s1.params[0].w)


def test_non_jittable_method_is_refused(monkeypatch):
    monkeypatch.setattr(step_module, "gradient", lambda cost, method, **o: _fake_estimator(jittable=False))
    with pytest.raises(ValueError, match="cannot run inside the jitted training step"):
        train.make_step(COST, optax.sgd(1.0), "fd-loop")


def test_optimizer_must_be_an_optax_transformation():
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        train.init(_params(), lambda g: g, jax.random.key(0))


# --- epochs -----------------------------------------------------------------------------------------------


def test_full_batch_epoch_is_one_gd_step():
    eta, params, batch = 0.5, _params(), _data()
    step = train.make_step(COST, optax.sgd(eta))
    epoch = jax.jit(train.make_epoch(step, 24, 24))
    state = train.init(params, optax.sgd(eta), jax.random.key(0))
    s_epoch, m = epoch(state, batch, jax.random.key(9))
    s_step, _ = jax.jit(step)(state, batch)
    assert m["cost"].shape == (1,)
    chex.assert_trees_all_equal(s_epoch.params, s_step.params)


def test_epoch_is_a_scan_over_the_shuffled_minibatches():
    eta, params, batch = 0.5, _params(), _data(n=26)  # 26 = 6 batches of 4, 2 examples dropped
    step = train.make_step(COST, optax.sgd(eta))
    epoch = jax.jit(train.make_epoch(step, 26, 4))
    state = train.init(params, optax.sgd(eta), jax.random.key(0))
    k = train.epoch_key(state.key, 3)
    s_scan, m = epoch(state, batch, k)
    assert m["cost"].shape == (6,) and int(s_scan.step) == 6
    perm = np.asarray(jax.random.permutation(k, 26))
    s, jstep = state, jax.jit(step)
    for i in range(6):
        idx = perm[4 * i: 4 * (i + 1)]
        s, mi = jstep(s, Batch(batch.x[idx], batch.y[idx]))
        np.testing.assert_allclose(m["cost"][i], mi["cost"], rtol=1e-13)
    # the same steps in the same order; inside the scan XLA may fuse differently: a few ulp
    chex.assert_trees_all_close(s_scan.params, s.params, rtol=1e-13, atol=1e-15)
    # another epoch key: another order -> other params
    s_other, _ = epoch(state, batch, train.epoch_key(state.key, 4))
    assert not np.allclose(s_other.params[0].w, s_scan.params[0].w)


def test_make_epoch_bad_batch_size():
    step = train.make_step(COST, optax.sgd(1.0))
    with pytest.raises(ValueError, match="batch_size must be <= the number of training examples"):
        train.make_epoch(step, 10, 11)
    with pytest.raises(ValueError, match="batch_size"):
        train.make_epoch(step, 10, 0)


# --- fit: history, logging, divergence, checkpoints --------------------------------------------------------


def test_fit_learns_and_logs(tmp_path):
    data, test = _data(n=60), _data(n=30, seed=2)
    log = tmp_path / "m.jsonl"
    res = train.fit(COST, optax.sgd(3.0), _params(), data, test, epochs=4, batch_size=6, key=jax.random.key(1),
                    learning_rate=3.0, log_path=log, progress=False)
    h = res.history
    assert [r["epoch"] for r in h] == [0, 1, 2, 3, 4]
    assert h[-1]["train_cost"] < 0.8 * h[0]["train_cost"]
    assert h[-1]["step"] == 4 * 10
    for r in h[1:]:
        assert r["epoch_s"] > 0 and r["grad_norm"] > 0 and 0 <= r["test_accuracy"] <= 1 and r["status"] == "ok"
    np.testing.assert_allclose(h[-1]["train_cost"], COST(res.params, data), rtol=1e-12)
    # the recorded accuracy is the final params' (an off-by-one epoch or train/test swap would differ)
    assert h[-1]["test_accuracy"] == pytest.approx(float(gdjax.accuracy(NET, res.params, test)), abs=1e-12)
    assert h[-1]["train_accuracy"] == pytest.approx(float(gdjax.accuracy(NET, res.params, data)), abs=1e-12)
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([r["train_cost"] for r in lines], [r["train_cost"] for r in h])
    # the caller's params were copied, not donated to the jitted epoch: still alive and unchanged
    np.testing.assert_array_equal(_params()[0].w, NET.init(jax.random.key(0), dtype="float64")[0].w)


LINEAR = gdjax.MLP((5, 3), activation="identity", output="identity")


def test_divergence_to_inf_stops_with_epoch_step_and_eta(tmp_path):
    cost = gdjax.make_cost(LINEAR, "quadratic")
    data = _data(n=40, dtype="float32")
    data = Batch(data.x * 50, data.y)
    log = tmp_path / "m.jsonl"
    with pytest.raises(train.Diverged) as info:
        train.fit(cost, optax.sgd(1e3), LINEAR.init(jax.random.key(0), dtype="float32"), data, epochs=50,
                  batch_size=4, key=jax.random.key(0), learning_rate=1e3, log_path=log, progress=False)
    err = info.value
    assert err.learning_rate == 1e3 and err.epoch == 1 and 0 <= err.step < 10
    assert "epoch 1" in str(err) and "learning rate 1000" in str(err)
    assert "mini-batch" in err.reason and ("inf" in err.reason or "nan" in err.reason), err.reason
    assert [r["epoch"] for r in err.history] == [0]  # nothing after the start is recorded as valid
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["status"] == "diverged" and last["step"] == err.step


def test_divergence_by_growth_factor():
    # full-batch GD on a linear least-squares cost with eta a little above 2/lambda_max: the cost grows
    # geometrically but stays finite; it is stopped once it exceeds 10x its start
    cost = gdjax.make_cost(LINEAR, "quadratic")
    data = _data(n=40)
    x = np.concatenate([np.asarray(data.x), np.ones((40, 1))], 1)
    lam_max = np.linalg.eigvalsh(x.T @ x / 40).max()
    eta = 2.2 / lam_max
    with pytest.raises(train.Diverged, match="exceeds 10 x its start") as info:
        train.fit(cost, optax.sgd(eta), LINEAR.init(jax.random.key(0), dtype="float64"), data, epochs=500,
                  batch_size=40, key=jax.random.key(0), learning_rate=eta, progress=False)
    h = info.value.history
    assert all(r["train_cost"] <= 10 * h[0]["train_cost"] for r in h)
    assert info.value.epoch == len(h)  # stopped in the first epoch that crossed the line


def test_save_and_load_params(tmp_path):
    p = _params()
    train.save_params(tmp_path / "p.npz", p)
    chex.assert_trees_all_equal(train.load_params(tmp_path / "p.npz"), p)
    chex.assert_trees_all_equal(train.load_params(tmp_path / "p.npz", like=p), p)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["0/b", "0/w", "1/b", "1/w"]
    with pytest.raises(ValueError, match="shape"):
        train.load_params(tmp_path / "p.npz", like=gdjax.MLP((5, 2, 3)).init(jax.random.key(0), dtype="float64"))


def test_params_and_checkpoints_are_written_through_results(tmp_path, monkeypatch):
    """Every .npz goes through results.write_bytes (temporary file, fsync, rename). Catches a writer of its own
    that can leave a half-written checkpoint after a crash, which `resume` would then fail to read."""
    from gdjax import results

    seen, real = [], results.write_bytes
    monkeypatch.setattr(results, "write_bytes", lambda path, data: seen.append(path.name) or real(path, data))
    train.save_params(tmp_path / "p.npz", _params())
    state = train.init(_params(), optax.sgd(1.0), jax.random.key(0))
    train.save_state(tmp_path / "ck.npz", state, epoch=3)
    assert seen == ["p.npz", "ck.npz"] and sorted(q.name for q in tmp_path.iterdir()) == ["ck.npz", "p.npz"]
    chex.assert_trees_all_equal(train.load_state(tmp_path / "ck.npz", state)[0], state)


def test_resume_continues_bit_for_bit(tmp_path):
    kw = dict(batch_size=6, key=jax.random.key(4), progress=False)
    data, opt = _data(n=36), optax.adam(0.05)
    full = train.fit(COST, opt, _params(), data, epochs=4, **kw)
    ck, log = tmp_path / "ck.npz", tmp_path / "m.jsonl"
    train.fit(COST, opt, _params(), data, epochs=2, checkpoint_path=ck, log_path=log, **kw)
    resumed = train.fit(COST, opt, _params(), data, epochs=4, checkpoint_path=ck, log_path=log, resume=True, **kw)
    chex.assert_trees_all_equal(resumed.state, full.state)
    assert [r["train_cost"] for r in resumed.history] == [r["train_cost"] for r in full.history]
    assert [json.loads(s)["epoch"] for s in log.read_text().splitlines()] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(COST, opt, _params(), data, epochs=5, checkpoint_path=ck, resume=True,
                  **{**kw, "batch_size": 4})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 25}, "batch_size must be <= the number of training examples"),
        ({"divergence_factor": 0.5}, "divergence_factor"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"method": "magic"}, "valid: reverse"),
        ({"test": Batch(jnp.ones((4, 6)), jnp.ones((4, 3)))}, r"test.x must have shape \(N, 5\)"),
    ],
)
def test_fit_bad_input(kwargs, match):
    kw = dict(epochs=1, batch_size=4, key=jax.random.key(0), progress=False)
    kw.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        train.fit(COST, optax.sgd(1.0), _params(), _data(), **kw)


def test_make_optimizer():
    assert isinstance(train.make_optimizer("adam", 1e-3), optax.GradientTransformation)
    with pytest.raises(ValueError, match="valid: sgd"):
        train.make_optimizer("lbfgs-ish", 1.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        train.make_optimizer("sgd", 0.0)


# --- the command --------------------------------------------------------------------------------------------

BASE = ["train", "--dataset", "digits", "--sizes", "64,8,10", "--epochs", "2", "--batch-size", "50",
        "--n-train", "200", "--n-test", "100", "--no-progress"]


def test_cli_train_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(BASE + ["--out", str(out)]) == 0
    assert "epoch 2:" in capsys.readouterr().out
    recs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1, 2] and recs[-1]["train_cost"] < recs[0]["train_cost"]
    p = train.load_params(out / "params.npz")
    assert [layer.w.shape for layer in p] == [(64, 8), (8, 10)]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["sizes"] == [64, 8, 10] and config["eta"] == 3.0
    _, epoch, _, _ = train.load_state(out / "checkpoint.npz", train.init(p, optax.sgd(1.0), jax.random.key(0)))
    assert epoch == 2


def test_cli_train_default_output_is_a_fresh_runs_folder(tmp_path, monkeypatch, capsys):
    """Without --out a run goes to runs/train-<date>/ under the working folder, never to a committed path;
    --resume without --out is refused before any work (there is nothing to continue in a fresh folder)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(BASE) == 0
    (run,) = (tmp_path / "runs").glob("train-*")
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "checkpoint.npz", "params.npz"}
    assert str(run.name) in capsys.readouterr().out
    assert cli.main(BASE + ["--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, match",
    [
        (["--eta", "0"], "--eta must be finite and > 0"),
        (["--eta", "-1"], "--eta must be finite and > 0"),
        (["--eta", "nan"], "--eta must be finite and > 0"),
        (["--eta", "inf"], "--eta must be finite and > 0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["--batch-size", "201"], "--batch-size 201 is larger than the 200 training examples"),
        (["--epochs", "0"], "--epochs must be an integer >= 1"),
        (["--optimizer", "lbfgs"], "unknown --optimizer 'lbfgs'; valid: sgd, momentum"),
        (["--method", "magic"], "unknown --method 'magic'; valid: reverse"),
        (["--dataset", "cifar"], "unknown --dataset 'cifar'; valid: digits, fashion-mnist, mnist"),
        (["--sizes", "784,30,10"], "--sizes 784,30,10 does not fit digits"),
        (["--sizes", "64,30,7"], "the last its 10 classes"),
        (["--sizes", "64,x"], "expected comma-separated integers"),
        (["--loss", "hinge"], "unknown --loss"),
    ],
)
def test_cli_train_bad_input_one_line_nonzero(tmp_path, capsys, change, match):
    try:
        code = cli.main(BASE + ["--out", str(tmp_path / "o")] + change)
    except SystemExit as e:  # argparse's own errors (a malformed --sizes) exit through _Parser.error
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def _one_line_error(capsys, argv) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, (code, err)
    return err


def test_cli_train_method_options_and_the_run_folder(tmp_path, capsys):
    """Issue 23, the CLI: method options could not be passed; an existing --out was silently overwritten;
    --resume accepted a changed --eta, started afresh on a missing folder, said nothing when there was nothing
    to do, and ended in a zipfile traceback on a truncated checkpoint; config.json said divergence_factor null."""
    out = tmp_path / "run"
    spsa = BASE + ["--method", "spsa", "--out", str(out)]
    # options: checked against the method's own before any work, the valid list in the one line
    err = _one_line_error(capsys, spsa + ["--option", "num_directions=4", "--option", "foo=1"])
    assert "--option foo: not an option of method 'spsa'; its options: eps, num_directions" in err
    assert "expected NAME=VALUE" in _one_line_error(capsys, spsa + ["--option", "num_directions"])
    assert "num_directions" in _one_line_error(capsys, spsa + ["--option", "num_directions=0"])
    assert not out.exists()
    assert cli.main(spsa + ["--option", "num_directions=4", "--option", "eps=1e-3"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["method_options"] == {"num_directions": 4, "eps": 1e-3}
    assert config["divergence_factor"] == train.DIVERGENCE_FACTOR == 10
    capsys.readouterr()
    # an existing run is not overwritten by accident
    err = _one_line_error(capsys, spsa + ["--option", "num_directions=4", "--option", "eps=1e-3"])
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    # --resume: the same settings only; changed keys named
    err = _one_line_error(capsys, spsa + ["--option", "num_directions=4", "--option", "eps=1e-3", "--resume",
                                          "--eta", "1.0"])
    assert "other settings" in err and "eta: 3.0 -> 1.0" in err
    err = _one_line_error(capsys, spsa + ["--option", "num_directions=8", "--option", "eps=1e-3", "--resume"])
    assert "method_options" in err
    # nothing left to do: said, exit 0, nothing rewritten
    before = (out / "metrics.jsonl").read_text()
    assert cli.main(spsa + ["--option", "num_directions=4", "--option", "eps=1e-3", "--resume"]) == 0
    assert "already at 2 epochs (--epochs 2); nothing to do" in capsys.readouterr().out
    assert (out / "metrics.jsonl").read_text() == before
    # a missing folder is not a run to continue
    err = _one_line_error(capsys, BASE + ["--out", str(tmp_path / "missing"), "--resume"])
    assert "does not exist" in err
    # a truncated checkpoint: one line, exit 2
    ck = out / "checkpoint.npz"
    ck.write_bytes(ck.read_bytes()[:200])
    err = _one_line_error(capsys, spsa + ["--option", "num_directions=4", "--option", "eps=1e-3", "--resume",
                                          "--epochs", "3"])
    assert "checkpoint.npz: damaged or not an .npz file" in err
    # --overwrite replaces the run
    assert cli.main(BASE + ["--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["method"] == "reverse"


def test_cli_train_resume_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(BASE + ["--out", str(out), "--epochs", "1"]) == 0
    assert cli.main(BASE + ["--out", str(out), "--epochs", "2", "--resume"]) == 0
    assert "resumed at epoch 1" in capsys.readouterr().out
    recs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1, 2]


def test_fit_resume_refuses_changed_settings(tmp_path):
    data = _data()
    kw = dict(batch_size=6, key=jax.random.key(1), progress=False, checkpoint_path=tmp_path / "ck.npz",
              method="fd-central")
    train.fit(COST, optax.sgd(3.0), _params(), data, epochs=1, learning_rate=3.0, **kw)
    with pytest.raises(ValueError, match="another configuration.*learning_rate: 3.0 -> 1.0"):
        train.fit(COST, optax.sgd(1.0), _params(), data, epochs=2, learning_rate=1.0, resume=True, **kw)
    with pytest.raises(ValueError, match="method_options"):
        train.fit(COST, optax.sgd(3.0), _params(), data, epochs=2, learning_rate=3.0, resume=True,
                  method_options={"chunk_size": 4}, **kw)
    res = train.fit(COST, optax.sgd(3.0), _params(), data, epochs=1, learning_rate=3.0, resume=True, **kw)
    assert res.start_epoch == 1 and len(res.history) == 2  # nothing left to do: no epoch run


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    p = _params()
    state = train.init(p, optax.sgd(1.0), jax.random.key(0))
    train.save_state(tmp_path / "ck.npz", state, epoch=1)
    raw = (tmp_path / "ck.npz").read_bytes()
    (tmp_path / "ck.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(train.CheckpointError, match="ck.npz: damaged or not an .npz file"):
        train.load_state(tmp_path / "ck.npz", state)
    with pytest.raises(ValueError, match="damaged"):  # a CheckpointError is a ValueError
        train.load_params(tmp_path / "ck.npz", like=p)


def test_no_import_cycle_between_fit_and_train():
    """fit.py and train.py imported each other (closed by train.__getattr__); now step <- fit <- train, and
    checkpoint.py imports neither."""
    import ast
    import pathlib

    root = pathlib.Path(gdjax.__file__).parent

    def imports(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return found

    assert not {"gdjax.fit", "gdjax.train"} & imports("step")
    assert "gdjax.train" not in imports("fit")
    assert not {"gdjax.fit", "gdjax.train", "gdjax.step"} & imports("checkpoint")
    assert not hasattr(train, "__getattr__")
    for name in ("fit", "FitResult", "Diverged", "DIVERGENCE_FACTOR", "save_state", "load_state", "save_params",
                 "load_params", "make_step", "make_epoch", "init", "TrainState"):
        assert hasattr(train, name), name


# --- budgets and the traced learning rate -----------------------------------------------------------------


def test_fit_chunks_record_every_and_stop_at_epochs():
    """Catches a chunked run that trains other batches than the per-epoch run (an off-by-one slice, a chunk that
    crosses an epoch's end or reshuffles), records at the wrong steps, or misses the epochs budget."""
    data, kw = _data(n=60), dict(batch_size=6, key=jax.random.key(3), progress=False)
    whole = train.fit(COST, optax.sgd(2.0), _params(), data, epochs=2, **kw)
    parts = train.fit(COST, optax.sgd(2.0), _params(), data, epochs=2, record_every=3, **kw)
    assert [r["step"] for r in parts.history] == [0, 3, 6, 9, 10, 13, 16, 19, 20]  # 10 batches: 3 + 3 + 3 + 1
    assert [r["epoch"] for r in parts.history] == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [r["stopped_by"] for r in parts.history] == [None] * 8 + ["epochs"] and parts.stopped_by == "epochs"
    chex.assert_trees_all_equal(parts.params, whole.params)  # same stream, same order of operations
    assert parts.history[-1]["train_cost"] == whole.history[-1]["train_cost"]


def test_fit_stops_at_fpe_budget_counted_from_the_compiled_step():
    """Catches an FPE count that is not the estimator's own cost (reverse about 3 passes, fd-forward about
    P + 1 cost evaluations, the registry's count), a budget checked before the step that crosses it, or a
    run that goes on past it."""
    data, kw = _data(n=60), dict(batch_size=6, key=jax.random.key(3), progress=False, record_every=1)
    rev = train.fit(COST, optax.sgd(1.0), _params(), data, max_fpe=1.0, **kw)
    assert 1.5 < rev.fpe_per_step < 6.0  # value_and_grad: a forward and a backward pass
    budget = 4.5 * rev.fpe_per_step
    res = train.fit(COST, optax.sgd(1.0), _params(), data, max_fpe=budget, **kw)
    assert res.stopped_by == "fpe" and [r["step"] for r in res.history] == [0, 1, 2, 3, 4, 5]
    assert [r["fpe"] for r in res.history] == pytest.approx([s * rev.fpe_per_step for s in range(6)], rel=1e-12)
    fd = train.fit(COST, optax.sgd(1.0), _params(), data, max_fpe=1.0, method="fd-forward", **kw)
    evaluations = gdjax.gradient(COST, "fd-forward").evaluations(NET.n_params())  # P + 1
    # XLA FLOPs, not evaluations: the FD kernel shares work between directions (layers before the perturbed one)
    # and the step adds the cost beside the gradient, so the ratio is near P + 1, not equal; a count that missed
    # the loop's trip count or the chunk length would be off by a factor of P or more
    assert 0.6 * evaluations < fd.fpe_per_step < 1.2 * (evaluations + 1), (fd.fpe_per_step, evaluations)


def test_fit_stops_at_seconds_budget_and_on_callback():
    """Catches a time budget compared with the wrong clock (eval time counted, or the per-chunk time instead
    of the cumulative one), a stop before the budget is spent, and a callback's True ignored."""
    data, kw = _data(n=60), dict(batch_size=6, key=jax.random.key(3), progress=False, record_every=1)
    res = train.fit(COST, optax.sgd(1.0), _params(), data, max_seconds=0.02, **kw)
    wall = [r["wall_s"] for r in res.history]
    assert res.stopped_by == "seconds" and wall[-1] >= 0.02 > wall[-2]
    assert wall == pytest.approx(np.cumsum([r["epoch_s"] for r in res.history]).tolist(), rel=1e-9)
    seen = []
    res = train.fit(COST, optax.sgd(1.0), _params(), data, epochs=3, callback=lambda r: seen.append(r["step"])
                    or r["step"] >= 4, **kw)
    assert res.stopped_by == "callback" == res.history[-1]["stopped_by"] and seen == [0, 1, 2, 3, 4]
    # epochs and seconds together: the first reached stops it (here epochs, long before 1e6 s)
    res = train.fit(COST, optax.sgd(1.0), _params(), data, epochs=1, max_seconds=1e6, **kw)
    assert res.stopped_by == "epochs" and res.history[-1]["step"] == 10


@pytest.mark.parametrize("budget, err, needle", [
    ({}, ValueError, "epochs="), ({"epochs": 0}, ValueError, "epochs"),
    ({"max_seconds": -1.0}, ValueError, "max_seconds"), ({"max_seconds": "1"}, TypeError, "max_seconds"),
    ({"max_fpe": float("nan")}, ValueError, "max_fpe"), ({"max_fpe": 0}, ValueError, "max_fpe"),
    ({"epochs": 1, "record_every": 0}, ValueError, "record_every"),
])
def test_fit_bad_budgets_refused_before_work(budget, err, needle, monkeypatch):
    monkeypatch.setattr(train.fit.__globals__["_Programs"], "__init__", lambda *a: pytest.fail("worked first"))
    with pytest.raises(err, match=needle):
        train.fit(COST, optax.sgd(1.0), _params(), _data(), batch_size=6, key=jax.random.key(0), progress=False,
                  **budget)


_BACKEND_COMPILES = []


def _count_compiles(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        _BACKEND_COMPILES.append(duration)


jax.monitoring.register_event_duration_secs_listener(_count_compiles)  # jax 0.4.30+: counts XLA compilations


def test_traced_learning_rate_sweep_compiles_once_and_matches_plain_sgd():
    """Catches a learning rate baked into the compiled program (the second rate recompiles), one that is
    ignored (both rates give the first one's run), or a traced update that differs from optax.sgd(eta)."""
    data, kw = _data(n=60), dict(epochs=2, batch_size=6, key=jax.random.key(4), progress=False, record_every=5)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    runs = {}
    for eta in (0.5, 2.0):
        before = len(_BACKEND_COMPILES)
        runs[eta] = train.fit(COST, opt, _params(), data, learning_rate=eta, **kw)
        compiles = len(_BACKEND_COMPILES) - before
        if eta == 2.0:
            assert compiles == 0 and runs[eta].compile_s == 0.0, compiles
        else:
            assert compiles >= 2  # the chunk and the evaluation, at least (the listener works)
    for eta, res in runs.items():
        plain = train.fit(COST, optax.sgd(eta), _params(), data, **kw)
        # float64; the traced rate is a float64 array, the plain one a Python float: the same products
        chex.assert_trees_all_close(res.params, plain.params, rtol=1e-12, atol=0)
        assert res.history[-1]["learning_rate"] == eta
    assert runs[0.5].history[-1]["train_cost"] != runs[2.0].history[-1]["train_cost"]


def test_kept_programs_never_serve_another_setup():
    """Catches a program cache keyed too loosely (a silent wrong answer): the same optimiser object with another
    cost (l2) or other method options (spsa's directions) must train its own program, the numbers equal to
    those of a fresh cache; and count_fpe records FPE without stopping the run."""
    data, kw = _data(n=60), dict(epochs=1, key=jax.random.key(5), progress=False, record_every=4)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)
    decayed = gdjax.make_cost(NET, "quadratic", l2=0.5)
    calls = [(COST, "spsa", {"num_directions": 1}, 6), (decayed, "spsa", {"num_directions": 1}, 6),
             (COST, "spsa", {"num_directions": 2}, 6)]
    kept = [train.fit(c, opt, _params(), data, method=m, method_options=o, batch_size=b, learning_rate=0.05, **kw)
            for c, m, o, b in calls]
    for (c, m, o, b), res in zip(calls, kept):
        train.fit.__globals__["_CACHE"].clear()
        fresh = train.fit(c, opt, _params(), data, method=m, method_options=o, batch_size=b, learning_rate=0.05, **kw)
        chex.assert_trees_all_equal(res.params, fresh.params)
    finals = {r.history[-1]["train_cost"] for r in kept}
    assert len(finals) == len(calls)  # three setups, three different runs
    counted = train.fit(COST, opt, _params(), data, batch_size=6, count_fpe=True, **kw)
    assert counted.stopped_by == "epochs" and counted.fpe_per_step > 1
    assert counted.history[-1]["fpe"] == pytest.approx(10 * counted.fpe_per_step, rel=1e-12)


def test_budget_stop_within_an_epoch_resumes_from_its_checkpoint(tmp_path):
    """Catches a checkpoint written mid-epoch (a resume would replay or skip batches) and a resumed chunked run
    that differs from an uninterrupted one: stopped by FPE inside epoch 2, resumed to 3 epochs, bit for bit."""
    data, kw = _data(n=60), dict(batch_size=6, key=jax.random.key(6), progress=False, record_every=4)
    ck, log = tmp_path / "ck.npz", tmp_path / "m.jsonl"
    whole = train.fit(COST, optax.sgd(1.0), _params(), data, epochs=3, **kw)
    first = train.fit(COST, optax.sgd(1.0), _params(), data, max_fpe=1.0, checkpoint_path=ck, **kw)
    assert not ck.exists()  # stopped after 4 steps, within epoch 1: no checkpoint
    budget = 14.5 * first.fpe_per_step  # past step 14: the chunk ending at step 18 (epoch 2: steps 10..20)
    stopped = train.fit(COST, optax.sgd(1.0), _params(), data, max_fpe=budget, checkpoint_path=ck, log_path=log,
                        **kw)
    assert stopped.stopped_by == "fpe" and stopped.history[-1]["step"] == 18
    resumed = train.fit(COST, optax.sgd(1.0), _params(), data, epochs=3, checkpoint_path=ck, log_path=log,
                        resume=True, **kw)
    assert resumed.start_epoch == 1  # the checkpoint of epoch 1's end, not of step 18
    chex.assert_trees_all_equal(resumed.params, whole.params)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in whole.history]
    assert [json.loads(s)["step"] for s in log.read_text().splitlines()] == [r["step"] for r in whole.history]
