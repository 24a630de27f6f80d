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

from gdjax._cli_args import OneLineParser as _Parser  # the one parser base (usage error: one line, exit 2)
from gdjax._cli_args import csv_ints as _csv_ints


# --- commands (each owner edits only its own section) -------------------------------------------------------

COMMANDS: dict = {}  # name -> (add_parser(subparsers), run(args) -> int)


def _add_launch(sub):
    p = sub.add_parser(
        "launch", help="run a gdjax command as N local processes on JAX's distributed runtime",
        description="Start N processes on loopback (127.0.0.1, a free port) running CMD; each joins JAX's "
                    "distributed runtime first (GDJAX_COORDINATOR/NUM_PROCESSES/PROCESS_ID). Output lines are "
                    "prefixed with [process id]; the first failure stops the others and sets the exit status.",
        epilog="examples: gdjax launch -n 2 -- devices | gdjax launch -n 2 -- train --method fd-central --out runs/x "
               "(on a cluster, see README section 'distributed')")
    p.add_argument("-n", "--processes", type=int, required=True, help="number of processes (>= 1)")
    p.add_argument("--timeout", type=float, default=600.0, help="stop everything after this many seconds")
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the gdjax command, e.g. -- devices")


def _cmd_launch(args) -> int:
    from gdjax.launch import launch

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise ValueError("no command given: put the gdjax command after --, e.g. gdjax launch -n 2 -- devices")
    result = launch(cmd, args.processes, timeout_s=args.timeout, port=args.port)
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
    from gdjax import distributed, sharding

    info = distributed.process_info()
    total = sharding.check_all_reduce()
    print(f"process {info.process_id} of {info.num_processes}: {info.local_device_count} local / "
          f"{info.global_device_count} global {info.platform} device(s); all-reduce over them: {total} "
          f"(expected {info.global_device_count}) ok")
    return 0


COMMANDS["launch"] = (_add_launch, _cmd_launch)
COMMANDS["devices"] = (_add_devices, _cmd_devices)


