"""How many directions one chunk holds: memory and cache budgets per platform, and the default chunk size.

A chunk of c directions holds c perturbed copies of one leaf and c sets of activations. Its size is bounded by
a memory budget (any platform) and, on a CPU, by a cache budget for its stack of copies (measured below).

The memory budget comes from the device: `MEMORY_FRACTION` (0.25) of the memory it has left,
`memory_stats()["bytes_limit"] - ["bytes_in_use"]`, where the device reports them (GPUs, TPUs). A CPU, or a
device without statistics, gets `FALLBACK_MEMORY_BUDGET` (256 MiB). `MEMORY_BUDGET[platform] = nbytes` fixes the
budget of a platform (e.g. `_budget.MEMORY_BUDGET["gpu"] = 8 * 2**30`), whatever the device says.

    >>> default_chunk_size(784 * 30, 4, 2**20, 784 * 30 + 1, platform="cpu")   # 80: 8 MiB / 94 KB copies, 16s
    >>> default_chunk_size(784 * 30, 4, 2**20, 784 * 30 + 1, platform="cpu", n_examples=1000)   # 256: 24 MiB
    >>> memory_budget(device=jax.devices("gpu")[0])   # 0.25 x (bytes_limit - bytes_in_use) of that GPU
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

# Bytes of perturbed parameters and activations one chunk may hold (a bound on memory):
# MEMORY_FRACTION of the free memory the device reports (`memory_stats()`), the fallback on a CPU (whose "device
# memory" is the host's, shared with everything else) or where the device gives no statistics, and explicit
# per-platform overrides (empty by default: set MEMORY_BUDGET["gpu"] = nbytes to fix a GPU's budget).
MEMORY_FRACTION = 0.25
FALLBACK_MEMORY_BUDGET = 256 * 2**20
DEFAULT_MEMORY_BUDGET = FALLBACK_MEMORY_BUDGET  # the name other modules have read
MEMORY_BUDGET: dict[str, int] = {}
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


def _device(platform: str):
    """The first local device of `platform`, or None where JAX has none (a "gpu" budget asked on a CPU host)."""
    try:
        return jax.local_devices(backend=platform)[0]
    except (RuntimeError, ValueError, IndexError):
        return None


def device_memory_budget(device, fraction: float | None = None) -> int | None:
    """`fraction` (default `MEMORY_FRACTION`) of the bytes `device` has left, `bytes_limit - bytes_in_use` from
    `device.memory_stats()`; None for a CPU or a device without those statistics."""
    if device is None or getattr(device, "platform", "cpu") == "cpu":
        return None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (backends without statistics raise various errors)
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return max(int((MEMORY_FRACTION if fraction is None else fraction) * free), 1)


def memory_budget(platform: str | None = None, device=None) -> int:
    """Bytes of copies and activations one chunk may hold: `MEMORY_BUDGET[platform]` when set, else
    `MEMORY_FRACTION` of what `device` (default: the first device of `platform`, JAX's default backend when None)
    has left (`device_memory_budget`), else `FALLBACK_MEMORY_BUDGET` (CPUs, devices without statistics)."""
    platform = _platform(platform) if device is None else getattr(device, "platform", _platform(platform))
    if platform in MEMORY_BUDGET:
        return int(MEMORY_BUDGET[platform])
    from_device = device_memory_budget(device if device is not None else _device(platform))
    return FALLBACK_MEMORY_BUDGET if from_device is None else from_device


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
                     activation_factor: int = 1, device=None) -> list[int]:
    """Directions per chunk of every leaf, never more than the leaf's `lengths[k]` directions.

    `chunk_size` (the same for every leaf) or, when None, `default_chunk_size` of the leaf: one direction copies
    the leaf (`copy_factor` x its bytes: 2 for complex copies) and holds `activation_factor` x the cost's
    intermediate bytes (2 for forward mode: primal and tangent); the cache budget is the one for the batch's
    `batch_examples`; the memory budget `memory_budget(platform, device)` (`device`: e.g. the first device of a
    mesh; None for the platform's first device).
    """
    leaves = jax.tree_util.tree_leaves(params)
    if chunk_size is not None:
        return [min(chunk_size, m) for m in lengths]
    act = intermediate_bytes(cost, params, batch) * activation_factor
    platform = _platform(platform) if device is None else getattr(device, "platform", _platform(platform))
    n_examples, budget = batch_examples(batch), memory_budget(platform, device)
    return [min(default_chunk_size(leaf.size, jnp.dtype(leaf.dtype).itemsize * copy_factor, act, m, n_devices,
                                   budget=budget, platform=platform, n_examples=n_examples), m)
            for leaf, m in zip(leaves, lengths)]


def mesh_platform(mesh) -> str | None:
    """The platform of a mesh's devices (None without a mesh: JAX's default backend)."""
    return None if mesh is None else mesh.devices.flat[0].platform


def mesh_device(mesh):
    """The first device of a mesh (whose memory sets the budget), None without a mesh."""
    return None if mesh is None else mesh.devices.flat[0]
