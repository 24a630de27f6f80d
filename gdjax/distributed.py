"""JAX's distributed runtime: start it from arguments or from the environment, and say where this process stands.

Call `initialize` (or `initialize_from_env`) first thing, before any JAX computation; afterwards
`jax.devices()` lists every process's devices, and the meshes of `gdjax.sharding` span them all:

    >>> info = initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # before any JAX computation
    >>> info.global_device_count                                             # every process's devices

On one machine, `gdjax.launch.launch(["gdjax", "train", ...], processes=2)` (the `gdjax launch -n 2 -- train ...`
command) starts the processes on loopback; each reads its coordinator address, process count and id from the
environment (`GDJAX_COORDINATOR`, `GDJAX_NUM_PROCESSES`, `GDJAX_PROCESS_ID`), which only `options_from_env`
reads. On a cluster, run the same command once per host with those three variables set (the coordinator is
host 0's address), or call `initialize()` with no arguments and let JAX detect Slurm / Open MPI / TPU pods.

On CPU the processes exchange data through JAX's CPU collectives (gloo over TCP); `initialize` selects gloo
where this jax has no default.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jax

from gdjax import _checks

__all__ = [
    "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "ENV_TIMEOUT",
    "ProcessInfo", "initialize", "initialize_from_env", "options_from_env", "is_initialized", "process_info",
]

ENV_COORDINATOR = "GDJAX_COORDINATOR"  # host:port of process 0's coordination service
ENV_NUM_PROCESSES = "GDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GDJAX_PROCESS_ID"
ENV_TIMEOUT = "GDJAX_INIT_TIMEOUT"  # seconds to wait for the coordinator and the other processes (optional)

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: its id among `num_processes`, and the devices it and all processes hold."""

    process_id: int
    num_processes: int
    coordinator_address: str | None
    local_device_count: int
    global_device_count: int
    platform: str


# --- starting the runtime -----------------------------------------------------------------------------------


def _split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6::addr]:port' -> (host, port); ValueError naming the argument otherwise."""
    if not isinstance(address, str):
        raise TypeError(f"coordinator_address must be a 'host:port' string, got {type(address).__name__}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator_address must look like 'host:port' (e.g. 10.0.0.1:1234), got {address!r}")
    return host.strip("[]"), int(port)


def _wait_for_coordinator(host: str, port: int, timeout_s: float) -> None:
    """Poll until a TCP connection to host:port succeeds; TimeoutError with a clear message after timeout_s.

    JAX's own client aborts the whole process (SIGABRT, a C++ stack trace) when it cannot register with the
    coordinator, so a non-zero process checks first that something listens there.
    """
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"could not reach the JAX coordinator at {host}:{port} within {timeout_s:g} s ({last}); "
                "start process 0 first, check the address and port, or raise the timeout"
            )
        try:
            with socket.create_connection((host, port), timeout=min(1.0, max(left, 0.05))):
                return
        except OSError as err:
            last = err
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))


def _use_cpu_collectives(name: str = "gloo") -> None:
    """Select cross-process CPU collectives when this jax has none selected (jax >= 0.5 defaults to gloo)."""
    try:
        current = jax.config.jax_cpu_collectives_implementation
    except AttributeError:  # a jax without the option: nothing to select
        return
    if current in (None, "none", ""):
        jax.config.update("jax_cpu_collectives_implementation", name)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - private module moved: let jax.distributed report it
        return False
    check = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(check()) if check is not None else False


def is_initialized() -> bool:
    """True once `initialize` (or `jax.distributed.initialize`) has run in this process."""
    try:
        return bool(jax.distributed.is_initialized())
    except AttributeError:  # pragma: no cover - older jax
        from jax._src import distributed as _d

        return _d.global_state.client is not None


