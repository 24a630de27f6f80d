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
        epilog="example: gdjax launch -n 2 -- bench --quick   (on a cluster, see README section 'distributed')")
    p.add_argument("-n", "--processes", type=int, required=True, help="number of processes (>= 1)")
    p.add_argument("--timeout", type=float, default=600.0, help="stop everything after this many seconds")
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the gdjax command, e.g. -- bench --quick")


def _cmd_launch(args) -> int:
    from gdjax import distributed

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise ValueError("no command given: put the gdjax command after --, e.g. gdjax launch -n 2 -- bench --quick")
    result = distributed.launch(cmd, args.processes, timeout_s=args.timeout, port=args.port)
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
    from gdjax import distributed

    info = distributed.process_info()
    total = distributed.check_all_reduce()
    print(f"process {info.process_id} of {info.num_processes}: {info.local_device_count} local / "
          f"{info.global_device_count} global {info.platform} device(s); all-reduce over them: {total} "
          f"(expected {info.global_device_count}) ok")
    return 0


COMMANDS["launch"] = (_add_launch, _cmd_launch)
COMMANDS["devices"] = (_add_devices, _cmd_devices)


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
