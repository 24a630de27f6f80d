"""Run every experiment of the lecture (`make reproduce`): <name>.json (+ .csv) and <name>.png/.svg each.

By default everything goes to one fresh git-ignored folder, runs/reproduce-<date>/, so the committed reference
(results/ and figures/) stays as it is to compare with. `--out DIR` writes to DIR; `--reference` regenerates the
committed results/ and figures/ (maintainers: `make reproduce-reference`).

Each experiment runs in its own Python process (so one experiment's JAX settings never leak into the next), in
the order below; the script prints each one's wall time and exits non-zero (one line on stderr) if any failed,
or, with `--reference`, if the checkout changed between the start of the first and the end of the last (each
experiment also refuses to write the reference when the checkout changed during its own run).

    python experiments/run_all.py                      # default configs
    python experiments/run_all.py --quick              # tiny configs (the smoke tests)
    python experiments/run_all.py --only taylor,fd_step --out /tmp/r

Extra key=value arguments are passed to every experiment (only keys every experiment has: results_dir,
figures_dir, figure_formats).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXPERIMENTS = ("taylor", "fd_step", "learning_rate", "landscape", "batch_average", "fd_training", "nielsen_mnist")
SHARED_KEYS = ("results_dir", "figures_dir", "figure_formats")


def _error(msg: str) -> int:
    print(f"run_all: error: {msg}", file=sys.stderr)
    return 2


def parse(argv: list[str]) -> tuple[list[str], list[str]]:
    """(experiment names, arguments for every experiment); raises ValueError with one line on bad input.

    Without --out, --reference or results_dir=/figures_dir=, the arguments name one fresh runs/reproduce-<date>/.
    """
    names, passthrough, outputs, i = list(EXPERIMENTS), [], [], 0
    while i < len(argv):
        a = argv[i]
        takes_value = a in ("--only", "--out")
        val = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if takes_value and i + 1 < len(argv) else "")
        i += 2 if takes_value else 1
        if a == "--quick":
            passthrough.append(a)
        elif a == "--reference":
            outputs.append(a)
        elif a == "--only" or a.startswith("--only="):
            names = [n.strip() for n in val.split(",") if n.strip()]
            bad = [n for n in names if n not in EXPERIMENTS]
            if bad or not names:
                raise ValueError(f"unknown experiment(s) {bad or val!r}; valid: {', '.join(EXPERIMENTS)}")
        elif a == "--out" or a.startswith("--out="):
            if not val or val.startswith("-"):
                raise ValueError("--out needs a folder, e.g. --out /tmp/reproduce")
            outputs.append(f"--out={val}")
        elif "=" in a and a.split("=", 1)[0] in SHARED_KEYS:
            (outputs if a.split("=", 1)[0] != "figure_formats" else passthrough).append(a)
        else:
            raise ValueError(f"unknown argument {a!r}; use --quick, --only NAMES, --out DIR, --reference and "
                             f"{'/'.join(SHARED_KEYS)}=...")
    if "--reference" in outputs and len(outputs) > 1:
        raise ValueError("--reference writes the committed results/ and figures/; do not combine it with --out "
                         "or results_dir=/figures_dir=")
    if not outputs:
        from gdjax.results import output_dir

        outputs = [f"--out={output_dir('reproduce', root=ROOT)}"]
    return names, passthrough + outputs


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    try:
        names, passthrough = parse(argv)
    except ValueError as err:
        return _error(str(err))
    from gdjax import provenance

    stamp = provenance.start()  # each experiment verifies its own run; this one the whole set's
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
    print(f"output: {', '.join(a for a in passthrough if a != '--quick')}")
    if failed:
        print(f"run_all: error: {len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    changed = provenance.changes(stamp)
    if changed and "--reference" in passthrough:  # the experiments of one reference come from one state of the code
        print(f"run_all: error: the checkout changed while the experiments ran ({changed}): the reference mixes "
              f"states of the code; rerun make reproduce-reference from a checkout that stays unchanged",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
