"""The FD kernel's direction plan (`gdjax.gradients._plan`): the kernel described once (bitwise the numbers it gave
before the plan), the measured layout (a planted slow layout is not picked, a cached plan is not measured again, a
fixed chunk_size measures nothing, under a tracer nothing is measured), the same gradient whatever the layout, the
disk cache, and the memory budget read from the device."""

import dataclasses
import json

import _fd_reference
import _gmm
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gdjax.gradients import _budget, _chunked, _plan, finite_diff, gradient
from gdjax.gradients._plan import DirectionPlan, Layout

EPS64 = float(jnp.finfo(jnp.float64).eps)


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


@pytest.fixture(autouse=True)
def fresh_plans(monkeypatch):
    """Every test starts without cached plans, with the disk cache off and the default planning budget."""
    _plan.clear()
    monkeypatch.setattr(_plan, "_CACHE_DIR", None)
    yield
    _plan.clear()


@pytest.fixture
def count_measurements(monkeypatch):
    """The layouts timed by the planner (`_plan.time_part`), in order; the real timer still runs."""
    timed = []
    real = _plan.time_part

    def counted(layout, fn, args, repeats, deadline):
        timed.append(layout)
        return real(layout, fn, args, repeats, deadline)

    monkeypatch.setattr(_plan, "time_part", counted)
    return timed


@pytest.fixture
def generous_budget(monkeypatch):
    """A planning budget that measures every candidate (tiny problems are otherwise below one compilation)."""
    monkeypatch.setattr(_plan, "FRACTION", 1e9)
    monkeypatch.setattr(_plan, "MAX_SECONDS", 1e9)


@pytest.fixture
def two_candidates(monkeypatch):
    """Only the default and the sequential layout (each candidate is a compilation; the tests using this check
    the cache and the fallbacks, not the candidate list)."""
    real = _plan.candidates
    monkeypatch.setattr(_plan, "candidates", lambda default, lengths: real(default, lengths)[:2])


# A few of the saved configurations (each a compilation): every public function, scheme, a padded chunk, chunk 1
# (no vmap), the budget default, a cost that is not the MLP. `_fd_reference.reference_outputs()` computes all 51.
CHECKED = {"mlp/grad/forward/None", "mlp/grad/central/1", "dict/grad/central/None", "mlp/subset/forward/9/4",
           "dict/subset/forward/1/None", "mlp/multi/forward/7/0", "mlp/multi/complex/4/0", "dict/multi/central/3/0"}


def test_kernel_outputs_equal_the_saved_reference():
    """fd_gradient / fd_subset / fd_multi_step at fixed chunk sizes and the budget default, on gdjax's MLP and a
    dict-of-leaves cost: the numbers the kernel gave before the direction plan, saved in
    tests/fixtures/fd_kernel_reference.npz. Bitwise with the jax version that wrote the file (the same programs);
    with another jax (another XLA) to the rounding of a cost value: 2 values x 4 ulps of |C| over the smallest
    step (the forward step, sqrt(eps) in float64), 8 ulps for raw cost values."""
    ref = np.load(_fd_reference.PATH)
    out = _fd_reference.reference_outputs(CHECKED)
    assert len(ref.files) == 52 and len(out) == 14 and set(out) <= set(ref.files)
    same_jax = str(ref["jax_version"]) == jax.__version__
    for name, got in out.items():
        want = ref[name]
        assert got.shape == want.shape, name
        if same_jax or name.endswith("covered_total"):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            scale = 8 * EPS64 * max(1.0, float(np.max(np.abs(want))))
            bound = scale if "/subset/" in name else 2 * 4 * EPS64 * 10 / finite_diff.default_eps("forward", np.float64)
            np.testing.assert_allclose(got, want, rtol=0, atol=bound, err_msg=name)


