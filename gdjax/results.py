"""Results files: JSON (meta + config + rows) with a CSV beside it, JSON-lines for resumable sweeps, .npz arrays.

Every write is atomic (a temporary file in the same directory, flushed and fsync'ed, then `os.replace`), so an
interrupted run never leaves a half-written results file. Rows are flat dicts, one per measurement, so
`pandas.DataFrame(load_results(path)["rows"])` is the table.

    >>> save_results("out/fd_vs_grad.json", rows, meta=environment(), config={"batch_size": 1000})
    >>> load_results("out/fd_vs_grad.json")["rows"][0]["median_s"]
    >>> append_jsonl("out/sweep.jsonl", row)          # one finished point per line
    >>> done = read_jsonl("out/sweep.jsonl")          # resume: the points already measured

This module and `gdjax.data` are the only library modules that touch files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from gdjax import provenance

__all__ = ["environment", "output_dir", "write_json", "write_bytes", "save_results", "load_results", "append_jsonl",
           "write_jsonl", "read_jsonl", "save_npz", "load_npz", "csv_path", "to_jsonable"]


def to_jsonable(obj):
    """Convert numpy/JAX scalars and arrays, tuples, Paths and non-finite floats to plain JSON values.

    NaN and +-inf become None (JSON has no NaN), so the files stay valid JSON for any reader.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool | str) or obj is None:
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    raise TypeError(f"cannot write {type(obj).__name__} to a results file; convert it to a number or string")


def _atomic_write_text(path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; see `write_bytes`."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parents created): a temporary file in the same directory, flushed
    and fsync'ed, then `os.replace`d over `path`, so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_json(path, obj) -> Path:
    """Write `obj` as indented JSON to `path` atomically (parents created); returns the path.

    A results dict (`{"meta": ..., "rows": ...}` whose meta carries `git_commit`, i.e. `environment()`) is
    verified first (`gdjax.provenance.finish`): written with the run's start stamp, marked `git_dirty: true`
    when the checkout changed during the run, and refused (`ProvenanceError`) in a committed reference folder.
    """
    if isinstance(obj, dict) and isinstance(obj.get("meta"), dict) and "git_commit" in obj["meta"] \
            and "rows" in obj:
        obj = {**obj, "meta": provenance.finish(obj["meta"], path)}
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return _atomic_write_text(path, text)


def save_npz(path, arrays: dict) -> Path:
    """Write named NumPy arrays to an .npz file atomically (see `write_bytes`); no pickled objects.

    Args:
      path: the .npz path (parents created).
      arrays: name -> array-like (numbers, strings); object arrays are refused.
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"arrays[{k!r}] holds Python objects, which .npz stores only by pickling; convert it")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def load_npz(path) -> dict:
    """Read an .npz written by `save_npz` into a dict name -> np.ndarray (never unpickles)."""
    with np.load(Path(path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def csv_path(path) -> Path:
    """The CSV written beside a results JSON: `x/name.json` -> `x/name.csv`."""
    return Path(path).with_suffix(".csv")


def _rows_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (json.dumps(v) if isinstance(v, list | dict) else v))
                         for k, v in to_jsonable(row).items()})
    return buf.getvalue()


def save_results(path, rows, meta=None, config=None) -> Path:
    """Write `{"meta", "config", "rows"}` to `path` (JSON) and the rows to a CSV beside it, both atomically.

    Args:
      path: the JSON path (`.json`); the CSV goes to `csv_path(path)`.
      rows: a list of flat dicts (one per measurement); every value a number, string, bool or None.
      meta: environment and run metadata, by default `environment()`.
      config: the run's options.
    Returns:
      the JSON path.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"path must end in .json (the CSV is written beside it), got {str(path)!r}")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"rows[{i}] must be a dict (one measurement), got {type(row).__name__}")
    meta = environment() if meta is None else dict(meta)
    write_json(path, {"meta": meta, "config": dict(config or {}), "rows": rows})
    _atomic_write_text(csv_path(path), _rows_csv(rows))
    return path


