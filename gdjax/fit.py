"""The training loop: compiled chunks of `gdjax.step`'s scan of steps until a budget is spent; records, divergence,
checkpoints, and compiled programs kept between calls.

    >>> result = fit(cost, optax.sgd(3.0), params, train, test, epochs=30, batch_size=10, key=jax.random.key(2))
    >>> result.history[-1]["test_accuracy"], result.params
    >>> fit(..., checkpoint_path="run/checkpoint.npz", log_path="run/metrics.jsonl", resume=True)  # continue

Each epoch is shuffled once (`gdjax.data.shuffled_batches` with `epoch_key`, as `make_epoch` does) and
trained in compiled chunks of `record_every` steps (`scan_steps`; default: the whole epoch, one chunk); after
each chunk the loop evaluates the train (and test) cost and writes one record (JSON-lines log, callback,
progress bar); after each epoch, a checkpoint.

Budgets: `epochs`, `max_seconds` (training time, compilation and evaluation excluded) and `max_fpe`
(forward-pass equivalents: steps x `fpe_per_step`, the XLA FLOPs of one compiled step over those of the cost
on one mini-batch), any of them; the run stops after the first record at or past whichever is hit first (so
past a budget by at most one chunk), or when the callback returns True. The last record's `stopped_by` names
it ("epochs", "seconds", "fpe", "callback").

    >>> fit(cost, opt, params, train, test, max_seconds=15.0, max_fpe=1e5, record_every=100, batch_size=10, key=k)

A learning-rate sweep compiles once: with an optimiser built by `optax.inject_hyperparams` (e.g.
`optax.inject_hyperparams(optax.sgd)(learning_rate=1.0)`), `learning_rate=` is written into its state, a traced
value, and the compiled programs are kept between calls with the same cost, optimiser object, method, data
shapes and batch size. Checkpoints are .npz files
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

import itertools
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

from gdjax import _checks, profiling, results
from gdjax.checkpoint import load_state, save_state
from gdjax.costs import Cost
from gdjax.data import Batch, check_batch, shuffled_batches
from gdjax.gradients import _leaves
from gdjax.step import TrainState, epoch_key, evaluate, init, make_step, scan_steps

DIVERGENCE_FACTOR = 10.0
BUDGETS = ("epochs", "seconds", "fpe")  # the budgets `fit` can stop on (and "callback")


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
    """What `fit` returns: the final state, one record per chunk (epoch 0 = at init), the compile time (0 when
    the programs of an earlier call were reused), the epoch a resumed run started from (0 for a fresh run;
    equal to the last record's epoch when there was nothing left to do), the budget that stopped the run
    (None when nothing was left to do) and the forward-pass equivalents of one step (None unless counted)."""

    state: TrainState
    history: list = field(default_factory=list)
    compile_s: float = 0.0
    start_epoch: int = 0
    stopped_by: str | None = None
    fpe_per_step: float | None = None

    @property
    def params(self):
        return self.state.params


# --- the loop, piece by piece ------------------------------------------------------------------------------


def _check_budgets(epochs, max_seconds, max_fpe, record_every) -> tuple:
    """Validate the budgets (at least one of epochs, max_seconds, max_fpe) and `record_every`."""
    if epochs is None and max_seconds is None and max_fpe is None:
        raise ValueError("fit needs a budget: pass epochs=, max_seconds= or max_fpe= (any of them; the first "
                         "one reached stops the run)")
    epochs = None if epochs is None else _checks.positive_int(epochs, "epochs")
    max_seconds = None if max_seconds is None else _checks.positive_float(max_seconds, "max_seconds")
    max_fpe = None if max_fpe is None else _checks.positive_float(max_fpe, "max_fpe")
    record_every = None if record_every is None else _checks.positive_int(record_every, "record_every")
    return epochs, max_seconds, max_fpe, record_every


def _check_args(cost, train, test, batch_size, divergence_factor, learning_rate, key):
    """Validate `fit`'s arguments before any work; returns them normalised (n = the number of train examples)."""
    net = cost.net if isinstance(cost, Cost) else None
    n = check_batch(train, "train", net=net)
    if test is not None:
        check_batch(test, "test", net=net)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= the number of training examples ({n}), got {batch_size}")
    if divergence_factor is not None:
        divergence_factor = _checks.positive_float(divergence_factor, "divergence_factor")
        if divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1 (or None), got {divergence_factor}")
    if learning_rate is not None:
        learning_rate = _checks.positive_float(learning_rate, "learning_rate")
    return n, batch_size, divergence_factor, learning_rate, _checks.prng_key(key)


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
        """Record `rec`; a callback that returns True stops the run (`rec["stopped_by"]` = "callback")."""
        if self.callback is not None and self.callback(rec) is True and rec.get("stopped_by") is None:
            rec["stopped_by"] = "callback"
        self.history.append(rec)
        if self.path is not None:
            results.append_jsonl(self.path, rec)

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
    rec.update(eval_s=time.perf_counter() - t0, learning_rate=learning_rate, status="ok", stopped_by=None)
    return rec


def _initial_record(eval_fn, state: TrainState, train, test, learning_rate) -> dict:
    """The record of epoch 0 (at the initial parameters); a non-finite cost there is bad input, not divergence."""
    rec = _record(eval_fn, 0, state, train, test, {"batch_cost": None, "grad_norm": None, "epoch_s": 0.0,
                                                   "wall_s": 0.0, "fpe": 0.0}, learning_rate)
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


def _train_chunk(program, eval_fn, state: TrainState, batches, train, test, epoch: int, log: _Log, fpe_step):
    """Train one chunk of epoch `epoch` (1-based) -> (state, record); diverges on a bad mini-batch."""
    first_step, t0 = int(state.step), time.perf_counter()
    state, per_step = program(state, batches)
    per_step = jax.device_get(per_step)
    chunk_s = time.perf_counter() - t0
    if (bad := _bad_step(per_step, first_step)) is not None:
        log.diverge(epoch, *bad)
    steps = first_step + len(per_step["cost"])
    rec = _record(eval_fn, epoch, state, train, test, {
        "batch_cost": float(np.mean(per_step["cost"])), "grad_norm": float(np.mean(per_step["grad_norm"])),
        "epoch_s": chunk_s, "wall_s": log.history[-1]["wall_s"] + chunk_s,
        "fpe": None if fpe_step is None else steps * fpe_step}, log.learning_rate)
    return state, rec


def _budget_hit(rec: dict, epoch_done: bool, epochs, max_seconds, max_fpe) -> str | None:
    """The budget `rec` reaches (in the order of BUDGETS), else None."""
    if epochs is not None and epoch_done and rec["epoch"] >= epochs:
        return "epochs"
    if max_seconds is not None and rec["wall_s"] >= max_seconds:
        return "seconds"
    if max_fpe is not None and rec["fpe"] >= max_fpe:
        return "fpe"
    return None


def _bad_epoch(cost: float, start_cost: float, factor: float | None) -> str | None:
    """Why the end-of-epoch train cost means divergence (NaN/inf, or over `factor` x the start), else None."""
    if not math.isfinite(cost):
        return f"train cost became {cost}"
    if factor is not None and cost > factor * start_cost:
        return f"train cost {cost:.4g} exceeds {factor:g} x its start {start_cost:.4g}"
    return None


class _Programs:
    """The compiled pieces of one training setup: the epoch's shuffled mini-batches, a chunk of steps
    (`scan_steps`; one executable per chunk length and argument shapes), the evaluation, and `fpe_per_step`.

    The chunk carries the array leaves of the `TrainState` and closes over `objects`, its other leaves (the
    leaf policy). Kept between `fit` calls (`_programs`), so that a learning-rate sweep compiles once.
    """

    def __init__(self, cost, optimizer, method, method_options, objects, n: int, batch_size: int):
        step = make_step(cost, optimizer, method, **method_options)
        self.cost, self.objects, self._compiled, self._fpe = cost, objects, {}, None

        steps = scan_steps(step)

        def chunk(arrays, xs):
            state, m = steps(_leaves.combine(arrays, objects), xs)
            return _leaves.split_arrays(state)[0], m

        def batches(data, k):  # Batch of (n_batches, batch_size, ...); full-batch GD: the data as given
            if batch_size == n:
                return jax.tree_util.tree_map(lambda a: a[None], data)
            return shuffled_batches(k, data, batch_size)

        def evaluate_both(p, a, b):
            p = _leaves.combine(p, objects.params)
            return evaluate(cost, p, a), None if b is None else evaluate(cost, p, b)

        self._chunk = jax.jit(chunk, donate_argnums=0)
        self.batches, self.evaluate = jax.jit(batches), jax.jit(evaluate_both)

    def program(self, arrays, xs) -> tuple[Callable, float]:
        """(the compiled chunk for these argument shapes, its compile time in s; 0 when compiled before)."""
        sig = tuple((a.shape, a.dtype, getattr(a, "weak_type", False)) for a in jax.tree_util.tree_leaves((arrays, xs)))
        key = (jax.tree_util.tree_structure((arrays, xs)), sig)
        if key in self._compiled:
            return self._compiled[key], 0.0
        t0 = time.perf_counter()
        self._compiled[key] = self._chunk.lower(arrays, xs).compile()
        return self._compiled[key], time.perf_counter() - t0

    def fpe_per_step(self, arrays, xs) -> tuple[float, float]:
        """(forward-pass equivalents of one step, compile time): XLA FLOPs of the compiled one-step chunk over
        XLA FLOPs of the cost on the same mini-batch (`profiling.xla_flops`)."""
        if self._fpe is not None:
            return self._fpe, 0.0
        one = jax.tree_util.tree_map(lambda a: a[:1], xs)
        exe, compile_s = self.program(arrays, one)
        batch = jax.tree_util.tree_map(lambda a: a[0], one)
        cost = jax.jit(lambda p, b: self.cost(_leaves.combine(p, self.objects.params), b))
        step_flops, fwd = profiling.xla_flops(None, executable=exe), profiling.xla_flops(cost, arrays.params, batch)
        if not step_flops or not fwd:
            raise ValueError("max_fpe / count_fpe: XLA reports no FLOPs on this backend, so forward-pass "
                             "equivalents cannot be counted; use epochs= or max_seconds=")
        self._fpe = float(step_flops) / float(fwd)
        return self._fpe, compile_s


_CACHE: dict = {}
_CACHE_SIZE = 8  # training setups whose compiled programs are kept (oldest dropped first)


def _programs(cost, optimizer, method, method_options, objects, n, batch_size) -> _Programs:
    """The `_Programs` of this setup, reused when cost, optimiser object, method, options, non-array leaves,
    number of examples and batch size are the same as an earlier call's (argument shapes are keyed inside)."""
    # every leaf compared by == where hashable, else by identity (an array option: only the same array hits)
    leaves, tree = jax.tree_util.tree_flatten((cost, optimizer, method, method_options, objects))
    key = (tree, tuple(_leaves._Object(x) for x in leaves), n, batch_size)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _Programs(cost, optimizer, method, method_options, objects, n, batch_size)
    return _CACHE[key]


def _with_learning_rate(state: TrainState, learning_rate) -> TrainState:
    """`state` with `learning_rate` in its optimiser state when the optimiser comes from
    `optax.inject_hyperparams` (a traced value); otherwise unchanged."""
    hp = getattr(state.opt_state, "hyperparams", None)
    if learning_rate is None or not isinstance(hp, dict) or "learning_rate" not in hp:
        return state
    hp = {**hp, "learning_rate": jnp.asarray(learning_rate, jnp.result_type(hp["learning_rate"]))}
    return state._replace(opt_state=state.opt_state._replace(hyperparams=hp))


def _progress_bar(show: bool, epochs, start: int):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=start, desc="train", unit="epoch", file=sys.stderr, leave=False)