def test_direction_plan_prefix_and_tiling():
    """The plan's prefix is `_chunked.prefix` of its lengths and widths; tiling pads each copy to whole chunks and
    untile gives every copy back (a tile that forgot the padding would shift the second copy's directions)."""
    plan = DirectionPlan((13, 4), Layout((3, 3)))
    assert plan.prefix(5) == _chunked.prefix([13, 4], [3, 3], 5) == ([6, 0], 6, 21)
    assert plan.total == 21 and plan.padded(0) == 15
    tiled = plan.tiled(2)
    assert tiled.lengths == (30, 12) and tiled.widths == (3, 3)
    assert DirectionPlan((4,), Layout((4,))).tiled(3).widths == (12,)  # one chunk: the copies as one wider chunk
    a, b = jnp.arange(13.0), 100 + jnp.arange(13.0)
    t = plan.tile(0, [a, b])
    assert t.shape == (30,) and float(t[13]) == 0.0 and float(t[15]) == 100.0
    back = plan.untile(0, t, 2)
    np.testing.assert_array_equal(back[0], a)
    np.testing.assert_array_equal(back[1], b)
    seen = plan.run(lambda k, m, w, carry: (k, m, w, carry), [6, 0])
    assert seen == [(0, 6, 3, True), None]


@pytest.mark.parametrize("case", ["dict", "gmm"])
def test_same_gradient_whatever_the_layout(case, monkeypatch):
    """Every candidate layout (one direction at a time without vmap, fresh copies, narrow and default widths) gives
    the budget default's gradient to the rounding of the cost values: each value may move by a few ulps of |C|
    (XLA sums in another order in a batched program), so 2 values x 4 ulps / h_i (central scheme, float64).
    A layout that mixed up directions or copies would be off by O(|g|)."""
    cost, params, batch = {"dict": _fd_reference.dict_case, "gmm": lambda: _gmm.gmm_problem(3, 4, 20)}[case]()
    default = finite_diff.plan_for(cost, params, batch, scheme="central", chunk_size="budget").layout
    ref = flat(jax.jit(lambda p, b: finite_diff.fd_gradient(cost, p, b, scheme="central", layout=default))(
        params, batch))
    value, grad = jax.jit(jax.value_and_grad(cost))(params, batch)  # one compilation, not one per op
    c = max(1.0, abs(float(value)))
    v = flat(params)
    bound = 2 * 4 * EPS64 * c / (finite_diff.default_eps("central", jnp.float64) * np.maximum(1, np.abs(v)))
    monkeypatch.setattr(_plan, "WIDTHS", (4,))  # a narrower width than the default; more would only add compiles
    layouts = [layout for _, layout in _plan.candidates(default, finite_diff._lengths(params, "central"))]
    assert [lay.carry for lay in layouts[:3]] == [True, True, False] and len(layouts) == 4
    for layout in layouts[1:]:
        got = flat(jax.jit(lambda p, b, la=layout: finite_diff.fd_gradient(cost, p, b, scheme="central",
                                                                           layout=la))(params, batch))
        assert np.all(np.abs(got - ref) <= bound), layout
    # and the default is the gradient: float64 central differences against jax.grad, truncation h^2 |C'''| / 6
    # with h ~ 6e-6 and rounding eps |C| / h ~ 4e-11 (times |C| and max(1, |v|)): 1e-8 absolute is far above both
    np.testing.assert_allclose(ref, flat(grad), atol=1e-8 * c * max(1, np.abs(v).max()))


def test_planted_slow_layout_is_not_picked(monkeypatch, generous_budget):
    """The planner keeps the candidate whose measurement predicts the fastest gradient: with the timer planting
    the sequential layout as 10x slower than it is, another is picked; planting it 1000x faster, it is picked.
    Real programs, real timings for the others."""
    cost, params, batch = _gmm.gmm_problem(3, 4, 20)
    real = _plan.time_part
    factor = {}

    def planted(layout, fn, args, repeats, deadline):
        s, c, spent = real(layout, fn, args, repeats, deadline)
        return s * factor.get(set(layout.widths) == {1}, 1.0), c, spent

    monkeypatch.setattr(_plan, "time_part", planted)
    for slow in (True, False):
        _plan.clear()
        factor.clear()
        factor[True] = 10.0 if slow else 1e-3
        plan = finite_diff.plan_for(cost, params, batch, scheme="forward")
        assert plan.source == "measured" and all(c.predicted_s is not None for c in plan.candidates)
        names = [c.name for c in plan.candidates]
        assert names[:3] == ["default", "sequential", "fresh"], names
        best = min(plan.candidates, key=lambda c: c.predicted_s)
        assert plan.layout == best.layout
        assert (plan.layout.widths == (1, 1, 1)) is (not slow)
        assert plan.planning_s > 0 and json.dumps(plan.record())


