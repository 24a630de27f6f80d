"""The FD kernel: equals the naive loop to rounding, any chunk size, sharded over 4 (host) devices equal to one,
no retracing, memory that grows with the chunk and not with P^2, the defaults, the direction map."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdjax
from gdjax.data import Batch, one_hot
from gdjax import sharding
from gdjax.gradients import _budget, _chunked, _leaf_stack, finite_diff, gradient
from gdjax.nn import MLP

EPS64 = float(jnp.finfo(jnp.float64).eps)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def case(sizes=(3, 5, 3), act="tanh", out="sigmoid", loss="cross-entropy", dtype="float64", n=6, seed=0):
    net = MLP(sizes, act, out)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = net.init(k1, dtype=dtype)
    x = jax.random.uniform(k2, (n, sizes[0]), jnp.dtype(dtype))
    return gdjax.make_cost(net, loss, 0.01), params, Batch(x, one_hot(np.arange(n) % sizes[-1], sizes[-1], dtype))


def flat(tree):
    return ravel_pytree(tree)[0]


def rounding_bound(scheme, cost, params, batch, g):
    """How far two FD gradients may differ when the same costs are evaluated by different programs (batched
    vs one at a time: XLA may sum in another order). Each cost value may move by a few ulps of |C|; that
    becomes (2 values) * 4 ulps / h_i for forward/central, and a few ulps of the largest of |C|, |g| for the
    complex step (no division by a small difference)."""
    v = flat(params)
    c = max(1.0, abs(float(jax.jit(cost)(params, batch))))
    if scheme == "complex":
        return 16 * EPS64 * max(c, float(jnp.max(jnp.abs(g))))
    h = finite_diff.default_eps(scheme, jnp.float64) * jnp.maximum(1, jnp.abs(v))
    return 2 * 4 * EPS64 * c / h


@pytest.mark.parametrize("scheme", finite_diff.SCHEMES)
def test_kernel_equals_loop(scheme):
    cost, params, batch = case()
    kernel = flat(gradient(cost, f"fd-{scheme}")(params, batch))
    loop = flat(gradient(cost, "fd-loop", scheme=scheme)(params, batch))
    assert np.all(np.abs(np.asarray(kernel - loop)) <= np.asarray(rounding_bound(scheme, cost, params, batch, loop)))


def test_any_chunk_size_gives_the_same_gradient():
    """Chunk 1 (a loop), 7 (divides none of the leaves' direction counts 16, 5, 15, 3: padded) and the default,
    on the forward scheme (whose first leaf also carries the base point)."""
    cost, params, batch = case()
    assert gdjax.n_params(params) == 38
    ref = flat(gradient(cost, "fd-forward", chunk_size=1)(params, batch))
    bound = rounding_bound("forward", cost, params, batch, ref)
    for chunk in (7, None):  # None: on this tiny net, one chunk holding all of a leaf's directions
        got = flat(gradient(cost, "fd-forward", chunk_size=chunk)(params, batch))
        assert np.all(np.abs(np.asarray(got - ref)) <= np.asarray(bound)), chunk


def test_no_retrace_on_second_call():
    cost, params, batch = case()
    traces = []

    def counted(p, b):
        traces.append(1)
        return cost(p, b)

    for i, method in enumerate(("fd-central", "forward", "fd-loop")):
        traces.clear()
        est = gradient(counted, method, **({} if method == "fd-loop" else {"chunk_size": 8}))
        first = est(params, batch)
        n_first = len(traces)
        assert n_first > 0
        second = est(jax.tree_util.tree_map(lambda a: a + 0.5, params), batch)  # new values, same shapes
        assert len(traces) == n_first, f"{method} retraced"
        assert not np.allclose(flat(first), flat(second))
        if i == 0:
            est(params, Batch(batch.x[:3], batch.y[:3]))  # a new batch shape must retrace: the counter works
            assert len(traces) > n_first


def test_memory_grows_with_chunk_not_p_squared():
    """XLA's own memory analysis of the compiled kernel for P = 5674 (P^2 floats would be 129 MB)."""
    net = MLP((48, 96, 10))
    params = net.init(jax.random.key(0), dtype="float32")
    batch = Batch(jnp.zeros((32, 48), jnp.float32), jnp.zeros((32, 10), jnp.float32))
    cost = gdjax.make_cost(net)
    P = net.n_params()

    def temp_bytes(chunk):
        fn = jax.jit(lambda p, b: finite_diff.fd_gradient(cost, p, b, scheme="forward", chunk_size=chunk))
        return fn.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(16), temp_bytes(128)
    assert large > 2 * small  # grows with the chunk ...
    assert large < 16 * 128 * P * 4  # ... by O(chunk * P) bytes (a few copies of the chunk's params) ...
    assert large < 0.1 * P * P * 4  # ... far from a P x P matrix


def test_defaults():
    for dt in (jnp.float32, jnp.float64):
        e = float(jnp.finfo(dt).eps)
        assert finite_diff.default_eps("forward", dt) == pytest.approx(e**0.5)
        assert finite_diff.default_eps("central", dt) == pytest.approx(e ** (1 / 3))
        assert finite_diff.default_eps("complex", dt) == pytest.approx(e**2)
    assert finite_diff.default_eps("forward", jnp.float32) == pytest.approx(3.45e-4, rel=1e-2)
    # chunk from the budget: per direction 3 P itemsize + activations
    P, act = 10_000, 50_000
    largest = 2**26 // (3 * P * 4 + act)
    for n in (10**6, 10**6 + 1, 3 * largest + 1):
        c = _budget.default_chunk_size(P, 4, act, n, budget=2**26, cache=None, align=1)
        n_chunks = -(-n // c)
        assert c <= largest and n_chunks == -(-n // largest)  # within budget, the fewest chunks ...
        assert n_chunks * c - n < n_chunks  # ... evened out: less than one padded direction per chunk
    # 5 chunks' worth over 4 devices: 8 chunks (a multiple of the devices), evened out
    assert _budget.default_chunk_size(P, 4, act, 5 * largest, 4, 2**26, None, align=1) == -(-5 * largest // 8)
    assert _budget.default_chunk_size(P, 4, act, 10, n_devices=4, cache=None) == 3  # never more than per device
    assert _budget.default_chunk_size(10**9, 8, 0, 10) == 1  # huge P: one direction at a time
    assert _budget.default_chunk_size(1, 4, 0, 10**9) == _budget.MAX_CHUNK
    # the cache limit on CPU: the stack of copies (c * P * itemsize) within the cache budget
    assert _budget.default_chunk_size(P, 4, act, 10**6, budget=2**26, cache=2**20, align=1) == 2**20 // (P * 4)
    # aligned: a multiple of `align` at most the largest chunk, padding under `align` directions per chunk
    for n in (10**6, 10**6 + 1, 12_345):
        c = _budget.default_chunk_size(P, 4, act, n, budget=2**26, cache=None, align=16)
        n_chunks = -(-n // c)
        assert c % 16 == 0 and c <= largest and n_chunks * c - n < 16 * n_chunks
    assert _budget.default_chunk_size(P, 4, act, 10**6, budget=2**26, cache=2**22, align=16) == 96  # 104 -> 96
    assert _budget.default_chunk_size(P, 4, act, 10**6, budget=2**26, cache=2**21, align=16) == 52  # < 64: as is


def test_lecture_net_default_chunks(monkeypatch):
    """The budget default at the lecture net: memory-bound on a "gpu" budget of 256 MiB (fixed here, so that the
    test reads the same on a machine with a real GPU, whose budget comes from its memory), cache-bound on CPU."""
    monkeypatch.setitem(_budget.MEMORY_BUDGET, "gpu", 256 * 2**20)
    net = MLP((784, 30, 10))
    params = jax.eval_shape(net.init, jax.random.key(0))  # shapes are all the defaults look at
    cost = gdjax.make_cost(net)
    copy = 784 * 30 * 4  # bytes of one perturbed copy of the 784 x 30 weights
    cpu = {}
    for n in (10, 1000):
        batch = Batch(jax.ShapeDtypeStruct((n, 784), jnp.float32), jax.ShapeDtypeStruct((n, 10), jnp.float32))
        per_direction = 3 * copy + _budget.intermediate_bytes(cost, params, batch)
        gpu = finite_diff.leaf_chunk_sizes(cost, params, batch, "forward", platform="gpu")[0]
        cpu[n] = finite_diff.leaf_chunk_sizes(cost, params, batch, "forward", platform="cpu")[0]
        assert gpu * per_direction <= _budget.memory_budget("gpu") and 1 < cpu[n] <= gpu
        if n == 1000:  # 23520 directions at the largest chunk, 314, even out to 75 chunks of 314: it fills the budget
            assert _budget.memory_budget("gpu") < (gpu + 1) * per_direction * 1.01
    # few examples per copy: the copies fit the base cache budget; many: the widest budget (compute-bound)
    # (both multiples of 16, within 16 directions of the budget)
    assert cpu[10] * copy <= _budget.CACHE_BUDGET["cpu"] < (cpu[10] + 16) * copy
    wide = _budget.REUSE_CAP * _budget.CACHE_BUDGET["cpu"]
    assert cpu[1000] * copy <= wide < (cpu[1000] + 16) * copy and cpu[1000] > 2 * cpu[10]
    assert cpu[10] % 16 == 0 and cpu[1000] % 16 == 0


def test_cache_budget_grows_with_examples_per_copy():
    base = _budget.CACHE_BUDGET["cpu"]
    assert _budget.cache_budget("cpu", 1) == _budget.cache_budget("cpu", _budget.REUSE_EXAMPLES - 1) == base
    assert _budget.cache_budget("cpu", 2 * _budget.REUSE_EXAMPLES) == 2 * base
    assert _budget.cache_budget("cpu", 10**6) == _budget.REUSE_CAP * base  # capped
    assert _budget.cache_budget("gpu", 10**6) is None
    batch = Batch(jnp.zeros((7, 3)), jnp.zeros((7, 2)))
    assert _budget.batch_examples(batch) == 7 and _budget.batch_examples(jnp.float32(1.0)) == 1
    # the same leaf, directions and budget: more examples per copy -> a wider default chunk on a CPU only
    narrow = _budget.default_chunk_size(10**4, 4, 0, 10**6, platform="cpu", n_examples=1)
    wide = _budget.default_chunk_size(10**4, 4, 0, 10**6, platform="cpu", n_examples=10**4)
    assert (narrow, wide) == (base // 40_000 // 16 * 16, _budget.REUSE_CAP * base // 40_000 // 16 * 16)
    assert (_budget.default_chunk_size(10**4, 4, 0, 10**6, platform="gpu", n_examples=1)
            == _budget.default_chunk_size(10**4, 4, 0, 10**6, platform="gpu", n_examples=10**4))


def test_map_directions_matches_vmap_with_padding():
    ops = (jnp.arange(3.0), 2.0)
    xs = (jnp.arange(11), jnp.linspace(0, 1, 11))
    fn = lambda o, x: {"a": o[0] * x[0] + o[1], "b": jnp.stack([x[1], -x[1]])}  # noqa: E731
    ref = jax.vmap(fn, in_axes=(None, 0))(ops, xs)
    for chunk in (1, 4, 11, 20):
        got = jax.jit(lambda o, x, c=chunk: _chunked.map_directions(_chunked.vmapped(fn), o, x, c))(ops, xs)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), got, ref)


@pytest.mark.parametrize("shape", [(), (5,), (4, 3), (2, 3, 4)])
def test_perturb_stack_edits_the_buffer_into_each_chunks_copies(shape):
    """A chain of chunks through one buffer (restore the last chunk's entries, set this one's) gives, at every
    chunk, exactly fresh copies of the leaf with one entry set each (-1: the copy unchanged; an index repeated
    within a chunk or across chunks)."""
    leaf = jnp.arange(float(np.prod(shape))).reshape(shape) * 0.25 - 1.0
    axis = _leaf_stack.leaf_axis(leaf.ndim)
    n = leaf.size
    chunks = [[0, n - 1, -1], [n - 1, -1, 0], [-1, -1, -1], [n // 2, 0, n - 1]]
    step = jax.jit(lambda st, i, v: _leaf_stack.perturb_stack(leaf, st, i, v, axis))
    state = _leaf_stack.leaf_stack(leaf, 3, axis)
    for j, idx in enumerate(chunks):
        idx = jnp.array(idx, jnp.int32)
        vals = 100.0 + j * 3 + jnp.arange(3.0)
        state = step(state, idx, vals)
        assert state.stack.shape == shape[:axis] + (3,) + shape[axis:]
        for c in range(3):
            want = np.array(leaf).ravel()
            if idx[c] >= 0:
                want[int(idx[c])] = float(vals[c])
            np.testing.assert_array_equal(np.take(np.asarray(state.stack), c, axis=axis).ravel(), want)


def test_map_directions_carries_a_state_from_chunk_to_chunk():
    """With `init`, chunks run in order under lax.scan with the state carried: a running count of directions seen
    (per device, so here on one device); padding directions are computed and dropped."""
    xs = jnp.arange(10.0)

    def chunk_fn(ops, state, x):
        return state + x.shape[0], x * ops + state

    for chunk in (1, 3, 10):
        got = jax.jit(lambda x, c=chunk: _chunked.map_directions(
            chunk_fn, 2.0, x, c, init=lambda ops: jnp.zeros((), jnp.float32)))(xs)
        seen_before = (np.arange(10) // chunk) * chunk  # directions in the earlier chunks
        np.testing.assert_array_equal(got, 2.0 * np.arange(10) + seen_before)


def test_mesh_arguments():
    """The kernel's devices / mesh options go through gdjax.sharding's checks (test_sharding.py)."""
    mesh = sharding.direction_mesh()
    with pytest.raises(TypeError, match="devices"):
        gradient(case()[0], "fd-central", devices="cpu")
    with pytest.raises(TypeError, match="mesh"):
        gradient(case()[0], "fd-central", mesh="data")
    with pytest.raises(ValueError, match="either devices or mesh"):
        gradient(case()[0], "fd-central", devices=jax.devices(), mesh=mesh)


SHARDED_SCRIPT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import gdjax
    from gdjax.gradients import gradient
    from jax.flatten_util import ravel_pytree
    assert len(jax.devices()) == 4, jax.devices()
    net = gdjax.MLP((3, 5, 3), "tanh", "sigmoid")
    params = net.init(jax.random.key(0), dtype="float64")          # P = 38: not a multiple of 4 * chunk
    x = jax.random.uniform(jax.random.key(1), (6, 3), jnp.float64)
    batch = gdjax.Batch(x, gdjax.one_hot(np.arange(6) % 3, 3, "float64"))
    cost = gdjax.make_cost(net, "cross-entropy", 0.01)
    out = {"cost": float(cost(params, batch))}
    for method, chunk in [("fd-forward", None), ("fd-central", 3), ("forward", 3)]:
        one = gradient(cost, method, chunk_size=chunk, devices=jax.devices()[:1])(params, batch)
        est = gradient(cost, method, chunk_size=chunk)              # default: every device
        four = est(params, batch)
        leaf = jax.tree_util.tree_leaves(four)[0]
        d = np.abs(np.asarray(ravel_pytree(four)[0] - ravel_pytree(one)[0]))
        out[method] = {"max_diff": float(d.max()), "n_devices": est.options["n_devices"],
                       "max_grad": float(np.abs(np.asarray(ravel_pytree(one)[0])).max()),
                       "replicated_on": len(leaf.sharding.device_set),
                       "fully_replicated": bool(leaf.sharding.is_fully_replicated)}
    print(json.dumps(out))
""")


def test_sharded_equals_single_device():
    """4 host devices (XLA_FLAGS) in a subprocess: the direction axis split 4 ways, padded, same gradient.

    Same chunks of the same directions on every device; the programs differ only in how XLA compiles a chunk
    inside or outside a loop, which can change a cost value by an ulp. So: equal to the rounding of the cost
    values (usually bitwise): 2 values x 4 ulps of C / h for differences, 16 ulps for forward mode (no division
    by h). The complex step shares fd-central's code path (another perturbed value)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    c = max(1.0, out.pop("cost"))
    h_min = {"fd-forward": finite_diff.default_eps("forward", jnp.float64),
             "fd-central": finite_diff.default_eps("central", jnp.float64)}
    assert len(out) == 3
    for method, r in out.items():
        assert r["n_devices"] == 4 and r["replicated_on"] == 4 and r["fully_replicated"], (method, r)
        if method in h_min:
            bound = 2 * 4 * EPS64 * c / h_min[method]
        else:
            bound = 16 * EPS64 * max(c, r["max_grad"])
        assert r["max_diff"] <= bound, (method, r, bound)


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_subset_runs_the_kernels_own_directions(scheme):
    """`fd_subset` (for timing part of the kernel) evaluates the kernel's first directions with its own chunks:
    the derivatives they give equal the whole kernel's first components to the rounding of a cost value (a
    subset that took other directions, another step or another chunking of the base point would not)."""
    cost, params, batch = case()  # first leaf: a (3, 5) weight, 15 parameters
    full = flat(gradient(cost, f"fd-{scheme}", chunk_size=4)(params, batch))
    sub = finite_diff.fd_subset(cost, params, batch, 9, scheme=scheme, chunk_size=4)
    assert sub.covered == 12 and sub.total == {"forward": 16 + 8 + 16 + 3, "central": 32 + 12 + 32 + 8}[scheme]
    values = jax.jit(sub.fn)(params, batch)
    h = finite_diff.leaf_plan(params[0].w, scheme, finite_diff.default_eps(scheme, jnp.float64)).den
    if scheme == "forward":  # the base point, then the first 11 parameters
        got = (values[1:] - values[0]) / h[:11]
    else:  # + steps of the first 12 parameters (no - steps yet: those are directions 16..)
        got = values - float(cost(params, batch))
        h = h / 2  # a one-sided step from the central denominator fl(v+h) - fl(v-h), to first order
    bound = np.asarray(rounding_bound(scheme, cost, params, batch, full))[:got.size]
    if scheme == "forward":
        assert np.all(np.abs(np.asarray(got - full[:11])) <= bound)
    else:  # C(v + h e_i) - C(v) = h g_i + O(h^2): checks the directions are the first parameters' + steps
        np.testing.assert_allclose(np.asarray(got), np.asarray(h[:12] * full[:12]), atol=1e-9)


def test_one_step_rule_for_every_fd_method():
    """The kernel's points (`leaf_plan`) and the steps layer-aware FD and node perturbation take (`fd_steps`) come
    from one rule: the same representable step and denominator, bit for bit (two copies of the rule that drifted
    apart, e.g. one without max(1, |v|) or with h instead of fl(v + h) - v, would fail)."""
    from gdjax.gradients import _steps

    v = jnp.array([0.0, 1e-3, -0.7, 3.0, -250.0, 1e5])
    for scheme in ("forward", "central"):
        eps = _steps.default_eps(scheme, v.dtype)
        pl = finite_diff.leaf_plan(v, scheme, eps)
        steps, den = _steps.fd_steps(v, eps, scheme)
        np.testing.assert_array_equal(pl.den, den)
        np.testing.assert_array_equal(pl.t[:v.size] - v, steps[0])
        if scheme == "central":
            np.testing.assert_array_equal(pl.t[v.size:] - v, steps[1])
        h = eps * np.maximum(1, np.abs(np.asarray(v)))
        np.testing.assert_allclose(np.asarray(steps[0]), h, rtol=1e-6)  # relative above |v| = 1, absolute below
    # one refusal for every method: a step that rounds away
    for method in ("fd-forward", "fd-layerwise", "node-perturbation"):
        with pytest.raises(ValueError, match="machine epsilon"):
            _steps.step_factor("forward", 1e-17, jnp.float64, method)
    assert _steps.step_factor("complex", 1e-30, jnp.float64, "fd-complex") == 1e-30  # no cancellation there


def test_memory_budget_reads_its_platform(monkeypatch):
    """`memory_budget(platform)` and the default chunk size follow the platform asked for, not the host's
    (a budget that ignored its argument would give the CPU's numbers for a GPU)."""
    monkeypatch.setitem(_budget.MEMORY_BUDGET, "gpu", 2**20)
    assert _budget.memory_budget("gpu") == 2**20 and _budget.memory_budget("cpu") == 256 * 2**20
    assert _budget.cache_budget("gpu") is None and _budget.cache_budget("cpu") == 8 * 2**20
    # a 10^4-parameter leaf, float32, no activations, 10^6 directions (these sizes divide 10^6 evenly):
    assert _budget.default_chunk_size(10**4, 4, 0, 10**6, platform="gpu") == 2**20 // 120_000  # 1 MiB / 3 copies
    assert _budget.default_chunk_size(10**4, 4, 0, 10**6, platform="cpu") == 8 * 2**20 // 40_000 // 16 * 16  # cache
    with pytest.raises(TypeError, match="platform"):
        _budget.memory_budget(3)


def test_prefix_covers_whole_chunks_in_program_order():
    """`prefix` (the directions a subset timing runs): whole chunks of each leaf in order, at least two chunks of
    a leaf that has two (so the loop is the whole program's), totals padded as the whole program pads."""
    assert _chunked.prefix([13, 4], [3, 3], 5) == ([6, 0], 6, 15 + 6)
    assert _chunked.prefix([13, 4], [3, 3], 1) == ([6, 0], 6, 21)  # two chunks even for one direction
    assert _chunked.prefix([13, 4], [3, 3], 14) == ([13, 0], 15, 21)  # leaf 0 whole (padded to 15) covers 14
    assert _chunked.prefix([13, 4], [3, 3], 16) == ([13, 4], 21, 21)  # then leaf 1's two chunks (its whole)
    assert _chunked.prefix([13, 4], [3, 3], 100) == ([13, 4], 21, 21)
    assert _chunked.prefix([10], [4], 3, n_devices=2) == ([10], 16, 16)  # 2 chunks x 2 devices cover it all


@pytest.mark.parametrize("scheme,chunk", [("forward", 7), ("central", None), ("complex", 4)])
def test_multi_step_equals_one_kernel_per_step(scheme, chunk):
    """`fd_multi_step` (every step scale in one program, as check_grad uses it) gives, per scale, the kernel's
    gradient at eps * scale: the same points and chunks, so equal to a few ulps of each cost over the step.
    Fails on: a scale's edits leaking into the next scale's copies (the buffer is shared), the forward base
    point C(v) used only for the first leaf (every leaf after it would be off by C/h), scales swapped, or the
    step not scaled. Chunks of 7 pad every leaf (16, 5, 15, 3 directions); complex: 3 scales."""
    cost, params, batch = case()
    eps = finite_diff.default_eps(scheme, jnp.float64)
    scales = (1.0, 0.25, 0.5) if scheme == "complex" else (1.0, 0.5)
    got = jax.jit(lambda p, b: finite_diff.fd_multi_step(cost, p, b, scheme=scheme, eps=eps, scales=scales,
                                                         chunk_size=chunk))(params, batch)
    assert len(got) == len(scales)
    for s, g in zip(scales, got):
        ref = flat(gradient(cost, f"fd-{scheme}", eps=eps * s, chunk_size=chunk)(params, batch))
        assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)
        bound = rounding_bound(scheme, cost, params, batch, ref) / (1 if scheme == "complex" else s)
        assert np.all(np.abs(np.asarray(flat(g) - ref)) <= np.asarray(bound)), s
    if scheme != "complex":  # the two scales really differ (truncation error O(h) / O(h^2) changes)
        assert float(jnp.max(jnp.abs(flat(got[0]) - flat(got[1])))) > 0


def test_multi_step_options():
    """Bad scales and a step at or below eps_mach are refused, naming the option."""
    cost, params, batch = case()
    with pytest.raises(ValueError, match="scales"):
        finite_diff.fd_multi_step(cost, params, batch, scales=(1.0, -0.5))
    with pytest.raises(ValueError, match="scales"):
        finite_diff.fd_multi_step(cost, params, batch, scales=[1.0])
    with pytest.raises(ValueError, match="eps"):
        finite_diff.fd_multi_step(cost, params, batch, scheme="forward", eps=1e-15, scales=(1.0, 0.01))
