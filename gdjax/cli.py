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
                    "backprop, the FD kernel, fd-loop, and every other registered estimator), with XLA FLOPs, "
                    "memory, error against float64 jax.grad and the same run's matmul rate. Points whose full "
                    "gradient would exceed --time-budget are timed on a subset and extrapolated (flagged). "
                    "Writes <out>/fd_vs_grad.json (+ .csv, .jsonl) and the figures; see benchmarks/README.md.",
        epilog="examples: gdjax bench --quick | gdjax bench --sizes '784,30,10;784,100,10' --methods "
               "reverse,fd-forward | gdjax bench --sizes P=1e2:1e6:7 --time-budget 3 --resume")
    p.add_argument("--sizes", default=None,
                   help="networks: layer lists '784,30,10;784,100,10', or a P range 'P=1e2:1e6[:n]' of square "
                        "nets [h,h,10] (default: 6 nets from P=162 to 1.06e6 including [784,30,10])")
    p.add_argument("--batch-size", type=int, default=None, help="examples N in the cost (default 1000; --quick 64)")
    p.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    p.add_argument("--methods", default=None,
                   help="comma-separated gradient methods (default: every registered one); the forward pass "
                        "alone is always measured")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per point after warm-up (default 5)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of timed calls per point; beyond it a subset is timed and extrapolated "
                        "(default 0.5; --quick 0.1)")
    p.add_argument("--out", default=None, help="output directory (default benchmarks/results/<platform>/)")
    p.add_argument("--device", default=None, help="cpu or gpu (default: JAX's default backend)")
    p.add_argument("--resume", action="store_true",
                   help="keep the points already in <out>/fd_vs_grad.jsonl and measure only the rest")
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets (tests, CI; seconds)")
    p.add_argument("--million", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the 'million weights' table (default: on, off with --quick)")
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


def _cmd_bench(args) -> int:
    from pathlib import Path

    import jax

    from gdjax import benchmark, results

    quick = args.quick
    sizes = benchmark.parse_sizes(args.sizes) if args.sizes is not None else (
        benchmark.QUICK_SIZES if quick else benchmark.DEFAULT_SIZES)
    if args.methods is None or args.methods.strip() == "all":
        methods = benchmark.default_methods()
    else:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != benchmark.FORWARD_PASS)
    if args.device is not None:
        if args.device not in ("cpu", "gpu"):
            raise ValueError(f"--device must be cpu or gpu, got {args.device!r}")
        try:
            device = jax.devices(args.device)[0]
        except RuntimeError:
            raise ValueError(f"--device {args.device}: JAX finds no {args.device} device here "
                             f"(for a GPU install jax with CUDA: pip install -e '.[cuda]')") from None
    else:
        device = jax.devices()[0]
    config = benchmark.BenchConfig(
        sizes=sizes,
        batch_size=args.batch_size if args.batch_size is not None else (64 if quick else benchmark.DEFAULT_BATCH),
        dtype=args.dtype, methods=methods,
        repeats=args.repeats if args.repeats is not None else (2 if quick else benchmark.DEFAULT_REPEATS),
        time_budget=args.time_budget if args.time_budget is not None else (
            0.1 if quick else benchmark.DEFAULT_TIME_BUDGET),
        seed=args.seed, million=(not quick) if args.million is None else args.million)
    out = _writable_dir(args.out if args.out is not None else Path("benchmarks", "results", device.platform))
    json_path, jsonl_path = out / f"{benchmark.BENCH_NAME}.json", out / f"{benchmark.BENCH_NAME}.jsonl"
    writer = jax.process_index() == 0  # under `gdjax launch`, one process writes
    done = results.read_jsonl(jsonl_path) if args.resume else []
    if writer and not args.resume and jsonl_path.exists():
        jsonl_path.unlink()  # a fresh sweep
    if config.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    mm_n = 256 if quick else 1024
    with jax.default_device(device):
        peaks = benchmark.measure_peaks(n=mm_n, repeats=3 if quick else 5)
        rows = benchmark.run_sweep(config, peaks, done=done, progress=not args.no_progress,
                                   on_row=(lambda r: results.append_jsonl(jsonl_path, r)) if writer else None)
        peaks_end = benchmark.measure_peaks(n=mm_n, repeats=3 if quick else 5)
    # the ceiling: the larger of the start and end measurements (other load on the machine only lowers them)
    ceiling = {k: max(peaks[k], peaks_end[k]) for k in peaks}
    rows = benchmark.apply_peaks(rows, ceiling)
    meta = {**results.environment(), "benchmark": benchmark.BENCH_NAME, "dtype": config.dtype,
            "device_kind": device.device_kind, "device_name": str(device), "platform": device.platform,
            "matmul_gflops": {k: v / 1e9 for k, v in ceiling.items()}, "matmul_n": mm_n,
            "matmul_gflops_start": {k: v / 1e9 for k, v in peaks.items()},
            "matmul_gflops_end": {k: v / 1e9 for k, v in peaks_end.items()},
            "resumed_points": sum(1 for r in done if r.get("id") in {x["id"] for x in rows})}
    tg = benchmark.targets(rows, config.batch_size, config.dtype)
    written = []
    if writer:
        results.save_results(json_path, rows, meta=meta, config={**config.as_dict(), "targets": tg})
        written = [json_path, results.csv_path(json_path), jsonl_path]
        if not args.no_plots:
            from gdjax import plotting

            written += plotting.plot_results(json_path)
    print(f"matmul rate (same run, n={mm_n}, best of start/end): "
          + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in ceiling.items()) + f"; device {device.device_kind}")
    print(benchmark.format_table(rows))
    print()
    print(benchmark.format_targets(tg, config.batch_size, config.dtype))
    table = benchmark.million_table(rows)
    if table:
        print()
        print(benchmark.format_million(table))
    for p in written:
        print(f"wrote {p}")
    failed = [r for r in rows if r.get("status") == "error"]
    if failed:
        print(f"gdjax bench: error: {len(failed)} point(s) failed, recorded with status 'error' "
              f"(first: {failed[0]['id']}: {failed[0].get('note', '')})", file=sys.stderr)
        return 1
    return 0


