"""gdjax.bench's pure parts on planted inputs: sizes, the extrapolation policy, the FLOP rates and the flag
above 100% of the reference, the validation catching a 2x error, targets, the million table, and the
comparison of a run with the committed reference from two JSON files."""

import pytest

from gdjax import results
from gdjax.bench import analysis, config, policy, report
from gdjax.bench.measure import measure_method
from gdjax.bench.sweep import apply_reference
from gdjax.bench.problem import make_problem, reference_gradient, sub_batch
from gdjax.gradients import registry
from gdjax.nn import param_count


def test_parse_sizes():
    """Layer lists, P ranges and the full preset (>= 8 sizes in [1e2, 1e6] plus the lecture's net, sorted)."""
    assert config.parse_sizes("784,30,10;784,100,10") == ((784, 30, 10), (784, 100, 10))
    ps = [param_count(n) for n in config.parse_sizes("P=1e2:1e6:5")]
    assert len(ps) == 5 and ps == sorted(ps) and 0.5e2 < ps[0] < 2e2 and 0.9e6 < ps[-1] < 1.1e6
    full = config.parse_sizes("full")
    ps = [param_count(n) for n in full]
    assert config.LECTURE_NET in full and ps == sorted(ps) and len(full) >= 9
    assert 50 < ps[0] < 200 and 0.9e6 < ps[-1] < 1.1e6
    with pytest.raises(ValueError, match="30 <= low"):
        config.parse_sizes("P=1e6:1e2")
    with pytest.raises(ValueError, match="P=LOW:HIGH"):
        config.parse_sizes("P=abc")


def test_policy():
    """Whole when the prediction fits; subsets sized to the budget share and capped; validation only where a
    subset is a real part (fails on an inverted comparison or a missing cap)."""
    assert policy.fits_whole(10.0, 40.0) and not policy.fits_whole(41.0, 40.0)
    n = policy.subset_directions(0.02, 44, 23_861, 40.0)
    assert n == int(policy.SUBSET_SHARE * 40.0 / (0.02 / 44))
    assert policy.subset_directions(1.0, 44, 23_861, 1.0) == 44  # never fewer than one pilot's worth
    assert policy.subset_directions(1e-9, 44, 1000, 1.0) == 1000  # never more than the total
    assert policy.validation_directions(1e-9, 44, 1000, 1.0) == 125  # capped at 1/8 of the directions
    assert policy.validation_directions(0.01, 200, 1000, 1.0) is None  # one pilot is already over 1/8
    assert policy.validation_directions(1e-9, 1, 100, 1.0) is None  # 12 directions: no test of an extrapolation
    assert policy.validation_directions(1e-9, 44, 1000, 1.0, whole_s=1e-3) is None  # far below the budget
    assert policy.validation_directions(1e-9, 44, 1000, 1.0, whole_s=0.1) == 125
    assert policy.validation_directions(0.01, 200, 1000, 1.0, chunk=50) == 125  # a chunk fits the share
    # no subset: FLOP-measured forward-pass equivalents first, then the count, then Griewank for autodiff
    assert policy.predict_from_count(100.0, 0.01, False, forward_equivalents=7.0) == pytest.approx(0.07)
    assert policy.predict_from_count(100.0, 0.01, False) == pytest.approx(1.0)
    assert policy.predict_from_count(None, 0.01, True) == pytest.approx(policy.GRIEWANK * 0.01)
    assert policy.predict_from_count(100.0, 0.01, False, [(10, 5, 0.001)], 20, 5) == pytest.approx(0.004)


