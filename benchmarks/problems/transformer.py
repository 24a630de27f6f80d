"""One pre-LayerNorm transformer block on random sequences, squared error against random targets (float64):
h = x + Attention(LN1(x)), out = h + W2 tanh(W1 LN2(h) + b1) + b2, two heads, no mask.

Params (a dict): ln1_g, ln1_b, ln2_g, ln2_b (D,), wq, wk, wv, wo (D, D), w1 (D, H), b1 (H,), w2 (H, D), b2 (D,).
Batch: (x (N, T, D), target (N, T, D)).

    >>> prob = make()      # N = 16, T = 8, D = 16, H = 32: P = 2,160
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.problems import import_torch, require_x64, to_torch
from gdjax.bench.problem import Problem

HEADS = 2
LN_EPS = 1e-5


def _layer_norm(x, g, b, xp):
    mean = xp.mean(x, -1, keepdims=True)
    var = xp.mean((x - mean) ** 2, -1, keepdims=True)
    return (x - mean) / xp.sqrt(var + LN_EPS) * g.reshape(1, 1, -1) + b.reshape(1, 1, -1)


def block(p, x, xp=jnp):
    """The block on x (N, T, D) with array module `xp` (jax.numpy, or a torch shim with the same calls)."""
    n, t, d = x.shape
    dh = d // HEADS
    a = _layer_norm(x, p["ln1_g"], p["ln1_b"], xp)

    def heads(m):  # (N, T, D) -> (N, heads, T, dh)
        return xp.swapaxes(xp.reshape(m, (n, t, HEADS, dh)), 1, 2)

    q, k, v = heads(a @ p["wq"]), heads(a @ p["wk"]), heads(a @ p["wv"])
    scores = q @ xp.swapaxes(k, -1, -2) / np.sqrt(dh)
    weights = xp.exp(scores - xp.max(scores, -1, keepdims=True))
    weights = weights / xp.sum(weights, -1, keepdims=True)
    attended = xp.reshape(xp.swapaxes(weights @ v, 1, 2), (n, t, d))
    h = x + attended @ p["wo"]
    m = _layer_norm(h, p["ln2_g"], p["ln2_b"], xp)
    return h + xp.tanh(m @ p["w1"] + p["b1"].reshape(1, 1, -1)) @ p["w2"] + p["b2"].reshape(1, 1, -1)


def cost(params, batch):
    """Mean squared error of the block's output against the target."""
    x, target = batch
    return jnp.mean((block(params, x) - target) ** 2)


def make(n: int = 16, t: int = 8, d: int = 16, hidden: int = 32, seed: int = 0) -> Problem:
    """The benchmark's transformer-block problem (float64; x64 must be on)."""
    require_x64("transformer")
    if d % HEADS:
        raise ValueError(f"d must be a multiple of {HEADS} heads, got {d}")
    rng = np.random.default_rng([seed, n, t, d, hidden])

    def w(*shape):
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[0]))

    params = {"ln1_g": jnp.ones(d), "ln1_b": jnp.zeros(d), "ln2_g": jnp.ones(d), "ln2_b": jnp.zeros(d),
              "wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d), "w1": w(d, hidden),
              "b1": jnp.asarray(0.1 * rng.standard_normal(hidden)), "w2": w(hidden, d),
              "b2": jnp.asarray(0.1 * rng.standard_normal(d))}
    batch = (jnp.asarray(rng.standard_normal((n, t, d))), jnp.asarray(rng.standard_normal((n, t, d))))
    return Problem(cost, params, batch, name=f"transformer-T{t}-D{d}-H{hidden}-n{n}", batch_size=n,
                   description=f"pre-LN transformer block, {HEADS} heads, T={t}, D={d}, MLP {hidden}, "
                               f"squared error, float64")


def tiny() -> Problem:
    """Test sizes: N = 2, T = 3, D = 4, H = 5 (P = 16 + 64 + 20 + 5 + 20 + 4 = 129)."""
    return make(n=2, t=3, d=4, hidden=5)


class _TorchOps:
    """The calls `block` makes, in torch (so the torch version is the same code)."""

    def __init__(self, torch):
        self.t = torch

    def mean(self, x, axis, keepdims=False):
        return self.t.mean(x, dim=axis, keepdim=keepdims)

    def sum(self, x, axis, keepdims=False):
        return self.t.sum(x, dim=axis, keepdim=keepdims)

    def max(self, x, axis, keepdims=False):
        return self.t.amax(x, dim=axis, keepdim=keepdims)

    def sqrt(self, x):
        return self.t.sqrt(x)

    def exp(self, x):
        return self.t.exp(x)

    def tanh(self, x):
        return self.t.tanh(x)

    def reshape(self, x, shape):
        return self.t.reshape(x, shape)

    def swapaxes(self, x, a, b):
        return self.t.transpose(x, a, b)


def torch_cost(problem: Problem):
    """The same block and loss in PyTorch (`block` with torch operations): (f, inputs), f(*leaves) -> 0-d
    tensor, the leaves in `jax.tree_util.tree_leaves` order (the dict's sorted keys)."""
    torch = import_torch()
    keys = sorted(problem.params)
    x, target = (torch.tensor(np.asarray(a, np.float64)) for a in problem.batch)
    ops = _TorchOps(torch)

    def f(*leaves):
        return torch.mean((block(dict(zip(keys, leaves)), x, ops) - target) ** 2)

    return f, to_torch(problem)
