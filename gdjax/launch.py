"""`gdjax launch`: run a command as N local processes joined by JAX's distributed runtime on loopback.

    >>> launch(["gdjax", "devices"], processes=2).returncode
    0

Process i gets `GDJAX_COORDINATOR=host:port`, `GDJAX_NUM_PROCESSES`, `GDJAX_PROCESS_ID=i` in its environment;
the gdjax command (or a script, through `gdjax.distributed.initialize_from_env`) reads them and joins the
runtime first. Output lines are streamed prefixed with `[i] `; the first failure stops the others.
`cpus=[{0}, {1}]` pins process i to its own cores (`pin_command`), for strong-scaling measurements on a CPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gdjax import _checks
from gdjax.distributed import DEFAULT_TIMEOUT_S, ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID, ENV_TIMEOUT

__all__ = ["LaunchResult", "check_cpus", "free_port", "launch", "pin_command"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LaunchResult:
    """How a `launch` ended: `returncode` 0 when every process succeeded.

    Attributes:
      returncode: 0; the first failing process's status (128 + signal number when it was killed by a
        signal); or 124 on timeout.
      returncodes: each process's exit status (negative: killed by that signal; None: never finished).
      failed: the id of the first process that failed, or None.
      timed_out: True when the launch ran past its timeout and was stopped.
      message: one line saying what went wrong ("" on success).
    """

    returncode: int
    returncodes: tuple
    failed: int | None = None
    timed_out: bool = False
    message: str = ""
    coordinator: str = field(default="", compare=False)


def _resolve_command(command: Sequence[str]) -> list[str]:
    """'gdjax ...' -> this interpreter's `-m gdjax.cli ...`; 'python ...' -> this interpreter; else as is."""
    if isinstance(command, str) or not isinstance(command, Sequence) or not all(isinstance(c, str) for c in command):
        raise TypeError(f"command must be a list of strings such as ['gdjax', 'devices'], got {command!r}")
    command = list(command)
    if not command:
        raise ValueError("command is empty: give the gdjax command to run, e.g. gdjax launch -n 2 -- devices")
    head = os.path.basename(command[0])
    if head == "gdjax":
        return [sys.executable, "-m", "gdjax.cli", *command[1:]]
    if head in ("python", "python3"):
        return [sys.executable, *command[1:]]
    if head.endswith(".py"):
        return [sys.executable, *command]
    if command[0].startswith("-"):
        raise ValueError(f"command starts with an option {command[0]!r}: give a gdjax command such as 'devices' or 'train ...'")
    return [sys.executable, "-m", "gdjax.cli", *command]  # a bare subcommand: 'train ...'