def test_cached_plan_is_reused_and_a_new_key_plans_again(count_measurements, generous_budget, two_candidates):
    """The first call for a (cost, shapes, dtypes, scheme, devices) measures; later calls, the estimator's subset
    and its plan() reuse the plan without measuring; another batch shape or another cost measures again."""
    cost, params, batch = _gmm.gmm_problem(3, 4, 20)
    est = gradient(cost, "fd-forward")
    g1 = est(params, batch)
    n = len(count_measurements)
    assert n == 2 and est.plan(params, batch).source == "measured"
    plan = est.plan(params, batch)
    g2 = est(jax.tree_util.tree_map(lambda a: a * 1.1, params), batch)
    sub = est.subset(params, batch, 5)
    assert est.plan(params, batch) is plan and len(count_measurements) == n  # nothing measured again
    assert sub.covered >= 5 and not np.allclose(flat(g1), flat(g2))
    gradient(cost, "fd-forward")(params, batch)  # another estimator of the same cost: the same key
    assert len(count_measurements) == n
    est(params, batch[:10])  # another batch shape
    assert len(count_measurements) > n
    m = len(count_measurements)
    gradient(lambda p, b: _gmm.gmm_cost(p, b) * 2.0, "fd-forward")(params, batch)  # another cost
    assert len(count_measurements) > m


def test_fixed_chunk_size_and_budget_measure_nothing(count_measurements, generous_budget):
    """chunk_size=int fixes every leaf's width (capped at its directions), "budget" the memory-budget default:
    neither measures; the fixed estimator equals fd_gradient with that chunk size bitwise (the same program)."""
    cost, params, batch = _fd_reference.mlp_case()
    est = gradient(cost, "fd-central", chunk_size=7)
    plan = est.plan(params, batch)
    assert plan.source == "fixed" and plan.widths == (7, 7, 7, 6) and plan.layout.carry
    want = jax.jit(lambda p, b: finite_diff.fd_gradient(cost, p, b, scheme="central", chunk_size=7))(params, batch)
    np.testing.assert_array_equal(flat(est(params, batch)), flat(want))
    budget = gradient(cost, "fd-central", chunk_size="budget")
    assert budget.plan(params, batch).source == "budget"
    assert budget.plan(params, batch).widths == tuple(finite_diff.leaf_chunk_sizes(cost, params, batch, "central"))
    budget(params, batch)
    assert count_measurements == []
    assert est.options["chunk_size"] == 7 and gradient(cost, "fd-central").options["chunk_size"] == "auto"
    for bad, err in (("fast", TypeError), ("8", TypeError), (0, ValueError), (2.5, TypeError)):
        with pytest.raises(err, match="chunk_size"):
            gradient(cost, "fd-central", chunk_size=bad)


def test_under_a_tracer_nothing_is_measured(count_measurements, generous_budget, two_candidates):
    """Called inside jax.jit (or lax.scan) the estimator cannot time anything: the budget default without error,
    or the plan already cached for the key; the gradient is the same to rounding (bound as above)."""
    cost, params, batch = _gmm.gmm_problem(3, 4, 20)
    est = gradient(cost, "fd-central")
    plans = []

    def step(p, b):
        plans.append(est.plan(p, b))
        return est(p, b)

    traced = jax.jit(step)(params, batch)
    assert count_measurements == [] and plans[-1].source == "traced"
    _, scanned = jax.lax.scan(lambda p, _: (p, est(p, batch)), params, None, length=2)  # params traced as carry
    assert count_measurements == []
    plan = est.plan(params, batch)  # concrete: measured now, then found under the tracer
    assert plan.source == "measured" and count_measurements
    jax.jit(lambda p, b: step(p, b))(params, batch)
    assert plans[-1] is plan
    concrete = flat(est(params, batch))
    c = max(1.0, abs(float(cost(params, batch))))
    bound = 2 * 4 * EPS64 * c / (finite_diff.default_eps("central", jnp.float64)
                                 * np.maximum(1, np.abs(flat(params))))
    for got in (flat(traced), flat(jax.tree_util.tree_map(lambda a: a[1], scanned))):
        assert np.all(np.abs(got - concrete) <= bound)


