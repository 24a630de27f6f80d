"""gdjax: how much does a gradient cost? Finite differences vs backprop, measured in JAX.

The public API, in one place:

    >>> import jax, gdjax
    >>> net = gdjax.MLP((784, 30, 10))
    >>> params = net.init(jax.random.key(0))
    >>> cost = gdjax.make_cost(net, "quadratic")
    >>> g = gdjax.gradient(cost, "fd-central")(params, batch)   # same pytree as jax.grad(cost)(params, batch)
"""

from gdjax.check import GradCheck, check_grad, enable_compilation_cache
from gdjax.costs import LOSSES, Cost, accuracy, make_cost
from gdjax.data import (
    DATASETS, Batch, Dataset, iterate_batches, load_dataset, one_hot, read_idx, shuffled_batches, synthetic,
    train_test_split,
)
from gdjax.gradients import Estimator, available_methods, gradient, method_info, n_params
from gdjax.sharding import direction_mesh
from gdjax.nn import ACTIVATIONS, INIT_SCHEMES, MLP, OUTPUT_ACTIVATIONS, Layer, forward_flops, init_mlp

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "INIT_SCHEMES", "LOSSES", "MLP", "OUTPUT_ACTIVATIONS",
    "Batch", "Cost", "Estimator", "Layer",
    "accuracy", "available_methods", "forward_flops", "gradient", "init_mlp", "make_cost", "method_info",
    "n_params", "one_hot",
    "DATASETS", "Dataset", "iterate_batches", "load_dataset", "read_idx", "shuffled_batches", "synthetic",
    "train_test_split",
    "direction_mesh",
    "GradCheck", "check_grad", "enable_compilation_cache",
]
