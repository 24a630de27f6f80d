"""Scaling out: FD over 1, 2 and 4 forced host devices and over 2 processes on loopback, data-parallel training
with a sharded batch, the runtime's options (the launcher: test_launch.py; meshes and shardings: test_sharding.py).

The multi-device and multi-process runs happen in subprocesses (a JAX process fixes its device count and its
distributed runtime at start): this file doubles as the worker script, `python tests/test_distributed.py
worker`, which computes the gradients of a tiny float64 network with every FD method and three data-parallel
training steps, then prints one `RESULT {json}` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import lru_cache

import numpy as np
import pytest

import gdjax
from gdjax import cli, distributed, sharding
from gdjax.launch import free_port

HERE = os.path.abspath(__file__)
# One method per sharded code path: the FD kernel (all its schemes share `map_directions`) and layer-wise FD.
FD_METHODS = ("fd-central", "fd-layerwise")
CHUNK = 4  # directions per vmapped chunk: 39 parameters -> chunks padded over 1, 2 and 4 devices
# Each direction's perturbed cost is the same arithmetic whichever device evaluates it, but XLA may compile a
# differently shaped shard (and the data-parallel all-reduce sums partial means) in another order: agreement
# to a few float64 ulps of the gradient's scale, not bit for bit.
RTOL, ATOL = 1e-12, 1e-14


# --- the worker (runs in a subprocess) ---------------------------------------------------------------------------


def _worker() -> None:
    """Compute FD gradients and three data-parallel training steps; print `RESULT {json}`."""
    import jax
    import optax
    from jax.flatten_util import ravel_pytree

    from gdjax import train

    jax.config.update("jax_enable_x64", True)
    distributed.initialize_from_env()  # a no-op outside `gdjax launch` (GDJAX_COORDINATOR unset)

    net = gdjax.MLP((5, 4, 3))  # 39 parameters
    cost = gdjax.make_cost(net, "quadratic")
    rng = np.random.default_rng(7)  # numpy, not eager jax ops: each of those would compile (seconds in all)
    params = tuple(gdjax.Layer(rng.normal(size=(m, n)), rng.normal(size=n)) for m, n in ((5, 4), (4, 3)))
    batch = gdjax.Batch(rng.uniform(size=(8, 5)), np.eye(3)[rng.integers(0, 3, size=8)])
    x, y = batch

    def flat(tree):
        return ravel_pytree(sharding.gather(tree))[0].tolist()

    grads, sharded_over = {}, {}
    missing = [m for m in FD_METHODS if m not in gdjax.available_methods()]
    for method in FD_METHODS:
        if method not in missing:
            est = gdjax.gradient(cost, method, chunk_size=CHUNK)  # default: every device of every process
            grads[method] = flat(est(params, batch))
            sharded_over[method] = est.options.get("n_devices")
    grads["reverse"] = flat(jax.jit(jax.grad(cost))(params, batch))

    mesh = sharding.device_mesh()
    opt = optax.sgd(0.5)
    step = jax.jit(train.make_step(cost, opt, "reverse"))
    state = sharding.replicate(train.init(params, opt, jax.random.key(1)), mesh)
    sharded = sharding.shard_batch(batch, mesh)
    costs = []
    for _ in range(3):
        state, metrics = step(state, sharded)
        costs.append(float(sharding.gather(metrics["cost"])))
    try:
        sharding.shard_batch(gdjax.Batch(x[:7], y[:7]), mesh)
        indivisible = None
    except ValueError as err:
        indivisible = str(err)

    info = distributed.process_info()
    print("RESULT " + json.dumps({
        "process_id": info.process_id, "num_processes": info.num_processes,
        "global_devices": info.global_device_count, "batch_shards": len(sharded.x.sharding.device_set),
        "missing": missing, "grads": grads, "sharded_over": sharded_over, "trained": flat(state.params), "costs": costs,
        "indivisible": indivisible,
    }), flush=True)


# --- helpers of the tests --------------------------------------------------------------------------------------


def _env(devices: int = 1) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDJAX_")}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _results(stdout: str) -> list[dict]:
    """Every `RESULT {json}` line (optionally prefixed `[i] ` by the launcher), ordered by process id."""
    rows = [json.loads(line.split("RESULT ", 1)[1]) for line in stdout.splitlines() if "RESULT {" in line]
    return sorted(rows, key=lambda r: r["process_id"])


def _start_worker(devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HERE, "worker"], env=_env(devices), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
    (row,) = _results(out)
    assert not row["missing"], f"FD methods not registered: {row['missing']}"
    return row


@lru_cache(maxsize=None)
def _one_device() -> dict:
    return _finish(_start_worker(1))


def _assert_same(row: dict, ref: dict, what: str) -> None:
    for method, g in ref["grads"].items():
        np.testing.assert_allclose(row["grads"][method], g, rtol=RTOL, atol=ATOL, err_msg=f"{what}: {method}")
    np.testing.assert_allclose(row["trained"], ref["trained"], rtol=RTOL, atol=ATOL, err_msg=f"{what}: training")
    np.testing.assert_allclose(row["costs"], ref["costs"], rtol=RTOL, atol=ATOL, err_msg=f"{what}: costs")


# --- multi-device and multi-process ------------------------------------------------------------------------------


def test_fd_and_training_identical_on_1_2_4_forced_host_devices():
    procs = {k: _start_worker(k) for k in (2, 4)}
    ref = _one_device()
    # the reference is a real gradient: central differences agree with jax.grad to O(eps^2) in float64
    np.testing.assert_allclose(ref["grads"]["fd-central"], ref["grads"]["reverse"], rtol=1e-6, atol=1e-9)
    assert ref["global_devices"] == 1 and ref["indivisible"] is None
    for k, proc in procs.items():
        row = _finish(proc)
        assert row["global_devices"] == k and row["num_processes"] == 1
        assert row["batch_shards"] == k  # the training batch really is split across the k devices
        assert row["sharded_over"] == {m: k for m in FD_METHODS}  # and so are the FD directions
        assert "multiple of the" in row["indivisible"]  # 7 examples do not split over 2 or 4 devices
        _assert_same(row, ref, f"{k} devices")


def test_two_processes_on_loopback_match_one_process():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gdjax.cli", "launch", "-n", "2", "--timeout", "120", "--",
                           "python", HERE, "worker"], env=_env(1), text=True, capture_output=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    rows = _results(proc.stdout)
    assert [r["process_id"] for r in rows] == [0, 1], proc.stdout[-3000:]
    for row in rows:
        assert row["num_processes"] == 2 and row["global_devices"] == 2 and row["batch_shards"] == 2
        assert row["sharded_over"] == {m: 2 for m in FD_METHODS}
    # replicated output: every process holds the very same gradient, bit for bit
    assert rows[0]["grads"] == rows[1]["grads"] and rows[0]["trained"] == rows[1]["trained"]
    ref = _one_device()
    _assert_same(rows[0], ref, "2 processes")
    assert time.monotonic() - start < 140


def test_gdjax_launch_devices_runs_the_cli_in_two_processes():
    proc = subprocess.run([sys.executable, "-m", "gdjax.cli", "launch", "-n", "2", "--timeout", "60", "--",
                           "devices"], env=_env(1), text=True, capture_output=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    for i in range(2):  # each gdjax process joined the runtime from the launcher's environment
        assert f"[{i}] process {i} of 2: 1 local / 2 global cpu device(s); all-reduce over them: 2" in proc.stdout


def test_unreachable_coordinator_fails_fast_with_one_line():
    env = _env(1)
    env.update({distributed.ENV_COORDINATOR: f"127.0.0.1:{free_port()}",
                distributed.ENV_NUM_PROCESSES: "2", distributed.ENV_PROCESS_ID: "1", distributed.ENV_TIMEOUT: "2"})
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gdjax.cli", "devices"], env=env, text=True, capture_output=True,
                          timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not reach the JAX coordinator" in lines[0], proc.stderr
    assert elapsed < 20  # 2 s of waiting plus interpreter start, instead of hanging


def test_devices_command_in_one_process(capsys):
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "process 0 of 1" in out and "ok" in out


# --- options and validation (no runtime started) ---------------------------------------------------------------


def test_options_from_env():
    assert distributed.options_from_env({}) is None
    env = {"GDJAX_COORDINATOR": "10.0.0.1:1234", "GDJAX_NUM_PROCESSES": "4", "GDJAX_PROCESS_ID": "3",
           "GDJAX_INIT_TIMEOUT": "7.5"}
    assert distributed.options_from_env(env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                                  "process_id": 3, "timeout_s": 7.5}
    with pytest.raises(ValueError, match="GDJAX_PROCESS_ID"):
        distributed.options_from_env({"GDJAX_COORDINATOR": "h:1", "GDJAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match="GDJAX_INIT_TIMEOUT"):
        distributed.options_from_env({**env, "GDJAX_INIT_TIMEOUT": "soon"})


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"coordinator_address": "h:1", "num_processes": 2}, ValueError, "together"),
    ({"coordinator_address": "nohost", "num_processes": 2, "process_id": 0}, ValueError, "host:port"),
    ({"coordinator_address": "h:99999", "num_processes": 2, "process_id": 0}, ValueError, "host:port"),
    ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, ValueError, "num_processes"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, ValueError, "process_id"),
    ({"coordinator_address": "h:1", "num_processes": 2.0, "process_id": 0}, TypeError, "num_processes"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 0, "timeout_s": 0}, ValueError, "timeout_s"),
])
def test_initialize_bad_arguments(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        distributed.initialize(**kwargs)


def test_initialize_after_a_computation_is_refused():
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # this process has computed: too late to join a runtime
    with pytest.raises(ValueError, match="before any JAX computation"):
        distributed.initialize("127.0.0.1:1", 2, 1, timeout_s=1)


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    _worker()
