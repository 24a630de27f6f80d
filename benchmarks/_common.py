"""What the benchmark scripts share and gdjax does not: one argument parser with `--out`, `--seed` and
`--quick`, option checks, where results go, a script's main (one-line errors, exit status), the record's meta,
and the scripts' targets. Measuring is gdjax's: the problem (`gdjax.bench.problem`), the one timer and the one
duration formatter (`gdjax.profiling`), re-exported here under the names the scripts use.

    import _common as common                       # from a script in benchmarks/ (its folder is on sys.path)
    cost, params, batch = common.problem((784, 30, 10), 1000)          # the lecture's problem, on the device
    ap = common.Parser("my_bench", __doc__, out_name="my_bench.json")   # --out FOLDER or FILE.json, --seed, --quick
    args = ap.parse(argv, defaults={...}, quick={...})                  # every option checked before any work
    sys.exit(common.run_main("my_bench", parse_args, run, argv))       # errors: one line on stderr, exit 2 / 1
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from gdjax import profiling, results  # noqa: E402
from gdjax.bench.analysis import status as target_status  # noqa: E402,F401  (re-exported: PASS / SHORT / n/a)
from gdjax.bench.args import OneLineParser  # noqa: E402
from gdjax.bench.config import TARGETS as _BENCH_TARGETS  # noqa: E402
from gdjax.bench.problem import flat_numpy, make_problem, mlp_problem  # noqa: E402,F401  (re-exported)

human_time = profiling.format_seconds  # the one duration formatter, under the scripts' name

__all__ = [  # the problem (re-exported from gdjax.bench), options, output, record, targets
    "make_problem", "problem", "flat_numpy", "UsageError", "int_list", "sizes_list", "require",
    "require_for_reference", "output_path", "Parser", "run_main", "wrote", "load_average", "meta", "time_stats",
    "human_time", "TARGETS", "target_status"]

# --- targets (issue 12 item 5; issue 3's training throughput): every script reads them from here -----------------

TARGETS = {
    "of_matmul_n1000": _BENCH_TARGETS["fd_peak_fraction"],  # FD kernel rate / same-round matmul rate, N = 1000
    "loop_over_kernel_n1000": _BENCH_TARGETS["fd_vs_loop"],  # fd-loop time / FD kernel time, N = 1000
    "loop_over_kernel_n10": 20.0,  # fd-loop time / FD kernel time, N = 10
    "throughput_torch": 8.0,  # PyTorch eager epoch time / gdjax epoch time
    "throughput_numpy": 20.0,  # NumPy per-example epoch time / gdjax epoch time
}


# --- the problem, on the device ---------------------------------------------------------------------------------

def problem(sizes: Sequence[int], n: int, dtype: str = "float32", seed: int = 0):
    """The lecture's problem for one network with its n examples on the device, as a tuple (cost, params,
    batch) (`gdjax.bench.problem.mlp_problem`): params a tuple of Layer(w (n_in, n_out), b (n_out,)) of `dtype`,
    batch a Batch(x (n, n_in), y (n, n_out))."""
    prob = mlp_problem(tuple(sizes), n, dtype, seed)
    return prob.cost, prob.params, prob.batch


# --- options ----------------------------------------------------------------------------------------------------

class UsageError(ValueError):
    """A bad command-line option: `run_main` prints it as one line on stderr and exits with status 2."""


def int_list(text: str, what: str, minimum: int = 1) -> list[int]:
    """'10,1000' -> [10, 1000]; UsageError naming `what` (e.g. "--batches") on anything else or values < minimum."""
    try:
        values = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a comma-separated list of integers such as 10,1000") from None
    if any(v < minimum for v in values):
        raise UsageError(f"{what}: every value must be >= {minimum}, got {text!r}")
    return values


def sizes_list(text: str, what: str = "--sizes", min_layers: int = 2, one: bool = False) -> list[tuple[int, ...]]:
    """'784,30,10;784,128,64,10' -> [(784, 30, 10), (784, 128, 64, 10)]; with `one`, exactly one network."""
    nets = []
    for part in str(text).split(";"):
        if not part.strip():
            continue
        sizes = tuple(int_list(part, what))
        if len(sizes) < min_layers:
            raise UsageError(f"{what}: {part!r} needs at least {min_layers} positive widths (input, ..., output), "
                             f"e.g. 784,30,10")
        nets.append(sizes)
    if not nets:
        raise UsageError(f"{what}: name at least one network, e.g. 784,30,10")
    if one and len(nets) != 1:
        raise UsageError(f"{what}: give one network (e.g. 784,30,10), got {len(nets)}")
    return nets


def require(args, minimum: float, *names: str, strict: bool = False) -> None:
    """UsageError unless every option `names` (attribute names) is >= minimum (> minimum with `strict`)."""
    for name in names:
        value = getattr(args, name)
        ok = value is not None and np.isfinite(value) and (value > minimum if strict else value >= minimum)
        if not ok:
            raise UsageError(f"--{name.replace('_', '-')} must be {'>' if strict else '>='} {minimum:g}, got {value}")


def output_path(command: str, out, name: str) -> Path:
    """Where a script writes its results JSON.

    `out` None: `gdjax.results.output_dir(command)` under the repository (git-ignored runs/<command>-<date>/),
    so a user's run never overwrites the committed reference; `out` ending in .json: that file; any other
    `out`: a folder, the JSON `name` inside it. UsageError when `out` is an existing file that is not a .json
    or lies under one (found before any work is done).
    """
    if out is not None and str(out).endswith(".json"):
        path = Path(out)
    else:
        path = results.output_dir(command, out, root=ROOT) / name
    for parent in [path, *path.parents]:
        if parent.exists():
            if parent != path and not parent.is_dir():
                raise UsageError(f"--out: {parent} is a file, not a folder; give a folder or a .json path")
            if parent == path and parent.is_dir():
                raise UsageError(f"--out: {path} is a folder; give a folder or a path ending in .json")
            break
    return path


def require_for_reference(path, package: str, rows: str, skipped: bool = False) -> None:
    """UsageError (before any work) when `path` is in the committed reference folders
    (`gdjax.provenance.is_reference`) and the optional `package` the reference's `rows` need is not installed,
    or was switched off (`skipped`, e.g. --no-torch): a reference run never drops rows (and their targets)
    silently. A user's run (runs/, any other --out) may go without them."""
    import importlib.util

    from gdjax import provenance

    if not provenance.is_reference(path):
        return
    if skipped:
        raise UsageError(f"{path} is the committed reference, which needs {rows}: drop the option that skips "
                         f"them, or write elsewhere (--out)")
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"{path} is the committed reference, which needs {rows}, and {package} is not installed "
                         f"(pip install '.[{package}]'), or write elsewhere (--out)")