def _add_bench(sub):
    p = sub.add_parser(
        "bench", help="finite differences vs jax.grad: time per gradient over network sizes (make bench)",
        description="Time one gradient per network size and method (forward pass alone, reverse, forward, "
                    "backprop, the FD kernel, fd-loop, and every other registered estimator): whole where the "
                    "whole gradient is predicted to fit --time-budget, else on a subset of the method's own "
                    "program and extrapolated (flagged); every whole point of a method with a subset is also "
                    "extrapolated, as a check (the 'validation' list). XLA FLOPs (loops x trip count), memory, "
                    "error against float64 jax.grad, and the run's matmul reference (best of several shapes, "
                    "start/middle/end). Writes <out>/fd_vs_grad.json (+ .csv, .jsonl, figures); see "
                    "docs/benchmarks.md.",
        epilog="examples: gdjax bench --quick | gdjax bench --sizes '784,30,10' --methods reverse,fd-forward | "
               "gdjax bench --problem benchmarks.problems.gmm:gmm --dtype float64 (any cost: your own factory) | "
               "gdjax bench --full --committed --resume (the maintainers' hour-long sweep)")
    p.add_argument("--problem", default=None,
                   help="measure your own cost instead of the MLPs: 'package.module:factory', where factory() "
                        "returns a gdjax.bench.problem.Problem or (cost, params, batch); imported from the working "
                        "directory or the installed packages (results: problem_<name>.json)")
    p.add_argument("--sizes", default=None,
                   help="networks: layer lists '784,30,10;784,100,10', P ranges 'P=1e2:1e6[:n]' of square nets "
                        "[h,h,10], or default / quick / full (default: 6 nets from P=162 to 1.06e6 with [784,30,10])")
    p.add_argument("--batch-size", type=int, default=None, help="examples N in the cost (default 1000; --quick 64)")
    p.add_argument("--dtype", default=None,
                   help="float32 (default) or float64; with --problem, float64 switches on x64 before the factory "
                        "runs (the problem's own dtype is recorded)")
    p.add_argument("--methods", default=None,
                   help="comma-separated gradient methods (default: every registered one); the forward pass "
                        "alone is always measured")
    p.add_argument("--repeats", type=int, default=None, help="most timed calls per measurement (default 3)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds a whole gradient may be predicted to take; beyond it the point is extrapolated "
                        "from a subset (default 45; --quick 1; --full 600)")
    p.add_argument("--out", default=None, help="output folder (default: a fresh git-ignored runs/bench-<date>/)")
    p.add_argument("--committed", action="store_true",
                   help="write the committed reference benchmarks/results/<platform>/ (maintainers)")
    p.add_argument("--reference", default=None,
                   help="results file to print this run beside (default: the committed one of this platform)")
    p.add_argument("--no-reference", action="store_true", help="do not print the run beside the reference")
    p.add_argument("--device", default=None, help="cpu or gpu (default: JAX's default backend)")
    p.add_argument("--resume", action="store_true",
                   help="keep the points already in <out>/<name>.jsonl and measure only the rest (needs --out or "
                        "--committed)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets (tests, CI; seconds)")
    p.add_argument("--full", action="store_true",
                   help="the full sweep: sizes 'full' (9 nets P=1e2..1e6 and [784,30,10]), --time-budget 600, "
                        "results named fd_vs_grad_full")
    p.add_argument("--million", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the 'million weights' table (default: only with --full, whose 600 s budget times "
                        "most of it whole)")
    p.add_argument("--no-validate", action="store_true", help="do not time a subset beside each whole point")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="directions per chunk for every method that takes a chunk_size (default: each method's own)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of params and data (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="write the results only, no figures")


def _writable_dir(path):
    """Create `path` if needed and check a file can be written there; OSError (one line) otherwise."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OSError(f"output directory {str(path)!r} is not writable ({err.strerror or err}); "
                      f"choose another with --out") from None
    return path


def _bench_config(args):
    """The BenchConfig of `gdjax bench`'s options (ValueError naming a bad one), and the results name."""
    from gdjax.bench import config as bc

    if args.quick and args.full:
        raise ValueError("--quick and --full exclude each other")
    if args.problem is not None:
        return _problem_config(args, bc)
    preset = "quick" if args.quick else "full" if args.full else "default"
    sizes = bc.parse_sizes(args.sizes if args.sizes is not None else preset)
    if args.methods is None or args.methods.strip() == "all":
        methods = bc.default_methods()
    else:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != bc.FORWARD_PASS)
    budget = {"quick": bc.QUICK_TIME_BUDGET, "full": bc.FULL_TIME_BUDGET, "default": bc.DEFAULT_TIME_BUDGET}[preset]
    config = bc.BenchConfig(
        sizes=sizes, batch_size=args.batch_size if args.batch_size is not None else (64 if args.quick else
                                                                                      bc.DEFAULT_BATCH),
        dtype=args.dtype or "float32", methods=methods,
        repeats=args.repeats if args.repeats is not None else (2 if args.quick else bc.DEFAULT_REPEATS),
        time_budget=args.time_budget if args.time_budget is not None else budget,
        seed=args.seed, million=args.full if args.million is None else args.million,
        validate=not args.no_validate, chunk_size=args.chunk_size)
    return config, bc.BENCH_NAME + ("_full" if args.full else "")