def test_pilot_counts_a_fixed_cost_once():
    """The pilot predicts a whole gradient from two parts of the program, so a call's fixed cost is counted
    once: a subset costing 30 ms + 0.1 ms per direction over 2000 directions is predicted near 0.23 s, where
    scaling the one-chunk part by total / covered would say 1.7 s (fails if the pilot were proportional)."""
    import time as _time

    from gdjax.bench.measure import _pilot
    from gdjax.gradients.registry import Subset

    class Fake:
        def subset(self, params, batch, n):
            covered = min(2000, -(-n // 40) * 40)  # whole chunks of 40
            return Subset(lambda p, b: _time.sleep(0.03 + 1e-4 * covered), covered, 2000, jittable=False)

    pilot = _pilot(Fake(), None, None, budget=100.0)
    assert pilot["covered"] == 40 and pilot["total"] == 2000
    assert 0.2 < pilot["predicted"] < 0.4, pilot


def test_pilot_grows_past_a_dominant_fixed_cost():
    """Where a call's fixed cost (here 50 ms) dwarfs one chunk's directions (40 x 0.05 ms), the pilot grows
    until its last part takes twice the one-chunk part, so its slope is measured, not noise: it stops at 2,560
    directions (128 + 50 ms), and predicts ~0.55 s (fails if it stopped at 4 chunks or grew without end)."""
    import time as _time

    from gdjax.bench.measure import _pilot
    from gdjax.gradients.registry import Subset

    calls = []

    class Fake:
        def subset(self, params, batch, n):
            covered = min(10_000, -(-n // 40) * 40)
            calls.append(covered)
            return Subset(lambda p, b: _time.sleep(0.05 + 5e-5 * covered), covered, 10_000, jittable=False)

    pilot = _pilot(Fake(), None, None, budget=100.0)
    assert calls == [40, 160, 640, 2560], calls
    assert pilot["last"]["covered"] == 2560 and pilot["covered"] == 40
    assert 0.4 < pilot["predicted"] < 0.7, pilot
    assert policy.pilot_grows(0.05, 0.06, 160, 10_000, 100.0)  # the fixed cost still dominates
    assert not policy.pilot_grows(0.05, 0.11, 160, 10_000, 100.0)  # the directions do
    assert not policy.pilot_grows(0.05, 0.06, 10_000, 10_000, 100.0)  # nothing left to add
    assert not policy.pilot_grows(1.0, 1.5, 160, 10_000, 40.0)  # over SUBSET_SHARE of the budget


def test_timing_rounds():
    """Repeats as asked; at least 3 when validated in the same rounds; many for calls of a few milliseconds
    (fails if a short call were timed only `repeats` times, or a long one many times)."""
    assert policy.timing_rounds(1.0, 2) == 2 and policy.timing_rounds(1.0, 2, validating=True) == 3
    assert policy.timing_rounds(1e-3, 3) == policy.SHORT_ROUNDS > 3
    assert policy.timing_rounds(policy.SHORT_CALL_S, 3) == 3


def test_extrapolate_recovers_a_fixed_cost_per_call():
    """Two parts of a program whose calls cost a + b n give back a + b total exactly, where scaling one part by
    total / covered overstates by a (total / covered - 1); with one part it is proportional; a noisy negative
    slope is taken as 0 (never below the bigger part's own time)."""
    a, b, total = 0.05, 1e-4, 40_000
    t = lambda n: a + b * n  # noqa: E731
    assert policy.extrapolate(t(4000), 4000, total, t(1000), 1000) == pytest.approx(a + b * total)
    assert policy.extrapolate(t(4000), 4000, total) == pytest.approx(t(4000) * total / 4000)
    assert policy.extrapolate(t(4000), 4000, total) > 1.1 * (a + b * total)  # the bias two parts remove
    assert policy.extrapolate(0.3, 4000, total, 0.4, 1000) == pytest.approx(0.3)
    assert policy.extrapolate(0.3, 4000, total, 0.1, 4000) == pytest.approx(0.3 * total / 4000)  # same size
    with pytest.raises(ValueError, match="covered_big"):
        policy.extrapolate(1.0, 0, total)


def _row(method, t, xla=None, analytic=None, how="whole", sizes="784-30-10", group="sweep", n=1000, **kw):
    return {"group": group, "status": "ok", "sizes": sizes, "P": 23_860, "batch_size": n, "dtype": "float32",
            "method": method, "median_s": t, "xla_flops": xla, "analytic_flops": analytic, "how": how,
            "extrapolated": how == "extrapolated", **kw}


def test_rows_above_the_reference_are_flagged_with_a_reason():
    """peak_fraction = XLA FLOPs / time / reference, set once; a row above 100% gets over_reference and why."""
    rows = [_row("fd-forward", 1.0, xla=80e9, analytic=80e9), _row("reverse", 1.0, xla=150e9, analytic=None),
            _row("forward", 1.0, xla=150e9, analytic=60e9)]
    out = apply_reference(rows, 100.0)
    assert out[0]["peak_fraction"] == pytest.approx(0.8) and out[0]["over_reference"] is False
    assert out[1]["peak_fraction"] == pytest.approx(1.5) and out[1]["over_reference"] is True
    assert "faster than the best matmul" in out[1]["over_reference_reason"]
    assert out[2]["over_reference"] and "analytic" in out[2]["over_reference_reason"]
    assert out[2]["analytic_fraction"] == pytest.approx(0.6)
    text = report.format_table([{**r, "P": 23_860, "max_s": 1.0, "min_s": 1.0} for r in out])
    assert "150%!" in text and "80% " in text  # the mark in the printed table


def test_validation_catches_a_2x_error():
    """A subset that misreports the directions it covers by 2x (the kind of bug that made the old extrapolation
    wrong) gives a validation ratio near 2: the tolerance of test_bench_sweep (1.25x) catches it."""
    cost, params, batch = make_problem((48, 24, 4), 256, "float32")
    b = sub_batch(batch, 256)
    real = registry.gradient(cost, "fd-forward", chunk_size=16)

    def lying_subset(p, bb, n):
        sub = real.subset(p, bb, n)
        return sub._replace(covered=sub.covered // 2)

    class Lying:  # the real estimator with its subset replaced
        def __getattr__(self, name):
            return lying_subset if name == "subset" else getattr(real, name)

        def __call__(self, *a):
            return real(*a)

    import gdjax.bench.measure as measure

    point = config.Point("sweep", (48, 24, 4), 256, "fd-forward")
    kw = dict(dtype="float32", t_forward=1e-4, forward_flops=None, reference=lambda: reference_gradient(cost, params, b),
              key=None, repeats=5, budget=2.0)
    orig = measure.gradient
    try:
        measure.gradient = lambda *a, **k: Lying()
        _, check = measure_method(point, cost, params, b, **kw)
    finally:
        measure.gradient = orig
    assert check is not None and check["ratio_cpu"] > 1.6, check


def test_extrapolated_point(monkeypatch):
    """Over the budget, a method with a subset is timed on two parts of its own program (40 directions and a
    quarter of them) and extrapolated from both, flagged, with no error claimed; without a subset it is skipped
    with the prediction noted."""
    cost, params, batch = make_problem((48, 24, 4), 64, "float32")
    b = sub_batch(batch, 64)
    kw = dict(dtype="float32", t_forward=1e-3, forward_flops=1e6, reference=None, key=None, repeats=2, budget=1e-4)
    monkeypatch.setattr(policy, "subset_directions", lambda *a, **k: 40)
    row, check = measure_method(config.Point("sweep", (48, 24, 4), 64, "fd-loop"), cost, params, b, **kw)
    assert row["measured_directions"] == 40 and row["measured_directions_small"] == 10
    assert check is None and row["how"] == "extrapolated" and row["rel_error"] is None
    assert row["total_directions"] == row["P"] + 1 and row["measured_directions"] < row["total_directions"]
    # the time is the median of the per-round extrapolations from the two parts' times
    small = row["subset_small_times"] or [None] * len(row["subset_times"])
    per_round = [policy.extrapolate(t, row["measured_directions"], row["total_directions"], s,
                                    row["measured_directions_small"]) for t, s in zip(row["subset_times"], small)]
    assert row["median_s"] == pytest.approx(sorted(per_round)[len(per_round) // 2])
    assert row["median_s"] == pytest.approx(row["measured_median_s"] * row["scale"])
    # fd-loop: evaluations x the FLOPs of its one-direction program (the cost with one entry set: XLA counts the
    # cost's own FLOPs plus a handful for the set), measured, not the forward_flops=1e6 passed in
    import jax

    from gdjax import profiling

    one = profiling.xla_flops(jax.jit(cost), params, b)
    assert row["xla_flops_source"] == "one-direction program x evaluations"
    assert row["xla_flops"] == pytest.approx((row["P"] + 1) * one, rel=0.02)
    assert "timed on" in row["note"]
    import dataclasses

    import gdjax.bench.measure as measure

    orig = measure.gradient
    try:  # the same method without a subset (as a method with no subset capability): over the budget it is skipped
        measure.gradient = lambda *a, **k: dataclasses.replace(orig(*a, **k), subset=None)
        row, _ = measure_method(config.Point("sweep", (48, 24, 4), 64, "fd-forward"), cost, params, b, **kw)
    finally:
        measure.gradient = orig
    assert row["status"] == "skipped" and "cannot be timed on a subset" in row["note"]


def test_targets_and_million_table():
    """Targets from planted rows: values, thresholds, PASS/SHORT, and the validation's worst ratio."""
    rows = [_row("forward-pass", 0.001), _row("fd-forward", 10.0, peak_fraction=0.9), _row("fd-loop", 30.0),
            _row("reverse", 0.0025)]
    val = [{"ratio": 1.1}, {"ratio": 0.8}, {"ratio": 0.5, "counted": False}]  # the last: too short to count
    tg = {t["target"]: t for t in analysis.targets(rows, val)}
    assert tg["fd-loop / FD kernel time at [784,30,10]"]["value"] == pytest.approx(3.0)
    assert tg["FD kernel / matmul reference at [784,30,10]"]["status"] == "PASS"
    assert tg["reverse / forward-pass time at [784,30,10]"]["status"] == "SHORT"  # 2.5 > 2
    counted = tg["worst |extrapolated / whole - 1|, points >= one subset call"]
    assert counted["value"] == pytest.approx(0.2) and "2 of 3 points" in counted["how"]
    every = tg["worst |extrapolated / whole - 1|, every validated point"]  # the short point counts here
    assert every["value"] == pytest.approx(0.5) and every["status"] == "SHORT" and "3 points" in every["how"]
    assert policy.counts_for_target(policy.SUBSET_SHARE * 30.0, 30.0)
    assert not policy.counts_for_target(0.5 * policy.SUBSET_SHARE * 30.0, 30.0)
    mil = [_row(m, t, group="million", n=n, how=h) for m, n, t, h in
           [("fd-forward", 60000, 100.0, "extrapolated"), ("fd-forward", 10, 0.5, "extrapolated"),
            ("reverse", 60000, 0.2, "whole"), ("reverse", 10, 1e-4, "whole")]]
    table = analysis.million_table(mil)
    fd = next(t for t in table if t["method"] == "fd-forward")
    assert fd["epoch_s"] == pytest.approx(0.5 * 6000) and fd["epoch_extrapolated"] is True
    assert "~" in report.format_million(table).splitlines()[2]
    assert report.human_time(90) == "90.0 s" and report.human_time(3 * 86400).endswith("days")
    assert analysis.fit_slope([1e4, 1e5, 1e6], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert analysis.fit_slope([1e4], [1.0]) is None


def test_comparison_table_from_two_files(tmp_path):
    """This run beside the committed reference: per method at [784, 30, 10] the two times, their ratio, and both
    matmul rates (fails if rows are matched across networks, batch sizes or dtypes, or the ratio inverted)."""
    def data(times, gflops, kind):
        rows = [_row(m, t) for m, t in times.items()] + [_row("reverse", 99.0, sizes="8-8-10")]
        return {"meta": {"device_kind": kind}, "config": {}, "reference": {"best_gflops": gflops}, "rows": rows}

    run_path, ref_path = tmp_path / "run.json", tmp_path / "ref.json"
    results.write_json(run_path, data({"fd-forward": 20.0, "reverse": 0.004, "spsa": 1.0}, 80.0, "laptop"))
    results.write_json(ref_path, data({"fd-forward": 10.0, "reverse": 0.002}, 160.0, "server"))
    cmp = analysis.compare(results.load_results(run_path), results.load_results(ref_path))
    assert [(r["method"], r["ratio"]) for r in cmp["rows"]] == [("fd-forward", 2.0), ("reverse", 2.0)]
    assert cmp["run_matmul_gflops"] == 80.0 and cmp["reference_matmul_gflops"] == 160.0
    text = report.format_compare(cmp)
    assert "80.0 GFLOP/s (laptop)" in text and "160.0 GFLOP/s (server)" in text
    line = next(ln for ln in text.splitlines() if "fd-forward" in ln)
    assert "20.0 s" in line and "10.0 s" in line and "2.00" in line
