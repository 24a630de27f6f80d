"""benchmarks/scaling_devices.py: speed-up and efficiency from planted times, a quick run on forced host devices
and processes (and its resume), and bad options refused before any work."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, load_script

SCRIPT = "benchmarks/scaling_devices.py"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDJAX_")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_ratios_from_planted_times():
    """Catches: speed-up and efficiency swapped or taken against another mode's k = 1 (t1 / tk, t1 / (k tk)),
    and a ratio invented where no one-process baseline was measured."""
    rows = load_script(SCRIPT).add_ratios([
        {"mode": "devices", "k": 1, "median_s": 2.0}, {"mode": "devices", "k": 4, "median_s": 1.0},
        {"mode": "processes", "k": 2, "median_s": 1.0}])
    assert rows[1]["speedup"] == 2.0 and rows[1]["efficiency"] == 0.5
    assert rows[2]["speedup"] is None and rows[2]["efficiency"] is None


def test_core_plan():
    """Devices: one process on the first k cores; processes: process i on core i; unpinned (None) when asked,
    when the OS cannot pin, or with more workers than cores. Catches two processes put on the same core."""
    plan = load_script(SCRIPT).core_plan
    assert plan("devices", 2, [3, 5, 7], True) == [frozenset({3, 5})]
    assert plan("processes", 2, [3, 5, 7], True) == [frozenset({3}), frozenset({5})]
    assert plan("processes", 1, [3, 5], True) == [frozenset({3})]
    assert plan("devices", 3, [3, 5], True) is None and plan("devices", 1, [3], False) is None
    assert plan("devices", 1, None, True) is None


def test_pin_command_sets_the_affinity_before_the_program_starts():
    """`gdjax.launch.pin_command`: the program sees only the given core from its first line (the affinity is
    inherited through exec); cores the process may not use, or an empty set, are refused before anything runs."""
    from gdjax.launch import pin_command

    core = min(os.sched_getaffinity(0))
    out = subprocess.run(pin_command([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                                     {core}), text=True, capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"[{core}]", out
    with pytest.raises(ValueError, match="not available"):
        pin_command(["true"], {max(os.sched_getaffinity(0)) + 1000})
    with pytest.raises(TypeError, match="non-empty"):
        pin_command(["true"], set())


def test_quick_run_then_resume(tmp_path, monkeypatch):
    """Catches: a worker that does not see its k forced devices, a worker not pinned to its own cores (or two
    processes on one core), the single-thread flag missing from a pinned worker, efficiency not recomputable
    from the rows, meta without git_dirty, and --resume that measures again (the second run must reuse every
    point: there, measuring a point raises). The driver runs in this process (its workers are subprocesses, as
    in a real run); `--processes 2` only: k = 1 and k = 2 take the same path (gdjax.launch), and k = 2 is the one
    that can put two processes on one core."""
    for name in [k for k in os.environ if k.startswith("GDJAX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    mod = load_script(SCRIPT)
    argv = ["--quick", "--devices", "1,2", "--processes", "2", "--repeats", "1", "--out", str(tmp_path)]
    assert mod.main(argv) == 0
    data = json.loads((tmp_path / "scaling_devices.json").read_text())
    got = {(r["mode"], r["k"]): r for r in data["rows"]}
    assert set(got) == {("devices", 1), ("devices", 2), ("processes", 2)}
    assert got[("devices", 2)]["devices_total"] == 2 and got[("processes", 2)]["processes"] == 2
    assert got[("devices", 1)]["devices_total"] == 1
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:  # every point pinned: one core per device / process
        assert got[("devices", 1)]["cpus_per_process"] == [cores[:1]]
        assert got[("devices", 2)]["cpus_per_process"] == [cores[:2]]
        assert got[("processes", 2)]["cpus_per_process"] == [[cores[0]], [cores[1]]]
        assert all(r["pinned"] and "--xla_cpu_multi_thread_eigen=false" in r["xla_flags"] for r in got.values())
    else:  # one core: the 2-worker points cannot have a core each and run unpinned
        assert not got[("devices", 2)]["pinned"] and not got[("processes", 2)]["pinned"]
    r = got[("devices", 2)]
    assert r["efficiency"] == pytest.approx(got[("devices", 1)]["median_s"] / (2 * r["median_s"]))
    assert "git_dirty" in data["meta"] and data["config"]["method"] == "fd-forward"
    assert (tmp_path / "scaling_devices.png").stat().st_size > 0 and (tmp_path / "scaling_devices.svg").exists()
    jsonl = (tmp_path / "scaling_devices.jsonl").read_text()
    assert len(jsonl.splitlines()) == 3

    def measured_again(args, mode, k, platform):
        raise AssertionError(f"--resume measured {mode} k={k} again")

    monkeypatch.setattr(mod, "run_point", measured_again)
    assert mod.main(argv + ["--resume"]) == 0
    assert (tmp_path / "scaling_devices.jsonl").read_text() == jsonl  # nothing measured again
    again = {(r["mode"], r["k"]): r["median_s"] for r in json.loads((tmp_path / "scaling_devices.json").read_text())["rows"]}
    assert again == {key: r["median_s"] for key, r in got.items()}


@pytest.mark.parametrize("args, message", [
    (["--devices", "0"], "--devices"),
    (["--method", "reverse"], "cannot split its work over devices"),
    (["--sizes", "8"], "--sizes"),
    (["--timeout", "0"], "--timeout"),
    (["--plot-only", "--out", "/nonexistent/x"], "--plot-only"),
])
def test_bad_options_one_line_before_any_work(args, message, capsys):
    """Catches: an option checked only in the worker subprocesses (after the probe), or a traceback."""
    assert load_script(SCRIPT).main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("scaling_devices: error:"), err
