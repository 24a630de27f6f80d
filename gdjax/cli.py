"""The `gdjax` command: thin entry points (parse, validate, call the library, print).

    gdjax bench [...]      finite differences vs jax.grad (benchmarks/fd_vs_grad.py)
    gdjax plot RESULTS     redraw the figures of a results file
    gdjax train [...]      gradient-descent training with any estimator
    gdjax launch -n N -- CMD   run CMD as N local processes on JAX's distributed runtime

Each command lives in its own `_cmd_*` / `_add_*` pair below; errors exit non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _csv_ints(text: str) -> tuple[int, ...]:
    """'784,30,10' -> (784, 30, 10)."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 784,30,10, got {text!r}")


# --- commands (each owner edits only its own section) -------------------------------------------------------

COMMANDS: dict = {}  # name -> (add_parser(subparsers), run(args) -> int)


def _add_launch(sub):
    p = sub.add_parser(
        "launch", help="run a gdjax command as N local processes on JAX's distributed runtime",
        description="Start N processes on loopback (127.0.0.1, a free port) running CMD; each joins JAX's "
                    "distributed runtime first (GDJAX_COORDINATOR/NUM_PROCESSES/PROCESS_ID). Output lines are "
                    "prefixed with [process id]; the first failure stops the others and sets the exit status.",
        epilog="example: gdjax launch -n 2 -- bench --quick   (on a cluster, see README section 'distributed')")
    p.add_argument("-n", "--processes", type=int, required=True, help="number of processes (>= 1)")
    p.add_argument("--timeout", type=float, default=600.0, help="stop everything after this many seconds")
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the gdjax command, e.g. -- bench --quick")


def _cmd_launch(args) -> int:
    from gdjax import distributed

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise ValueError("no command given: put the gdjax command after --, e.g. gdjax launch -n 2 -- bench --quick")
    result = distributed.launch(cmd, args.processes, timeout_s=args.timeout, port=args.port)
    if result.returncode:
        print(f"gdjax launch: error: {result.message}", file=sys.stderr)
    return result.returncode


def _init_distributed(command: str) -> None:
    """Join JAX's distributed runtime when a launcher (or a cluster script) set GDJAX_COORDINATOR."""
    if command != "launch":
        from gdjax import distributed

        distributed.initialize_from_env()


def _add_devices(sub):
    sub.add_parser(
        "devices", help="print this process's view of the devices and check a cross-device all-reduce",
        description="One line per process: process id and count, local and global devices, and the result of "
                    "a sum over every device of every process (a check that the collectives work). "
                    "Try: gdjax launch -n 2 -- devices")


def _cmd_devices(args) -> int:
    from gdjax import distributed

    info = distributed.process_info()
    total = distributed.check_all_reduce()
    print(f"process {info.process_id} of {info.num_processes}: {info.local_device_count} local / "
          f"{info.global_device_count} global {info.platform} device(s); all-reduce over them: {total} "
          f"(expected {info.global_device_count}) ok")
    return 0


COMMANDS["launch"] = (_add_launch, _cmd_launch)
COMMANDS["devices"] = (_add_devices, _cmd_devices)


# --- end of commands ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """Entry point of the `gdjax` console script; returns the exit status."""
    parser = _Parser(prog="gdjax", description="How much does a gradient cost? (see README.md)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    try:
        _init_distributed(args.command)
        return int(COMMANDS[args.command][1](args) or 0)
    except (ValueError, TypeError, OSError) as err:
        print(f"gdjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gdjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
