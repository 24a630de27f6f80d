"""What one run of the FD-vs-`jax.grad` benchmark measures: the networks, methods, budgets, and the ordered
list of points (`plan`). Validated on construction; nothing here measures.

    >>> cfg = BenchConfig(sizes=parse_sizes("784,30,10;P=1e2:1e6:8"), batch_size=1000, time_budget=40)
    >>> [p.id("float32") for p in plan(cfg)][:2]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from gdjax import _checks
from gdjax.gradients import available_methods, method_info, methods_where
from gdjax.nn import param_count

FORWARD_PASS = "forward-pass"  # the jitted cost alone: one evaluation, the unit of every other row
BENCH_NAME = "fd_vs_grad"
DTYPES = ("float32", "float64")
LECTURE_NET = (784, 30, 10)

DEFAULT_BATCH, DEFAULT_REPEATS = 1000, 3
# the whole gradient is timed when it is predicted to take at most this long; beyond it, extrapolated
DEFAULT_TIME_BUDGET, QUICK_TIME_BUDGET, FULL_TIME_BUDGET = 25.0, 1.0, 600.0
# `make bench`: P from 162 to 1.06e6, with the lecture's [784, 30, 10] (P = 23,860)
DEFAULT_SIZES = ((8, 8, 10), (32, 32, 10), (96, 96, 10), (784, 30, 10), (300, 300, 10), (1024, 1024, 10))
QUICK_SIZES = ((4, 3, 2), (16, 12, 4))
FULL_SIZES = "P=1e2:1e6:9"  # `make bench-full`: 9 square nets [h, h, 10] log-spaced in P, plus the lecture's

# The "million weights" table: the lecture's net and a ~1e6-parameter MLP on MNIST-sized data.
MILLION_NETS = ((784, 30, 10), (784, 1250, 10))  # P = 23,860 and 993,760
MILLION_EXAMPLES = 60_000
EPOCH_BATCH = 10  # an epoch = 60000 / 10 = 6000 gradient steps on mini-batches of 10, as in the lecture
EPOCH_STEPS = MILLION_EXAMPLES // EPOCH_BATCH

TARGETS = {
    "fd_peak_fraction": 0.85,  # FD kernel rate / matmul reference at [784, 30, 10], N = 1000, f32
    "fd_vs_loop": 2.5,  # fd-loop time / FD kernel time
    "reverse_over_forward": 2.0,  # reverse / forward-pass time (at most)
    "ratio_slope": 0.9,  # fitted slope of log(FD / reverse) vs log P for P in [1e4, 1e5]
    "validation": 0.15,  # |extrapolated / whole - 1| at every validated point
}


def parse_sizes(text: str) -> tuple[tuple[int, ...], ...]:
    """Parse `--sizes`: layer lists "784,30,10;784,100,10", P ranges "P=1e2:1e6[:n]" (n log-spaced square nets
    [h, h, 10], default n = 5), the names "default" / "quick" / "full", or several of these joined by ";".

    Returns the networks in order, without repeats. Raises ValueError naming the bad part.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("sizes must be layer lists such as '784,30,10;784,100,10' or a range 'P=1e2:1e6:5'")
    named = {"default": DEFAULT_SIZES, "quick": QUICK_SIZES}
    nets: list[tuple[int, ...]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if part == "full":
            found = (*parse_sizes(FULL_SIZES), LECTURE_NET)
        elif part in named:
            found = named[part]
        elif part[:1] in "Pp":
            found = _p_range(part)
        else:
            found = (_layer_list(part),)
        nets += [n for n in found if n not in nets]
    if not nets:
        raise ValueError("sizes must name at least one network, e.g. '784,30,10'")
    if text.strip() == "full":
        nets.sort(key=param_count)
    return tuple(nets)


def _p_range(part: str) -> tuple[tuple[int, int, int], ...]:
    m = re.fullmatch(r"[Pp]\s*=\s*([^:]+):([^:]+)(?::(\d+))?", part)
    try:
        lo, hi = float(m.group(1)), float(m.group(2))
    except (AttributeError, ValueError):
        raise ValueError(f"sizes range {part!r}: expected P=LOW:HIGH[:COUNT], e.g. P=1e2:1e6:5") from None
    n = int(m.group(3) or 5)
    if not (math.isfinite(lo) and math.isfinite(hi) and 30 <= lo <= hi) or n < 1:
        raise ValueError(f"sizes range {part!r}: need 30 <= low <= high and a count >= 1, e.g. P=1e2:1e6:5")
    return tuple(dict.fromkeys(square_net(float(p)) for p in (np.geomspace(lo, hi, n) if n > 1 else [lo])))


def _layer_list(part: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in part.split(","))
    except ValueError:
        raise ValueError(f"sizes {part!r}: expected comma-separated integers such as 784,30,10") from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"sizes {part!r}: need at least two layer widths, each >= 1 (e.g. 784,30,10)")
    return sizes


def square_net(p: float, n_out: int = 10) -> tuple[int, int, int]:
    """The [h, h, n_out] MLP whose parameter count h^2 + h + h n_out + n_out is closest to `p`."""
    h = max(1, round((-(1 + n_out) + math.sqrt((1 + n_out) ** 2 + 4 * max(p - n_out, 0))) / 2))
    return (h, h, n_out)


def million_methods() -> tuple[str, ...]:
    """The methods of the million table: those whose registry entry says `affordable_at_million` (one per cost
    family), in registration order; the FD kernel and fd-loop are extrapolated there."""
    return methods_where(affordable_at_million=True)


def default_methods() -> tuple[str, ...]:
    """Every registered gradient method (estimators added later join automatically)."""
    return tuple(available_methods())