def _add_plot(sub):
    p = sub.add_parser("plot", help="redraw the figures of a results file (no rerun)",
                       description="Draw the figures of a gdjax results JSON (e.g. benchmarks/results/cpu/"
                                   "fd_vs_grad.json) as PNG and SVG, beside it or in --out.")
    p.add_argument("results", help="a results JSON written by a gdjax benchmark")
    p.add_argument("--out", default=None, help="directory for the figures (default: beside the results)")
    p.add_argument("--markdown", action="store_true",
                   help="also print the headline tables as Markdown (fd_vs_grad results), for the README")


def _cmd_plot(args) -> int:
    from gdjax import plotting, results

    if args.out is not None:
        _writable_dir(args.out)
    for p in plotting.plot_results(args.results, args.out):
        print(f"wrote {p}")
    if args.markdown:
        from gdjax import benchmark

        print(benchmark.markdown_summary(results.load_results(args.results)))
    return 0


COMMANDS["bench"] = (_add_bench, _cmd_bench)
COMMANDS["plot"] = (_add_plot, _cmd_plot)


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train an MLP by gradient descent with any gradient method",
        description="Mini-batch gradient descent (an epoch is one jitted lax.scan) on a dataset; writes "
                    "OUT/metrics.jsonl (one record per epoch), OUT/checkpoint.npz (after every epoch; --resume "
                    "continues from it), OUT/params.npz and OUT/config.json.",
        epilog="example: gdjax train --dataset digits --sizes 64,30,10 --eta 3.0 --epochs 10 --out runs/digits")
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
    p.add_argument("--epochs", type=int, default=30, help="number of epochs (>= 1)")
    p.add_argument("--method", default="reverse", help="gradient method (see gdjax.available_methods())")
    p.add_argument("--dtype", default="float32", help="float32 or float64")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, the shuffles and stochastic methods")
    p.add_argument("--divergence-factor", type=float, default=None,
                   help="stop when the train cost exceeds this multiple of its start (default 10)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_train(args) -> int:
    import os

    from gdjax import _checks, train

    # cheap checks first, so a typo never waits for a dataset to load
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

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import gdjax
    from gdjax import results

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
    k_init, k_run = jax.random.split(jax.random.key(args.seed))
    params = net.init(k_init, scheme=args.init, dtype=args.dtype)
    opt = train.make_optimizer(args.optimizer, eta)
    os.makedirs(args.out, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ("command",)}
    config["sizes"] = list(sizes)
    results.write_json(os.path.join(args.out, "config.json"), {"meta": results.environment(), "config": config})
    factor = train.DIVERGENCE_FACTOR if args.divergence_factor is None else args.divergence_factor
    try:
        res = train.fit(cost, opt, params, ds.train, ds.test, epochs=args.epochs, batch_size=args.batch_size,
                        key=k_run, method=args.method, learning_rate=eta, divergence_factor=factor,
                        log_path=os.path.join(args.out, "metrics.jsonl"),
                        checkpoint_path=os.path.join(args.out, "checkpoint.npz"), resume=args.resume,
                        progress=not args.no_progress)
    except train.Diverged as err:
        print(f"gdjax train: error: {err}", file=sys.stderr)
        return 3
    train.save_params(os.path.join(args.out, "params.npz"), res.params)
    last = res.history[-1]
    wall = last["wall_s"]
    print(f"epoch {last['epoch']}: train cost {last['train_cost']:.4g}, test cost {last['test_cost']:.4g}, "
          f"test accuracy {last['test_accuracy']:.4f}; {wall:.2f} s training (+{res.compile_s:.2f} s compile); "
          f"wrote {args.out}")
    return 0


COMMANDS["train"] = (_add_train, _cmd_train)


def _add_report(sub):
    p = sub.add_parser("report", help="render the results tables of README.md and docs/ from the results files",
                       description="Rewrite every <!-- report:NAME --> block of README.md and docs/*.md from the "
                                   "committed results JSON; --check changes nothing and fails on a difference or "
                                   "on stale results (see gdjax/report/provenance.py).")
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
