"""The one argument-parser base of gdjax's commands (gdjax/cli.py) and benchmark scripts: a usage error is ONE
line on stderr and exit status 2 (argparse prints its whole usage block otherwise). A neutral module below both
the CLI and gdjax.bench, so neither imports the other for it.

    >>> ap = OneLineParser(prog="my_bench")
    >>> ap.add_argument("--sizes", type=csv_ints)
"""

from __future__ import annotations

import argparse

__all__ = ["OneLineParser", "csv_ints"]


class OneLineParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def csv_ints(text: str) -> tuple[int, ...]:
    """'784,30,10' -> (784, 30, 10); argparse.ArgumentTypeError naming the expected form otherwise."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 784,30,10, got {text!r}") from None
