"""An Equinox conv net: Conv2d(1 -> c1, 3x3) - tanh - Conv2d(c1 -> c2, 3x3) - tanh - Linear(-> 10), mean softmax
cross-entropy over a batch of random images with random labels (float64). The researcher's model is an
`equinox.Module`; the problem's params are its array leaves (`equinox.partition(model, equinox.is_inexact_array)`)
and the cost puts the module back together (`equinox.combine`), so every black-box method sees plain arrays.

    >>> prob = make()      # N = 32 images 12x12, channels (4, 8): P = 5,466
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.problems import import_torch, require_x64
from gdjax.bench.problem import Problem


class ConvNet(eqx.Module):
    """Two valid 3x3 convolutions with tanh and a linear read-out: `model(x (1, H, W)) -> logits (classes,)`."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    linear: eqx.nn.Linear

    def __init__(self, image: int, channels: tuple[int, int], classes: int, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, channels[0], 3, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels[0], channels[1], 3, key=k2)
        self.linear = eqx.nn.Linear(channels[1] * (image - 4) ** 2, classes, key=k3)

    def __call__(self, x):
        h = jnp.tanh(self.conv2(jnp.tanh(self.conv1(x))))
        return self.linear(jnp.ravel(h))


def _problem(model: ConvNet, x, y, name: str) -> Problem:
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def cost(params, batch):
        net = eqx.combine(params, static)
        logits = jax.vmap(net)(batch[0])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch[1][:, None], axis=1))

    return Problem(cost, params, (x, y), name=name, batch_size=int(x.shape[0]),
                   description=f"Equinox conv net {name}, tanh, softmax cross-entropy, float64")


def make(n: int = 32, image: int = 12, channels: tuple[int, int] = (4, 8), classes: int = 10,
         seed: int = 0) -> Problem:
    """The benchmark's conv net problem (float64; x64 must be on)."""
    require_x64("convnet")
    model = ConvNet(image, channels, classes, jax.random.key(seed))
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    rng = np.random.default_rng([seed, n, image])
    x = jnp.asarray(rng.random((n, 1, image, image)))
    y = jnp.asarray(rng.integers(0, classes, n), jnp.int32)
    return _problem(model, x, y, f"convnet-{image}x{image}-c{channels[0]}-{channels[1]}-n{n}")


def tiny() -> Problem:
    """Test sizes: 4 images 6x6, channels (2, 3), 3 classes (P = 20 + 57 + 39 = 116)."""
    return make(n=4, image=6, channels=(2, 3), classes=3)


def torch_cost(problem: Problem):
    """The same net in PyTorch with the same numbers: (f, inputs), f(*leaves) -> 0-d tensor, the leaves in
    `jax.tree_util.tree_leaves` order (conv1 weight, conv1 bias, conv2 weight, conv2 bias, linear weight,
    linear bias); Equinox's conv weights are (out, in, kh, kw) as torch's, its conv biases (out, 1, 1)."""
    torch = import_torch()
    leaves = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(problem.params)]
    x = torch.tensor(np.asarray(problem.batch[0], np.float64))
    y = torch.tensor(np.asarray(problem.batch[1]), dtype=torch.long)
    inputs = tuple(torch.tensor(a, requires_grad=True) for a in leaves)

    def f(w1, b1, w2, b2, wl, bl):
        h = torch.tanh(torch.nn.functional.conv2d(x, w1, b1.reshape(-1)))
        h = torch.tanh(torch.nn.functional.conv2d(h, w2, b2.reshape(-1)))
        logits = h.flatten(1) @ wl.T + bl
        return torch.nn.functional.cross_entropy(logits, y)

    return f, inputs
