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
    assert env["cpu_model"] is None or isinstance(env["cpu_model"], str)


def test_cpu_identity_reads_the_processor_and_its_vector_extensions(tmp_path):
    """The model name and the matmul-relevant flags from a planted cpuinfo (x86 and ARM forms); an unreadable
    file gives no flags (fails if timings from different hardware could not be told apart)."""
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 fma avx512f\n"
                   "processor\t: 1\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu\n")
    assert results.cpu_identity(x86) == {"cpu_model": "AMD EPYC 9B14", "cpu_flags": ["avx2", "avx512f", "fma"]}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm\nModel\t: Raspberry Pi 5\n")
    assert results.cpu_identity(arm) == {"cpu_model": "Raspberry Pi 5", "cpu_flags": ["asimd"]}
    assert results.cpu_identity(tmp_path / "missing")["cpu_flags"] is None
