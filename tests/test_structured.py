"""gdjax.gradients.structured: layer-aware FD ("fd-layerwise", "fd-layerwise-central") and node perturbation.

Float64 against jax.grad with tolerances from each scheme's error terms, against the FD kernel to 1e-9, the
difference-form helpers against direct subtraction, float32 precision, evaluation counts, bad input.

Tolerances, with h_i = eps * max(1, |v_i|) the step of parameter i (the FD kernel's rule):
  forward:  g_i(h) - dC/dv_i = (h_i / 2) C_ii + O(h^2 C_iii) + rounding. The difference form has no
            cancellation, so rounding is a few eps_mach * |g|; we assert the leading term itself:
            |err - h C_ii / 2| <= 0.02 max|h C_ii / 2| + 1e-12 (the next term is O(h) relative to it).
  central:  err = (h_i^2 / 6) C_iii + O(h^4): bounded by 50 h^2 (max|g| + 1), and halving h divides it by 4
            (Richardson: ratio in [3.5, 4.5]) unless it is exact already (< 1e-11).
  node perturbation: the same orders in the step on z (forward O(h), central O(h^2)): bounds and ratios.
  vs kernel: both compute (C(v + h+ e) - C(v + h- e)) / (h+ - h-) with the same h; the kernel subtracts two
            costs, losing eps_mach |C| / h ~ 2e-16 / 1e-5 = 2e-11 relative; so 1e-9 relative holds with room.
relu nets: the difference is exact (piecewise linear) unless a step crosses a kink (|z| < h |a|); relu tests
use 100x smaller steps and assert that no pre-activation lies within the largest change a step can make.
eps is traced in the compiled programs, so the several steps of a test share one compilation.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import conftest
import pytest
from jax.flatten_util import ravel_pytree

import gdjax
from gdjax.data import Batch, one_hot
from gdjax.gradients import _steps, gradient, method_info, n_params, structured
from gdjax.models.activations import ACTIVATIONS
from gdjax.nn import MLP, Layer

EPS64 = float(jnp.finfo(jnp.float64).eps)
N = 6
# (sizes, hidden activation, output activation, loss, l2): a 3-hidden-layer net, every hidden activation,
# both losses, every output activation, with and without weight decay.
CONFIGS = [
    ((3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0),          # the lecture's kind of net
    ((4, 5, 3), "tanh", "softmax", "cross-entropy", 0.1),
    ((3, 4, 5, 3, 2), "tanh", "sigmoid", "cross-entropy", 0.05),  # 3 hidden layers
    ((4, 5, 3), "relu", "identity", "quadratic", 0.0),
]
IDS = ["-".join(map(str, c[0])) + f"-{c[1]}-{c[2]}-{c[3]}" for c in CONFIGS]


make_case = functools.partial(conftest.make_case, n=N)


@functools.lru_cache(maxsize=None)
def reference(config):
    """(cost, params, batch, flat jax.grad, C_ii the Hessian's diagonal) for a config, computed once per worker."""
    cost, params, batch = make_case(*config)
    v, unravel = ravel_pytree(params)
    f = lambda u: cost(unravel(u), batch)  # noqa: E731
    g, c2 = jax.jit(lambda u: (jax.grad(f)(u), jnp.diag(jax.hessian(f)(u))))(v)
    return cost, params, batch, g, c2


def flat(tree):
    return ravel_pytree(tree)[0]


def eps_for(cost, eps):
    """relu nets get 100x smaller steps, so that no step crosses a kink (asserted by `assert_no_kink_crossing`)."""
    return eps * 1e-2 if cost.net.activation == "relu" else eps


def assert_no_kink_crossing(cost, params, batch, eps):
    """For relu nets: no hidden pre-activation is within the largest change a step of factor eps can make.

    A step h <= eps * max(1, |v|_max) moves a first-layer pre-activation by at most h * max(1, |x|_max); relu is
    1-Lipschitz, so each further layer multiplies the bound by its largest absolute row sum of W.
    """
    if cost.net.activation != "relu":
        return
    zs = [s.z for s in cost.net.states(params, batch.x)]
    bound = eps * max(1.0, float(jnp.max(jnp.abs(flat(params))))) * max(1.0, float(jnp.max(jnp.abs(batch.x))))
    for k, z in enumerate(zs[:-1]):
        assert float(jnp.min(jnp.abs(z))) > bound, f"layer {k}: data within {bound:g} of a relu kink"
        bound *= float(jnp.max(jnp.sum(jnp.abs(params[k + 1].w), axis=1)))


def assert_like_params(tree, params):
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(params)):
        assert a.shape == b.shape and a.dtype == b.dtype


