"""The training loop: epochs of `gdjax.train`'s jitted epoch, per-epoch records, divergence, checkpoints.

    >>> result = fit(cost, optax.sgd(3.0), params, train, test, epochs=30, batch_size=10, key=jax.random.key(2))
    >>> result.history[-1]["test_accuracy"], result.params
    >>> fit(..., checkpoint_path="run/checkpoint.npz", log_path="run/metrics.jsonl", resume=True)  # continue

Each epoch is one call of the compiled `make_epoch` program; after it the loop evaluates the train (and test)
cost, writes one record (JSON-lines log, callback, progress bar) and a checkpoint. Checkpoints are .npz files
(`gdjax.checkpoint`); a checkpoint holds the whole `TrainState`, so a resumed run continues bit-for-bit, and the
run's configuration, so a resume with a different one is refused (naming the changed keys).

Params may be any pytree (the leaf policy, `gdjax.gradients._leaves`): only their floating array leaves are
trained; ints, bools and PRNG keys come back bit-identical, and non-array leaves (an Equinox module's functions)
are closed over by the compiled programs and come back as the same objects.

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
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import _checks, results
from gdjax.checkpoint import load_state, save_state
from gdjax.costs import Cost
from gdjax.data import Batch, check_batch
from gdjax.gradients import _leaves
from gdjax.step import TrainState, epoch_key, evaluate, init, make_epoch, make_step

DIVERGENCE_FACTOR = 10.0


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


@dataclass
class FitResult:
    """What `fit` returns: the final state, one record per epoch (epoch 0 = at init), the compile time, and the
    epoch a resumed run started from (0 for a fresh run; equal to the last record's epoch when there was
    nothing left to do)."""

    state: TrainState
    history: list = field(default_factory=list)
    compile_s: float = 0.0
    start_epoch: int = 0

    @property
    def params(self):
        return self.state.params


# --- the loop, piece by piece ------------------------------------------------------------------------------


def _check_args(cost, train, test, epochs, batch_size, divergence_factor, learning_rate, key):
    """Validate `fit`'s arguments before any work; returns them normalised (n = the number of train examples)."""
    net = cost.net if isinstance(cost, Cost) else None
    n = check_batch(train, "train", net=net)
    if test is not None:
        check_batch(test, "test", net=net)
    epochs = _checks.positive_int(epochs, "epochs")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of training examples ({n}), got {batch_size}")
    if divergence_factor is not None:
        divergence_factor = _checks.positive_float(divergence_factor, "divergence_factor")
        if divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1 (or None), got {divergence_factor}")
    if learning_rate is not None:
        learning_rate = _checks.positive_float(learning_rate, "learning_rate")
    return n, epochs, batch_size, divergence_factor, learning_rate, _checks.prng_key(key)


def changed_keys(saved: dict, now: dict) -> list[str]:
    """The keys of `now` whose value differs from `saved` (keys missing from `saved` are not compared), as
    "key: saved -> now" strings, for the one-line error of a resume with a changed configuration."""
    norm = lambda v: json.loads(json.dumps(results.to_jsonable(v)))  # noqa: E731 (tuples vs lists, numpy)
    return [f"{k}: {saved[k]!r} -> {norm(now[k])!r}" for k in now if k in saved and norm(saved[k]) != norm(now[k])]


def _resume(checkpoint_path, state: TrainState, meta: dict) -> tuple[TrainState, int, list]:
    """(state, epoch reached, history) from an existing checkpoint written by a run with the same meta."""
    state, start_epoch, history, saved = load_state(checkpoint_path, state)
    own = {k: v for k, v in meta.items() if k != "config"}
    changed = changed_keys(saved, own) + changed_keys(saved.get("config") or {}, meta["config"])
    if changed:
        raise ValueError(f"cannot resume from {checkpoint_path}: the run was written with another configuration "
                         f"({'; '.join(changed)}); use the same settings, or start a new run elsewhere")
    return state, start_epoch, history