def _problem_config(args, bc):
    """The BenchConfig of `gdjax bench --problem SPEC`: the factory's Problem (loaded here, before any
    measurement; a bad SPEC is one line, exit 2) and the results name `problem_<factory>`."""
    import jax

    from gdjax.bench.problem import load_problem

    for flag, value in (("--sizes", args.sizes), ("--full", args.full or None), ("--million", args.million)):
        if value is not None:
            raise ValueError(f"--problem measures the factory's cost: {flag} does not apply (drop it)")
    if args.dtype is not None:
        bc.BenchConfig(dtype=args.dtype)  # validates the name
        if args.dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # before the factory builds its arrays
    problem = load_problem(args.problem)
    if args.batch_size is not None:
        raise ValueError("--problem: the batch is the factory's; --batch-size does not apply (drop it)")
    if args.dtype is not None and args.dtype != problem.dtype:
        raise ValueError(f"--problem {args.problem}: the factory's params are {problem.dtype}, not --dtype "
                         f"{args.dtype}; drop --dtype or make the factory build {args.dtype} params")
    if args.methods is None or args.methods.strip() == "all":
        methods = bc.default_methods()
    else:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != bc.FORWARD_PASS)
    budget = bc.QUICK_TIME_BUDGET if args.quick else bc.DEFAULT_TIME_BUDGET
    config = bc.BenchConfig(
        methods=methods, repeats=args.repeats if args.repeats is not None else (2 if args.quick else
                                                                                bc.DEFAULT_REPEATS),
        time_budget=args.time_budget if args.time_budget is not None else budget, seed=args.seed,
        validate=not args.no_validate, chunk_size=args.chunk_size, problem=problem, problem_spec=args.problem)
    name = "problem_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in problem.name)
    return config, name


def _bench_device(name):
    import jax

    if name is None:
        return jax.devices()[0]
    if name not in ("cpu", "gpu"):
        raise ValueError(f"--device must be cpu or gpu, got {name!r}")
    try:
        return jax.devices(name)[0]
    except RuntimeError:
        raise ValueError(f"--device {name}: JAX finds no {name} device here "
                         f"(for a GPU install jax with CUDA: pip install -e '.[cuda]')") from None


def draw_bench(data: dict, out_dir, name: str) -> list:
    """The figures of a `gdjax bench` run (`gdjax.plotting.plot_fd_vs_grad`), or none, said why, without
    matplotlib (e.g. a GPU image: the results are what matters; `gdjax plot` draws them later)."""
    try:
        from gdjax import plotting
    except ImportError as err:
        print(f"no figures: {err} (gdjax plot {out_dir}/{name}.json draws them later)")
        return []
    return plotting.plot_fd_vs_grad(data, out_dir, stem=name)


def _cmd_bench(args) -> int:
    from pathlib import Path

    import jax

    from gdjax import results
    from gdjax.bench import run as bench_run

    config, name = _bench_config(args)  # every option checked before any work
    if args.out is not None and args.committed:
        raise ValueError("give --out or --committed, not both")
    if args.resume and args.out is None and not args.committed:
        raise ValueError("--resume needs the folder of the run to continue: give --out FOLDER (or --committed)")
    if args.reference is not None and not Path(args.reference).is_file():
        raise ValueError(f"--reference {args.reference}: no such results file")
    device = _bench_device(args.device)
    out = bench_run.committed_dir(device.platform) if args.committed else results.output_dir("bench", args.out)
    out = _writable_dir(out)
    if config.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    writer = jax.process_index() == 0  # under `gdjax launch`, one process writes
    with jax.default_device(device):
        data, written = bench_run.run(config, out, name=name, resume=args.resume, quick=args.quick,
                                      progress=not args.no_progress, plots=not args.no_plots, writer=writer,
                                      draw=draw_bench)
    reference = None
    if not args.no_reference:
        reference = Path(args.reference) if args.reference else (
            None if config.problem is not None else bench_run.reference_path(device.platform))
        if reference is not None and (args.committed or (out / f"{name}.json").resolve() == reference.resolve()):
            reference = None  # the run is the reference
    print(bench_run.summary(data, reference))
    for p in written:
        print(f"wrote {p}")
    failed = [r for r in data["rows"] if r.get("status") == "error"]
    if failed:
        print(f"gdjax bench: error: {len(failed)} point(s) failed, recorded with status 'error' "
              f"(first: {failed[0]['id']}: {failed[0].get('note', '')})", file=sys.stderr)
        return 1
    return 0


