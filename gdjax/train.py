"""Gradient-descent training with any estimator, any optax optimiser, any params pytree: the names in one place.

    >>> from gdjax import train
    >>> state = train.init(params, optax.sgd(3.0), jax.random.key(1))
    >>> step = jax.jit(train.make_step(cost, optax.sgd(3.0), method="fd-central"))
    >>> result = train.fit(cost, optax.sgd(3.0), params, data, epochs=30, batch_size=10, key=jax.random.key(2))

This module only gathers the public names of three modules, each imported downwards:
  * `gdjax.step`: `TrainState`, `init`, `make_step`, `make_epoch`, `epoch_key`, `evaluate`, the optimisers;
  * `gdjax.fit`: the loop over epochs, `fit`, `FitResult`, `Diverged`, `DIVERGENCE_FACTOR`;
  * `gdjax.checkpoint`: `save_params`/`load_params`, `save_state`/`load_state`, `CheckpointError`.
"""

from gdjax.checkpoint import CheckpointError, load_params, load_state, save_params, save_state
from gdjax.fit import DIVERGENCE_FACTOR, Diverged, FitResult, changed_keys, fit
from gdjax.step import (
    OPTIMIZERS, TrainState, check_optimizer, epoch_key, evaluate, init, make_epoch, make_optimizer, make_step,
    tree_norm,
)

__all__ = [
    "DIVERGENCE_FACTOR", "OPTIMIZERS", "CheckpointError", "Diverged", "FitResult", "TrainState", "changed_keys",
    "check_optimizer", "epoch_key", "evaluate", "fit", "init", "load_params", "load_state", "make_epoch",
    "make_optimizer", "make_step", "save_params", "save_state", "tree_norm",
]