def test_disk_cache_is_read_without_measuring(tmp_path, count_measurements, generous_budget, two_candidates):
    """With a plan cache directory the measured layout is written there, keyed by the lowered program and the
    device kind; a new process (here: the in-process cache cleared) reads it instead of measuring."""
    cost, params, batch = _gmm.gmm_problem(3, 4, 20)
    finite_diff.set_plan_cache(tmp_path)
    try:
        first = finite_diff.plan_for(cost, params, batch, scheme="forward")
        n = len(count_measurements)
        files = list(tmp_path.glob("plan-*.json"))
        assert first.source == "measured" and n > 0 and len(files) == 1 and first.fingerprint in files[0].name
        finite_diff.clear_plans()
        again = finite_diff.plan_for(cost, params, batch, scheme="forward")
        assert again.source == "disk" and again.layout == first.layout and len(count_measurements) == n
        assert again.fingerprint == first.fingerprint
    finally:
        finite_diff.set_plan_cache(None)
    assert _plan.fingerprint("program", "gpu:H200") != _plan.fingerprint("program", "cpu:cpu")
    with pytest.raises(TypeError, match="plan cache"):
        finite_diff.set_plan_cache(3)


def test_choose_keeps_to_its_budget_and_always_measures_the_default(monkeypatch):
    """`_plan.choose` with a planted timer and objective (no programs): the default is measured first even when it
    alone exceeds the budget; a candidate whose predicted measuring time does not fit is skipped with a note;
    a budget below one compilation measures nothing."""
    default = Layout((64, 8))
    fake = {Layout((64, 8)): 1.0, Layout((1, 1)): 0.01}
    calls = []

    def timer(layout, fn, args, repeats, deadline):
        calls.append(layout)
        return fake.get(layout, 0.5), 0.0, 0.0

    monkeypatch.setattr(_plan, "time_part", timer)

    def part(layout, n):
        return None, (), 128, 1000

    plan = _plan.choose(default, (1000, 8), part, lambda: (0.0, 1e-3), 1008)
    # default: 1 s per 128 directions -> 7.8 s predicted; budget 0.78 s; every other candidate is predicted at
    # 2 x repeats x n directions x the rate seen (n >= 32): 1.5 s or more, so none is measured
    assert calls == [default] and plan.layout == default and plan.source == "measured"
    assert all("not measured" in c.note for c in plan.candidates[1:]) and len(plan.candidates) >= 3
    calls.clear()
    monkeypatch.setattr(_plan, "MAX_SECONDS", 1e9)
    monkeypatch.setattr(_plan, "FRACTION", 1e9)
    plan = _plan.choose(default, (1000, 8), part, lambda: (0.0, 1e-3), 1008)
    assert calls[0] == default and Layout((1, 1)) in calls and plan.layout == Layout((1, 1))
    calls.clear()
    plan = _plan.choose(default, (1000, 8), part, lambda: (2e9, 1e-3), 1008)  # a compilation over any budget
    assert calls == [] and plan.source == "budget" and plan.layout == default


class FakeDevice:
    """A device as `_budget.memory_budget` reads it: a platform and `memory_stats()`."""

    def __init__(self, platform, stats):
        self.platform, self._stats, self.device_kind = platform, stats, "fake"

    def memory_stats(self):
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats


