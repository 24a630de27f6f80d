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


# --- end of commands ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """Entry point of the `gdjax` console script; returns the exit status."""
    parser = _Parser(prog="gdjax", description="How much does a gradient cost? (see README.md)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    try:
        return int(COMMANDS[args.command][1](args) or 0)
    except (ValueError, TypeError, OSError) as err:
        print(f"gdjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gdjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
