"""Checkpoints and params files: .npz written atomically through `gdjax.results` (never pickle).

    >>> save_params("run/params.npz", params); params = load_params("run/params.npz", like=params)
    >>> save_state("run/checkpoint.npz", state, epoch=3, history=history, meta=meta)
    >>> state, epoch, history, meta = load_state("run/checkpoint.npz", like=state)

Arrays are stored under their pytree paths ("0/w", "state/params/0/b", ...); typed PRNG keys as their raw data
under "<name>::key". Leaves that are not arrays or numbers (an Equinox module's functions, strings) are not
stored: loading takes them from `like`. A file that cannot be read (truncated, not an .npz) or that does not
match `like` raises `CheckpointError` (a ValueError) with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import results
from gdjax.nn import Layer


class CheckpointError(ValueError):
    """A checkpoint or params file that cannot be read or does not match the expected structure."""


_KEY_SUFFIX = "::key"


def _path_name(path) -> str:
    """A pytree path as "0/w", "opt_state/0/mu/1/b", ..."""
    parts = []
    for p in path:
        attr = next((a for a in ("idx", "name", "key") if hasattr(p, a)), None)
        parts.append(str(getattr(p, attr)) if attr else str(p))
    return "/".join(parts)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _stored(leaf) -> bool:
    """Arrays and numbers are stored; other leaves (functions, strings) come back from `like`."""
    return isinstance(leaf, jax.Array | np.ndarray | np.generic | numbers.Number)


def _flatten_named(tree, prefix: str) -> dict[str, np.ndarray]:
    """name -> array of every stored leaf; typed PRNG keys are stored as their raw data under "<name>::key"."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = prefix + _path_name(path)
        if not _stored(leaf):
            continue
        if _is_key(leaf):
            out[name + _KEY_SUFFIX] = np.asarray(jax.random.key_data(leaf))
        else:
            out[name] = np.asarray(leaf)
    return out


def _leaf_like(ref, arrays: dict, name: str, where) -> jax.Array:
    """The stored leaf `name`, checked against the reference leaf's shape and dtype (`ref` itself when it is not
    stored: a function, a string)."""
    if not _stored(ref):
        return ref
    if _is_key(ref):
        if name + _KEY_SUFFIX not in arrays:
            raise CheckpointError(f"{where}: missing PRNG key {name!r}; was it saved from this kind of run?")
        return jax.random.wrap_key_data(arrays[name + _KEY_SUFFIX], impl=jax.random.key_impl(ref))
    if name not in arrays:
        raise CheckpointError(f"{where}: missing array {name!r}; it does not match the expected structure")
    a, ref_shape, ref_dtype = arrays[name], np.shape(ref), np.asarray(ref).dtype
    if a.shape != ref_shape or a.dtype != ref_dtype:
        raise CheckpointError(f"{where}: {name!r} has shape {a.shape} {a.dtype}, expected {ref_shape} {ref_dtype}")
    return jnp.asarray(a)


def _unflatten_like(like, arrays: dict, prefix: str, where) -> Any:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = [_leaf_like(ref, arrays, prefix + _path_name(path), where) for path, ref in leaves_with_path]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _read(path) -> dict:
    """The arrays of an .npz file; `CheckpointError` (one line) when it cannot be read."""
    try:
        return results.load_npz(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 (zipfile.BadZipFile, EOFError, OSError, ValueError of a damaged file)
        raise CheckpointError(f"{path}: damaged or not an .npz file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); delete it to start afresh "
                              f"(gdjax train --overwrite, or fit(..., resume=False))") from None


def save_params(path, params) -> None:
    """Write a params pytree to `path` as .npz (atomic; names like "0/w", "0/b"; no pickle).

    >>> save_params("run/params.npz", params); params = load_params("run/params.npz")
    """
    results.save_npz(path, _flatten_named(params, ""))


def load_params(path, like=None):
    """Read params saved by `save_params`.

    Args:
      path: the .npz file.
      like: a pytree of the expected structure, shapes and dtypes (e.g. `net.init(key)`); without it the file
        must hold an MLP's params ("0/w", "0/b", "1/w", ...) and a tuple of `Layer` is returned.
    """
    arrays = _read(path)
    if like is not None:
        return _unflatten_like(like, arrays, "", path)
    n = len(arrays) // 2
    if set(arrays) != {f"{i}/{p}" for i in range(n) for p in "wb"}:
        raise CheckpointError(
            f"{path}: not an MLP params file (expected arrays 0/w, 0/b, ...); pass like= for other pytrees")
    return tuple(Layer(jnp.asarray(arrays[f"{i}/w"]), jnp.asarray(arrays[f"{i}/b"])) for i in range(n))


def save_state(path, state, *, epoch: int, history: Sequence[dict] = (), meta: dict | None = None):
    """Write a checkpoint: the `TrainState` (its stored leaves), the epoch reached, the history so far and the
    run's metadata (its configuration, compared on resume)."""
    arrays = _flatten_named(state, "state/")
    arrays["epoch"] = np.asarray(epoch, np.int64)
    arrays["history_json"] = np.asarray(json.dumps(results.to_jsonable(list(history))))
    arrays["meta_json"] = np.asarray(json.dumps(results.to_jsonable(meta or {})))
    results.save_npz(path, arrays)


def load_state(path, like) -> tuple[Any, int, list, dict]:
    """Read a checkpoint written by `save_state` into the structure of `like` -> (state, epoch, history, meta)."""
    arrays = _read(path)
    for k in ("epoch", "history_json", "meta_json"):
        if k not in arrays:
            raise CheckpointError(f"{path}: not a gdjax training checkpoint (no {k!r})")
    state = _unflatten_like(like, arrays, "state/", path)
    try:
        return (state, int(arrays["epoch"]), json.loads(str(arrays["history_json"])),
                json.loads(str(arrays["meta_json"])))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint records ({err})") from None


def saved_epoch(path) -> int:
    """The epoch a checkpoint written by `save_state` reached, without its structure (`CheckpointError` if the
    file is damaged or not a checkpoint): for a caller deciding whether there is anything left to do."""
    arrays = _read(path)
    if "epoch" not in arrays or np.shape(arrays["epoch"]) != ():
        raise CheckpointError(f"{path}: not a gdjax training checkpoint (no 'epoch')")
    return int(arrays["epoch"])
