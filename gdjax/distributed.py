"""Scaling out on JAX's own distributed runtime: start it, lay a mesh over every device, shard a batch, and
launch N local processes to try it on one machine.

One code path serves one device, several local devices and several processes. Every mesh here is laid over
the GLOBAL `jax.devices()` (all processes' devices once `initialize` has run), so a function jitted with
shardings on that mesh computes its share of the work on each device and, with a replicated output, hands
every process the same result:

    >>> info = initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # before any JAX computation
    >>> mesh = data_mesh()                               # 1-D mesh over all devices of all processes
    >>> batch = shard_batch(batch, mesh)                 # every process passes the same full batch
    >>> params = replicate(params, mesh)
    >>> grads = jax.jit(jax.grad(cost))(params, batch)   # XLA all-reduces the per-device partial sums
    >>> local = gather(grads)                            # numpy arrays, identical on every process

On one machine, `launch(["gdjax", "train", ...], processes=2)` (the `gdjax launch -n 2 -- train ...` command)
starts the processes on loopback; each reads its coordinator address, process count and id from the
environment (`GDJAX_COORDINATOR`, `GDJAX_NUM_PROCESSES`, `GDJAX_PROCESS_ID`), which only `options_from_env`
reads. On a cluster, run the same command once per host with those three variables set (the coordinator is
host 0's address), or call `initialize()` with no arguments and let JAX detect Slurm / Open MPI / TPU pods.

On CPU the processes exchange data through JAX's CPU collectives (gloo over TCP); `initialize` selects gloo
where this jax has no default.
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

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import _checks

__all__ = [
    "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "ENV_TIMEOUT",
    "ProcessInfo", "LaunchResult",
    "initialize", "initialize_from_env", "options_from_env", "is_initialized", "shutdown", "process_info",
    "data_mesh", "shard_batch", "replicate", "gather", "check_all_reduce",
    "launch", "free_port",
]

ENV_COORDINATOR = "GDJAX_COORDINATOR"  # host:port of process 0's coordination service
ENV_NUM_PROCESSES = "GDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GDJAX_PROCESS_ID"
ENV_TIMEOUT = "GDJAX_INIT_TIMEOUT"  # seconds to wait for the coordinator and the other processes (optional)

DEFAULT_TIMEOUT_S = 120.0
DATA_AXIS = "batch"


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


def shutdown() -> None:
    """Leave the distributed runtime (a no-op when it was never started)."""
    if is_initialized():
        jax.distributed.shutdown()


# --- meshes and shardings over the global devices ------------------------------------------------------------


def data_mesh(devices: Sequence | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D `Mesh` over `devices` (default: the global `jax.devices()`, every process's) for data parallelism.

    >>> mesh = data_mesh()            # Mesh('batch': jax.device_count())
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, e.g. jax.devices()")
    return Mesh(np.array(devices, dtype=object), (axis_name,))


def _global_array(value, sharding: NamedSharding) -> jax.Array:
    """A global jax.Array of `value` (the same host value on every process) laid out by `sharding`."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.device_put(value, sharding)  # already global: let XLA move it
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(value), sharding)  # typed PRNG keys travel as their raw data
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_batch(batch, mesh: Mesh, axis_name: str | None = None):
    """Split the leading (example) axis of every leaf of `batch` across the devices of `mesh`.

    Every process passes the same full batch (e.g. loaded with the same seed); each device keeps its slice.
    Args:
      batch: a pytree (e.g. `Batch(x: (N, n_in), y: (N, n_out))`); N must be divisible by the mesh size.
      mesh: a 1-D mesh (from `data_mesh`, or the FD kernel's direction mesh).
      axis_name: the mesh axis to shard over (default: the mesh's only axis).
    Returns:
      the same pytree of global `jax.Array`s, sharded as `PartitionSpec(axis_name)`.
    Example:
      >>> batch = shard_batch(Batch(x, y), data_mesh())
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. gdjax.distributed.data_mesh()), got {type(mesh).__name__}")
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"axis_name is needed for a mesh with several axes {mesh.axis_names}")
        axis_name = mesh.axis_names[0]
    _checks.choice(axis_name, mesh.axis_names, "mesh axis")
    n_dev = mesh.shape[axis_name]
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    if not leaves:
        raise ValueError("batch has no arrays to shard")
    out = []
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0 or shape[0] % n_dev:
            raise ValueError(
                f"the batch size (leading axis of shape {shape}) must be a positive multiple of the {n_dev} "
                f"devices on mesh axis {axis_name!r}; drop or pad examples, or use fewer devices"
            )
        out.append(_global_array(leaf, sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


def replicate(tree, mesh: Mesh):
    """Place a full copy of every leaf of `tree` (e.g. params) on every device of `mesh`; same pytree back."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda leaf: _global_array(leaf, sharding), tree)


def gather(tree):
    """Every leaf as a host numpy array holding the full value, on every process (a collective when needed).

    Replicated leaves are read from a local copy; leaves split across processes are all-gathered
    (`jax.experimental.multihost_utils.process_allgather`), so every process must call this together.
    """
    from jax.experimental import multihost_utils

    def one(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def check_all_reduce(mesh: Mesh | None = None) -> int:
    """Sum a 1 held by each device of `mesh` (default: `data_mesh()`) with one jitted reduction; returns the
    sum, the device count, on every process, or raises ValueError when the collectives disagree."""
    import jax.numpy as jnp

    mesh = data_mesh() if mesh is None else mesh
    ones = shard_batch(np.ones((mesh.size,), np.int32), mesh)
    total = int(gather(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ones)))
    if total != mesh.size:
        raise ValueError(f"an all-reduce over {mesh.size} devices returned {total}: the collectives are broken")
    return total


# --- the local launcher ------------------------------------------------------------------------------------


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
           grace_s: float = 5.0) -> LaunchResult:
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
    Returns:
      a `LaunchResult`.
    Example:
      >>> launch(["gdjax", "devices"], processes=2).returncode
      0
    """
    processes = _checks.positive_int(processes, "processes")
    timeout_s = _checks.positive_float(timeout_s, "timeout_s")
    argv = _resolve_command(command)
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
            proc = subprocess.Popen(argv, env={**base, ENV_PROCESS_ID: str(i)}, stdin=subprocess.DEVNULL,
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