class Parser(OneLineParser):
    """The argument parser of every benchmark script (gdjax's one parser base: an argparse error is one line on
    stderr, exit status 2) with `--out` (folder or .json), `--seed` and `--quick`; `parse` fills the defaults
    and raises UsageError for a bad value, which `run_main` prints as one line (exit status 2).

    Args:
      command: the script's short name ("fd_kernel"): the prefix of error lines and of the default run folder.
      doc: the script's docstring (its first line is the description).
      out_name: the JSON file name inside an output folder.
      quick: help text of --quick, or None for a script without it.
    """

    def __init__(self, command: str, doc: str, out_name: str, quick: str | None = None):
        super().__init__(prog=command, description=(doc or command).strip().splitlines()[0])
        self.command, self.out_name = command, out_name
        self.add_argument("--out", default=None, metavar="FOLDER|FILE.json",
                          help=f"results folder (or JSON path); default runs/{command}-<date>/ (git-ignored). "
                               f"Give benchmarks/results/<platform>/ to write the committed reference")
        self.add_argument("--seed", type=int, default=0, help="problem seed (default 0)")
        if quick is not None:
            self.add_argument("--quick", action="store_true", help=quick)

    def parse(self, argv, defaults: Mapping | None = None, quick: Mapping | None = None) -> argparse.Namespace:
        """Parse `argv`; options left at None take `quick[name]` under --quick else `defaults[name]`; sets
        `args.path`, the results JSON (`output_path`)."""
        args = self.parse_args(argv)
        chosen = quick if getattr(args, "quick", False) and quick is not None else (defaults or {})
        for name, value in chosen.items():
            if getattr(args, name, None) is None:
                setattr(args, name, value)
        args.path = output_path(self.command, args.out, self.out_name)
        return args


def run_main(command: str, parse: Callable, run: Callable, argv=None) -> int:
    """`parse(argv) -> args`, then `run(args) -> int | None`: a script's main. A bad option (argparse's own
    errors, or a UsageError / ValueError / TypeError raised by `parse`) is one line `<command>: error: ...` on
    stderr and returns 2; any other error during the run returns 1 with one line (GDJAX_TRACEBACK=1 re-raises
    it, for debugging). The run's provenance stamp is taken first (`gdjax.provenance.start`): a results file
    is stamped with the checkout as it was when the run started, and refused as reference when it changed."""
    from gdjax import provenance

    provenance.start()  # the run's stamp, verified when its results are written (gdjax.results.write_json)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse(argv)
    except SystemExit as done:  # argparse: --help (0), or a usage error already printed as one line (2)
        return int(done.code or 0)
    except (UsageError, ValueError, TypeError) as err:
        print(f"{command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except UsageError as err:
        print(f"{command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one line on stderr, not a traceback
        if os.environ.get("GDJAX_TRACEBACK"):
            raise
        print(f"{command}: error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1


def wrote(*paths) -> int:
    """Print `wrote PATH, PATH, ...` (what a run leaves behind) and return 0, a script's `run` exit status."""
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


# --- the record ---------------------------------------------------------------------------------------------------

def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): other work on the machine shows up in times."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def meta(load_start: float | None = None, **extra) -> dict:
    """`gdjax.results.environment()` (device, versions, the git stamp taken when `run_main` started, date,
    command) with the load average at the start (given) and now, and `extra`."""
    env = results.environment()
    env.update({"load_avg_1min_start": load_start, "load_avg_1min_end": load_average(), **extra})
    return env


def time_stats(times: Sequence[float]) -> dict:
    """{"median_s", "min_s", "max_s", "times_s"} of per-call seconds (`gdjax.profiling.Timing.of`)."""
    t = profiling.Timing.of(times)
    return {"median_s": t.median_s, "min_s": t.min_s, "max_s": t.max_s, "times_s": list(t.times)}
