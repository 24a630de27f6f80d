"""Run every experiment of the lecture (`make reproduce`): results/<name>.json and figures/<name>.png/.svg.

Each experiment runs in its own Python process (so one experiment's JAX settings never leak into the next), in
the order below; the script prints each one's wall time and exits non-zero (one line on stderr) if any failed.

    python experiments/run_all.py                      # default configs (~5-10 min on a 2-core CPU)
    python experiments/run_all.py --quick              # tiny configs (seconds each; the smoke tests)
    python experiments/run_all.py --only taylor,fd_step results_dir=/tmp/r figures_dir=/tmp/f

Extra key=value arguments are passed to every experiment (only keys every experiment has: results_dir,
figures_dir, figure_formats).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPERIMENTS = ("taylor", "fd_step", "learning_rate", "landscape", "batch_average", "fd_training", "nielsen_mnist")
SHARED_KEYS = ("results_dir", "figures_dir", "figure_formats")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names, passthrough = list(EXPERIMENTS), []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--quick":
            passthrough.append(a)
        elif a == "--only" or a.startswith("--only="):
            val = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if "=" in a else 1
            names = [n.strip() for n in val.split(",") if n.strip()]
            bad = [n for n in names if n not in EXPERIMENTS]
            if bad or not names:
                print(f"run_all: error: unknown experiment(s) {bad or val!r}; valid: {', '.join(EXPERIMENTS)}",
                      file=sys.stderr)
                return 2
        elif "=" in a and a.split("=", 1)[0] in SHARED_KEYS:
            passthrough.append(a)
        else:
            print(f"run_all: error: unknown argument {a!r}; use --quick, --only NAMES and "
                  f"{'/'.join(SHARED_KEYS)}=DIR", file=sys.stderr)
            return 2
        i += 1
    t_all = time.perf_counter()
    failed, times = [], {}
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *passthrough])
        times[name] = time.perf_counter() - t0
        if rc != 0:
            failed.append(name)
    total = time.perf_counter() - t_all
    print("\nexperiment        wall s")
    for name, t in times.items():
        print(f"{name:<16} {t:7.1f}{'  FAILED' if name in failed else ''}")
    print(f"{'total':<16} {total:7.1f}")
    if failed:
        print(f"run_all: error: {len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
