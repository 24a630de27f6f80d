"""One direction plan per FD-like program, and its layout chosen by measurement and cached.

A direction program (the FD kernel, forward mode, layer-aware FD, node perturbation, the naive loop) evaluates
one value per direction, group after group (a leaf of the params pytree, a layer), `widths[k]` directions of
group k at a time. `DirectionPlan` describes it once: the directions of every group (`lengths`), the `Layout`
that runs them (a chunk width per group, the carried buffer or fresh copies), the device count, whether a last
partial chunk is padded; and derives from that description how to run the whole program (`run`), a prefix of it
(`prefix`, `run(evaluate, limits)`), the timing subset of any such program (`subset`), and the same directions
several times in one program (`tiled`, `tile`, `untile`: several step sizes). A kernel supplies only
`evaluate(k, count, width, carry) -> values`, its values at the first `count` directions of group k; its
gradient combines `run(evaluate)`'s list, its subset is `subset(plan, values, n)`, so every kernel returns one
type whether it runs whole or a prefix (a list over groups, None for a group not run).

    >>> plan = DirectionPlan((16, 5), Layout((4, 4)))
    >>> values = plan.run(evaluate)                  # [values of group 0 (16,), of group 1 (5,)]
    >>> limits, covered, total = plan.prefix(6)      # ([8, 0], 8, 24): whole chunks, at least two
    >>> plan.run(evaluate, limits)                   # [values (8,), None]
    >>> sub = subset(plan, lambda p, b, limits: ..., 6)   # a registry.Subset: fn, covered 8, total 24

The layout is chosen by measurement (`choose`): the first call for a new key (cost, leaf shapes and dtypes,
batch shapes and dtypes, scheme, devices) times a few candidate layouts on a small part of the directions of the
largest leaf (`candidates`: the memory-budget default first, then one direction at a time without vmap, the
default with fresh copies instead of the carried buffer, then widths 4, 16, 64, ... below the default), within a
planning budget (`FRACTION` of the predicted gradient time, at most `MAX_SECONDS`), and keeps the fastest. Plans
are cached in the process (`cached`, `clear`) and, when `set_cache_dir(path)` is given, on disk, keyed by the
lowered program's fingerprint and the device kind. Under a tracer (inside a user's `jax.jit` or `lax.scan`) no
measurement is possible: a cached plan of the same key is used, else the budget default.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax import _checks, results
from gdjax.gradients import _chunked
from gdjax.gradients.registry import Subset

# The planning budget: at most FRACTION x the predicted time of one gradient (predicted from the objective's own
# time x the directions before any candidate is measured, then from the default layout's measurement), and at
# most MAX_SECONDS. When even the objective's compilation exceeds it, nothing is measured (the budget default).
FRACTION = 0.1
MAX_SECONDS = 10.0
# Timed calls per candidate after one untimed call (the minimum is kept), fewer once the budget is spent.
REPEATS = 3
# A candidate is timed on the first max(its width, MIN_PART) directions of the largest leaf, whole chunks.
MIN_PART = 32
# Uniform widths tried below the default (each capped at every leaf's default, so never above its memory budget).
WIDTHS = (4, 16, 64, 256)
# The in-process cache holds the plans of this many keys (least recently used dropped).
CACHE_SIZE = 256


class Layout(NamedTuple):
    """How a direction program runs: `widths[k]` directions of group k per chunk (per device; 1 = one direction at
    a time, no vmap), `carry`: the carried buffer of copies edited from chunk to chunk (`_leaf_stack.perturb_stack`)
    or fresh copies written for every chunk (`_leaf_stack.fresh_stack`)."""

    widths: tuple[int, ...]
    carry: bool = True


class DirectionPlan(NamedTuple):
    """A direction program described once: group k has `lengths[k]` directions, run by `layout` on `n_devices`.

    `pad`: each group's directions are padded to whole chunks times the device count (`_chunked.padded_length`,
    as `_chunked.map_directions` runs them); False where the program runs a last partial chunk unpadded
    (`lax.map`'s remainder), so that a group evaluates exactly its own directions.
    """

    lengths: tuple[int, ...]
    layout: Layout
    n_devices: int = 1
    pad: bool = True

    @property
    def widths(self) -> tuple[int, ...]:
        return self.layout.widths

    def padded(self, k: int) -> int:
        """Directions group k's program evaluates, padding included."""
        if not self.pad:
            return self.lengths[k]
        return _chunked.padded_length(self.lengths[k], self.widths[k], self.n_devices)

    @property
    def total(self) -> int:
        """Directions the whole program evaluates, padding included."""
        return sum(self.padded(k) for k in range(len(self.lengths)))

    def prefix(self, n: int) -> tuple[list[int], int, int]:
        """(limits, covered, total) of the program on its first `n` directions, group after group, whole chunks
        (`_chunked.prefix`: at least two chunks of a group that has two, so the loop is the whole program's);
        unpadded (`pad` False), covered and total count exactly the directions evaluated."""
        limits, covered, total = _chunked.prefix(list(self.lengths), list(self.widths), n, self.n_devices)
        if not self.pad:
            return limits, sum(limits), sum(self.lengths)
        return limits, covered, total

    def run(self, evaluate: Callable, limits: list[int] | None = None) -> list:
        """Per group, `evaluate(k, count, width, carry)` over its first `count` directions: every direction
        (`limits` None) or `limits[k]` of them (None for a group with limit 0)."""
        limits = list(self.lengths) if limits is None else limits
        return [evaluate(k, m, self.widths[k], self.layout.carry) if m else None for k, m in enumerate(limits)]

    def tiled(self, copies: int) -> DirectionPlan:
        """The plan running every leaf's directions `copies` times one after another in one program (each copy
        padded to whole chunks, so every chunk holds the directions it holds in this plan); a leaf of one chunk
        runs its copies as one chunk `copies` times wider, without a loop, as this plan runs it."""
        lengths = tuple(copies * self.padded(k) for k in range(len(self.lengths)))
        widths = tuple(w * (copies if self.lengths[k] <= w else 1) for k, w in enumerate(self.widths))
        return self._replace(lengths=lengths, layout=self.layout._replace(widths=widths))

    def tile(self, k: int, xs: list) -> jax.Array:
        """Leaf k's points of each copy (a list of arrays of its `lengths[k]` directions) as the tiled plan's one
        array: each padded with its first point to whole chunks (as `map_directions` pads), then concatenated."""
        pad = self.padded(k) - self.lengths[k]
        return jnp.concatenate([jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))]) for a in xs])

    def untile(self, k: int, values: jax.Array, copies: int) -> list:
        """The tiled plan's values of leaf k, split back into `copies` arrays of its `lengths[k]` directions."""
        return [v[:self.lengths[k]] for v in jnp.split(values, copies)]


