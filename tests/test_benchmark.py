"""The FD-vs-grad benchmark (`gdjax bench`, gdjax/benchmark.py, gdjax/plotting.py) on tiny sizes: schema, finite
positive times, flagged extrapolation, resume, figures, option validation. Benchmark numbers themselves are not
asserted (this is a smoke test, not a timed test)."""

import json
import math

import jax
import numpy as np
import pytest

from gdjax import benchmark, cli, results

# One tiny sweep shared by the tests below (module scope keeps the suite fast). The time budget is so small that
# the FD methods at P = 165 must be timed on a subset of directions and extrapolated.
SIZES = "4,3,2;8,12,5"
METHODS = "reverse,fd-forward,fd-loop"
ARGS = ["bench", "--quick", "--sizes", SIZES, "--methods", METHODS, "--batch-size", "16", "--repeats", "2",
        "--time-budget", "0.0005", "--no-progress", "--no-million"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = cli.main([*ARGS, "--out", str(out)])
    return rc, out


def test_results_schema(sweep):
    rc, out = sweep
    assert rc == 0
    data = results.load_results(out / "fd_vs_grad.json")
    meta = data["meta"]
    for k in ("device_kind", "device_name", "jax", "jaxlib", "cpu_count", "dtype", "git_commit", "date",
              "command", "matmul_gflops", "benchmark"):
        assert k in meta, k
    assert meta["matmul_gflops"]["float32"] > 0 and meta["matmul_gflops"]["float64"] > 0
    assert data["config"]["sizes"] == [[4, 3, 2], [8, 12, 5]]
    assert data["config"]["batch_size"] == 16
    rows = data["rows"]
    # every network x (forward pass + each method), in plan order
    assert [(r["sizes"], r["method"]) for r in rows] == [
        (s, m) for s in ("4-3-2", "8-12-5") for m in ("forward-pass", "reverse", "fd-forward", "fd-loop")]
    for r in rows:
        assert r["status"] == "ok", r
        for k in ("median_s", "min_s", "max_s", "compile_s", "gflops", "analytic_flops", "evaluations"):
            assert math.isfinite(r[k]) and r[k] > 0, (k, r)
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert isinstance(r["extrapolated"], bool)
    # evaluations come from the estimators: P + 1 for forward differences
    fd = next(r for r in rows if r["method"] == "fd-forward" and r["sizes"] == "8-12-5")
    assert fd["P"] == 8 * 12 + 12 + 12 * 5 + 5 and fd["evaluations"] == fd["P"] + 1
    # the CSV beside it has one line per row
    assert len((out / "fd_vs_grad.csv").read_text().splitlines()) == len(rows) + 1


def test_extrapolated_rows_are_flagged(sweep):
    _, out = sweep
    rows = results.load_results(out / "fd_vs_grad.json")["rows"]
    extra = [r for r in rows if r["extrapolated"]]
    assert extra, "the 0.5 ms budget should force a subset measurement of the FD methods"
    for r in extra:
        assert r["scale"] > 1 and "timed on" in r["note"]
        assert r["measured_directions"] < r["evaluations"] or r["measured_batch"] < r["batch_size"]
        # extrapolated time = measured time x scale, never mixed silently
        assert r["median_s"] == pytest.approx(r["measured_median_s"] * r["scale"])
    for r in rows:
        if not r["extrapolated"]:
            assert r["scale"] == 1 and r["median_s"] == r["measured_median_s"]


def test_errors_against_float64_grad(sweep):
    _, out = sweep
    rows = results.load_results(out / "fd_vs_grad.json")["rows"]
    for r in rows:
        if r["method"] == "reverse":
            assert r["rel_error"] < 1e-5  # float32 jax.grad vs float64: rounding only
        if r["method"].startswith("fd-"):
            # float32 forward differences, h ~ sqrt(eps): error ~ sqrt(eps) x curvature, well below 1
            assert 0 < r["rel_error"] < 0.5


def test_plots_written(sweep, capsys):
    _, out = sweep
    for stem in ("fd_vs_grad_time", "fd_vs_grad_ratio", "fd_vs_grad_bars"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    # redrawing from the JSON alone works (gdjax plot)
    figs = out / "redrawn"
    capsys.readouterr()
    assert cli.main(["plot", str(out / "fd_vs_grad.json"), "--out", str(figs), "--markdown"]) == 0
    assert (figs / "fd_vs_grad_ratio.png").exists()
    text = capsys.readouterr().out
    assert "| target | measured |" in text  # the headline tables for the README (no [784,30,10] rows here)


def test_resume_skips_finished_points(sweep, tmp_path, monkeypatch):
    _, out = sweep
    finished = results.read_jsonl(out / "fd_vs_grad.jsonl")
    assert len(finished) == 8
    # an interrupted run: the first 5 points finished, the 6th was cut off mid-line
    jsonl = tmp_path / "fd_vs_grad.jsonl"
    for r in finished[:5]:
        results.append_jsonl(jsonl, r)
    with open(jsonl, "a") as f:
        f.write(json.dumps(finished[5])[:40])
    measured = []
    real = benchmark._measure_point
    monkeypatch.setattr(benchmark, "_measure_point",
                        lambda point, *a, **k: measured.append(point.method) or real(point, *a, **k))
    with pytest.warns(UserWarning, match="unreadable"):
        assert cli.main([*ARGS, "--out", str(tmp_path), "--resume", "--no-plots"]) == 0
    assert measured == ["reverse", "fd-forward", "fd-loop"]  # only the three unfinished points of 8-12-5
    rows = results.load_results(tmp_path / "fd_vs_grad.json")["rows"]
    assert len(rows) == 8
    assert [r["median_s"] for r in rows[:5]] == [r["median_s"] for r in finished[:5]]  # kept, not re-measured


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "784,-30,10"], "each >= 1"),
    (["--sizes", "784,x"], "integers"),
    (["--methods", "reverse,nope"], "unknown gradient method 'nope'"),
    (["--batch-size", "0"], "batch_size"),
    (["--repeats", "-1"], "repeats"),
    (["--time-budget", "-2"], "time_budget"),
    (["--dtype", "int8"], "dtype"),
    (["--device", "tpu"], "--device"),
    (["--out", "/proc/gdjax-bench"], "not writable"),
])
def test_bad_options_exit_nonzero_with_one_line(argv, message, capsys):
    rc = cli.main(["bench", "--quick", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("\n") == 1 and message in err, err


def test_parse_sizes():
    assert benchmark.parse_sizes("784,30,10;784,100,10") == ((784, 30, 10), (784, 100, 10))
    nets = benchmark.parse_sizes("P=1e2:1e6:5")
    ps = [sum(a * b + b for a, b in zip(n[:-1], n[1:])) for n in nets]
    assert len(nets) == 5 and ps == sorted(ps)
    assert 0.5e2 < ps[0] < 2e2 and 0.9e6 < ps[-1] < 1.1e6
    with pytest.raises(ValueError, match="30 <= low"):
        benchmark.parse_sizes("P=1e6:1e2")


def test_analysis_helpers():
    assert benchmark.fit_slope([1e4, 1e5, 1e6], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert benchmark.fit_slope([1e4], [1.0]) is None
    assert benchmark.human_time(90) == "90 s" and benchmark.human_time(3 * 86400).endswith("days")
    rows = [
        {"group": "million", "status": "ok", "sizes": "784-30-10", "P": 23860, "method": m, "batch_size": n,
         "median_s": t, "extrapolated": e}
        for m, n, t, e in [("fd-forward", 60000, 100.0, True), ("fd-forward", 10, 0.5, True),
                           ("reverse", 60000, 0.2, False), ("reverse", 10, 1e-4, False)]]
    table = benchmark.million_table(rows)
    fd = next(t for t in table if t["method"] == "fd-forward")
    assert fd["epoch_s"] == pytest.approx(0.5 * 6000) and fd["epoch_extrapolated"] is True
    text = benchmark.format_million(table)
    assert "~" in text.splitlines()[2] and "reverse" in text


def test_fd_subset_matches_full_kernel_values():
    """The subset timing runs the kernel's own program: its components equal the full kernel's (float64)."""
    with jax.enable_x64(True):
        cost, params, batch = benchmark.make_problem((5, 4, 3), 8, "float64")
        b = benchmark.sub_batch(batch, 8)
        full = benchmark.flat_numpy(benchmark.gradient(cost, "fd-central")(params, b))
        row = {"P": full.size, "batch_size": 8, "analytic_flops": 1.0, "matmul_gflops": 1.0}
        ref = benchmark.reference_gradient(cost, params, b)
        # t_eval = 1 s per evaluation: a full chunk is "over the budget", so 6 of the 47 parameters are timed
        out = benchmark._measure_fd_subset(dict(row), cost, "fd-central", "central", params, b, 6, 1, 1.0,
                                           lambda n: ref, 1.0, 1.0)
        comp = benchmark._spread_indices(full.size, out["measured_directions"] // 2)
        np.testing.assert_allclose(benchmark.relative_error(full[comp], ref[comp]), out["rel_error"], rtol=1e-6)
        assert out["extrapolated"] and out["scale"] > 1
