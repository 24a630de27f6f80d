"""Write tests/data/structured_golden.npz: the structured gradient methods and the MLP's output on fixed seeds.

The fixture pins the numbers of backprop, layer-aware FD (forward and central), node perturbation (forward and
central), the activity-perturbed forward gradient (fixed key) and the MLP's output and cost, for tiny float64
networks: sigmoid, relu and tanh hidden units, every output activation (sigmoid, identity, softmax), both losses
(binary and categorical cross-entropy), one and two hidden layers, with and without weight decay.
`tests/test_structured_golden.py` asserts that the current code reproduces them, so a restructuring of the
network, activation or loss code that changes a number is caught.

    PYTHONPATH=$PWD python tests/data/make_structured_golden.py     # rewrites the fixture (only on purpose)
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import gdjax  # noqa: E402
from gdjax.data import Batch, one_hot  # noqa: E402

OUT = Path(__file__).with_name("structured_golden.npz")
N = 5
# (id, sizes, hidden activation, output activation, loss, l2)
CONFIGS = [
    ("sigmoid-quadratic", (3, 4, 2), "sigmoid", "sigmoid", "quadratic", 0.0),
    ("sigmoid-xent", (3, 4, 2), "sigmoid", "sigmoid", "cross-entropy", 0.0),       # binary cross-entropy
    ("relu-identity-quadratic", (3, 4, 2), "relu", "identity", "quadratic", 0.0),
    ("relu-softmax-xent", (3, 4, 3), "relu", "softmax", "cross-entropy", 0.1),     # categorical, weight decay
    ("tanh-softmax-quadratic-deep", (3, 4, 5, 3), "tanh", "softmax", "quadratic", 0.05),  # 2 hidden layers
]
# (name, method, options); every estimator is called with the key of KEY_SEED (the deterministic ones ignore it)
METHODS = [
    ("backprop", "backprop", {}),
    ("fd-layerwise", "fd-layerwise", {"eps": 1e-5}),
    ("fd-layerwise-central", "fd-layerwise-central", {"eps": 1e-4}),
    ("node-perturbation", "node-perturbation", {"eps": 1e-5}),
    ("node-perturbation-central-chunk2", "node-perturbation", {"eps": 1e-4, "scheme": "central", "chunk_size": 2}),
    ("forward-gradient-activity", "forward-gradient-activity", {"num_directions": 2}),
]
KEY_SEED = 7


def case(sizes, act, out, loss, l2, seed=0):
    """(cost, params, batch) of a tiny float64 problem: x ~ U[0, 1], cyclic one-hot labels."""
    net = gdjax.MLP(sizes, act, out)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = net.init(k1, dtype="float64")
    x = jax.random.uniform(k2, (N, sizes[0]), np.float64)
    y = one_hot(np.arange(N) % sizes[-1], sizes[-1], "float64")
    return gdjax.make_cost(net, loss, l2), params, Batch(x, y)


def compute() -> dict[str, np.ndarray]:
    """Every pinned array, keyed "<config>/<quantity>[/<layer>/<w|b>]"."""
    arrays = {}
    for cid, sizes, act, out, loss, l2 in CONFIGS:
        cost, params, batch = case(sizes, act, out, loss, l2)
        arrays[f"{cid}/output"] = np.asarray(jax.vmap(cost.net.apply, (None, 0))(params, batch.x))
        arrays[f"{cid}/cost"] = np.asarray(cost(params, batch))
        for name, method, options in METHODS:
            g = gdjax.gradient(cost, method, **options)(params, batch, jax.random.key(KEY_SEED))
            for l, layer in enumerate(g):
                arrays[f"{cid}/{name}/{l}/w"] = np.asarray(layer.w)
                arrays[f"{cid}/{name}/{l}/b"] = np.asarray(layer.b)
    return arrays


if __name__ == "__main__":
    np.savez(OUT, **compute())
    print(f"wrote {OUT}")