def load_results(path) -> dict:
    """Read a results JSON written by `save_results`: a dict with "meta", "config" and "rows"."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); was it written by gdjax.results?") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path} is not a gdjax results file: expected a JSON object with a 'rows' list")
    data.setdefault("meta", {})
    data.setdefault("config", {})
    return data


def append_jsonl(path, row: dict) -> Path:
    """Append one row as a JSON line to `path` (created with parents), flushed and fsync'ed.

    If the file ends with a truncated line (an interrupted earlier write), a newline is added first so the
    new row starts on its own line; `read_jsonl` skips the broken one.
    """
    if not isinstance(row, dict):
        raise TypeError(f"row must be a dict, got {type(row).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _jsonl_line(row)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        prefix = b""
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                prefix = b"\n"
        f.write(prefix + line.encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def _jsonl_line(row: dict) -> str:
    return json.dumps(to_jsonable(row), allow_nan=False)


def write_jsonl(path, rows) -> Path:
    """Replace `path` with `rows`, one JSON line each, atomically (`write_bytes`): e.g. the rows a resumed
    sweep keeps, so an interruption leaves the old file or the new one, never fewer rows."""
    rows = list(rows)
    if not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be dicts")
    return write_bytes(path, "".join(_jsonl_line(r) + "\n" for r in rows).encode("utf-8"))


def read_jsonl(path) -> list[dict]:
    """Rows of a JSON-lines file; [] if it does not exist. Unparseable lines (a truncated write) are skipped
    with a warning, so an interrupted sweep resumes from every point that did finish."""
    path = Path(path)
    if not path.exists():
        return []
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s) (an interrupted write?)", stacklevel=2)
    return rows


def row_stamp(env: dict) -> dict:
    """What each row of a resumable run carries so that a later `--resume` can judge it (`resume_jsonl`): the
    commit, the dirty flag and the processor of `env` (`environment()`)."""
    return {"git_commit": env["git_commit"], "git_dirty": env["git_dirty"], "cpu_model": env.get("cpu_model")}


def resume_jsonl(path, stamp: dict, producers, what: str = "rows", rewrite: bool = True) -> list[dict]:
    """The rows of an interrupted run's JSON-lines file that the current code may reuse
    (`provenance.reusable`: written by the same code, judged by their `git_commit` / `git_dirty` against
    `stamp` for the files `producers`). When some are not, a line says how many `what` were dropped and why,
    and (with `rewrite`, for the one process that writes) the file is rewritten atomically with the kept rows.
    [] when the file does not exist.

      >>> done = resume_jsonl(out / "fd_vs_grad.jsonl", stamp, ("benchmarks/fd_vs_grad.py", *provenance.LIBRARY))
    """
    rows = read_jsonl(path)
    root = provenance.current().root or "."  # the checkout of the run (the producers' pathspecs are relative to it)
    kept = [r for r in rows if provenance.reusable(r, stamp, producers, root)]
    if len(kept) < len(rows):
        print(f"resume: {len(rows) - len(kept)} of {len(rows)} {what} in {path} were written by other code "
              f"or on another processor (their git_commit / git_dirty / cpu_model); running them again", flush=True)
        if rewrite:
            write_jsonl(path, kept)
    return kept


RUNS_DIR = "runs"  # git-ignored: where a user's runs go unless an explicit output is given


def output_dir(command: str, out=None, *, root=None) -> Path:
    """Where a script writes: `out` when given (the committed reference is written only when asked),
    else a fresh git-ignored `runs/<command>-<UTC date-time>/` under `root` (default: the current directory).

    Args:
      command: a short name of the job, e.g. "bench" or "gradcheck".
      out: an explicit output folder (str or Path) or None.
    Returns:
      the folder (not created; writers create parents atomically).
    """
    if out is not None:
        return Path(out)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(root or ".") / RUNS_DIR / f"{command}-{stamp}"


def environment() -> dict:
    """Where and how a result was produced: device, software versions, git commit, date, command line.

    Returns a flat dict: device_kind, device_name, platform, device_count, jax, jaxlib, python, numpy,
    cpu_count, machine, cpu_model and cpu_flags (`cpu_identity`: the host's processor and its vector
    extensions, since CPU timings compare only on the same hardware), os, torch (its version when the run imported torch, else None), git_commit (None
    outside a git checkout), git_dirty (True when tracked code had uncommitted changes when the run started:
    such results are not reference results), provenance (the script, the imported gdjax and whether it lies in
    the checkout, when the run started: `gdjax.provenance.Stamp.meta`), date (UTC ISO 8601, now), command,
    matmul_precision and jax_default_matmul_precision (`_matmul_precision`).
    The git fields come from the stamp the run took when it started (`gdjax.provenance.start`, or now when no
    producer started one); writing the file verifies them (`write_json`).
    """
    import jax
    import jaxlib

    dev = jax.devices()[0]
    return {
        "device_kind": str(dev.device_kind),
        "device_name": str(dev),
        "platform": str(dev.platform),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        **cpu_identity(),
        "os": platform.platform(),
        "torch": getattr(sys.modules.get("torch"), "__version__", None),  # only where the run imported torch
        **provenance.current().meta(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv) if sys.argv else None,
        **_matmul_precision(),
    }


def cpu_identity(cpuinfo="/proc/cpuinfo") -> dict:
    """cpu_model: the processor's name ("model name" of `cpuinfo`, else `platform.processor()`, else None);
    cpu_flags: which of the vector extensions that set CPU matmul speed it has (avx2, fma, avx512f, amx_tile,
    neon/asimd), sorted; None where `cpuinfo` cannot be read."""
    model, flags = None, None
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if model is None and key.strip() in ("model name", "Model", "cpu model"):
            model = value.strip() or None
        if flags is None and key.strip() in ("flags", "Features"):
            have = set(value.split())
            flags = sorted(have & {"avx2", "fma", "avx512f", "amx_tile", "neon", "asimd"})
    return {"cpu_model": model or platform.processor() or None, "cpu_flags": flags}


def _matmul_precision() -> dict:
    """matmul_precision: the precision gdjax runs its methods that are not exact at by default ("highest");
    jax_default_matmul_precision: JAX's own setting here (None: unset, each platform's default, TF32 on GPUs)."""
    from gdjax import precision as _precision

    return {"matmul_precision": _precision.DEFAULT, "jax_default_matmul_precision": _precision.current()}
