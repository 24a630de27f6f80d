"""Smoke test of benchmarks/fd_kernel.py on a tiny net: rows, ratios against the same round, targets, figure."""

import json

import numpy as np
import pytest
from conftest import load_script

SCRIPT = "benchmarks/fd_kernel.py"


def test_quick_run_writes_rows_ratios_and_figure(tmp_path):
    out = tmp_path / "fd_kernel.json"
    mod = load_script(SCRIPT)
    assert mod.main(["--quick", "--batches", "10", "--chunks", "3", "--rounds", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["platform"] and data["meta"]["jax"]
    rows = {(r["method"], r["default_chunk"]): r for r in data["rows"]}
    assert set(rows) == {("fd-forward", True), ("fd-forward", False), ("fd-loop", False)}
    loop, kernel, chunk3 = rows[("fd-loop", False)], rows[("fd-forward", True)], rows[("fd-forward", False)]
    p, f = kernel["n_params"], kernel["forward_flops"]
    assert p == 20 * 8 + 8 + 8 * 4 + 4 and f == 10 * (2 * (20 * 8 + 8 * 4) + 8 + 4)
    assert chunk3["chunk_size"] == 3 and kernel["chunk_size"] >= 1 and loop["chunk_size"] is None
    for r in rows.values():
        assert len(r["times_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        # ratios are per round (same round's matmul and loop), then the median: recompute them from the raw times
        ts, mm, lt = np.array(r["times_s"]), np.array(r["matmul_rates"]), np.array(loop["times_s"])
        assert r["of_matmul"] == pytest.approx(np.median(p * f / ts / mm))
        assert r["loop_over_kernel"] == pytest.approx(np.median(lt / ts))
        assert r["bound_loop_over_kernel"] == pytest.approx(np.median(lt / (p * f / mm)))
        # the kernel and the loop compute the same forward differences (float32: C's ulp / h, relative)
        assert r["max_rel_diff_vs_loop"] < 5e-2
    assert loop["max_rel_diff_vs_loop"] == 0 and loop["loop_over_kernel"] == pytest.approx(1)
    # targets are stated for N = 10 and 1000: only the N = 10 one is measurable here
    tg = {t["target"]: t for t in data["config"]["target_results"]}
    assert tg["loop_over_kernel_n10"]["value"] == pytest.approx(kernel["loop_over_kernel"])
    assert tg["loop_over_kernel_n10"]["status"] in ("PASS", "SHORT") and tg["of_matmul_n1000"]["value"] is None
    assert (tmp_path / "fd_kernel.png").stat().st_size > 0 and (tmp_path / "fd_kernel.svg").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--batches", "10,x"], "--batches"),
    (["--chunks", "0"], "--chunks"),
    (["--sizes", "784,30,10;20,5,2"], "give one network"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_options_one_line_on_stderr(args, message, capsys):
    assert load_script(SCRIPT).main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("fd_kernel: error:")