SUBSET = CONFIGS[1:]  # softmax output, 3 hidden layers, relu (CONFIGS[0]: node perturbation, float32)
SUBSET_IDS = IDS[1:]


@pytest.mark.parametrize("config", SUBSET, ids=SUBSET_IDS)
def test_layerwise_matches_reverse(config):
    """Forward: the error is the leading term h C_ii / 2 (within 2%). Central: O(h^2), halving h quarters it."""
    cost, params, batch, g, c2 = reference(config)
    eps = eps_for(cost, 1e-4)
    assert_no_kink_crossing(cost, params, batch, eps)
    steps, _ = _steps.fd_steps(flat(params), eps, "forward")
    lead = 0.5 * steps[0] * c2
    out = gradient(cost, "fd-layerwise", eps=eps, chunk_size=3)(params, batch)
    assert_like_params(out, params)
    assert float(jnp.max(jnp.abs(lead))) < 1e-2 * float(jnp.max(jnp.abs(g)))  # a small step: a sane test
    np.testing.assert_allclose(flat(out) - g, lead, rtol=0, atol=0.02 * float(jnp.max(jnp.abs(lead))) + 1e-12)

    hmax = max(1.0, float(jnp.max(jnp.abs(flat(params)))))
    errs = []
    for eps in (2e-3, 1e-3):
        eps = eps_for(cost, eps)
        assert_no_kink_crossing(cost, params, batch, eps)
        est = gradient(cost, "fd-layerwise-central", eps=eps, chunk_size=4)
        errs.append(float(jnp.max(jnp.abs(flat(est(params, batch)) - g))))
    assert errs[1] < 50 * (eps_for(cost, 1e-3) * hmax) ** 2 * (float(jnp.max(jnp.abs(g))) + 1)
    if errs[0] > 1e-11:  # relu/identity nets with a quadratic loss are piecewise quadratic: central is exact
        assert 3.5 < errs[0] / errs[1] < 4.5, errs


@pytest.mark.parametrize("config,chunk", [(CONFIGS[0], 2), (CONFIGS[2], None)], ids=[IDS[0], IDS[2]])
def test_node_perturbation_matches_reverse(config, chunk):
    """Forward error O(h), central O(h^2): bounded by 50 h (resp. 50 h^2) times max|g| + 1 (generous for O(1)
    curvature), and shrinking with h at the scheme's order (1000x smaller step: >= 100x smaller forward error;
    10x smaller step: >= 30x smaller central error). Units chunked (lax.map) or all vmapped."""
    cost, params, batch, g, _ = reference(config)
    scale = float(jnp.max(jnp.abs(g))) + 1.0
    hmax = max(1.0, max(float(jnp.max(jnp.abs(layer.b))) for layer in params))
    errs = {}
    for scheme, eps in [("forward", 1e-6), ("forward", 1e-3), ("central", 1e-4), ("central", 1e-3)]:
        out = gradient(cost, "node-perturbation", scheme=scheme, eps=eps, chunk_size=chunk)(params, batch)
        assert_like_params(out, params)
        errs[scheme, eps] = float(jnp.max(jnp.abs(flat(out) - g)))
    assert errs["forward", 1e-6] < 50 * 1e-6 * hmax * scale
    assert errs["central", 1e-4] < 50 * (1e-4 * hmax) ** 2 * scale
    assert errs["forward", 1e-6] < errs["forward", 1e-3] / 100
    assert errs["central", 1e-4] < errs["central", 1e-3] / 30