class _Log:
    """The run's records: the history list, the JSON-lines log (rewritten to match it), the callback."""

    def __init__(self, history: list, log_path, callback, learning_rate):
        self.history, self.path, self.callback, self.learning_rate = history, log_path, callback, learning_rate
        if log_path is not None:
            if os.path.exists(log_path):
                os.remove(log_path)
            for rec in history:
                results.append_jsonl(log_path, rec)

    def emit(self, rec: dict) -> None:
        self.history.append(rec)
        if self.path is not None:
            results.append_jsonl(self.path, rec)
        if self.callback is not None:
            self.callback(rec)

    def diverge(self, epoch: int, step: int, reason: str):
        """Log the divergence (not as a valid record) and raise `Diverged`."""
        if self.path is not None:
            results.append_jsonl(self.path, {"epoch": epoch, "step": step, "status": "diverged", "reason": reason,
                                             "learning_rate": self.learning_rate})
        raise Diverged(epoch, step, self.learning_rate, reason, list(self.history))


def _record(eval_fn, epoch: int, state: TrainState, train, test, extra: dict, learning_rate) -> dict:
    """One epoch's record: train/test cost and accuracy at `state`, plus `extra` (timings, batch means)."""
    t0 = time.perf_counter()
    tr, te = jax.device_get(eval_fn(state.params, train, test))
    tr, te = {k: float(v) for k, v in tr.items()}, {k: float(v) for k, v in (te or {}).items()}
    rec = {"epoch": epoch, "step": int(state.step), "train_cost": tr["cost"], "train_accuracy": tr.get("accuracy"),
           "test_cost": te.get("cost"), "test_accuracy": te.get("accuracy"), **extra}
    rec.update(eval_s=time.perf_counter() - t0, learning_rate=learning_rate, status="ok")
    return rec


def _initial_record(eval_fn, state: TrainState, train, test, learning_rate) -> dict:
    """The record of epoch 0 (at the initial parameters); a non-finite cost there is bad input, not divergence."""
    rec = _record(eval_fn, 0, state, train, test, {"batch_cost": None, "grad_norm": None, "epoch_s": 0.0,
                                                   "wall_s": 0.0}, learning_rate)
    if not math.isfinite(rec["train_cost"]):
        raise ValueError(f"the cost at the initial parameters is {rec['train_cost']}; check params and data")
    return rec


def _bad_step(per_step: dict, first_step: int) -> tuple[int, str] | None:
    """(global step, reason) of the first mini-batch whose cost or gradient norm is NaN/inf, else None."""
    bad = ~(np.isfinite(per_step["cost"]) & np.isfinite(per_step["grad_norm"]))
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    what = "cost" if not np.isfinite(per_step["cost"][i]) else "grad_norm"
    return first_step + i, f"mini-batch {what.replace('_', ' ')} became {per_step[what][i]}"


def _train_epoch(compiled, eval_fn, state: TrainState, train, test, key, epoch: int, log: _Log):
    """Run epoch `epoch` (1-based) with the compiled program -> (state, record); diverges on a bad mini-batch."""
    first_step, t0 = int(state.step), time.perf_counter()
    state, per_step = compiled(state, train, key)
    per_step = jax.device_get(per_step)
    epoch_s = time.perf_counter() - t0
    if (bad := _bad_step(per_step, first_step)) is not None:
        log.diverge(epoch, *bad)
    rec = _record(eval_fn, epoch, state, train, test, {
        "batch_cost": float(np.mean(per_step["cost"])), "grad_norm": float(np.mean(per_step["grad_norm"])),
        "epoch_s": epoch_s, "wall_s": log.history[-1]["wall_s"] + epoch_s}, log.learning_rate)
    return state, rec


def _bad_epoch(cost: float, start_cost: float, factor: float | None) -> str | None:
    """Why the end-of-epoch train cost means divergence (NaN/inf, or over `factor` x the start), else None."""
    if not math.isfinite(cost):
        return f"train cost became {cost}"
    if factor is not None and cost > factor * start_cost:
        return f"train cost {cost:.4g} exceeds {factor:g} x its start {start_cost:.4g}"
    return None


def _progress_bar(show: bool, epochs: int, start: int):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=start, desc="train", unit="epoch", file=sys.stderr, leave=False)


