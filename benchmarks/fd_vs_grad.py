#!/usr/bin/env python
"""Finite differences vs jax.grad over network sizes (`make bench`): `gdjax bench` with the same options.

    python benchmarks/fd_vs_grad.py --quick                       # seconds; --help lists every option
    python benchmarks/fd_vs_grad.py --full --committed --resume   # `make bench-full` (maintainers, hours)

The measurement lives in gdjax/bench/, docs/benchmarks.md says what is measured.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`
    from gdjax.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