def check_cpus(cpus, name: str = "cpus") -> frozenset[int]:
    """`cpus` (an iterable of core ids) as a frozenset, each a core this process may run on
    (`os.sched_getaffinity(0)`); ValueError/TypeError naming `name` otherwise, or where the OS cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError(f"{name}: pinning processes to cores needs os.sched_setaffinity (Linux); pass {name}=None")
    if isinstance(cpus, str | bytes) or not hasattr(cpus, "__iter__"):
        raise TypeError(f"{name} must be a set of core ids such as {{0, 1}}, got {cpus!r}")
    cores = frozenset(cpus)
    if not cores or not all(isinstance(c, int) and not isinstance(c, bool) for c in cores):
        raise TypeError(f"{name} must be a non-empty set of integer core ids such as {{0, 1}}, got {cpus!r}")
    allowed = os.sched_getaffinity(0)
    if not cores <= allowed:
        raise ValueError(f"{name}: cores {sorted(cores - allowed)} are not available to this process "
                         f"(os.sched_getaffinity(0) = {sorted(allowed)})")
    return cores


_PIN = "import os, sys; os.sched_setaffinity(0, {cores}); os.execvp(sys.argv[1], sys.argv[1:])"


def pin_command(argv: Sequence[str], cpus) -> list[str]:
    """`argv` run pinned to the cores `cpus`: this interpreter sets the CPU affinity, then execs `argv` (which
    inherits it from its first instruction, so a runtime that sizes its thread pools from the affinity, as
    XLA's CPU client does, sees only those cores). Example: `pin_command(["python", "x.py"], {0})`."""
    cores = check_cpus(cpus)
    return [sys.executable, "-c", _PIN.format(cores=sorted(cores)), *argv]


def _pump(proc: subprocess.Popen, prefix: str, out, lock: threading.Lock) -> None:
    for line in iter(proc.stdout.readline, ""):
        with lock:
            out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
            out.flush()
    proc.stdout.close()


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM the process group of each still-running child we started, then SIGKILL after grace_s."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def launch(command: Sequence[str], processes: int, *, timeout_s: float = 600.0, host: str = "127.0.0.1",
           port: int | None = None, env: Mapping[str, str] | None = None, out=None,
           grace_s: float = 5.0, cpus: Sequence | None = None) -> LaunchResult:
    """Run `command` as `processes` local processes joined by JAX's distributed runtime on `host` (loopback).

    Process i gets `GDJAX_COORDINATOR=host:port`, `GDJAX_NUM_PROCESSES=processes`, `GDJAX_PROCESS_ID=i` in
    its environment (and `GDJAX_INIT_TIMEOUT`); the gdjax command reads them and calls `initialize` first.
    Each output line is streamed to `out` (default stdout) prefixed with `[i] `. When one process fails, the
    others are stopped and its status is returned; after `timeout_s` all are stopped (status 124).

    Args:
      command: `['gdjax', 'train', ...]`, `['train', ...]` (a gdjax subcommand) or `['python', 'script.py', ...]`
        (scripts call `gdjax.distributed.initialize_from_env()` themselves).
      processes: how many processes, >= 1.
      timeout_s: wall-clock bound for the whole run.
      port: the coordinator port (default: a free one).
      env: extra environment variables for every process.
      cpus: None, or one set of core ids per process: process i runs pinned to `cpus[i]` (`pin_command`).
    Returns:
      a `LaunchResult`.
    Example:
      >>> launch(["gdjax", "devices"], processes=2).returncode
      0
    """
    processes = _checks.positive_int(processes, "processes")
    timeout_s = _checks.positive_float(timeout_s, "timeout_s")
    argv = _resolve_command(command)
    if cpus is not None:
        if isinstance(cpus, str) or not isinstance(cpus, Sequence) or len(cpus) != processes:
            raise ValueError(f"cpus must give one set of cores per process ({processes}), got {cpus!r}")
        pinned = [pin_command(argv, c) for c in cpus]
    else:
        pinned = [argv] * processes
    port = free_port(host) if port is None else _checks.positive_int(port, "port")
    coordinator = f"{host}:{port}"
    out = sys.stdout if out is None else out
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    base = dict(os.environ)
    base.update(env or {})
    base.update({ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: str(processes), "PYTHONUNBUFFERED": "1"})
    base.setdefault(ENV_TIMEOUT, str(min(timeout_s, DEFAULT_TIMEOUT_S)))
    deadline = time.monotonic() + timeout_s
    result = None
    try:
        for i in range(processes):
            proc = subprocess.Popen(pinned[i], env={**base, ENV_PROCESS_ID: str(i)}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    start_new_session=True)
            procs.append(proc)
            pump = threading.Thread(target=_pump, args=(proc, f"[{i}] ", out, lock), daemon=True)
            pump.start()
            pumps.append(pump)
        while result is None:
            codes = [p.poll() for p in procs]
            bad = [(i, rc) for i, rc in enumerate(codes) if rc not in (None, 0)]
            if bad:
                i, rc = bad[0]
                _stop(procs, grace_s)
                hint = (" (JAX's runtime aborts a process that cannot join the others in time; see its output)"
                        if rc == -signal.SIGABRT else "")
                result = LaunchResult(rc if rc > 0 else 128 - rc, tuple(p.returncode for p in procs), failed=i,
                                      message=f"process {i} of {processes} {_describe(rc)}; stopped the others{hint}",
                                      coordinator=coordinator)
            elif all(rc == 0 for rc in codes):
                result = LaunchResult(0, tuple(codes), coordinator=coordinator)
            elif time.monotonic() > deadline:
                running = [i for i, rc in enumerate(codes) if rc is None]
                _stop(procs, grace_s)
                result = LaunchResult(124, tuple(codes), timed_out=True, coordinator=coordinator,
                                      message=f"timed out after {timeout_s:g} s; stopped processes {running}")
            else:
                time.sleep(0.05)
    finally:
        if result is None:  # interrupted (KeyboardInterrupt) or failed to start: leave nothing running
            _stop(procs, grace_s)
        for pump in pumps:
            pump.join(timeout=5.0)
    return result
