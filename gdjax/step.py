"""Gradient-descent training, the pieces: the state, one step, one epoch under `lax.scan`; any optax optimiser,
any estimator, any params pytree. All of them are reachable from `gdjax.train`, with the loop (`gdjax.fit`) and
the files (`gdjax.checkpoint`).

The pieces, smallest first (jit is applied at the call site, once per step or once per epoch):

    >>> net = gdjax.MLP((64, 16, 10)); cost = gdjax.make_cost(net, "quadratic")
    >>> opt = optax.sgd(3.0)                                   # plain GD: v -> v - eta * grad C
    >>> state = init(net.init(jax.random.key(0)), opt, jax.random.key(1))
    >>> step = jax.jit(make_step(cost, opt, method="reverse"))  # any registry method: "fd-central", "spsa", ...
    >>> state, m = step(state, batch)                          # m = {"cost": C(v) before the step, "grad_norm"}
    >>> epoch = jax.jit(make_epoch(step_fn, n_train, batch_size=10), donate_argnums=0)
    >>> state, per_step = epoch(state, train, epoch_key(state.key, 0))   # lax.scan over shuffled mini-batches

The loop over epochs (metrics, divergence, checkpoints, resume) is `gdjax.fit.fit`.

Any params pytree (a dict with a step counter and a mask, an Equinox module, a Flax NNX state): by the leaf
policy (`gdjax.gradients._leaves`) the optimiser state and the updates cover only the floating array leaves;
every other leaf (ints, bools, PRNG keys, functions) is returned untouched, the same object. `make_epoch`
carries only the array leaves through its `lax.scan` and closes over the others, so an Equinox module trains
inside it; jitting `step` yourself on params with non-array leaves (functions) needs `equinox.filter_jit`
(or `fit`, which handles them).

The state is a pytree `TrainState(params, opt_state, step, key)`; it holds everything a run needs, so a run
saved and resumed continues bit-for-bit.

Randomness: `state.key` is split once into a shuffle stream and a gradient stream. Epoch `e` is shuffled with
`fold_in(shuffle_key, e)`; a stochastic estimator at step `t` gets `fold_in(gradient_key, t)`. No key is reused.

Mini-batches: each epoch draws a fresh permutation and takes `N // batch_size` batches of `batch_size`
examples; the `N mod batch_size` examples left over are dropped for that epoch (different ones each epoch).
`batch_size == N` is full-batch gradient descent: the whole set, unshuffled, one step per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdjax import _checks
from gdjax.costs import Cost, accuracy
from gdjax.data import Batch, shuffled_batches
from gdjax.gradients import _leaves, _validate, gradient

# ||g||_2 over a pytree: optax.tree.norm where it exists (optax >= 0.2.5), optax.global_norm (deprecated there) before.
tree_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree).

    Attributes:
      params: the network parameters (e.g. a tuple of `Layer(w, b)`, any pytree).
      opt_state: the optax optimiser state, over the floating array leaves of params only (the leaf policy).
      step: int32 scalar, the number of steps taken so far.
      key: the run's PRNG key (never consumed directly; see the module docstring for the streams).
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


# --- optimisers ------------------------------------------------------------------------------------------


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """An optax optimiser by name, as the CLI and the experiments use it.

    "sgd" is plain gradient descent `v -> v - eta * g`; "momentum"/"nesterov" are SGD with momentum 0.9;
    "adam", "adamw" (weight decay 1e-4), "rmsprop", "adagrad" are optax's defaults with this learning rate.

    >>> opt = make_optimizer("sgd", 3.0)
    """
    _checks.choice(name, OPTIMIZERS, "optimizer")
    eta = _checks.positive_float(learning_rate, "learning_rate (eta)")
    return {
        "sgd": lambda: optax.sgd(eta),
        "momentum": lambda: optax.sgd(eta, momentum=0.9),
        "nesterov": lambda: optax.sgd(eta, momentum=0.9, nesterov=True),
        "adam": lambda: optax.adam(eta),
        "adamw": lambda: optax.adamw(eta, weight_decay=1e-4),
        "rmsprop": lambda: optax.rmsprop(eta),
        "adagrad": lambda: optax.adagrad(eta),
    }[name]()


def check_optimizer(optimizer) -> optax.GradientTransformation:
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation such as optax.sgd(3.0), got {type(optimizer).__name__}"
        )
    return optimizer


# --- state, step, epoch ----------------------------------------------------------------------------------


def init(params, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh `TrainState` at step 0.

    Args:
      params: the initial parameters, any pytree with at least one floating array leaf.
      optimizer: any `optax.GradientTransformation`; its state covers the floating array leaves only.
      key: the run's PRNG key, `jax.random.key(seed)`.
    >>> state = init(net.init(jax.random.key(0)), optax.sgd(3.0), jax.random.key(1))
    """
    optimizer = check_optimizer(optimizer)
    key = _checks.prng_key(key)
    _validate.check_differentiable(params, "", "params", where="train.init")
    return TrainState(params, optimizer.init(_leaves.partition(params)[0]), jnp.zeros((), jnp.int32), key)