@dataclass(frozen=True)
class BenchConfig:
    """What one run measures. Validated on construction (ValueError/TypeError naming the option).

    Attributes:
      sizes: networks, each a tuple of layer widths.
      batch_size: examples N in the cost (sweep points).
      dtype: float32 or float64 parameters and data.
      methods: gradient methods (registry names); the forward pass alone is always measured too.
      repeats: the most timed calls per measurement (after warm-up); fewer when they exceed the budget.
      time_budget: seconds one whole gradient may be predicted to take; beyond it the point is timed on a
        subset of the method's directions and extrapolated (methods without a subset are skipped, noted).
      seed: PRNG seed of params and data.
      million: also measure the "million weights" table.
      validate: at every point measured whole whose method has a subset, also time the subset and record
        the extrapolation it predicts (the `validation` list).
      chunk_size: directions per chunk for every method that takes a `chunk_size` option (None: each
        method's own default).
      problem: a `gdjax.bench.problem.Problem` to measure instead of the MLPs of `sizes` (`gdjax bench
        --problem package.module:factory`); then `sizes` is ignored, `dtype` is the problem's and there is no
        million table.
      problem_spec: the "package.module:factory" it came from (for the record).
    """

    sizes: tuple = DEFAULT_SIZES
    batch_size: int = DEFAULT_BATCH
    dtype: str = "float32"
    methods: tuple = field(default_factory=default_methods)
    repeats: int = DEFAULT_REPEATS
    time_budget: float = DEFAULT_TIME_BUDGET
    seed: int = 0
    million: bool = True
    validate: bool = True
    chunk_size: int | None = None
    problem: object = None
    problem_spec: str | None = None

    def __post_init__(self):
        if self.problem is not None:
            from gdjax.bench.problem import Problem

            if not isinstance(self.problem, Problem):
                raise TypeError(f"problem must be a gdjax.bench.problem.Problem, got {type(self.problem).__name__}")
            object.__setattr__(self, "sizes", ())
            object.__setattr__(self, "dtype", self.problem.dtype)
            object.__setattr__(self, "million", False)
            object.__setattr__(self, "batch_size", int(self.problem.batch_size))
        sizes = tuple(tuple(s) for s in self.sizes)
        if not sizes and self.problem is None:
            raise ValueError("sizes must name at least one network")
        for s in sizes:
            param_count(s)  # validates the widths
        object.__setattr__(self, "sizes", sizes)
        _checks.positive_int(self.batch_size, "batch_size")
        _checks.choice(self.dtype, DTYPES if self.problem is None else (*DTYPES, "float16", "bfloat16"), "dtype")
        methods = tuple(self.methods)
        if not methods:
            raise ValueError(f"methods must name at least one gradient method; valid: {', '.join(available_methods())}")
        for m in methods:
            _checks.choice(m, available_methods(), "gradient method")
        object.__setattr__(self, "methods", tuple(dict.fromkeys(methods)))
        _checks.positive_int(self.repeats, "repeats")
        _checks.positive_float(self.time_budget, "time_budget")
        _checks.positive_int(self.seed, "seed", minimum=0)
        if self.chunk_size is not None:
            _checks.positive_int(self.chunk_size, "chunk_size")

    def method_options(self, method: str) -> dict:
        """The options this run passes to `gdjax.gradient(cost, method, ...)`: chunk_size where the method takes
        one (its registry entry's `options`) and the run sets it."""
        if self.chunk_size is not None and "chunk_size" in method_info(method).options:
            return {"chunk_size": self.chunk_size}
        return {}

    def as_dict(self) -> dict:
        """The options as given (nothing computed), plus a description of the problem."""
        if self.problem is not None:
            pr = self.problem
            return {"problem": pr.name, "problem_spec": self.problem_spec, "description": pr.description,
                    "P": pr.n_params, "batch_size": self.batch_size, "dtype": self.dtype,
                    "methods": list(self.methods), "repeats": self.repeats, "time_budget": self.time_budget,
                    "seed": self.seed, "million": False, "validate": self.validate, "chunk_size": self.chunk_size}
        return {"sizes": [list(s) for s in self.sizes], "batch_size": self.batch_size, "dtype": self.dtype,
                "methods": list(self.methods), "repeats": self.repeats, "time_budget": self.time_budget,
                "seed": self.seed, "million": self.million, "validate": self.validate,
                "chunk_size": self.chunk_size, "loss": "quadratic",
                "net": "sigmoid hidden and output units", "data": "x ~ U[0, 1], one-hot random labels"}


@dataclass(frozen=True)
class Point:
    """One measurement: a network (or a named problem), a batch size, a method, and the table it belongs to."""

    group: str  # "sweep", "million", or "problem" (a `Problem` of `gdjax bench --problem`)
    sizes: tuple
    batch_size: int
    method: str
    name: str = ""  # the problem's name (group "problem"); the sizes joined by "-" otherwise

    def label(self) -> str:
        """What the row's `sizes` field reads: the problem's name, or the layer widths joined by "-"."""
        return self.name or "-".join(map(str, self.sizes))

    def id(self, dtype: str) -> str:
        return f"{self.group}|{self.label()}|N={self.batch_size}|{dtype}|{self.method}"


def plan(config: BenchConfig) -> list[Point]:
    """Every point of a run, in order: per network the forward pass first (its time predicts the others)."""
    if config.problem is not None:
        return [Point("problem", (), config.batch_size, m, config.problem.name)
                for m in (FORWARD_PASS, *config.methods)]
    points = [Point("sweep", s, config.batch_size, m) for s in config.sizes for m in (FORWARD_PASS, *config.methods)]
    if config.million:
        methods = million_methods()
        for s in MILLION_NETS:
            for n in (MILLION_EXAMPLES, EPOCH_BATCH):
                points += [Point("million", s, n, m) for m in (FORWARD_PASS, *methods)]
    return points