def subset(plan: DirectionPlan, values: Callable, n: int, *, wrap: Callable | None = None,
           jittable: bool = True) -> Subset:
    """Any direction program on its first `n` directions (group after group, `plan.prefix(n)`), for timing part
    of it and extrapolating: the same program as the whole gradient, only fewer directions.

    Args:
      plan: the program's `DirectionPlan`.
      values: `values(params, batch, limits) -> list` over groups of the values at the first `limits[k]`
        directions of group k (None where 0): the kernel's own values function (`DirectionPlan.run`), which
        the whole gradient calls with `limits` None.
      n: directions asked for (>= 1); wrap: e.g. `jax.jit`, applied to the subset's function.
      jittable: False for a program driven from Python (fd-loop).
    Returns:
      a `registry.Subset`: `fn(params, batch)` the covered values raveled and concatenated, group after group.
    """
    n = _checks.positive_int(n, "n_directions")
    limits, covered, total = plan.prefix(n)

    def fn(params, batch):
        return jnp.concatenate([jnp.ravel(v) for v in values(params, batch, limits) if v is not None])

    return Subset(fn if wrap is None else wrap(fn), covered, total, jittable)


# ----------------------------------------------------------------------------------------------------------------
# The measured layout.


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One candidate layout and its measurement on the same part of the directions.

    Attributes:
      layout: the candidate.
      name: "default" (the memory-budget widths), "sequential" (one direction at a time), "fresh" (the default
        widths with fresh copies), "width-<w>".
      part_s: seconds of one call on its part (minimum over the timed calls), None when not measured.
      covered: directions of that part (its padding included); total: the whole program's directions.
      predicted_s: the whole gradient's predicted seconds, part_s x total / covered (None when not measured).
      spent_s: seconds spent measuring it (compilation and every call).
      note: why it was not measured ("" when it was).
    """

    layout: Layout
    name: str
    part_s: float | None = None
    covered: int = 0
    total: int = 0
    predicted_s: float | None = None
    spent_s: float = 0.0
    note: str = ""


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """The layout a direction program runs with, and how it was chosen.

    Attributes:
      layout: the `Layout` in force (`layout.widths`: directions per chunk of each leaf, `layout.carry`).
      source: "fixed" (chunk_size given), "budget" (the memory-budget default: chunk_size="budget", or planning
        skipped as too costly for its budget), "measured" (chosen now), "cache" (a plan of this key made earlier
        in this process), "disk" (read from the plan cache directory), "traced" (under a tracer: no measurement
        and no plan of this key yet, so the budget default).
      default: the memory-budget default layout.
      candidates: the `Candidate`s considered (empty unless measured), in the order measured.
      planning_s: seconds spent choosing (0 unless measured now); budget_s: the planning budget in force.
      objective_s: seconds of one evaluation of the cost (None unless measured).
      key: a readable form of the cache key; fingerprint: the lowered program's hash (disk cache only).
      note: a sentence on how the layout was chosen.
    """

    layout: Layout
    source: str
    default: Layout
    candidates: tuple[Candidate, ...] = ()
    planning_s: float = 0.0
    budget_s: float | None = None
    objective_s: float | None = None
    key: str = ""
    fingerprint: str | None = None
    note: str = ""

    @property
    def widths(self) -> tuple[int, ...]:
        return self.layout.widths

    def record(self) -> dict:
        """A flat, JSON-ready summary for a results row: widths, carry, source, planning seconds, budget, and each
        measured candidate's name, widths and predicted seconds."""
        return {"plan_widths": list(self.layout.widths), "plan_carry": self.layout.carry, "plan_source": self.source,
                "plan_default_widths": list(self.default.widths), "plan_s": self.planning_s,
                "plan_budget_s": self.budget_s, "plan_note": self.note,
                "plan_candidates": [{"name": c.name, "widths": list(c.layout.widths), "carry": c.layout.carry,
                                     "part_s": c.part_s, "covered": c.covered, "predicted_s": c.predicted_s,
                                     "note": c.note} for c in self.candidates]}


