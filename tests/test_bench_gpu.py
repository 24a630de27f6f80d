"""benchmarks/bench_gpu.py (`make bench-gpu`) runs its whole plan on the CPU with tiny sizes, so that the first
GPU run does not fail on a typo; without a GPU it says so in one line."""

import json

import jax
import pytest

from conftest import load_script, skip_or_fail


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/bench_gpu.py")


def test_plan_runs_on_cpu_tiny(script, tmp_path, capsys):
    """Every step writes its results: the quick sweep, kernel vs loop at each N, the (time-boxed) full sweep.
    Fails on a broken step, a missing file or a kernel-vs-loop row without its ratio."""
    rc = script.main(["--allow-cpu", "--tiny", "--out", str(tmp_path), "--budget-s", "300"])
    assert rc == 0, capsys.readouterr().err
    for name in ("fd_vs_grad.json", "kernel_vs_loop.json", "fd_vs_grad_full.json"):
        data = json.loads((tmp_path / name).read_text())
        assert data["rows"], name
    kv = json.loads((tmp_path / "kernel_vs_loop.json").read_text())["rows"]
    assert sorted({r["batch_size"] for r in kv}) == [10, 64]
    assert all(r["how"] == "whole" and r["fd_loop_over_kernel"] > 0 for r in kv)
    assert "bench_gpu: done" in capsys.readouterr().out


def test_without_gpu_one_line(script, tmp_path, capsys):
    """On a machine without a GPU: one line, exit 0 (3 with --require-gpu), nothing written."""
    if jax.default_backend() == "gpu":
        skip_or_fail("a GPU is present: the no-GPU message cannot be shown here (CI machines have no GPU)")
    assert script.main(["--out", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no NVIDIA GPU" in out
    assert script.main(["--out", str(tmp_path / "x"), "--require-gpu"]) == 3
    assert not (tmp_path / "x").exists()
