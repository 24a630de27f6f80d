"""JAX's persistent compilation cache in one call, for test suites that compile the same programs every run."""

from __future__ import annotations

import os

import jax


def enable_compilation_cache(path: str | os.PathLike, min_compile_seconds: float = 0.5) -> str:
    """Store compiled XLA programs under `path` and reuse them in later processes (JAX's persistent cache).

    Programs that took at least `min_compile_seconds` to compile are written; a later process that compiles
    the same program (same jaxlib, backend and flags) loads it instead. Results never depend on the cache,
    only compile time does. Returns the absolute path.

        >>> gdjax.enable_compilation_cache("~/.cache/gdjax-jax")     # e.g. at the top of conftest.py
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if min_compile_seconds < 0:
        raise ValueError(f"min_compile_seconds must be >= 0, got {min_compile_seconds}")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
