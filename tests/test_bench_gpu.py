"""benchmarks/bench_gpu.py (`make bench-gpu`) runs its whole plan on the CPU with tiny sizes, so that the first
GPU run does not fail on a typo; its budget arithmetic and its choice of the largest net are checked on planted
times; without a GPU it says so in one line. Nothing here needs a GPU, and nothing skips on a GPU runner."""

import json

import jax
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/bench_gpu.py")


def test_budget_plan_adds_up(script):
    """The steps in order (precision trade-off first), each deadline its share after the previous one, the
    last exactly at the budget: catches a step that could run past 8 minutes or starve the others."""
    plan = script.budget_plan(100.0, 480.0)
    assert list(plan) == ["precision", "quick", "kernel", "full"]
    deadlines = [d for _, d in plan.values()]
    assert deadlines == sorted(deadlines) and deadlines[-1] == pytest.approx(580.0)
    assert sum(share for share, _ in plan.values()) == pytest.approx(480.0)
    starts = [100.0] + deadlines[:-1]
    assert all(d - s == pytest.approx(share) for (share, d), s in zip(plan.values(), starts))


def test_largest_fitting_net_from_planted_times(script):
    """With the lecture net's gradient planted at 1 s, the predictions grow with evaluations x forward FLOPs
    (~P^2 here) and the largest candidate under the point budget is chosen; none fits: None."""
    cands = [(784, h, 10) for h in script.WIDTHS]
    big, pred = script.largest_fitting(cands, 1000, (784, 30, 10), 1.0, 200.0)
    values = [pred["-".join(map(str, c))] for c in cands]
    assert values == sorted(values)
    assert pred["784-300-10"] == pytest.approx((238_510 / 23_860) ** 2, rel=0.02)  # P ratio squared
    assert big == max((c for c in cands if pred["-".join(map(str, c))] <= 200.0), key=lambda c: c[1])
    assert big == (784, 300, 10)  # (795,010 / 23,860)^2 ~ 1110 s is over 200 s; 300 wide ~ 100 s fits
    assert script.largest_fitting(cands, 1000, (784, 30, 10), 1.0, 1.0)[0] is None
    assert script.largest_fitting(cands, 1000, (784, 30, 10), None, 1.0) == (None, {})


def test_precision_step_on_cpu_tiny(script, tmp_path, capsys):
    """The precision trade-off on tiny nets: at each net, jax.grad and each FD method at full float32 and TF32,
    each row with the precision in force and the memory fields; every planned point is either measured or
    listed as not run (the deadline); the larger net is a candidate whose prediction fits. Fails on a row
    without its precision, a point silently dropped, or a net chosen over its budget."""
    rc = script.main(["--allow-cpu", "--tiny", "--out", str(tmp_path), "--budget-s", "600", "--steps", "precision"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["precision_tradeoff.json"]
    pt = json.loads((tmp_path / "precision_tradeoff.json").read_text())
    cfg = pt["config"]
    plan, _, _, _ = script.plans(tiny=True)
    assert cfg["largest"] in [list(c) for c in plan["candidates"]]
    assert cfg["predicted_s"]["-".join(map(str, cfg["largest"]))] <= cfg["point_budget_s"]
    assert cfg["predicted_s"]["16-10000-4"] > cfg["point_budget_s"]
    assert pt["meta"]["matmul_precision"] == "highest" and "jax_default_matmul_precision" in pt["meta"]
    planned = {("reverse", "default"), *((m, p) for m in ("fd-forward", "fd-central")
                                         for p in ("highest", "tensorfloat32"))}
    for sizes in ("16-8-4", "-".join(map(str, cfg["largest"]))):
        got = {(r["method"], r["matmul_precision"]) for r in pt["rows"] if r["sizes"] == sizes}
        left = {(r["method"], r["matmul_precision"] or "default") for r in cfg["not_run"] if r["sizes"] == sizes}
        if ("all", "default") in left:
            assert not got  # the deadline passed before this net
            continue
        assert ("forward-pass", "default") in got and (got - {("forward-pass", "default")}) | left == planned
    assert any(r["sizes"] == "16-8-4" and r["method"] == "fd-forward" for r in pt["rows"])
    for r in pt["rows"]:
        assert "memory_total_bytes" in r and "device_peak_bytes" in r
        if r["method"].startswith("fd-") and r["how"] == "whole":
            assert r["rel_error"] is not None and r["rel_error"] < 0.05  # tiny float32 FD: well under 1%


def test_other_steps_on_cpu_tiny(script, tmp_path, capsys):
    """The quick sweep, kernel vs loop at each N, the (time-boxed) full sweep: each writes its results. Fails
    on a broken step, a missing file or a kernel-vs-loop row without its ratio."""
    rc = script.main(["--allow-cpu", "--tiny", "--out", str(tmp_path), "--budget-s", "300",
                      "--steps", "quick,kernel,full"])
    assert rc == 0, capsys.readouterr().err
    for name in ("fd_vs_grad.json", "kernel_vs_loop.json", "fd_vs_grad_full.json"):
        data = json.loads((tmp_path / name).read_text())
        assert data["rows"], name
    assert not (tmp_path / "precision_tradeoff.json").exists()
    kv = json.loads((tmp_path / "kernel_vs_loop.json").read_text())["rows"]
    assert sorted({r["batch_size"] for r in kv}) == [10, 64]
    assert all(r["how"] == "whole" and r["fd_loop_over_kernel"] > 0 for r in kv)
    assert "bench_gpu: done" in capsys.readouterr().out


def test_bad_steps_one_line(script, capsys):
    """--steps with an unknown step: exit 2 and one line naming the valid steps, before any work."""
    assert script.main(["--allow-cpu", "--steps", "precision,gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--steps" in err and "precision, quick, kernel, full" in err and "\n" not in err


def test_without_gpu_one_line(script, tmp_path, capsys, monkeypatch):
    """On a machine without a GPU: one line, exit 0 (3 with --require-gpu), nothing written. On a GPU runner
    the absence of a GPU is simulated (the script's device lookup replaced), so the test applies there too."""
    if jax.default_backend() == "gpu":
        monkeypatch.setattr(script, "gpu_device", lambda allow_cpu: (None, "no GPU (simulated by the test)"))
    assert script.main(["--out", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no NVIDIA GPU" in out
    assert script.main(["--out", str(tmp_path / "x"), "--require-gpu"]) == 3
    assert not (tmp_path / "x").exists()