def _add_plot(sub):
    p = sub.add_parser("plot", help="redraw the figures of a results file (no rerun)",
                       description="Draw the figures of a gdjax results JSON (e.g. benchmarks/results/cpu/"
                                   "fd_vs_grad.json) as PNG and SVG, beside it or in --out; --reference overlays "
                                   "another run (e.g. your run over the committed reference).")
    p.add_argument("results", help="a results JSON written by a gdjax benchmark")
    p.add_argument("--out", default=None, help="directory for the figures (default: beside the results)")
    p.add_argument("--reference", default=None, help="a results JSON of the same benchmark to overlay")


def _cmd_plot(args) -> int:
    from gdjax import plotting

    if args.out is not None:
        _writable_dir(args.out)
    for p in plotting.plot_results(args.results, args.out, reference=args.reference):
        print(f"wrote {p}")
    return 0


COMMANDS["bench"] = (_add_bench, _cmd_bench)
COMMANDS["plot"] = (_add_plot, _cmd_plot)


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train an MLP by gradient descent with any gradient method",
        description="Mini-batch gradient descent (an epoch is one jitted lax.scan) on a dataset; writes "
                    "OUT/metrics.jsonl (one record per epoch), OUT/checkpoint.npz (after every epoch; --resume "
                    "continues from it), OUT/params.npz and OUT/config.json. An existing OUT is refused "
                    "unless --resume (same settings, more epochs) or --overwrite.",
        epilog="examples: gdjax train --dataset digits --sizes 64,30,10 --eta 3.0 --epochs 10 --out runs/digits | "
               "gdjax train --method spsa --option num_directions=16 --out runs/spsa-k16")
    p.add_argument("--dataset", default="digits", help="digits, fashion-mnist or mnist (default digits)")
    p.add_argument("--data-dir", default=None, help="folder of the IDX files (fashion-mnist, mnist)")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--n-test", type=int, default=None, help="use only the first N test examples")
    p.add_argument("--sizes", type=_csv_ints, default=None,
                   help="layer widths, e.g. 784,30,10 (default: n_in,30,n_classes of the dataset)")
    p.add_argument("--activation", default="sigmoid", help="hidden activation: sigmoid, tanh, relu, identity")
    p.add_argument("--output", default="sigmoid", help="output activation: sigmoid, identity, softmax")
    p.add_argument("--loss", default="quadratic", help="quadratic or cross-entropy")
    p.add_argument("--init", default="nielsen", help="weight init: nielsen, lecun, xavier, he")
    p.add_argument("--optimizer", default="sgd", help="sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad")
    p.add_argument("--eta", type=float, default=3.0, help="learning rate (> 0)")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch size (1..N; N = full-batch GD)")
    p.add_argument("--epochs", type=int, default=30, help="number of epochs (>= 1; with --resume: the total)")
    p.add_argument("--method", default="reverse", help="gradient method (see gdjax.available_methods())")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, repeatable, e.g. --option num_directions=16 --option eps=1e-3 "
                        "(values read as int, float or text; the method's options are checked)")
    p.add_argument("--dtype", default="float32", help="float32 or float64")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, the shuffles and stochastic methods")
    p.add_argument("--divergence-factor", type=float, default=None,
                   help="stop when the train cost exceeds this multiple of its start (default 10)")
    p.add_argument("--out", default=None, help="output folder (default: a fresh git-ignored runs/train-<date>/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (needs --out and the same settings; --epochs is the new total)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an existing OUT, replacing its run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# settings that may differ between a run and its --resume (the others must match config.json)
_RESUMABLE = ("epochs", "resume", "overwrite", "no_progress", "out", "data_dir", "command")


def _method_options(pairs, method: str) -> dict:
    """`--option NAME=VALUE` pairs -> {name: int | float | str}, checked against the method's options."""
    from gdjax.gradients import method_info

    valid = method_info(method).options
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not text.strip():
            raise ValueError(f"--option {pair!r}: expected NAME=VALUE, e.g. --option num_directions=16")
        if name not in valid:
            raise ValueError(f"--option {name}: not an option of method {method!r}; its options: "
                             f"{', '.join(valid) if valid else 'none'}")
        if name in out:
            raise ValueError(f"--option {name} given twice")
        text = text.strip()
        for kind in (int, float):
            try:
                out[name] = kind(text)
                break
            except ValueError:
                continue
        else:
            out[name] = text
    return out


def _train_out(args):
    """Check --out against --resume / --overwrite before any work; returns the checkpoint's epoch (0: fresh)."""
    from pathlib import Path

    from gdjax import checkpoint

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out, the folder of the run to continue")
    out = Path(args.out) if args.out is not None else None
    if args.resume:
        ck = out / "checkpoint.npz"
        if not out.is_dir():
            raise ValueError(f"--resume: {str(out)!r} does not exist; there is no run to continue (drop --resume "
                             f"to start one)")
        if not ck.is_file() or not (out / "config.json").is_file():
            raise ValueError(f"--resume: {str(out)!r} holds no checkpoint.npz and config.json of a gdjax train run")
        return checkpoint.saved_epoch(ck)
    if not args.overwrite and out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} already exists and is not empty: add --resume to continue its run, "
                         f"--overwrite to replace it, or choose another folder")
    return 0


