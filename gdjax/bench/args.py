"""The argument-parser base, under its earlier name: `gdjax._cli_args` (one line per usage error, exit 2)."""

from gdjax._cli_args import OneLineParser, csv_ints

__all__ = ["OneLineParser", "csv_ints"]