def _streams(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(shuffle key, gradient key) of a run key."""
    k = jax.random.split(key)
    return k[0], k[1]


def epoch_key(key: jax.Array, epoch: int) -> jax.Array:
    """The shuffle key of epoch `epoch` (0-based) of the run with key `key`."""
    return jax.random.fold_in(_streams(key)[0], epoch)


def make_step(cost: Callable, optimizer: optax.GradientTransformation, method: str = "reverse", **method_options):
    """Build `step(state, batch) -> (state, metrics)`: one gradient estimate, one optimiser update.

    Jit it at the call site (`jax.jit(step, donate_argnums=0)`) or run it inside `make_epoch`'s scan.

    Args:
      cost: `cost(params, batch) -> scalar`, params any pytree (only its floating array leaves are updated).
      optimizer: any `optax.GradientTransformation`.
      method: a gradient method from `gdjax.available_methods()`; stochastic methods get
        `fold_in(gradient_key, state.step)`. Methods driven from Python (`fd-loop`) are refused.
      **method_options: passed to the estimator (eps, chunk_size, ...).
    Returns:
      `step`; its metrics are `{"cost": C(params, batch) before the update, "grad_norm": ||g||_2}`.
    """
    optimizer = check_optimizer(optimizer)
    est = gradient(cost, method, **method_options)
    if not est.jittable:
        raise ValueError(
            f"gradient method {method!r} is driven from Python and cannot run inside the jitted training step; "
            "use a vectorised method such as 'fd-central' or 'fd-forward' (the same finite differences)"
        )

    def step(state: TrainState, batch: Batch):
        k = jax.random.fold_in(_streams(state.key)[1], state.step) if est.stochastic else None
        g = est(state.params, batch, k)  # None at the leaves not differentiated (the leaf policy)
        diff, static = _leaves.partition(state.params)
        # The cost is evaluated beside the gradient, whatever the method. Under jit, XLA merges it with the
        # forward pass reverse mode already runs (the compiled step has the FLOPs of jax.value_and_grad's).
        # It gets a rebuilt pytree, as the estimator's cost does: a cost that writes into its argument (an NNX
        # module merged from the state counts its RNG calls) never changes the state.
        c = cost(_leaves.combine(diff, static), batch)
        updates, opt_state = optimizer.update(g, state.opt_state, diff)
        params = _leaves.combine(optax.apply_updates(diff, updates), static)  # static leaves: the same objects
        metrics = {"cost": c, "grad_norm": tree_norm(g)}
        return TrainState(params, opt_state, state.step + 1, state.key), metrics

    step.estimator = est
    return step


def make_epoch(step: Callable, n_examples: int, batch_size: int, unroll: int = 1):
    """Build `epoch(state, data, key) -> (state, per_step_metrics)`: `lax.scan` of `step` over shuffled batches.

    `data` is the whole training set `Batch(x: (N, n_in), y: (N, n_out))`; it is gathered once in shuffled
    order and the scan walks through contiguous mini-batches of it. Per-step metrics come back stacked, shape
    `(N // batch_size,)`. With `batch_size == N` it is one full-batch step on `data` as given (no shuffle).
    `unroll` is passed to `lax.scan` (more unrolling: fewer loop iterations, longer compile).

    >>> epoch = jax.jit(make_epoch(step, 1000, 10), donate_argnums=0)
    >>> state, m = epoch(state, train, epoch_key(state.key, 0))     # m["cost"]: (100,)
    """
    n_examples = _checks.positive_int(n_examples, "n_examples")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n_examples:
        raise ValueError(f"batch_size must be <= the number of training examples ({n_examples}), got {batch_size}")
    unroll = _checks.positive_int(unroll, "unroll")

    def epoch(state: TrainState, data: Batch, key: jax.Array):
        if batch_size == n_examples:
            state, m = step(state, data)
            return state, jax.tree_util.tree_map(lambda a: a[None], m)
        # One gather of the whole shuffled set, then contiguous slices per step: XLA:CPU's row gather inside
        # the loop costs more than the step's arithmetic at mini-batch 10.
        return steps(state, shuffled_batches(key, data, batch_size))  # x: (n_batches, batch_size, n_in)

    steps = scan_steps(step, unroll)
    return epoch


def scan_steps(step: Callable, unroll: int = 1):
    """Build `steps(state, batches) -> (state, per_step_metrics)`: `lax.scan` of `step` over mini-batches
    stacked on a leading axis (`Batch(x: (n_steps, batch_size, n_in), ...)`, e.g. a slice of
    `shuffled_batches`); metrics come back stacked, shape `(n_steps,)`. The scan carries the state's array
    leaves and closes over the others (an Equinox module's functions). `make_epoch` and `fit` run it.
    """

    def steps(state: TrainState, batches: Batch):
        arrays, objects = _leaves.split_arrays(state)

        def body(carry, b):
            new, m = step(_leaves.combine(carry, objects), b)
            return _leaves.split_arrays(new)[0], m

        arrays, m = jax.lax.scan(body, arrays, batches, unroll=unroll)
        return _leaves.combine(arrays, objects), m

    return steps


def evaluate(cost: Callable, params, data: Batch) -> dict:
    """`{"cost": C(params, data), "accuracy": ...}`; accuracy only for a gdjax `Cost` (needs the network).

    Pure; jit at the call site: `jax.jit(functools.partial(evaluate, cost))`.
    """
    out = {"cost": cost(params, data)}
    if isinstance(cost, Cost):
        out["accuracy"] = accuracy(cost.net, params, data)
    return out