def _saved_config(path) -> dict:
    """The "config" of a run's config.json (ValueError, one line, when it cannot be read)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f).get("config")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"--resume: cannot read {path} ({type(err).__name__}); the run cannot be checked") from None
    if not isinstance(config, dict):
        raise ValueError(f"--resume: {path} holds no 'config' of a gdjax train run")
    return config


def _cmd_train(args) -> int:
    import os

    from gdjax import _checks

    # cheap checks first, so a typo never waits for a dataset to load
    from gdjax import results, train
    from gdjax.costs import LOSSES
    from gdjax.data import DATASETS
    from gdjax.gradients import available_methods
    from gdjax.nn import ACTIVATIONS, INIT_SCHEMES, OUTPUT_ACTIVATIONS

    _checks.choice(args.dataset, DATASETS, "--dataset")
    _checks.choice(args.optimizer, train.OPTIMIZERS, "--optimizer")
    _checks.choice(args.method, available_methods(), "--method")
    _checks.choice(args.activation, ACTIVATIONS, "--activation")
    _checks.choice(args.output, OUTPUT_ACTIVATIONS, "--output")
    _checks.choice(args.loss, LOSSES, "--loss")
    _checks.choice(args.init, INIT_SCHEMES, "--init")
    _checks.choice(args.dtype, ("float32", "float64"), "--dtype")
    eta = _checks.positive_float(args.eta, "--eta")
    _checks.positive_int(args.batch_size, "--batch-size")
    _checks.positive_int(args.epochs, "--epochs")
    for name in ("n_train", "n_test"):
        if getattr(args, name) is not None:
            _checks.positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    if args.divergence_factor is not None and not args.divergence_factor > 1:
        raise ValueError(f"--divergence-factor must be > 1, got {args.divergence_factor}")
    method_options = _method_options(args.option, args.method)
    factor = train.DIVERGENCE_FACTOR if args.divergence_factor is None else args.divergence_factor
    # what config.json records: the settings in force (the effective divergence factor, the method options)
    config = {k: v for k, v in vars(args).items() if k not in ("command", "option")}
    config.update(divergence_factor=factor, method_options=method_options)
    reached = _train_out(args)
    if args.resume:
        saved = _saved_config(os.path.join(args.out, "config.json"))
        changed = train.changed_keys({k: v for k, v in saved.items() if k not in _RESUMABLE and k != "sizes"},
                                     {k: v for k, v in config.items() if k not in _RESUMABLE})
        if changed:
            raise ValueError(f"--resume: the run in {args.out} was started with other settings ({'; '.join(changed)});"
                             f" resume with the same settings, or start a new run with another --out")
        if reached >= args.epochs:
            print(f"gdjax train: {args.out} is already at {reached} epochs (--epochs {args.epochs}); nothing to do")
            return 0

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import gdjax

    ds = gdjax.data.load_dataset(args.dataset, args.data_dir, n_train=args.n_train, n_test=args.n_test,
                                 dtype=args.dtype)
    n_in, n_train = int(ds.train.x.shape[1]), int(ds.train.x.shape[0])
    sizes = args.sizes if args.sizes is not None else (n_in, 30, ds.n_classes)
    if len(sizes) < 2 or sizes[0] != n_in or sizes[-1] != ds.n_classes:
        raise ValueError(f"--sizes {','.join(map(str, sizes))} does not fit {args.dataset}: the first width must be "
                         f"its {n_in} inputs and the last its {ds.n_classes} classes, e.g. {n_in},30,{ds.n_classes}")
    if args.batch_size > n_train:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the {n_train} training examples")

    net = gdjax.MLP(sizes, activation=args.activation, output=args.output)
    cost = gdjax.make_cost(net, args.loss)
    gdjax.gradient(cost, args.method, **method_options)  # the options' values, checked before any work
    k_init, k_run = jax.random.split(jax.random.key(args.seed))
    params = net.init(k_init, scheme=args.init, dtype=args.dtype)
    opt = train.make_optimizer(args.optimizer, eta)
    args.out = str(results.output_dir("train", args.out))
    os.makedirs(args.out, exist_ok=True)
    config.update(out=args.out, sizes=list(sizes))
    if args.overwrite:
        for name in ("checkpoint.npz", "metrics.jsonl", "params.npz"):
            if os.path.exists(os.path.join(args.out, name)):
                os.remove(os.path.join(args.out, name))
    results.write_json(os.path.join(args.out, "config.json"), {"meta": results.environment(), "config": config})
    fit_config = {k: v for k, v in config.items() if k not in _RESUMABLE}
    try:
        res = train.fit(cost, opt, params, ds.train, ds.test, epochs=args.epochs, batch_size=args.batch_size,
                        key=k_run, method=args.method, method_options=method_options, learning_rate=eta,
                        divergence_factor=factor, config=fit_config,
                        log_path=os.path.join(args.out, "metrics.jsonl"),
                        checkpoint_path=os.path.join(args.out, "checkpoint.npz"), resume=args.resume,
                        progress=not args.no_progress)
    except train.Diverged as err:
        print(f"gdjax train: error: {err}", file=sys.stderr)
        return 3
    train.save_params(os.path.join(args.out, "params.npz"), res.params)
    last = res.history[-1]
    wall = last["wall_s"]
    resumed = f"resumed at epoch {res.start_epoch}; " if res.start_epoch else ""
    print(f"epoch {last['epoch']}: train cost {last['train_cost']:.4g}, test cost {last['test_cost']:.4g}, "
          f"test accuracy {last['test_accuracy']:.4f}; {resumed}{wall:.2f} s training (+{res.compile_s:.2f} s "
          f"compile); wrote {args.out}")
    return 0


COMMANDS["train"] = (_add_train, _cmd_train)


def _add_report(sub):
    p = sub.add_parser("report", help="render the results tables of README.md and docs/ from the results files",
                       description="Rewrite every <!-- report:NAME --> block of README.md and docs/*.md from the "
                                   "committed results JSON; --check changes nothing and fails on a difference or "
                                   "on stale results (see gdjax/provenance.py).")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 with the diff if a table differs")
    p.add_argument("--no-provenance", action="store_true", help="with --check: check the rendering only")
    p.add_argument("--root", default=".", help="repository root (default: the current directory)")


def _cmd_report(args) -> int:
    from gdjax import report

    return report.command(args.root, check=args.check, provenance=not args.no_provenance)


COMMANDS["report"] = (_add_report, _cmd_report)


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
