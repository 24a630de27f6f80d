"""The extrapolation policy: when a point is timed whole, and otherwise on how many of its directions.

Every decision is a pure function of measured times, so it can be tested without timing anything:

    >>> predicted = extrapolate(0.08, 176, 23_861, t_small=0.02, covered_small=44)  # 8.2 s (the pilot's two parts)
    >>> fits_whole(predicted, budget=40.0)                                          # True: time it whole
    >>> subset_directions(pilot_s=0.02, covered=44, total=23_861, budget=4.0)       # 275: ~0.125 s of directions

The whole gradient is always preferred; a point is extrapolated only when its predicted whole time exceeds the
budget and the method can time a part of its own program (`Estimator.subset`); then the part runs the same
compiled body (chunk size, scan, padding) as the whole. A call also pays a fixed cost that does not grow with
its directions (measured on this project's CPU at [96, 96, 10], N = 1000, fd-forward: ~50 ms per call, and
the first chunks of a scan run up to 2x slower per direction than later ones), so the part's time is not
scaled by total / covered, which overstated small points by ~20%: two parts of the same program, on n and on
about n / 4 directions, give the cost per direction and the fixed cost (`extrapolate`).

The pilot (one chunk, then parts PILOT_GROWTH times larger) grows until its directions, not the call's fixed
cost, set its time (`pilot_grows`). Where the fixed cost is large (fd-layerwise at [784, 1250, 10], N = 60,000:
a ~1.1 s forward pass per call, ~0.3 ms per direction), a part of one and four chunks differed by noise alone
and predicted 7,464 s for a gradient the two larger parts put at ~344 s.

    >>> extrapolate(t_big=1.0, covered_big=4000, total=40_000, t_small=0.3, covered_small=1000)   # 7.3 s
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SUBSET_SHARE = 1 / 32  # an extrapolated point spends about this share of the budget per timed call of its subset
VALIDATION_SHARE = 0.125  # a validation subset covers at most this share of the directions (a real extrapolation)
VALIDATION_MIN_DIRECTIONS = 16  # fewer directions are no test of a per-direction extrapolation
VALIDATION_MIN_SHARE = 1 / 256  # nor are whole gradients far below the budget (dominated by a call's fixed cost)
PILOT_GROWTH = 4  # each pilot part covers this many times the directions of the one before
PILOT_DOMINANT = 2.0  # the pilot stops growing once its last part takes this many times the one-chunk part
SHORT_CALL_S = 0.05  # a call this short is at the mercy of the scheduler: time it SHORT_ROUNDS times
SHORT_ROUNDS = 21
GRIEWANK = 5.0  # reverse mode costs at most ~5 forward passes: the prediction for autodiff methods without a count


def predict_from_count(evaluations: float | None, t_forward: float, exact: bool,
                       history: Sequence[tuple[int, int, float]] = (), p: int = 0, n: int = 0,
                       forward_equivalents: float | None = None) -> float:
    """Predicted seconds of a method without a subset: forward_equivalents (XLA FLOPs of its compiled program
    over the forward pass's) x forward time where known, else evaluations x forward time, else GRIEWANK x
    forward time (autodiff); and, when the method was measured at smaller points (P', N', seconds) of the run,
    the smaller of that and t' (P / P')^2 (N / N') (no estimator here grows faster than FD's P^2)."""
    if forward_equivalents is not None:
        count = float(forward_equivalents)
    else:
        count = GRIEWANK if evaluations is None or exact else float(evaluations)
    predicted = count * t_forward
    if history and p and n:
        p0, n0, t0 = max(history)
        predicted = min(predicted, t0 * (p / p0) ** 2 * n / n0)
    return predicted


def extrapolate(t_big: float, covered_big: int, total: int, t_small: float | None = None,
                covered_small: int | None = None) -> float:
    """Seconds of the whole program from timed parts of it: with two parts (covered_small < covered_big
    directions), the fixed cost once plus the per-direction slope between them times every direction,
      t_big + (t_big - t_small) / (covered_big - covered_small) * (total - covered_big)
    (the slope taken as at least 0, a noise guard); with one part, t_big * total / covered_big."""
    if covered_big <= 0 or total <= 0:
        raise ValueError(f"covered_big and total must be positive direction counts, got {covered_big} and {total}")
    if t_small is None or covered_small is None or covered_small >= covered_big:
        return float(t_big) * total / covered_big
    slope = max(float(t_big) - float(t_small), 0.0) / (covered_big - covered_small)
    return float(t_big) + slope * (total - covered_big)


def pilot_grows(t_chunk: float, t_last: float, covered_last: int, total: int, budget: float) -> bool:
    """Should the pilot time a part PILOT_GROWTH times larger than its last one? Yes while the last part took
    under PILOT_DOMINANT times the one-chunk part (the fixed cost per call still dominates, so their difference
    is mostly noise), stays under SUBSET_SHARE of the budget, and covers fewer than all directions."""
    return covered_last < total and t_last < PILOT_DOMINANT * t_chunk and t_last < SUBSET_SHARE * budget


def timing_rounds(first_s: float, repeats: int, validating: bool = False) -> int:
    """Timed calls of a whole gradient whose first call took `first_s`: `repeats` (at least 3 when its
    extrapolation is validated in the same rounds), and SHORT_ROUNDS for calls under SHORT_CALL_S (their
    median over 3 calls moved by 2x between runs on a shared 2-core machine)."""
    rounds = max(repeats, 3) if validating else repeats
    return max(rounds, SHORT_ROUNDS) if first_s < SHORT_CALL_S else rounds


def counts_for_target(whole_s: float, budget: float) -> bool:
    """Does a validated point count toward the validation target? Only where the whole gradient takes at least
    what one subset call of an extrapolated point takes (SUBSET_SHARE x budget): the regime extrapolation is
    used in. Shorter ones are still validated and listed, but there a call's fixed cost and the scheduler's
    noise, not its directions, set the time (at [32, 32, 10] fd-loop's whole gradient takes ~0.15 s)."""
    return whole_s >= SUBSET_SHARE * budget


def fits_whole(predicted_s: float, budget: float) -> bool:
    """Time the whole gradient when it is predicted to take at most `budget` seconds."""
    return predicted_s <= budget


def subset_directions(pilot_s: float, covered: int, total: int, budget: float,
                      share: float = SUBSET_SHARE) -> int:
    """Directions to ask a subset for so that one call takes about share x budget, from a pilot of `covered`
    directions that took `pilot_s` (at least `covered`, at most `total`)."""
    per_direction = pilot_s / max(covered, 1)
    want = share * budget / per_direction if per_direction > 0 else total
    return int(min(total, max(covered, math.floor(want))))


def validation_directions(pilot_s: float, covered: int, total: int, budget: float,
                          whole_s: float | None = None, chunk: int | None = None) -> int | None:
    """Directions for the subset that validates a whole measurement: what an extrapolated point would time
    (`subset_directions` of the pilot part that took `pilot_s` on `covered` directions), but never more than
    VALIDATION_SHARE of the total. None when the point is too small for a real extrapolation: one chunk
    (`chunk` directions, default `covered`) covers more than that share, the share is under
    VALIDATION_MIN_DIRECTIONS, or the whole gradient took under VALIDATION_MIN_SHARE of the budget (such a
    point is never near extrapolation, and the fixed cost of a call, not its directions, sets its time)."""
    cap = int(VALIDATION_SHARE * total)
    if (covered if chunk is None else chunk) > cap or cap < VALIDATION_MIN_DIRECTIONS:
        return None
    if whole_s is not None and whole_s < VALIDATION_MIN_SHARE * budget:
        return None
    return min(cap, subset_directions(pilot_s, covered, total, budget))