def _show(bar, rec: dict, epoch_done: bool) -> None:
    if bar is None:
        return
    post = {"cost": f"{rec['train_cost']:.4g}", "|g|": f"{rec['grad_norm']:.3g}"}
    if rec["test_accuracy"] is not None:
        post["test acc"] = f"{rec['test_accuracy']:.4f}"
    bar.set_postfix(post)
    bar.update(int(epoch_done))


def fit(
    cost: Callable,
    optimizer: optax.GradientTransformation,
    params,
    train: Batch,
    test: Batch | None = None,
    *,
    batch_size: int,
    key: jax.Array,
    epochs: int | None = None,
    max_seconds: float | None = None,
    max_fpe: float | None = None,
    record_every: int | None = None,
    count_fpe: bool = False,
    method: str = "reverse",
    method_options: dict | None = None,
    learning_rate: float | None = None,
    config: dict | None = None,
    divergence_factor: float | None = DIVERGENCE_FACTOR,
    log_path=None,
    checkpoint_path=None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[dict], bool | None] | None = None,
) -> FitResult:
    """Train by mini-batch gradient descent until a budget is spent; see the module docstring.

    Args:
      cost, optimizer, method, method_options: as for `gdjax.train.make_step`.
      params: the initial parameters (not modified: the loop donates its own copy).
      train, test: `Batch(x: (N, n_in), y: (N, n_out))`; test is optional.
      batch_size: 1 <= batch_size <= N (N = full-batch GD).
      key: the run's PRNG key (shuffling and stochastic estimators).
      epochs: stop after this many epochs (>= 1); max_seconds: after this much training time (s, > 0);
        max_fpe: after this many forward-pass equivalents (> 0). At least one; the first reached stops the run.
      record_every: steps per compiled chunk and record (>= 1; a chunk never crosses an epoch's end, so the
        last chunk of an epoch may be shorter); None: one record per epoch.
      count_fpe: record forward-pass equivalents without an FPE budget (they are counted whenever max_fpe is).
      learning_rate: with an `optax.inject_hyperparams` optimiser, set in its state (traced: runs at other
        rates reuse the compiled programs); otherwise only reported (the optimiser already holds it).
      config: JSON-able settings of the run beyond fit's own (e.g. the CLI's network and optimiser), stored in
        the checkpoint; resuming with a different config (or method, method_options, batch_size, number of
        training examples, learning_rate, divergence_factor) raises ValueError naming the changed keys.
      divergence_factor: stop when the train cost exceeds this multiple of its start (None: only NaN/inf).
      log_path: a JSON-lines file, one line per record (rewritten on resume to match the checkpoint).
      checkpoint_path: an .npz written after every epoch; with `resume=True` an existing one is continued (a
        missing one starts afresh; `epochs` at or below the epoch reached trains nothing: see `start_epoch`).
      progress: show a tqdm bar (stderr) with the latest metrics.
      callback: called with each record before it is logged; returning True stops the run there.
    Returns:
      `FitResult(state, history, compile_s, start_epoch, stopped_by, fpe_per_step)`. Each record: epoch (the
      epoch the chunk belongs to, 1-based), step, train_cost, train_accuracy, test_cost, test_accuracy,
      batch_cost (mean over the chunk's mini-batches), grad_norm (mean norm of the gradients used), epoch_s
      (training time of the chunk, compile excluded; the first also carries the compiled program's one-time
      start-up), eval_s, wall_s (cumulative training time), fpe (cumulative forward-pass equivalents; None
      without max_fpe or count_fpe), learning_rate, status "ok", stopped_by (None, or on the last record the
      budget that stopped the run).
    Raises:
      ValueError: a bad argument (naming it), or no budget.
      Diverged: the cost became NaN/inf or exceeded `divergence_factor` times its start.
    """
    epochs, max_seconds, max_fpe, record_every = _check_budgets(epochs, max_seconds, max_fpe, record_every)
    n, batch_size, divergence_factor, learning_rate, key = _check_args(
        cost, train, test, batch_size, divergence_factor, learning_rate, key)
    method_options = dict(method_options or {})
    # the compiled programs carry the array leaves of the state and close over the others (the leaf policy)
    state, objects = _leaves.split_arrays(_with_learning_rate(init(params, optimizer, key), learning_rate))
    state = jax.tree_util.tree_map(jnp.copy, state)  # our own buffers: they are donated
    progs = _programs(cost, optimizer, method, method_options, objects, n, batch_size)
    n_batches = 1 if batch_size == n else n // batch_size
    chunk = n_batches if record_every is None else min(record_every, n_batches)

    meta = {"method": method, "method_options": method_options, "batch_size": batch_size, "n_train": n,
            "learning_rate": learning_rate, "divergence_factor": divergence_factor, "config": config or {}}
    start_epoch, history = 0, []
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        state, start_epoch, history = _resume(checkpoint_path, state, meta)
    log = _Log(history, log_path, callback, learning_rate)
    if not history:
        log.emit(_initial_record(progs.evaluate, state, train, test, learning_rate))
    start_cost = history[0]["train_cost"]

    compile_s, fpe_step = 0.0, None
    if max_fpe is not None or count_fpe:
        fpe_step, compile_s = progs.fpe_per_step(state, progs.batches(train, epoch_key(key, start_epoch)))
        history[-1]["fpe"] = int(state.step) * fpe_step
    stopped_by = None
    if start_epoch > 0 and _budget_hit(history[-1], True, epochs, max_seconds, max_fpe) is not None:
        epochs = start_epoch  # a resumed run already past a budget: nothing left to do
    bar = _progress_bar(progress, epochs, start_epoch)
    try:
        for ep in range(start_epoch, epochs) if epochs is not None else itertools.count(start_epoch):
            xs = progs.batches(train, epoch_key(key, ep))
            for first in range(0, n_batches, chunk):
                part = xs if chunk == n_batches else jax.tree_util.tree_map(lambda a: a[first:first + chunk], xs)
                program, c_s = progs.program(state, part)
                compile_s += c_s
                state, rec = _train_chunk(program, progs.evaluate, state, part, train, test, ep + 1, log, fpe_step)
                if (reason := _bad_epoch(rec["train_cost"], start_cost, divergence_factor)) is not None:
                    log.diverge(ep + 1, rec["step"] - 1, reason)
                epoch_done = first + chunk >= n_batches
                rec["stopped_by"] = _budget_hit(rec, epoch_done, epochs, max_seconds, max_fpe)
                log.emit(rec)
                stopped_by = rec["stopped_by"]
                if epoch_done and checkpoint_path is not None:
                    save_state(checkpoint_path, state, epoch=ep + 1, history=history, meta=meta)
                _show(bar, rec, epoch_done)
                if stopped_by is not None:
                    break
            if stopped_by is not None:
                break
    finally:
        if bar is not None:
            bar.close()
    return FitResult(_leaves.combine(state, objects), history, compile_s, start_epoch, stopped_by, fpe_step)
