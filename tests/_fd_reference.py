"""The FD kernel's outputs on a few fixed configurations, for the bitwise regression test of test_fd_plan.py.

`reference_outputs()` uses only the kernel's public functions (`fd_gradient`, `fd_subset`, `fd_multi_step`), each
jitted as the estimators jit them, with a FIXED chunk size or `chunk_size=None` (the memory-budget default, no
measured plan). tests/fixtures/fd_kernel_reference.npz holds what it returned on the kernel before the direction
plan (`_plan.py`) replaced its mode flags; regenerate it only on purpose:

    PYTHONPATH=$PWD python -c "import sys; sys.path.insert(0, 'tests'); import _fd_reference as r; r.save()"

(with jax_enable_x64 on, as tests/conftest.py sets it).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

import gdjax
from gdjax.data import Batch, one_hot
from gdjax.gradients import finite_diff
from gdjax.nn import MLP

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "fd_kernel_reference.npz")


def mlp_case():
    net = MLP((3, 5, 3), "tanh", "sigmoid")
    k1, k2 = jax.random.split(jax.random.key(0))
    params = net.init(k1, dtype="float64")
    x = jax.random.uniform(k2, (6, 3), jnp.float64)
    return gdjax.make_cost(net, "cross-entropy", 0.01), params, Batch(x, one_hot(np.arange(6) % 3, 3, "float64"))


def dict_case():
    """A cost that is not gdjax's MLP: a dict of a scalar, a vector and a 3-d leaf, an elementwise nonlinearity."""
    k = jax.random.split(jax.random.key(1), 4)
    params = {"s": jnp.asarray(0.3, jnp.float64), "v": jax.random.normal(k[0], (4,), jnp.float64),
              "t": jax.random.normal(k[1], (2, 3, 2), jnp.float64)}
    batch = jax.random.normal(k[2], (5, 4), jnp.float64)

    def cost(p, x):
        z = jnp.tanh(x @ p["v"] * p["s"])
        return jnp.mean(z**2) + jnp.sum(jnp.sin(p["t"]) ** 2) * jnp.mean(x[:, 0]) + jnp.sum(p["t"][0] * p["v"][:3, None])

    return cost, params, batch


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)])


def reference_outputs(only=None) -> dict:
    """Every configuration's output by name, or only those named in `only` (a set of names)."""
    out = {}

    def want(name):
        return only is None or name in only or name.replace("/covered_total", "") in only
    for name, (cost, params, batch) in {"mlp": mlp_case(), "dict": dict_case()}.items():
        for scheme in finite_diff.SCHEMES:
            if name == "dict" and scheme == "complex":
                continue
            for chunk in (None, 1, 4, 7):
                if not want(f"{name}/grad/{scheme}/{chunk}"):
                    continue
                fn = jax.jit(lambda p, b, s=scheme, c=chunk: finite_diff.fd_gradient(cost, p, b, scheme=s,
                                                                                     chunk_size=c))
                out[f"{name}/grad/{scheme}/{chunk}"] = _flat(fn(params, batch))
        for scheme, n, chunk in (("forward", 9, 4), ("central", 9, 4), ("forward", 1, None), ("central", 30, 7)):
            if not want(f"{name}/subset/{scheme}/{n}/{chunk}"):
                continue
            sub = finite_diff.fd_subset(cost, params, batch, n, scheme=scheme, chunk_size=chunk)
            out[f"{name}/subset/{scheme}/{n}/{chunk}"] = np.asarray(jax.jit(sub.fn)(params, batch))
            out[f"{name}/subset/{scheme}/{n}/{chunk}/covered_total"] = np.array([sub.covered, sub.total])
        multi = [("forward", 7, (1.0, 0.5)), ("central", None, (1.0, 0.5)), ("central", 3, (1.0, 0.5))]
        if name == "mlp":
            multi.append(("complex", 4, (1.0, 0.25, 0.5)))
        for scheme, chunk, scales in multi:
            if not want(f"{name}/multi/{scheme}/{chunk}/0"):
                continue
            fn = jax.jit(lambda p, b, s=scheme, c=chunk, sc=scales: finite_diff.fd_multi_step(
                cost, p, b, scheme=s, scales=sc, chunk_size=c))
            for i, g in enumerate(fn(params, batch)):
                out[f"{name}/multi/{scheme}/{chunk}/{i}"] = _flat(g)
    return out


def save(path: str = PATH):
    out = reference_outputs()
    np.savez(path, jax_version=np.array(jax.__version__), **out)
    return out