_CACHE: collections.OrderedDict = collections.OrderedDict()
_LOCK = threading.Lock()
_CACHE_DIR: str | None = None


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Keep measured plans on disk in `path` (created if missing) as well as in the process; None: in the process
    only (the default). A plan on disk is found by the lowered program's fingerprint and the device kind."""
    global _CACHE_DIR
    if path is not None and not isinstance(path, str | os.PathLike):
        raise TypeError(f"the plan cache directory must be a path or None, got {type(path).__name__}")
    _CACHE_DIR = None if path is None else os.fspath(path)


def cache_dir() -> str | None:
    """The plan cache directory in force (None: plans are kept in the process only)."""
    return _CACHE_DIR


def clear() -> None:
    """Forget every plan cached in the process (the disk cache is kept)."""
    with _LOCK:
        _CACHE.clear()


def cached(key) -> KernelPlan | None:
    """The plan of `key` made earlier in this process, or None."""
    with _LOCK:
        plan = _CACHE.get(key)
        if plan is not None:
            _CACHE.move_to_end(key)
        return plan[0] if plan is not None else None


def store(key, plan: KernelPlan, keep=None) -> None:
    """Cache `plan` under `key`; `keep` (e.g. an unhashable cost whose id is in the key) is held with it."""
    with _LOCK:
        _CACHE[key] = (plan, keep)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)


def is_traced(*trees) -> bool:
    """True when any leaf of `trees` is a tracer (inside jit, vmap, scan, grad: values unknown, nothing to time)."""
    return any(isinstance(leaf, jax.core.Tracer) for tree in trees for leaf in jax.tree_util.tree_leaves(tree))


def shape_key(tree) -> tuple:
    """The structure, shapes and dtypes of a pytree (what a compiled program depends on)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(getattr(a, "shape", ())), str(getattr(a, "dtype", type(a).__name__)))
                          for a in leaves)


def callable_key(fn) -> tuple:
    """`fn` itself where it is hashable (a function, a gdjax Cost), else its id (the cache then holds `fn`)."""
    try:
        hash(fn)
        return ("fn", fn)
    except TypeError:
        return ("id", id(fn))


def candidates(default: Layout, lengths: tuple[int, ...]) -> list[tuple[str, Layout]]:
    """The layouts to try, in order: the memory-budget `default` (always measured first), one direction at a time,
    the default widths with fresh copies, then each of `WIDTHS` below the default's widest chunk (every width
    capped at each leaf's default, so no candidate exceeds a leaf's memory budget). Duplicates dropped."""
    out = [("default", default), ("sequential", Layout(tuple(1 for _ in lengths), True)),
           ("fresh", default._replace(carry=False))]
    widest = max(default.widths)
    out += [(f"width-{w}", Layout(tuple(min(w, d) for d in default.widths), True)) for w in WIDTHS if w < widest]
    seen, unique = set(), []
    for name, layout in out:
        if layout not in seen:
            seen.add(layout)
            unique.append((name, layout))
    return unique


def time_part(layout: Layout, fn: Callable, args: tuple, repeats: int, deadline: float) -> tuple[float, float, float]:
    """Seconds of one call of the jitted `fn(*args)`, compiled ahead of time: the minimum over up to `repeats`
    timed calls (at least one; no more once `time.perf_counter()` passes `deadline`). Returns (seconds, compile
    seconds, seconds spent in all). `layout` names the candidate (a test replaces this function to plant one)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return best, compile_s, time.perf_counter() - start


