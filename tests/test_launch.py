"""gdjax.launch: N local processes on loopback, their environment, output, failures, timeouts, bad input."""

from __future__ import annotations

import io
import time

import pytest

from gdjax import cli
from gdjax.launch import launch


def _quick(code: str) -> list[str]:
    return ["python", "-c", code]


def test_launcher_sets_environment_and_prefixes_output():
    out = io.StringIO()
    code = "import os; print(os.environ['GDJAX_PROCESS_ID'], os.environ['GDJAX_NUM_PROCESSES'], os.environ['GDJAX_COORDINATOR'])"
    result = launch(_quick(code), 3, timeout_s=30, out=out)
    assert result.returncode == 0 and result.returncodes == (0, 0, 0)
    lines = sorted(out.getvalue().splitlines())
    assert lines == [f"[{i}] {i} 3 {result.coordinator}" for i in range(3)]
    assert result.coordinator.startswith("127.0.0.1:")


def test_launcher_pins_each_process_to_its_cores():
    """cpus=[...]: process i sees only cpus[i] (here every process the same first core, which any machine has);
    a list that does not give one set per process is refused before anything starts."""
    import os

    core = min(os.sched_getaffinity(0))
    out = io.StringIO()
    result = launch(_quick("import os; print(sorted(os.sched_getaffinity(0)))"), 2, timeout_s=30, out=out,
                    cpus=[{core}, {core}])
    assert result.returncode == 0 and sorted(out.getvalue().splitlines()) == [f"[{i}] [{core}]" for i in range(2)]
    with pytest.raises(ValueError, match="one set of cores per process"):
        launch(_quick("pass"), 2, cpus=[{core}])


def test_launcher_propagates_failure_and_stops_the_others():
    code = "import os, sys, time; sys.exit(3) if os.environ['GDJAX_PROCESS_ID'] == '1' else time.sleep(60)"
    start = time.monotonic()
    result = launch(_quick(code), 2, timeout_s=60, out=io.StringIO(), grace_s=2)
    assert time.monotonic() - start < 15  # did not wait for the sleeping process 0
    assert result.returncode == 3 and result.failed == 1 and not result.timed_out
    assert result.returncodes[0] is not None and result.returncodes[0] != 0  # process 0 was stopped
    assert "process 1 of 2 exited with status 3" in result.message


def test_launcher_times_out():
    start = time.monotonic()
    result = launch(_quick("import time; time.sleep(60)"), 2, timeout_s=1, out=io.StringIO(), grace_s=2)
    assert result.returncode == 124 and result.timed_out
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("argv, needle", [
    (["launch", "-n", "0", "--", "devices"], "processes must be an integer >= 1"),
    (["launch", "-n", "2"], "no command given"),
    (["launch", "-n", "2", "--"], "no command given"),
    (["launch", "-n", "2", "--timeout", "-1", "--", "devices"], "timeout_s must be finite and > 0"),
])
def test_launch_bad_input_is_one_line_and_nonzero(capsys, argv, needle):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("gdjax launch: error:")


def test_launch_without_processes_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["launch", "--", "devices"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_launch_command_validation():
    with pytest.raises(ValueError, match="command is empty"):
        launch([], 2)
    with pytest.raises(TypeError, match="list of strings"):
        launch("gdjax devices", 2)
    with pytest.raises(ValueError, match="processes"):
        launch(["devices"], 0)
