"""benchmarks/fd_kernel.py: a quick run on a tiny net (rows, per-round ratios recomputed from the raw times,
the figure), the targets' status from planted times, and bad options."""

import json

import numpy as np
import pytest
from conftest import load_script

SCRIPT = "benchmarks/fd_kernel.py"


def test_quick_run_ratios_recomputed_from_the_raw_round_times(tmp_path):
    """Catches: a ratio of medians instead of the median of same-round ratios; a rate from the analytic count
    labelled as XLA's; a kernel and a loop that disagree; an output folder refused (--out must be accepted as
    a folder, the JSON named inside it)."""
    mod = load_script(SCRIPT)
    assert mod.main(["--quick", "--batches", "10", "--chunks", "3", "--rounds", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "fd_kernel.json").read_text())
    assert "git_dirty" in data["meta"] and data["meta"]["platform"]
    rows = {(r["method"], r["default_chunk"]): r for r in data["rows"]}
    assert set(rows) == {("fd-forward", True), ("fd-forward", False), ("fd-loop", False)}
    loop, kernel, chunk3 = rows[("fd-loop", False)], rows[("fd-forward", True)], rows[("fd-forward", False)]
    p = kernel["n_params"]
    assert p == 20 * 8 + 8 + 8 * 4 + 4 and kernel["forward_flops"] == 10 * (2 * (20 * 8 + 8 * 4) + 8 + 4)
    assert chunk3["chunk_size"] == 3 and kernel["chunk_size"] >= 1 and loop["chunk_size"] is None
    for r in rows.values():
        assert r["evaluations"] == p + 1
        assert r["work_flops"] == pytest.approx(r["evaluations"] * r["forward_xla_flops"])
        ts, mm, lt = np.array(r["times_s"]), np.array(r["matmul_rates"]), np.array(loop["times_s"])
        assert len(ts) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["of_matmul"] == pytest.approx(np.median(r["work_flops"] / ts / mm))
        assert r["of_matmul_analytic"] == pytest.approx(np.median((p + 1) * r["forward_flops"] / ts / mm))
        assert r["loop_over_kernel"] == pytest.approx(np.median(lt / ts))
        assert r["bound_loop_over_kernel"] == pytest.approx(np.median(lt / (r["work_flops"] / mm)))
        # the kernel and the loop compute the same forward differences (float32: C's ulp / h, relative)
        assert r["max_rel_diff_vs_loop"] < 5e-2
    assert loop["max_rel_diff_vs_loop"] == 0 and loop["loop_over_kernel"] == pytest.approx(1)
    # the measured plan against the fixed widths of the same rounds (one here: chunk 3), and its planning share
    kt, ct = np.array(kernel["times_s"]), np.array(chunk3["times_s"])
    assert kernel["over_best_fixed"] == pytest.approx(np.median(kt / ct))
    assert kernel["plan_s"] >= 0 and kernel["plan_source"] and len(kernel["plan_widths"]) == 4
    assert kernel["plan_over_one_gradient"] == pytest.approx(kernel["plan_s"] / np.median(kt))
    assert "over_best_fixed" not in chunk3 and "over_best_fixed" not in loop
    from gdjax.report import benchmarks as report_benchmarks

    plan_table = report_benchmarks.fd_kernel_plan(data)
    assert kernel["plan_source"] in plan_table and "target <= 1.1" in plan_table
    tg = {t["target"]: t for t in data["config"]["target_results"]}
    assert tg["loop_over_kernel_n10"]["value"] == pytest.approx(kernel["loop_over_kernel"])
    assert tg["of_matmul_n1000"]["value"] is None and tg["of_matmul_n1000"]["status"] == "n/a"
    assert (tmp_path / "fd_kernel.png").stat().st_size > 0 and (tmp_path / "fd_kernel.svg").stat().st_size > 0


def _planted(kernel_s, loop_s, matmul=1e9):
    """Rows of N = 10 and N = 1000 from planted per-round times (no timing): P = 100, 1e6 FLOPs per evaluation."""
    mod = load_script(SCRIPT)
    rows = []
    for n in (10, 1000):
        point = {"sizes": "9-9-1", "n_params": 100, "batch_size": n, "rounds": 3, "forward_flops": 1e6,
                 "forward_xla_flops": 1e6}
        keys = [("fd-forward", None), ("fd-loop", None)]
        values = {"matmul": [matmul] * 3, keys[0]: list(kernel_s), keys[1]: list(loop_s)}
        g = np.ones(100)
        rows += mod.batch_rows(point, 8, {k: 101.0 for k in keys}, values, {k: g for k in keys}, {k: 1.0 for k in keys})
    return {t["target"]: t for t in mod.targets(rows)}


def test_targets_follow_planted_times():
    """Catches: a status that does not depend on the measurement (always PASS, or compared with the wrong
    threshold), and the median taken over rounds of the wrong side. 101 evaluations x 1e6 FLOPs at 1e9 FLOP/s
    = 0.101 s at 100% of the matmul rate."""
    fast = _planted(kernel_s=[0.11, 0.11, 0.5], loop_s=[3.0, 3.0, 3.0])  # one noisy round: the median ignores it
    assert fast["of_matmul_n1000"]["value"] == pytest.approx(0.101 / 0.11)
    assert fast["of_matmul_n1000"]["status"] == "PASS"  # 92% >= 85%
    assert fast["loop_over_kernel_n1000"]["value"] == pytest.approx(3.0 / 0.11)
    assert fast["loop_over_kernel_n10"]["status"] == "PASS"  # 27x >= 20x
    assert fast["loop_over_kernel_n10"]["bound"] == pytest.approx(3.0 / 0.101)
    slow = _planted(kernel_s=[0.2, 0.2, 0.2], loop_s=[3.0, 3.0, 3.0])  # the planted wrong time: 2x slower kernel
    assert slow["of_matmul_n1000"]["status"] == "SHORT" and slow["loop_over_kernel_n10"]["status"] == "SHORT"
    assert slow["loop_over_kernel_n1000"]["status"] == "PASS"  # 15x >= 2.5x still


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--batches", "10,x"], "--batches"),
    (["--chunks", "0"], "--chunks"),
    (["--sizes", "784,30,10;20,5,2"], "give one network"),
    (["--out", "/dev/null/x"], "--out"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_options_one_line_on_stderr(args, message, capsys):
    """Catches: a bad option found only after the measurement (each of these is refused before any work, so
    this test takes no time), or reported as a traceback."""
    assert load_script(SCRIPT).main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("fd_kernel: error:")
