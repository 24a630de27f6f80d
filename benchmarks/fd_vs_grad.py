#!/usr/bin/env python
"""Finite differences vs jax.grad: time per gradient over network sizes (the main job, `make bench`).

    python benchmarks/fd_vs_grad.py                 # default sweep, ~3 minutes on a 2-core CPU
    python benchmarks/fd_vs_grad.py --quick         # seconds
    python benchmarks/fd_vs_grad.py --help          # every option (the same as `gdjax bench`)

A thin wrapper around `gdjax bench` (gdjax/cli.py); the measurements live in gdjax/benchmark.py, the figures in
gdjax/plotting.py. Results: benchmarks/results/<platform>/fd_vs_grad.json (+ .csv, .jsonl, figures).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from gdjax.cli import main
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from gdjax.cli import main
    sys.exit(main(["bench", *sys.argv[1:]]))
