"""Gradient-descent training: one jitted step, epochs under `lax.scan`, any optax optimiser, any estimator.

The pieces, smallest first (jit is applied at the call site, once per step or once per epoch):

    >>> net = gdjax.MLP((64, 16, 10)); cost = gdjax.make_cost(net, "quadratic")
    >>> opt = optax.sgd(3.0)                                   # plain GD: v -> v - eta * grad C
    >>> state = init(net.init(jax.random.key(0)), opt, jax.random.key(1))
    >>> step = jax.jit(make_step(cost, opt, method="reverse"))  # any registry method: "fd-central", "spsa", ...
    >>> state, m = step(state, batch)                          # m = {"cost": C(v) before the step, "grad_norm"}
    >>> epoch = jax.jit(make_epoch(step_fn, n_train, batch_size=10), donate_argnums=0)
    >>> state, per_step = epoch(state, train, epoch_key(state.key, 0))   # lax.scan over shuffled mini-batches
    >>> result = fit(cost, opt, params, train, test, epochs=30, batch_size=10, key=jax.random.key(2))

The state is a pytree `TrainState(params, opt_state, step, key)`; it holds everything a run needs, so a run
saved with `save_state` and resumed with `fit(..., checkpoint_path=..., resume=True)` continues bit-for-bit.

Randomness: `state.key` is split once into a shuffle stream and a gradient stream. Epoch `e` is shuffled with
`fold_in(shuffle_key, e)`; a stochastic estimator at step `t` gets `fold_in(gradient_key, t)`. No key is reused.

Mini-batches: each epoch draws a fresh permutation and takes `N // batch_size` batches of `batch_size`
examples; the `N mod batch_size` examples left over are dropped for that epoch (different ones each epoch).
`batch_size == N` is full-batch gradient descent: the whole set, unshuffled, one step per epoch.

Divergence (`Diverged` is raised, nothing after it is recorded as valid):
  * a mini-batch cost or gradient norm that is NaN or infinite, at the first such step;
  * a train cost at the end of an epoch that is NaN/inf or larger than `divergence_factor` (default
    `DIVERGENCE_FACTOR` = 10) times the train cost at the start of the run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import _checks, results
from gdjax.costs import Cost, accuracy
from gdjax.data import Batch, shuffled_batches
from gdjax.gradients import gradient
from gdjax.nn import Layer

DIVERGENCE_FACTOR = 10.0
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree).

    Attributes:
      params: the network parameters (e.g. a tuple of `Layer(w, b)`).
      opt_state: the optax optimiser state.
      step: int32 scalar, the number of steps taken so far.
      key: the run's PRNG key (never consumed directly; see the module docstring for the streams).
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class Diverged(RuntimeError):
    """Training stopped because the cost blew up; `history` holds only the epochs completed before it.

    Attributes:
      epoch: the epoch (1-based) in which it happened.
      step: the global step (0-based) of the first bad mini-batch, or the last step of the epoch when the
        end-of-epoch train cost gave it away.
      learning_rate: the learning rate passed to `fit` (None when not given).
      reason: what was seen.
      history: the valid per-epoch records before the divergence.
    """

    def __init__(self, epoch: int, step: int, learning_rate, reason: str, history: list):
        self.epoch, self.step, self.learning_rate, self.reason = epoch, step, learning_rate, reason
        self.history = history
        lr = "unknown" if learning_rate is None else f"{learning_rate:g}"
        super().__init__(f"training diverged at epoch {epoch}, step {step} (learning rate {lr}): {reason}")


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


def _check_optimizer(optimizer) -> optax.GradientTransformation:
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation such as optax.sgd(3.0), got {type(optimizer).__name__}"
        )
    return optimizer


# --- state, step, epoch ----------------------------------------------------------------------------------


def init(params, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh `TrainState` at step 0.

    Args:
      params: the initial parameters (a pytree of arrays).
      optimizer: any `optax.GradientTransformation`.
      key: the run's PRNG key, `jax.random.key(seed)`.
    >>> state = init(net.init(jax.random.key(0)), optax.sgd(3.0), jax.random.key(1))
    """
    optimizer = _check_optimizer(optimizer)
    key = _checks.prng_key(key)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), key)


def _streams(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(shuffle key, gradient key) of a run key."""
    k = jax.random.split(key)
    return k[0], k[1]


def epoch_key(key: jax.Array, epoch: int) -> jax.Array:
    """The shuffle key of epoch `epoch` (0-based) of the run with key `key`."""
    return jax.random.fold_in(_streams(key)[0], epoch)


def _global_norm(tree) -> jax.Array:
    """sqrt(sum of squares) over every leaf of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.real(x * jnp.conj(x))) for x in jax.tree_util.tree_leaves(tree)))


