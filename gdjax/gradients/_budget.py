"""How many directions one chunk holds: memory and cache budgets per platform, and the default chunk size.

A chunk of c directions holds c perturbed copies of one leaf and c sets of activations. Its size is bounded by
a memory budget (any platform) and, on a CPU, by a cache budget for its stack of copies (measured below).

    >>> default_chunk_size(784 * 30, 4, 2**20, 784 * 30 + 1, platform="cpu")   # 80: 8 MiB / 94 KB copies, 16s
    >>> default_chunk_size(784 * 30, 4, 2**20, 784 * 30 + 1, platform="cpu", n_examples=1000)   # 256: 24 MiB
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

# Bytes of perturbed parameters and activations one chunk may hold, per platform (a bound on memory).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
MEMORY_BUDGET = {"cpu": DEFAULT_MEMORY_BUDGET, "gpu": DEFAULT_MEMORY_BUDGET, "tpu": DEFAULT_MEMORY_BUDGET}
# On a CPU, also bytes of one chunk's stack of perturbed copies. Too narrow a chunk makes the batched first-layer
# matmul narrow (slow per FLOP) and pays the loop's fixed cost per chunk more often; too wide a one moves its
# copies and activations out of the caches. How much that costs depends on how many examples use each copy:
# with few, the kernel is memory-bound and wants its copies in L2; with many, it is compute-bound and wants the
# widest matmul whose copies still fit L3. So the budget is CACHE_BUDGET times a reuse factor,
# min(REUSE_CAP, max(1, n_examples // REUSE_EXAMPLES)). Measured on the 2-core EPYC of this project (1 MiB L2 per
# core, 32 MiB L3; [784, 30, 10], fd-forward, float32, whole gradients, chunks of the 94 KB weight copies, medians
# of 3 interleaved rounds, `benchmarks/fd_kernel.py --chunks ...`):
#   N = 10:   chunk 44 76 ms, 64 68 ms, 96 67 ms, 128 71 ms, 256 112 ms        (8 MiB -> chunk 80)
#   N = 100:  chunk 89 494 ms, 180 472 ms, 256 453 ms, 360 557 ms            (24 MiB -> chunk 256)
#   N = 1000: chunk 89 4.68 s, 180 4.19 s, 256 4.12 s, 360 5.27 s            (24 MiB -> chunk 256)
# Accelerators have fast memory and want wide chunks to fill their cores: no such limit there.
CACHE_BUDGET = {"cpu": 8 * 2**20}
REUSE_EXAMPLES = 32
REUSE_CAP = 3
# Chunks a multiple of ALIGN directions where the chunk is at least 4 x ALIGN wide: the same run at N = 1000
# (chunk: median of 3 interleaved rounds) gave 248: 4.01 s, 256: 3.66 s, 264: 3.95 s, 265: 3.94 s, 272: 3.48 s.
ALIGN = {"cpu": 16}
MAX_CHUNK = 1024


def _platform(platform: str | None) -> str:
    if platform is None:
        return jax.default_backend()
    if not isinstance(platform, str):
        raise TypeError(f"platform must be a string such as 'cpu' or 'gpu', got {platform!r}")
    return platform


def memory_budget(platform: str | None = None) -> int:
    """Bytes of copies and activations one chunk may hold on `platform` (default: JAX's default backend)."""
    return MEMORY_BUDGET.get(_platform(platform), DEFAULT_MEMORY_BUDGET)


def cache_budget(platform: str | None = None, n_examples: int = 1) -> int | None:
    """Bytes one chunk's stack of perturbed copies may take on `platform` (default: JAX's default backend) when
    each copy is used by `n_examples` examples, None for no limit; see CACHE_BUDGET."""
    base = CACHE_BUDGET.get(_platform(platform))
    if base is None:
        return None
    return base * min(REUSE_CAP, max(1, int(n_examples) // REUSE_EXAMPLES))


def batch_examples(batch) -> int:
    """Examples in `batch`: the longest leading axis of its array leaves (1 for a batch of scalars)."""
    lengths = [leaf.shape[0] for leaf in jax.tree_util.tree_leaves(batch) if getattr(leaf, "ndim", 0) >= 1]
    return int(max(lengths, default=1))


def default_chunk_size(n_params: int, itemsize: int, activation_bytes: int, n_directions: int,
                       n_devices: int = 1, budget: int | None = None, cache: int | None | str = "auto",
                       platform: str | None = None, n_examples: int = 1, align: int | str = "auto") -> int:
    """Directions per chunk: the chunk fits the memory budget, and on a CPU its copies fit the cache budget.

    `n_params` is the size of what one direction copies (the perturbed leaf). The largest chunk is the smallest of
      budget // (3 * n_params * itemsize + activation_bytes)   (the copy, a relayout, slack; the activations,
                                                               see `intermediate_bytes`; budget default
                                                               `memory_budget(platform)`)
      cache // (n_params * itemsize)                           (cache default `cache_budget(platform, n_examples)`:
                                                               on CPU 8 MiB, up to 24 MiB when each copy serves
                                                               96 or more examples)
      MAX_CHUNK,
    and at least 1, rounded down to a multiple of `align` (default `ALIGN[platform]`: 16 on CPU, 1 elsewhere) when
    it is at least 4 x align wide. The directions are then split into the fewest chunks of at most that size (a
    multiple of n_devices of them) and the chunk size evened out over them (rounded up to a multiple of `align`
    when at least 4 x align): padding wastes less than `align` directions per chunk (23861 directions at a largest
    chunk of 314 and align 1 give 76 chunks of 314).
    """
    budget = memory_budget(platform) if budget is None else budget
    cache = cache_budget(platform, n_examples) if cache == "auto" else cache
    largest = budget // max(3 * n_params * itemsize + activation_bytes, 1)
    if cache is not None:
        largest = min(largest, cache // max(n_params * itemsize, 1))
    largest = int(max(1, min(largest, MAX_CHUNK)))
    align = ALIGN.get(_platform(platform), 1) if align == "auto" else int(align)
    if largest < 4 * align:  # narrow chunks: rounding down would cost more than alignment gains
        align = 1
    largest -= largest % align
    n_chunks = -(-n_directions // largest)
    n_chunks = -(-n_chunks // n_devices) * n_devices
    even = -(-n_directions // n_chunks)
    if even >= 4 * align:  # still at most `largest`, a multiple of align
        even = -(-even // align) * align
    return int(max(1, even))


def intermediate_bytes(cost: Callable, params, batch) -> int:
    """Bytes of every intermediate array of one `cost(params, batch)` call (top-level jaxpr equations).

    An upper bound on the activation memory one perturbed evaluation needs (XLA fuses and frees many of these),
    used to pick a default chunk size from a memory budget.
    """
    jaxpr = jax.make_jaxpr(cost)(params, batch).jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = getattr(var, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * aval.dtype.itemsize  # PRNG key dtypes too (no jnp.dtype)
    return int(total)


def leaf_chunk_sizes(cost: Callable, params, batch, lengths: list[int], chunk_size: int | None = None,
                     n_devices: int = 1, platform: str | None = None, *, copy_factor: int = 1,
                     activation_factor: int = 1) -> list[int]:
    """Directions per chunk of every leaf, never more than the leaf's `lengths[k]` directions.

    `chunk_size` (the same for every leaf) or, when None, `default_chunk_size` of the leaf: one direction copies
    the leaf (`copy_factor` x its bytes: 2 for complex copies) and holds `activation_factor` x the cost's
    intermediate bytes (2 for forward mode: primal and tangent); the cache budget is the one for the batch's
    `batch_examples`.
    """
    leaves = jax.tree_util.tree_leaves(params)
    if chunk_size is not None:
        return [min(chunk_size, m) for m in lengths]
    act = intermediate_bytes(cost, params, batch) * activation_factor
    platform, n_examples = _platform(platform), batch_examples(batch)
    return [min(default_chunk_size(leaf.size, jnp.dtype(leaf.dtype).itemsize * copy_factor, act, m, n_devices,
                                   platform=platform, n_examples=n_examples), m)
            for leaf, m in zip(leaves, lengths)]


def mesh_platform(mesh) -> str | None:
    """The platform of a mesh's devices (None without a mesh: JAX's default backend)."""
    return None if mesh is None else mesh.devices.flat[0].platform