def test_equal_to_fd_kernel():
    """fd-layerwise(-central) equal the FD kernel to 1e-9 relative (blocks of 3 and 4 inputs, with padding);
    node perturbation's bias gradient is the kernel's (the same perturbation), to rounding."""
    cost, params, batch, _, _ = reference(CONFIGS[2])  # 3 hidden layers, L2 term
    # (the chunk sizes of test_layerwise_matches_reverse: eps is traced, so the compiled programs are shared)
    cases = [("forward", "fd-layerwise", 1e-5, 3), ("central", "fd-layerwise-central", 1e-4, 4)]
    for scheme, mine, eps, chunk in cases:
        kernel = gradient(cost, f"fd-{scheme}", eps=eps)(params, batch)
        a = flat(gradient(cost, mine, eps=eps, chunk_size=chunk)(params, batch))
        assert float(jnp.linalg.norm(a - flat(kernel)) / jnp.linalg.norm(flat(kernel))) < 1e-9, mine
        # both subtract costs (node perturbation per example): rounding about eps_mach |C| / h each
        node = gradient(cost, "node-perturbation", scheme=scheme, eps=eps)(params, batch)
        atol = 50 * EPS64 * max(1.0, abs(float(cost(params, batch)))) / eps
        for la, lb in zip(node, kernel):
            np.testing.assert_allclose(la.b, lb.b, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("act", list(ACTIVATIONS))  # every registered hidden activation
def test_activation_difference_form(act):
    """act(z + dz) - act(z) from the difference form equals the direct subtraction, computed in float64."""
    z = jnp.linspace(-6.0, 6.0, 41, dtype=jnp.float64)[:, None]
    dz = jnp.array([-0.3, -1e-4, 0.0, 1e-6, 0.02, 2.0], jnp.float64)[None, :]
    f = ACTIVATIONS[act]
    got = f.diff(f.diff_prep(z), dz)
    np.testing.assert_allclose(jnp.broadcast_to(got, (41, 6)), f(z + dz) - f(z), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("out,loss", [("sigmoid", "quadratic"), ("softmax", "quadratic"), ("identity", "quadratic"),
                                      ("sigmoid", "cross-entropy"), ("softmax", "cross-entropy"),
                                      ("identity", "cross-entropy")])
def test_loss_difference_form_matches_cost(out, loss):
    """The per-example loss change from the logits equals cost.per_example's difference (a guard should the
    losses in costs.py change): a one-layer identity net makes the logits equal to its input."""
    n = 4
    cost = gdjax.make_cost(MLP((n, n), "sigmoid", out), loss)
    eye = (Layer(jnp.eye(n, dtype=jnp.float64), jnp.zeros(n, jnp.float64)),)
    kz, kd = jax.random.split(jax.random.key(3))
    z = 2 * jax.random.normal(kz, (5, n), jnp.float64)
    dz = 1e-3 * jax.random.normal(kd, (5, n), jnp.float64)
    y = one_hot(np.arange(5) % n, n, "float64")
    direct = (cost.per_example_batch(eye, Batch(z + dz, y)) - cost.per_example_batch(eye, Batch(z, y)))
    loss, out = cost.loss_fn, cost.net.output_fn
    got = loss.diff(loss.diff_prep(z, y, out), dz, y, out)
    np.testing.assert_allclose(got, direct, rtol=1e-9)


@pytest.mark.parametrize("method,scheme", [("fd-layerwise", None), ("node-perturbation", "forward"),
                                           ("node-perturbation", "central")])
def test_float32_keeps_precision(method, scheme):
    """In float32 the difference form is exact to rounding: with eps = 1e-5 the error is the truncation
    (~1e-5 relative) plus a few eps_mach, where subtracting two costs would lose eps_mach C / h ~ 1e-2.
    Catches a per-example (node perturbation) or per-direction change computed as C(v + h e) - C(v) in float32:
    node perturbation did that and erred by 1.5e-2 (central 6e-3) here (1e-2 on the lecture net at its default step)."""
    cost, params, batch = make_case((6, 5, 4), "sigmoid", "sigmoid", "quadratic", 0.0, n=32, seed=4)
    g = flat(jax.grad(cost)(params, batch))
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    b32 = Batch(batch.x.astype(jnp.float32), batch.y.astype(jnp.float32))
    options = {} if scheme is None else {"scheme": scheme}
    est = flat(gradient(cost, method, eps=1e-5, **options)(p32, b32)).astype(jnp.float64)
    assert est.dtype == jnp.float64 and flat(p32).dtype == jnp.float32
    rel = float(jnp.linalg.norm(est - g) / jnp.linalg.norm(g))
    assert rel < 1e-4, rel


def test_node_perturbation_subset():
    """The subset runs node perturbation's own per-unit program on whole chunks of units, layer after layer:
    its values are the full gradient's per-example deltas of those units (a prefix that skipped or repeated a
    unit would differ), `covered` >= asked, `total` = all units."""
    cost, params, batch = make_case(*CONFIGS[2])  # not `reference`: no jax.grad or Hessian needed here
    est = gradient(cost, "node-perturbation", eps=1e-4, chunk_size=2)
    units = list(cost.net.sizes[1:])
    sub = est.subset(params, batch, 3)
    assert sub.total == sum(units) and 3 <= sub.covered < sum(units)
    # jitted: one compilation instead of one per op (op by op it takes seconds)
    deltas = jax.jit(lambda p, b: structured.node_deltas(cost, p, b, 1e-4, "forward", 2))(params, batch)
    want = jnp.ravel(deltas[0][:, :sub.covered])
    np.testing.assert_allclose(sub.fn(params, batch), want, rtol=1e-12, atol=1e-14)
    assert method_info("node-perturbation").subset


def test_inside_jit_and_registry_entries():
    cost, params, batch, g, _ = reference(CONFIGS[0])
    est = gradient(cost, "node-perturbation", scheme="central", eps=1e-4)
    out = jax.jit(lambda p, b: est(p, b))(params, batch)
    assert_like_params(out, params)
    assert float(jnp.max(jnp.abs(flat(out) - g))) < 1e-6
    for method in ("fd-layerwise", "fd-layerwise-central", "node-perturbation"):
        info = method_info(method)
        assert info.structured and info.kind == "fd"


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_layerwise_subset_runs_the_programs_first_steps(scheme):
    """`subset` of layer-aware FD runs the whole program's first loop steps: its differences are the whole
    gradient's for the same (unit, block of inputs) pairs, bit for bit (a subset that took other pairs, other
    steps or another block size would not be); covered is whole loop steps, total the padded whole."""
    cost, params, batch = make_case(*CONFIGS[1])  # (4, 5, 3): layer 0 has 4 inputs + bias = 5 columns, 5 units
    method = "fd-layerwise" if scheme == "forward" else "fd-layerwise-central"
    sub = gradient(cost, method, chunk_size=4).subset(params, batch, 9)
    n_sets = 1 if scheme == "forward" else 2
    # blocks of 3 columns (chunk 4 evened: 2 blocks of 3, the last padded by a zero column), so a loop step is
    # 3 * n_sets directions
    step = 3 * n_sets
    assert sub.covered == max(-(-9 // step), 2) * step and sub.jittable
    assert sub.total == (5 * 2 * 3 + 3 * 2 * 3) * n_sets  # layer 1: 6 columns, 3 units, 2 blocks of 3
    got = np.asarray(sub.fn(params, batch)).reshape(-1, n_sets, 3)  # (loop steps, step sets, block)
    h = jnp.asarray(_steps.default_eps(scheme, jnp.float64), jnp.float64)
    steps = structured._layer_steps(params, h, scheme)[1]
    # (S, 5 columns, 5 units); jitted: one compilation instead of one per op
    whole = jax.jit(lambda p, b, st: structured.layerwise_differences(cost, p, b, st, 4)[0])(params, batch, steps)
    for s_ in range(got.shape[0]):  # loop step s_ = unit s_ // 2, block s_ % 2
        i, jb = divmod(s_, 2)
        want = np.asarray(whole[:, 3 * jb:3 * jb + 3, i])
        np.testing.assert_array_equal(got[s_][:, :want.shape[1]], want)
        assert np.all(got[s_][:, want.shape[1]:] == 0)  # the padding column: a zero change


def test_evaluation_counts():
    cost, params, _, _, _ = reference(CONFIGS[2])
    p = n_params(params)
    units = sum(cost.net.sizes[1:])
    assert gradient(cost, "fd-layerwise").evaluations(p) == p + 1
    assert gradient(cost, "fd-layerwise-central").evaluations(p) == 2 * p
    assert gradient(cost, "node-perturbation").evaluations(p) == units + 1
    assert gradient(cost, "node-perturbation", scheme="central").evaluations(p) == 2 * units


@pytest.mark.parametrize("method", ["fd-layerwise", "fd-layerwise-central", "node-perturbation"])
def test_bad_input(method):
    cost, params, batch, _, _ = reference(CONFIGS[0])
    with pytest.raises(TypeError, match="make_cost"):
        gradient(lambda p, b: jnp.sum(p[0].w), method)
    with pytest.raises(ValueError, match="eps"):
        gradient(cost, method, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        gradient(cost, method, eps=float("nan"))
    with pytest.raises(TypeError, match="eps"):
        gradient(cost, method, eps="small")
    with pytest.raises(ValueError, match="chunk_size"):
        gradient(cost, method, chunk_size=0)
    with pytest.raises(TypeError):
        gradient(cost, method, step=1e-3)  # unknown option
    with pytest.raises(ValueError, match="machine epsilon"):
        gradient(cost, method, eps=1e-20)(params, batch)
    with pytest.raises(ValueError, match="params must be a tuple of Layer"):
        gradient(cost, method)(params[:1], batch)
    with pytest.raises(ValueError, match="batch.x"):
        gradient(cost, method)(params, Batch(batch.x[:, :2], batch.y))


def test_bad_scheme():
    cost = reference(CONFIGS[0])[0]
    with pytest.raises(ValueError, match="scheme"):
        gradient(cost, "node-perturbation", scheme="backward")