def make_step(cost: Callable, optimizer: optax.GradientTransformation, method: str = "reverse", **method_options):
    """Build `step(state, batch) -> (state, metrics)`: one gradient estimate, one optimiser update.

    Jit it at the call site (`jax.jit(step, donate_argnums=0)`) or run it inside `make_epoch`'s scan.

    Args:
      cost: `cost(params, batch) -> scalar`.
      optimizer: any `optax.GradientTransformation`.
      method: a gradient method from `gdjax.available_methods()`; stochastic methods get
        `fold_in(gradient_key, state.step)`. Methods driven from Python (`fd-loop`) are refused.
      **method_options: passed to the estimator (eps, chunk_size, ...).
    Returns:
      `step`; its metrics are `{"cost": C(params, batch) before the update, "grad_norm": ||g||_2}`.
    """
    optimizer = _check_optimizer(optimizer)
    est = gradient(cost, method, **method_options)
    if not est.jittable:
        raise ValueError(
            f"gradient method {method!r} is driven from Python and cannot run inside the jitted training step; "
            "use a vectorised method such as 'fd-central' or 'fd-forward' (the same finite differences)"
        )
    value_and_grad = jax.value_and_grad(cost) if method == "reverse" else None

    def step(state: TrainState, batch: Batch):
        if value_and_grad is not None:  # the cost comes free with reverse mode
            c, g = value_and_grad(state.params, batch)
        else:
            k = jax.random.fold_in(_streams(state.key)[1], state.step) if est.stochastic else None
            g = est(state.params, batch, k)
            c = cost(state.params, batch)
        updates, opt_state = optimizer.update(g, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"cost": c, "grad_norm": _global_norm(g)}
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
        xs = shuffled_batches(key, data, batch_size)  # x: (n_batches, batch_size, n_in)
        return jax.lax.scan(step, state, xs, unroll=unroll)

    return epoch


def evaluate(cost: Callable, params, data: Batch) -> dict:
    """`{"cost": C(params, data), "accuracy": ...}`; accuracy only for a gdjax `Cost` (needs the network).

    Pure; jit at the call site: `jax.jit(functools.partial(evaluate, cost))`.
    """
    out = {"cost": cost(params, data)}
    if isinstance(cost, Cost):
        out["accuracy"] = accuracy(cost.net, params, data)
    return out


# --- saving and loading (.npz, never pickle) -------------------------------------------------------------

_KEY_SUFFIX = "::key"


