#!/usr/bin/env python
"""Finite differences vs jax.grad: time per gradient over network sizes (the main job, `make bench`).

    python benchmarks/fd_vs_grad.py                 # default sweep, <= 5 minutes on a quiet 2-core CPU
    python benchmarks/fd_vs_grad.py --quick         # seconds
    python benchmarks/fd_vs_grad.py --full --committed --resume   # `make bench-full` (maintainers, hours)
    python benchmarks/fd_vs_grad.py --help          # every option (the same as `gdjax bench`)

A thin wrapper around `gdjax bench` (gdjax/cli.py); the measurement lives in gdjax/bench/, the figures in
gdjax/plotting.py; docs/benchmarks.md says what is measured. Results: runs/bench-<date>/fd_vs_grad.json
(+ .csv, .jsonl, figures), or --out FOLDER; the committed benchmarks/results/<platform>/ only with --committed.
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