def _show(bar, rec: dict) -> None:
    if bar is None:
        return
    post = {"cost": f"{rec['train_cost']:.4g}", "|g|": f"{rec['grad_norm']:.3g}"}
    if rec["test_accuracy"] is not None:
        post["test acc"] = f"{rec['test_accuracy']:.4f}"
    bar.set_postfix(post)
    bar.update(1)


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
    config: dict | None = None,
    divergence_factor: float | None = DIVERGENCE_FACTOR,
    log_path=None,
    checkpoint_path=None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train by mini-batch gradient descent for `epochs` epochs; see the module docstring.

    Args:
      cost, optimizer, method, method_options: as for `gdjax.train.make_step`.
      params: the initial parameters (not modified: the loop donates its own copy).
      train, test: `Batch(x: (N, n_in), y: (N, n_out))`; test is optional.
      epochs: number of epochs (>= 1); batch_size: 1 <= batch_size <= N (N = full-batch GD).
      key: the run's PRNG key (shuffling and stochastic estimators).
      learning_rate: only reported (in `Diverged` and the records); the optimiser already holds it.
      config: JSON-able settings of the run beyond fit's own (e.g. the CLI's network and optimiser), stored in
        the checkpoint; resuming with a different config (or method, method_options, batch_size, number of
        training examples, learning_rate, divergence_factor) raises ValueError naming the changed keys.
      divergence_factor: stop when the train cost exceeds this multiple of its start (None: only NaN/inf).
      log_path: a JSON-lines file, one record per epoch (rewritten on resume to match the checkpoint).
      checkpoint_path: an .npz written after every epoch; with `resume=True` an existing one is continued (a
        missing one starts afresh; `epochs` at or below the epoch reached trains nothing: see `start_epoch`).
      progress: show a tqdm bar (stderr) with the latest metrics.
      callback: called with each epoch's record.
    Returns:
      `FitResult(state, history, compile_s, start_epoch)`. Each record: epoch, step, train_cost, train_accuracy,
      test_cost, test_accuracy, batch_cost (mean over the epoch's mini-batches), grad_norm (mean norm of the
      gradients used), epoch_s (training time of the epoch, compile excluded; the first epoch also carries the compiled
      program's one-time start-up, ~30 ms on a CPU), eval_s, wall_s (cumulative epoch_s), status "ok".
    Raises:
      Diverged: the cost became NaN/inf or exceeded `divergence_factor` times its start.
    """
    n, epochs, batch_size, divergence_factor, learning_rate, key = _check_args(
        cost, train, test, epochs, batch_size, divergence_factor, learning_rate, key)
    method_options = dict(method_options or {})
    step = make_step(cost, optimizer, method, **method_options)
    # the compiled programs carry the array leaves of the state and close over the others (the leaf policy)
    state, objects = _leaves.split_arrays(init(params, optimizer, key))
    state = jax.tree_util.tree_map(jnp.copy, state)  # our own buffers: they are donated
    epoch = make_epoch(step, n, batch_size)

    def epoch_arrays(arrays, data, k):
        new, m = epoch(_leaves.combine(arrays, objects), data, k)
        return _leaves.split_arrays(new)[0], m

    def evaluate_both(p, a, b):
        p = _leaves.combine(p, objects.params)
        return evaluate(cost, p, a), None if b is None else evaluate(cost, p, b)

    epoch_fn = jax.jit(epoch_arrays, donate_argnums=0)
    eval_fn = jax.jit(evaluate_both)

    meta = {"method": method, "method_options": method_options, "batch_size": batch_size, "n_train": n,
            "learning_rate": learning_rate, "divergence_factor": divergence_factor, "config": config or {}}
    start_epoch, history = 0, []
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        state, start_epoch, history = _resume(checkpoint_path, state, meta)
    log = _Log(history, log_path, callback, learning_rate)
    if not history:
        log.emit(_initial_record(eval_fn, state, train, test, learning_rate))
    start_cost = history[0]["train_cost"]

    t0 = time.perf_counter()
    compiled = epoch_fn.lower(state, train, epoch_key(key, start_epoch)).compile()
    compile_s = time.perf_counter() - t0

    bar = _progress_bar(progress, epochs, start_epoch)
    try:
        for ep in range(start_epoch, epochs):
            state, rec = _train_epoch(compiled, eval_fn, state, train, test, epoch_key(key, ep), ep + 1, log)
            if (reason := _bad_epoch(rec["train_cost"], start_cost, divergence_factor)) is not None:
                log.diverge(ep + 1, rec["step"] - 1, reason)
            log.emit(rec)
            if checkpoint_path is not None:
                save_state(checkpoint_path, state, epoch=ep + 1, history=history, meta=meta)
            _show(bar, rec)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(_leaves.combine(state, objects), history, compile_s, start_epoch)