def process_info() -> ProcessInfo:
    """This process's id, the process count and the device counts (works with or without `initialize`)."""
    coordinator = None
    if is_initialized():
        from jax._src import distributed as _d

        coordinator = getattr(_d.global_state, "coordinator_address", None)
    return ProcessInfo(
        process_id=int(jax.process_index()),
        num_processes=int(jax.process_count()),
        coordinator_address=coordinator,
        local_device_count=int(jax.local_device_count()),
        global_device_count=int(jax.device_count()),
        platform=str(jax.devices()[0].platform),
    )


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               cpu_collectives: str = "gloo") -> ProcessInfo:
    """Join JAX's distributed runtime (`jax.distributed.initialize`); call it before any JAX computation.

    Args:
      coordinator_address: 'host:port' of process 0, which runs the coordination service there.
      num_processes: how many processes take part (one per host on a cluster).
      process_id: this process's id in [0, num_processes).
        Give all three, or none of them: then JAX detects them itself (Slurm, Open MPI, Cloud TPU).
      timeout_s: how long to wait for the coordinator and the other processes before failing; a process
        whose coordinator is unreachable raises TimeoutError after about this long instead of hanging.
      cpu_collectives: cross-process collectives on CPU ("gloo"), set when this jax has none selected.
    Returns:
      a `ProcessInfo`; afterwards `jax.devices()` lists the devices of every process.
    Example:
      >>> initialize("127.0.0.1:41000", num_processes=2, process_id=1, timeout_s=30)
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "give coordinator_address, num_processes and process_id together (or none of them, to let JAX "
            f"detect a Slurm/Open MPI/TPU cluster); got coordinator_address={coordinator_address!r}, "
            f"num_processes={num_processes!r}, process_id={process_id!r}"
        )
    timeout_s = _checks.positive_float(timeout_s, "timeout_s")
    _checks.choice(cpu_collectives, ("gloo", "mpi"), "cpu_collectives")
    if all(given):
        host, port = _split_address(coordinator_address)
        num_processes = _checks.positive_int(num_processes, "num_processes")
        process_id = _checks.positive_int(process_id, "process_id", minimum=0)
        if process_id >= num_processes:
            raise ValueError(f"process_id must lie in [0, num_processes={num_processes}), got {process_id}")
    if is_initialized():
        info = process_info()
        if all(given) and (info.process_id, info.num_processes) != (process_id, num_processes):
            raise ValueError(
                f"the distributed runtime is already initialized as process {info.process_id} of "
                f"{info.num_processes}; it cannot be re-initialized as {process_id} of {num_processes}"
            )
        return info
    if _backends_started():
        raise ValueError(
            "gdjax.distributed.initialize must run before any JAX computation (a JAX backend is already "
            "started in this process); call it first thing, before creating arrays"
        )
    _use_cpu_collectives(cpu_collectives)
    start = time.monotonic()
    kwargs = {}
    if all(given):
        if process_id != 0:
            _wait_for_coordinator(host, port, timeout_s)
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id, cluster_detection_method="deactivate")
    left = max(1, int(round(timeout_s - (time.monotonic() - start))))
    jax.distributed.initialize(initialization_timeout=left, **kwargs)
    return process_info()


def options_from_env(environ: Mapping[str, str] | None = None) -> dict | None:
    """The ONE place gdjax reads the distributed settings from the environment (entry points call it).

    Reads `GDJAX_COORDINATOR` (host:port), `GDJAX_NUM_PROCESSES`, `GDJAX_PROCESS_ID` and optionally
    `GDJAX_INIT_TIMEOUT` (seconds). Returns None when `GDJAX_COORDINATOR` is unset, else the keyword
    arguments of `initialize`; a missing or malformed variable raises ValueError naming it.

    >>> options_from_env({"GDJAX_COORDINATOR": "127.0.0.1:41000", "GDJAX_NUM_PROCESSES": "2",
    ...                   "GDJAX_PROCESS_ID": "1"})
    {'coordinator_address': '127.0.0.1:41000', 'num_processes': 2, 'process_id': 1}
    """
    env = os.environ if environ is None else environ
    address = env.get(ENV_COORDINATOR, "").strip()
    if not address:
        return None

    def integer(name):
        text = env.get(name, "").strip()
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be set to an integer when {ENV_COORDINATOR} is set, got {text!r}") from None

    options = {"coordinator_address": address, "num_processes": integer(ENV_NUM_PROCESSES),
               "process_id": integer(ENV_PROCESS_ID)}
    if env.get(ENV_TIMEOUT, "").strip():
        try:
            options["timeout_s"] = float(env[ENV_TIMEOUT])
        except ValueError:
            raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds, got {env[ENV_TIMEOUT]!r}") from None
    return options


def initialize_from_env(environ: Mapping[str, str] | None = None) -> ProcessInfo | None:
    """`initialize(**options_from_env())` when `GDJAX_COORDINATOR` is set; None (and nothing done) otherwise."""
    options = options_from_env(environ)
    return None if options is None else initialize(**options)
