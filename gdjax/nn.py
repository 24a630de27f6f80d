"""Multi-layer perceptrons as pure functions: the names of `gdjax.models` under their familiar module.

The network, its forward pass and its activations live in `gdjax.models` (`mlp.py`, `activations.py`); this
module re-exports them, so `gdjax.nn.MLP`, `gdjax.nn.ACTIVATIONS`, `gdjax.nn.init_mlp`, ... are the same objects.

    >>> net = MLP((784, 30, 10))                      # sigmoid hidden and output units, as in the lecture
    >>> params = net.init(jax.random.key(0))          # ("nielsen": standard normal weights and biases)
    >>> y = net.apply(params, x)                      # x: (784,) -> y: (10,)
    >>> ys = jax.vmap(net.apply, (None, 0))(params, xs)  # xs: (N, 784) -> ys: (N, 10)
"""

from gdjax.models.activations import (  # noqa: F401
    ACTIVATIONS, ANALYTIC_ACTIVATIONS, OUTPUT_ACTIVATIONS, Activation, identity, relu, sigmoid, softmax,
)
from gdjax.models.mlp import (  # noqa: F401
    DTYPES, INIT_SCHEMES, MLP, Layer, LayerState, Params, forward, forward_flops, init_mlp,
    mlp_logits, param_count,
)