def _path_name(path) -> str:
    parts = []
    for p in path:
        for attr in ("idx", "name", "key"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
        else:
            parts.append(str(p))
    return "/".join(parts)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten_named(tree, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = prefix + _path_name(path)
        if _is_key(leaf):
            out[name + _KEY_SUFFIX] = np.asarray(jax.random.key_data(leaf))
        else:
            out[name] = np.asarray(leaf)
    return out


def _write_npz(path, arrays: dict) -> None:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _unflatten_like(like, arrays: dict, prefix: str, path_for_errors) -> Any:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for path, ref in leaves_with_path:
        name = prefix + _path_name(path)
        if _is_key(ref):
            if name + _KEY_SUFFIX not in arrays:
                raise ValueError(f"{path_for_errors}: missing PRNG key {name!r}; was it saved from this kind of run?")
            leaves.append(jax.random.wrap_key_data(arrays[name + _KEY_SUFFIX], impl=jax.random.key_impl(ref)))
            continue
        if name not in arrays:
            raise ValueError(f"{path_for_errors}: missing array {name!r}; it does not match the expected structure")
        a = arrays[name]
        ref_shape, ref_dtype = np.shape(ref), np.asarray(ref).dtype
        if a.shape != ref_shape or a.dtype != ref_dtype:
            raise ValueError(
                f"{path_for_errors}: {name!r} has shape {a.shape} {a.dtype}, expected {ref_shape} {ref_dtype}"
            )
        leaves.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _read_npz(path) -> dict[str, np.ndarray]:
    with np.load(os.fspath(path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_params(path, params) -> None:
    """Write a params pytree to `path` as .npz (atomic; names like "0/w", "0/b"; no pickle).

    >>> save_params("run/params.npz", params); params = load_params("run/params.npz")
    """
    _write_npz(path, _flatten_named(params, ""))


def load_params(path, like=None):
    """Read params saved by `save_params`.

    Args:
      path: the .npz file.
      like: a pytree of the expected structure, shapes and dtypes (e.g. `net.init(key)`); without it the file
        must hold an MLP's params ("0/w", "0/b", "1/w", ...) and a tuple of `Layer` is returned.
    """
    arrays = _read_npz(path)
    if like is not None:
        return _unflatten_like(like, arrays, "", path)
    n = len(arrays) // 2
    names = {f"{i}/{p}" for i in range(n) for p in "wb"}
    if set(arrays) != names:
        raise ValueError(
            f"{path}: not an MLP params file (expected arrays 0/w, 0/b, ...); pass like= for other pytrees")
    return tuple(Layer(jnp.asarray(arrays[f"{i}/w"]), jnp.asarray(arrays[f"{i}/b"])) for i in range(n))


def save_state(path, state: TrainState, *, epoch: int, history: Sequence[dict] = (), meta: dict | None = None):
    """Write a checkpoint: the whole `TrainState`, the epoch reached, the history so far and run metadata."""
    arrays = _flatten_named(state, "state/")
    arrays["epoch"] = np.asarray(epoch, np.int64)
    arrays["history_json"] = np.asarray(json.dumps(list(history)))
    arrays["meta_json"] = np.asarray(json.dumps(meta or {}))
    _write_npz(path, arrays)


def load_state(path, like: TrainState) -> tuple[TrainState, int, list, dict]:
    """Read a checkpoint written by `save_state` into the structure of `like` -> (state, epoch, history, meta)."""
    arrays = _read_npz(path)
    for k in ("epoch", "history_json", "meta_json"):
        if k not in arrays:
            raise ValueError(f"{path}: not a gdjax training checkpoint (no {k!r})")
    state = _unflatten_like(like, arrays, "state/", path)
    return state, int(arrays["epoch"]), json.loads(str(arrays["history_json"])), json.loads(str(arrays["meta_json"]))


# --- the training loop -----------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What `fit` returns: the final state, one record per epoch (epoch 0 = at init), and the compile time."""

    state: TrainState
    history: list = field(default_factory=list)
    compile_s: float = 0.0

    @property
    def params(self):
        return self.state.params


def _check_batch(data, name: str) -> Batch:
    if not isinstance(data, Batch):
        raise TypeError(f"{name} must be a gdjax.Batch(x, y), got {type(data).__name__}")
    if data.x.ndim != 2 or data.y.ndim != 2 or data.x.shape[0] != data.y.shape[0]:
        raise ValueError(f"{name} must hold x: (N, n_in) and y: (N, n_out), got {data.x.shape} and {data.y.shape}")
    return data


def fit(
    cost: Callable,
    optimizer: optax.GradientTransformation,
    params,
    train: Batch,
    test: Batch | None = None,
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    method: str = "reverse",
    method_options: dict | None = None,
    learning_rate: float | None = None,
    divergence_factor: float | None = DIVERGENCE_FACTOR,
    log_path=None,
    checkpoint_path=None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train by mini-batch gradient descent for `epochs` epochs; see the module docstring.

    Args:
      cost, optimizer, method, method_options: as for `make_step`.
      params: the initial parameters (not modified: the loop donates its own copy).
      train, test: `Batch(x: (N, n_in), y: (N, n_out))`; test is optional.
      epochs: number of epochs (>= 1); batch_size: 1 <= batch_size <= N (N = full-batch GD).
      key: the run's PRNG key (shuffling and stochastic estimators).
      learning_rate: only reported (in `Diverged` and the records); the optimiser already holds it.
      divergence_factor: stop when the train cost exceeds this multiple of its start (None: only NaN/inf).
      log_path: a JSON-lines file, one record per epoch (rewritten on resume to match the checkpoint).
      checkpoint_path: an .npz written after every epoch; with `resume=True` an existing one is continued.
      progress: show a tqdm bar (stderr) with the latest metrics.
      callback: called with each epoch's record.
    Returns:
      `FitResult(state, history, compile_s)`. Each record: epoch, step, train_cost, train_accuracy, test_cost,
      test_accuracy, batch_cost (mean over the epoch's mini-batches), grad_norm (mean norm of the gradients
      used), epoch_s (training time of the epoch, compile excluded; the first epoch also carries the compiled
      program's one-time start-up, ~30 ms on a CPU), eval_s, wall_s (cumulative epoch_s), status "ok".
    Raises:
      Diverged: the cost became NaN/inf or exceeded `divergence_factor` times its start.
    """
    train = _check_batch(train, "train")
    if test is not None:
        test = _check_batch(test, "test")
    epochs = _checks.positive_int(epochs, "epochs")
    n = int(train.x.shape[0])
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of training examples ({n}), got {batch_size}")
    if divergence_factor is not None:
        divergence_factor = _checks.positive_float(divergence_factor, "divergence_factor")
        if divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1 (or None), got {divergence_factor}")
    if learning_rate is not None:
        learning_rate = _checks.positive_float(learning_rate, "learning_rate")
    key = _checks.prng_key(key)
    method_options = dict(method_options or {})

    step = make_step(cost, optimizer, method, **method_options)
    epoch_fn = jax.jit(make_epoch(step, n, batch_size), donate_argnums=0)
    eval_fn = jax.jit(lambda p, a, b: (evaluate(cost, p, a), None if b is None else evaluate(cost, p, b)))
    state = jax.tree_util.tree_map(jnp.copy, init(params, optimizer, key))  # our own buffers: they are donated

    meta = {"method": method, "batch_size": batch_size, "n_train": n, "learning_rate": learning_rate}
    history: list[dict] = []
    start_epoch = 0
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        state, start_epoch, history, saved = load_state(checkpoint_path, state)
        for k in ("method", "batch_size", "n_train"):
            if saved.get(k) != meta[k]:
                raise ValueError(
                    f"cannot resume from {checkpoint_path}: it was written with {k}={saved.get(k)!r}, "
                    f"this run has {k}={meta[k]!r}"
                )
    if log_path is not None:
        if os.path.exists(log_path):
            os.remove(log_path)
        for rec in history:
            results.append_jsonl(log_path, rec)

    def record(ep: int, st: TrainState, extra: dict) -> dict:
        t0 = time.perf_counter()
        tr, te = jax.device_get(eval_fn(st.params, train, test))
        tr, te = {k: float(v) for k, v in tr.items()}, {k: float(v) for k, v in (te or {}).items()}
        rec = {"epoch": ep, "step": int(st.step), "train_cost": tr["cost"], "train_accuracy": tr.get("accuracy"),
               "test_cost": te.get("cost"), "test_accuracy": te.get("accuracy")}
        rec.update(extra)
        rec["eval_s"] = time.perf_counter() - t0
        rec["learning_rate"] = learning_rate
        rec["status"] = "ok"
        return rec

    def emit(rec):
        history.append(rec)
        if log_path is not None:
            results.append_jsonl(log_path, rec)
        if callback is not None:
            callback(rec)

    def diverge(ep, st_step, reason):
        if log_path is not None:
            results.append_jsonl(log_path, {"epoch": ep, "step": st_step, "status": "diverged", "reason": reason,
                                            "learning_rate": learning_rate})
        raise Diverged(ep, st_step, learning_rate, reason, list(history))

    if not history:
        rec0 = record(0, state, {"batch_cost": None, "grad_norm": None, "epoch_s": 0.0, "wall_s": 0.0})
        if not math.isfinite(rec0["train_cost"]):
            raise ValueError(f"the cost at the initial parameters is {rec0['train_cost']}; check params and data")
        emit(rec0)
    start_cost = history[0]["train_cost"]

    t0 = time.perf_counter()
    compiled = epoch_fn.lower(state, train, epoch_key(key, start_epoch)).compile()
    compile_s = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc="train", unit="epoch", file=sys.stderr, leave=False)
    try:
        for ep in range(start_epoch, epochs):
            first_step, k_epoch = int(state.step), epoch_key(key, ep)
            t0 = time.perf_counter()
            state, per_step = compiled(state, train, k_epoch)
            per_step = jax.device_get(per_step)
            epoch_s = time.perf_counter() - t0
            bad = ~(np.isfinite(per_step["cost"]) & np.isfinite(per_step["grad_norm"]))
            if bad.any():
                i = int(np.argmax(bad))
                what = "cost" if not np.isfinite(per_step["cost"][i]) else "grad_norm"
                diverge(ep + 1, first_step + i, f"mini-batch {what.replace('_', ' ')} became {per_step[what][i]}")
            wall = history[-1]["wall_s"] + epoch_s
            rec = record(ep + 1, state, {"batch_cost": float(np.mean(per_step["cost"])),
                                         "grad_norm": float(np.mean(per_step["grad_norm"])),
                                         "epoch_s": epoch_s, "wall_s": wall})
            c = rec["train_cost"]
            if not math.isfinite(c):
                diverge(ep + 1, rec["step"] - 1, f"train cost became {c}")
            if divergence_factor is not None and c > divergence_factor * start_cost:
                diverge(ep + 1, rec["step"] - 1,
                        f"train cost {c:.4g} exceeds {divergence_factor:g} x its start {start_cost:.4g}")
            emit(rec)
            if checkpoint_path is not None:
                save_state(checkpoint_path, state, epoch=ep + 1, history=history, meta=meta)
            if bar is not None:
                post = {"cost": f"{c:.4g}", "|g|": f"{rec['grad_norm']:.3g}"}
                if rec["test_accuracy"] is not None:
                    post["test acc"] = f"{rec['test_accuracy']:.4f}"
                bar.set_postfix(post)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(state, history, compile_s)