def choose(default: Layout, lengths: tuple[int, ...], part: Callable, objective: Callable,
           n_total: int) -> KernelPlan:
    """Measure the candidate layouts (`candidates`) on a part of the directions and keep the fastest.

    Args:
      default: the memory-budget layout; lengths: directions of each leaf.
      part: `part(layout, n) -> (fn, args, covered, total)`: a jittable program of `layout` over the first `n`
        directions of the largest leaf, its arguments, the directions it evaluates and the whole program's.
      objective: `objective() -> (compile_s, seconds)`: the cost's own compilation and one evaluation (the
        prediction of the gradient's time, and of a compilation, before any candidate is measured).
      n_total: the whole gradient's directions (without padding), to predict its time before measuring.
    Returns:
      a `KernelPlan` with source "measured" (or "budget" when its budget cannot afford a measurement).
    """
    start = time.perf_counter()
    compile_s, objective_s = objective()
    predicted = objective_s * n_total
    budget = min(MAX_SECONDS, FRACTION * predicted)
    cands = candidates(default, lengths)
    if budget < compile_s:  # not even one compilation fits: the default, unmeasured
        spent = time.perf_counter() - start
        return KernelPlan(default, "budget", default, planning_s=spent, budget_s=budget, objective_s=objective_s,
                          note=f"budget default: planning budget {budget:.3g} s ({FRACTION:g} x predicted gradient "
                               f"{predicted:.3g} s) below one compilation of the cost ({compile_s:.3g} s)")
    measured, per_direction = [], None
    big = max(range(len(lengths)), key=lambda k: lengths[k])
    for i, (name, layout) in enumerate(cands):
        n = min(lengths[big], max(layout.widths[big], MIN_PART))
        spent = time.perf_counter() - start
        if i > 0:  # its compilation (as the default's) and its calls (at the fastest rate seen so far)
            estimate = compile_s + REPEATS * 2 * n * per_direction
            if spent + estimate > budget:
                measured.append(Candidate(layout, name, note=f"not measured: {spent:.3g} s spent + about "
                                                             f"{estimate:.3g} s over the budget {budget:.3g} s"))
                continue
        fn, args, covered, total = part(layout, n)
        t0 = time.perf_counter()
        seconds, compiled_s, used = time_part(layout, fn, args, REPEATS, start + budget)
        used = max(used, time.perf_counter() - t0)
        pred = seconds * total / covered
        measured.append(Candidate(layout, name, seconds, covered, total, pred, used))
        if i == 0:  # the default's measurement predicts the gradient (and a compilation) better than the objective
            predicted, per_direction, compile_s = pred, seconds / covered, compiled_s
            budget = min(MAX_SECONDS, FRACTION * predicted)
        per_direction = min(per_direction, seconds / covered)
    timed = [c for c in measured if c.predicted_s is not None]
    best = min(timed, key=lambda c: c.predicted_s)
    spent = time.perf_counter() - start
    note = (f"measured {len(timed)} of {len(measured)} layouts in {spent:.3g} s (budget {budget:.3g} s): "
            f"{best.name} predicted {best.predicted_s:.3g} s per gradient")
    return KernelPlan(best.layout, "measured", default, tuple(measured), spent, budget, objective_s, note=note)


def disk_path(fingerprint: str) -> str | None:
    return None if _CACHE_DIR is None else os.path.join(_CACHE_DIR, f"plan-{fingerprint}.json")


def fingerprint(lowered_text: str, device_kind: str) -> str:
    """The disk cache's key: a hash of the lowered program (StableHLO text) and the device kind."""
    return hashlib.sha256((device_kind + "\n" + lowered_text).encode()).hexdigest()[:32]


def load(fp: str, n_leaves: int) -> Layout | None:
    """The layout stored under fingerprint `fp`, or None (no directory, no file, or a file that does not fit)."""
    path = disk_path(fp)
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        widths = tuple(int(w) for w in data["widths"])
        if len(widths) != n_leaves or min(widths) < 1:
            return None
        return Layout(widths, bool(data["carry"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(fp: str, plan: KernelPlan, device_kind: str) -> None:
    """Write `plan`'s layout under fingerprint `fp` in the cache directory (atomically; nothing without one)."""
    path = disk_path(fp)
    if path is None:
        return
    results.write_json(path, {"widths": list(plan.layout.widths), "carry": plan.layout.carry,
                             "device_kind": device_kind, **{k: v for k, v in plan.record().items()
                                                            if k not in ("plan_widths", "plan_carry")}})