def test_memory_budget_comes_from_the_device(monkeypatch):
    """A 141 GB device gives MEMORY_FRACTION of its free bytes, far above the 256 MiB fallback, and the lecture
    net's default chunks are then limited by the other caps (MAX_CHUNK, evened out), not by memory; a CPU, a
    device without statistics or whose statistics fail falls back to 256 MiB; MEMORY_BUDGET[platform] wins."""
    h200 = FakeDevice("gpu", {"bytes_limit": 141 * 10**9, "bytes_in_use": 10**9})
    assert _budget.memory_budget(device=h200) == int(0.25 * 140 * 10**9) > 100 * _budget.FALLBACK_MEMORY_BUDGET
    for dev in (FakeDevice("gpu", None), FakeDevice("gpu", {}), FakeDevice("gpu", RuntimeError("no stats")),
                FakeDevice("cpu", {"bytes_limit": 10**12})):
        assert _budget.memory_budget(device=dev) == _budget.FALLBACK_MEMORY_BUDGET == 256 * 2**20
    monkeypatch.setattr(_budget, "MEMORY_FRACTION", 0.5)
    assert _budget.memory_budget(device=h200) == int(0.5 * 140 * 10**9)
    import gdjax
    from gdjax.data import Batch
    from gdjax.nn import MLP

    net = MLP((784, 30, 10))
    params = jax.eval_shape(net.init, jax.random.key(0))
    batch = Batch(jax.ShapeDtypeStruct((1000, 784), jnp.float32), jax.ShapeDtypeStruct((1000, 10), jnp.float32))
    cost = gdjax.make_cost(net)
    big = finite_diff.leaf_chunk_sizes(cost, params, batch, "forward", device=h200)[0]
    small = finite_diff.leaf_chunk_sizes(cost, params, batch, "forward", platform="gpu")[0]
    n = 784 * 30 + 1
    assert big == -(-n // -(-n // _budget.MAX_CHUNK)) and big > 2 * small  # MAX_CHUNK evened out: 1023
    monkeypatch.setitem(_budget.MEMORY_BUDGET, "gpu", 2**20)
    assert _budget.memory_budget(device=h200) == 2**20 == _budget.memory_budget("gpu")


def test_plan_record_is_flat_and_json_ready(generous_budget, two_candidates):
    """What a benchmark row records of a plan: widths, carry, source, planning seconds and each candidate."""
    cost, params, batch = _fd_reference.dict_case()
    plan = gradient(cost, "fd-central").plan(params, batch)
    rec = json.loads(json.dumps(plan.record()))
    assert rec["plan_widths"] == list(plan.widths) and rec["plan_source"] == "measured"
    assert len(rec["plan_candidates"]) == len(plan.candidates) and rec["plan_s"] == plan.planning_s > 0
    assert dataclasses.replace(plan, note="x").layout == plan.layout


def test_subset_derives_from_any_plan():
    """`_plan.subset` runs a kernel's own values function on the plan's prefix: the covered groups' values raveled
    in group order, a skipped group (None) left out; covered and total from `prefix` (padded), or exactly the
    directions run for a plan whose last chunk is not padded (`pad=False`: node perturbation's lax.map)."""
    seen = []

    def values(params, batch, limits):
        seen.append(limits)
        return [None if not m else jnp.arange(m, dtype=jnp.float64) + 100 * k for k, m in enumerate(limits)]

    sub = _plan.subset(DirectionPlan((13, 4), Layout((3, 3))), values, 5)
    assert (sub.covered, sub.total, sub.jittable) == (6, 21, True)
    np.testing.assert_array_equal(sub.fn(None, None), np.arange(6.0))
    assert seen == [[6, 0]]
    sub = _plan.subset(DirectionPlan((13, 4), Layout((3, 3))), values, 16, jittable=False)
    assert (sub.covered, sub.total, sub.jittable) == (21, 21, False)
    np.testing.assert_array_equal(sub.fn(None, None), np.concatenate([np.arange(13.0), 100 + np.arange(4.0)]))
    assert seen[-1] == [13, 4]  # the last chunk of a leaf: its own length, its padding counted in covered
    unpadded = DirectionPlan((5, 3), Layout((2, 3)), pad=False)
    assert unpadded.prefix(5) == ([5, 0], 5, 8) and unpadded.total == 8 and unpadded.padded(0) == 5
    with pytest.raises(ValueError, match="n_directions"):
        _plan.subset(unpadded, values, 0)


def test_fd_loop_runs_the_kernels_plan_at_width_one():
    """fd-loop is the kernel's direction plan at width 1, driven from Python: its subset covers what
    `fd_subset(chunk_size=1)` covers and gives the same cost values (the same points, another program: to a few
    ulps of |C|), and its gradient is the width-1 kernel's to the rounding of the cost values (2 values x 4 ulps
    of |C| / h, forward scheme, float64)."""
    cost, params, batch = _fd_reference.dict_case()
    loop = gradient(cost, "fd-loop")
    for n in (1, 7, 30):
        sub = loop.subset(params, batch, n)
        ref = finite_diff.fd_subset(cost, params, batch, n, scheme="forward", chunk_size=1)
        assert (sub.covered, sub.total, sub.jittable) == (ref.covered, ref.total, False)
        c = max(1.0, abs(float(cost(params, batch))))
        np.testing.assert_allclose(sub.fn(params, batch), jax.jit(ref.fn)(params, batch), rtol=0, atol=8 * EPS64 * c)
    c = max(1.0, abs(float(cost(params, batch))))
    h = finite_diff.default_eps("forward", jnp.float64) * np.maximum(1, np.abs(flat(params)))
    kernel = jax.jit(lambda p, b: finite_diff.fd_gradient(cost, p, b, scheme="forward", chunk_size=1))
    assert np.all(np.abs(flat(loop(params, batch)) - flat(kernel(params, batch))) <= 2 * 4 * EPS64 * c / h)


class FakeClock:
    """`time.perf_counter` for `_plan`: advanced only by the planted timer and objective, so the planning budget's
    arithmetic is checked exactly, whatever the machine's load."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t


def test_default_budget_can_pick_one_direction_at_a_time(monkeypatch):
    """At the shipped planning budget (`FRACTION`, `MAX_SECONDS`, not raised), on a gradient predicted at tens of
    seconds, the sequential layout (width 1, a lax.map/scan of single directions) is measured right after the
    default and picked when its measurement predicts the fastest gradient; the planning time is reported and
    stays within the budget, which is FRACTION x the default's predicted gradient (capped at MAX_SECONDS);
    with the sequential layout planted slow, another layout is kept."""
    clock = FakeClock()
    monkeypatch.setattr(_plan, "time", clock)
    default = Layout((128, 8))
    compile_s = 0.3

    def run(part_s):
        def timer(layout, fn, args, repeats, deadline):  # as `time_part`: no further call past the deadline
            seconds, start = part_s.get(layout.widths, 0.2), clock.t
            clock.t += compile_s
            for _ in range(repeats):
                clock.t += seconds
                if clock.t > deadline:
                    break
            return seconds, compile_s, clock.t - start

        def objective():
            clock.t += compile_s + 4e-3
            return compile_s, 1e-3

        monkeypatch.setattr(_plan, "time_part", timer)
        part = lambda layout, n: (None, (), max(layout.widths[0], n), 24008)  # noqa: E731
        return _plan.choose(default, (24000, 8), part, objective, 24008)

    # the default: 0.2 s per 128 directions -> 37.5 s per gradient, budget min(10, 0.1 x 37.5) = 3.75 s; the
    # sequential one: 0.03 s per 32 directions -> 22.5 s, the fastest
    plan = run({(128, 8): 0.2, (1, 1): 0.03})
    assert plan.source == "measured" and plan.layout == Layout((1, 1), True)
    assert [c.name for c in plan.candidates[:2]] == ["default", "sequential"]
    seq = plan.candidates[1]
    assert seq.predicted_s == pytest.approx(0.03 * 24008 / 32) and seq.note == ""
    assert plan.budget_s == pytest.approx(min(_plan.MAX_SECONDS, _plan.FRACTION * 0.2 * 24008 / 128))
    assert 0 < plan.planning_s <= plan.budget_s and "sequential" in plan.note
    assert json.loads(json.dumps(plan.record()))["plan_s"] == plan.planning_s
    clock.t = 0.0
    slow = run({(128, 8): 0.2, (1, 1): 3.0})  # planted slow: 2251 s predicted
    assert slow.layout != Layout((1, 1), True) and slow.candidates[1].predicted_s > 2000
    assert slow.planning_s <= slow.budget_s + compile_s + 3.0  # past the budget by one compile and one call
