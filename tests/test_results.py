"""gdjax.results: atomic JSON + CSV, JSON-lines append/resume, environment metadata."""

import csv
import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import results


def test_save_and_load_roundtrip(tmp_path):
    rows = [{"method": "reverse", "P": 10, "median_s": 1e-3, "extrapolated": False},
            {"method": "fd-central", "P": 10, "median_s": np.float32(2.5e-3), "extrapolated": True,
             "err": float("nan")}]
    path = results.save_results(tmp_path / "sub" / "r.json", rows, meta={"device_kind": "cpu"},
                                config={"sizes": (3, 2)})
    data = results.load_results(path)
    assert set(data) == {"meta", "config", "rows"}
    assert data["meta"] == {"device_kind": "cpu"}
    assert data["config"] == {"sizes": [3, 2]}
    assert data["rows"][1]["median_s"] == pytest.approx(2.5e-3)
    assert data["rows"][1]["err"] is None  # NaN -> null (valid JSON)
    # the CSV beside it has every column of every row
    with open(results.csv_path(path)) as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["reverse", "fd-central"]
    assert set(table[0]) == {"method", "P", "median_s", "extrapolated", "err"}
    assert float(table[1]["median_s"]) == pytest.approx(2.5e-3)
    # no temporary files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.csv", "r.json"]


def test_write_json_is_atomic_on_failure(tmp_path):
    path = tmp_path / "x.json"
    results.write_json(path, {"a": 1})
    with pytest.raises(TypeError, match="cannot write object"):
        results.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_jsonable_converts_arrays():
    out = results.to_jsonable({"a": jnp.arange(3), "b": np.int64(4), "c": (1.0, float("inf"))})
    assert out == {"a": [0, 1, 2], "b": 4, "c": [1.0, None]}


def test_save_results_validates(tmp_path):
    with pytest.raises(ValueError, match=r"\.json"):
        results.save_results(tmp_path / "r.txt", [])
    with pytest.raises(TypeError, match=r"rows\[0\]"):
        results.save_results(tmp_path / "r.json", [3])


def test_load_results_rejects_other_files(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="rows"):
        results.load_results(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        results.load_results(p)


def test_jsonl_append_and_resume_after_truncation(tmp_path):
    p = tmp_path / "d" / "sweep.jsonl"
    assert results.read_jsonl(p) == []
    results.append_jsonl(p, {"i": 0})
    results.append_jsonl(p, {"i": 1, "x": 0.5})
    # simulate a run killed in the middle of writing a line
    with open(p, "a") as f:
        f.write('{"i": 2, "x": 0.')
    with pytest.warns(UserWarning, match="1 unreadable"):
        assert results.read_jsonl(p) == [{"i": 0}, {"i": 1, "x": 0.5}]
    results.append_jsonl(p, {"i": 3})  # starts on a fresh line
    with pytest.warns(UserWarning):
        assert [r["i"] for r in results.read_jsonl(p)] == [0, 1, 3]
    with pytest.raises(TypeError, match="row must be a dict"):
        results.append_jsonl(p, [1])


def test_environment_fields():
    env = results.environment()
    for k in ("device_kind", "device_name", "platform", "jax", "jaxlib", "python", "numpy", "cpu_count",
              "git_commit", "date", "command"):
        assert k in env
    assert env["platform"] in ("cpu", "gpu", "tpu", "cuda", "rocm", "METAL")
    assert env["cpu_count"] == os.cpu_count()
    assert env["date"].endswith("+00:00")
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    prov = env["provenance"]  # the run's start stamp: the script, the imported gdjax and whether it is the checkout's
    assert {"script", "gdjax", "gdjax_in_checkout", "started", "tree"} <= set(prov)
    assert prov["started"] <= env["date"]
    json.dumps(env)  # plain JSON
    assert not any(isinstance(v, float) and math.isnan(v) for v in env.values())


def test_npz_round_trip_atomic_and_without_pickle(tmp_path, monkeypatch):
    """save_npz/load_npz keep names, dtypes and values; a failed write leaves the old file whole; object arrays are
    refused. Catches a writer that truncates the target before writing, and a pickled object slipping into a
    checkpoint (which load_npz, never unpickling, could not read back)."""
    import numpy as np

    path = tmp_path / "a.npz"
    arrays = {"0/w": np.arange(6.0).reshape(2, 3), "epoch": np.asarray(3, np.int64), "s": np.asarray("text")}
    results.save_npz(path, arrays)
    back = results.load_npz(path)
    assert set(back) == set(arrays)
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype and np.array_equal(back[k], a)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="pickling"):
        results.save_npz(path, {"x": np.asarray([{"a": 1}], dtype=object)})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", crash)  # the write fails at its last moment
    with pytest.raises(OSError, match="disk full"):
        results.save_npz(path, {"0/w": np.zeros(1000)})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_write_jsonl_replaces_the_file_with_the_rows(tmp_path):
    """write_jsonl replaces the file (fails if it appended) and read_jsonl gives the rows back; a non-dict row
    is a TypeError and leaves the file as it was."""
    path = tmp_path / "s.jsonl"
    results.append_jsonl(path, {"id": "old"})
    results.write_jsonl(path, [{"id": "a", "x": 1.5}, {"id": "b"}])
    assert results.read_jsonl(path) == [{"id": "a", "x": 1.5}, {"id": "b"}]
    with pytest.raises(TypeError, match="dicts"):
        results.write_jsonl(path, [{"id": "c"}, 3])
    assert [r["id"] for r in results.read_jsonl(path)] == ["a", "b"]
    results.write_jsonl(path, [])
    assert results.read_jsonl(path) == []
