"""Training throughput: one epoch of mini-batch SGD with gdjax vs a PyTorch eager loop vs a NumPy per-example loop.

The lecture's setting (`_common.make_problem`: 10,000 examples, [784, 30, 10], sigmoid units, quadratic cost), plain
SGD eta = 3.0, mini-batch 10, float32, every implementation starting from the same data and params:
  gdjax:   `gdjax.train.make_epoch` jitted once (donated state): 1000 steps under one `lax.scan`, one host sync.
  PyTorch: the usual eager loop with torch.optim.SGD (optional, `pip install torch`: skipped with a message, except
           when writing the committed reference, which then fails before any work); timed at torch's default
           thread count and at 1 thread, the faster is "torch", the other "torch-slower-threads".
  NumPy:   Nielsen's network.py: backpropagation one example at a time, then the averaged update.
Each is timed by `gdjax.profiling.time_fn` (one warm-up epoch, then `--repeats` epochs); ratios = median(other) /
median(gdjax). Targets: >= 8x PyTorch, >= 20x NumPy. Output: <out>/training_throughput.json (+ .csv); default
<out> runs/training_throughput-<date>/ (git-ignored). Errors: one line on stderr, exit status 2 or 1.

    python benchmarks/training_throughput.py                 # ~1 min
    python benchmarks/training_throughput.py --quick --no-torch                  # seconds (the smoke test)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import _common as common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gdjax  # noqa: E402
from gdjax import profiling, results, train  # noqa: E402
from gdjax.bench.report import human_time  # noqa: E402
from gdjax.report import benchmarks as report  # noqa: E402

NAME = "training_throughput"
TARGETS = {"torch": common.TARGETS["throughput_torch"], "numpy": common.TARGETS["throughput_numpy"]}
DEFAULTS = {"n": 10_000, "sizes": "784,30,10", "repeats": 7, "numpy_repeats": 3, "numpy_examples": 0}
QUICK = {"n": 200, "sizes": "20,8,4", "repeats": 2, "numpy_repeats": 1, "numpy_examples": 50}


def parse_args(argv):
    """The options, every one checked before any work (UsageError: one line, exit status 2)."""
    ap = common.Parser(NAME, __doc__, f"{NAME}.json",
                       quick="200 examples of a [20, 8, 4] net, 2 epochs: seconds (a smoke test)")
    ap.add_argument("--n", type=int, default=None, help="examples per epoch (default 10000)")
    ap.add_argument("--sizes", default=None, help="layer widths (default 784,30,10)")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=None, help="timed epochs per implementation (default 7)")
    ap.add_argument("--numpy-repeats", type=int, default=None, help="timed NumPy epochs (default 3)")
    ap.add_argument("--numpy-examples", type=int, default=None,
                    help="time the NumPy loop on this many examples and scale to --n (0: all)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse(argv, DEFAULTS, QUICK)
    args.net = common.sizes_list(args.sizes, one=True)[0]
    common.require(args, 1, "n", "batch_size", "repeats", "numpy_repeats")
    common.require(args, 0, "numpy_examples")
    common.require(args, 0, "eta", strict=True)
    if args.batch_size > args.n:
        raise common.UsageError(f"--batch-size {args.batch_size} is larger than --n {args.n}")
    if args.numpy_examples and not args.batch_size <= args.numpy_examples <= args.n:
        raise common.UsageError(f"--numpy-examples must be 0 or lie in [--batch-size, --n] = "
                                f"[{args.batch_size}, {args.n}], got {args.numpy_examples}")
    common.require_for_reference(args.path, "torch", "the PyTorch rows (--no-torch, or torch missing)",
                                 skipped=args.no_torch)
    return args


def numpy_problem(sizes, n: int, seed: int):
    """The lecture's problem (`_common.make_problem`) as NumPy float32: x (n, n_in), y (n, n_out) and
    params [(w (n_in, n_out), b (n_out,)), ...]; every implementation starts from these."""
    _, params, batch = common.make_problem(tuple(sizes), n, "float32", seed)
    return (np.array(batch.x), np.array(batch.y),  # writable copies (torch.from_numpy warns on read-only)
            [(np.array(layer.w), np.array(layer.b)) for layer in params])


def gdjax_epoch_fn(x, y, params_np, eta, batch_size):
    net = gdjax.MLP(tuple([params_np[0][0].shape[0]] + [w.shape[1] for w, _ in params_np]))
    cost = gdjax.make_cost(net, "quadratic")
    opt = optax.sgd(eta)
    params = tuple(gdjax.Layer(jnp.asarray(w), jnp.asarray(b)) for w, b in params_np)
    key = jax.random.key(0)
    state = jax.tree_util.tree_map(jnp.copy, train.init(params, opt, key))
    data = gdjax.Batch(jnp.asarray(x), jnp.asarray(y))
    epoch = jax.jit(train.make_epoch(train.make_step(cost, opt), x.shape[0], batch_size), donate_argnums=0)
    compiled = []
    compile_s = profiling.time_fn(lambda: compiled.append(epoch.lower(state, data, train.epoch_key(key, 0)).compile()),
                                  repeats=1, warmup=0).median_s
    box = {"state": state, "e": 0}

    def run_epoch():
        box["state"], m = compiled[0](box["state"], data, train.epoch_key(key, box["e"]))
        box["e"] += 1
        return float(jnp.mean(m["cost"]))  # the one host sync: the epoch's mean mini-batch cost

    return run_epoch, compile_s


def torch_epoch_fn(x, y, params_np, eta, batch_size, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    layers = []
    for w, b in params_np:
        lin = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
    model = torch.nn.Sequential(*[m for lin in layers for m in (lin, torch.nn.Sigmoid())])
    opt = torch.optim.SGD(model.parameters(), lr=eta)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(0)

    def run_epoch():
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(n // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            a = model(xt[idx])
            loss = 0.5 * ((a - yt[idx]) ** 2).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() if i == n // batch_size - 1 else 0.0
        return total

    return run_epoch, torch.__version__


def numpy_epoch_fn(x, y, params_np, eta, batch_size):
    """network.py's update_mini_batch: backprop one example at a time (column vectors), sum, average, step."""
    ws = [w.T.copy() for w, _ in params_np]  # (n_out, n_in) as in network.py
    bs = [b[:, None].copy() for _, b in params_np]
    rng = np.random.default_rng(0)

    def backprop(xi, yi):
        acts = [xi]
        for w, b in zip(ws, bs):
            acts.append(1.0 / (1.0 + np.exp(-(w @ acts[-1] + b))))
        delta = (acts[-1] - yi) * (acts[-1] * (1 - acts[-1]))
        nb, nw = [delta], [delta @ acts[-2].T]
        for layer in range(2, len(ws) + 1):
            delta = (ws[-layer + 1].T @ delta) * (acts[-layer] * (1 - acts[-layer]))
            nb.insert(0, delta)
            nw.insert(0, delta @ acts[-layer - 1].T)
        return nb, nw

    def run_epoch():
        perm = rng.permutation(x.shape[0])
        for i in range(x.shape[0] // batch_size):
            grads = [backprop(x[j][:, None], y[j][:, None]) for j in perm[i * batch_size:(i + 1) * batch_size]]
            for k in range(len(ws)):
                ws[k] -= (eta / len(grads)) * sum(nw[k] for _, nw in grads)
                bs[k] -= (eta / len(grads)) * sum(nb[k] for nb, _ in grads)
        return 0.0

    run_epoch.params = lambda: [(w.T.copy(), b[:, 0].copy()) for w, b in zip(ws, bs)]  # (n_in, n_out) layout
    return run_epoch


def time_epochs(run_epoch, repeats: int) -> list[float]:
    """Seconds of each of `repeats` epochs after one untimed epoch (`gdjax.profiling.time_fn`)."""
    return list(profiling.time_fn(run_epoch, repeats=repeats).times)


def torch_rows(x, y, params, args) -> list[dict]:
    """PyTorch at its default thread count and at 1 thread (tiny ops: threads can hurt); the faster is "torch",
    the other "torch-slower-threads". [] with a message when torch is missing or --no-torch."""
    if args.no_torch:
        print(f"{NAME}: PyTorch comparison skipped (--no-torch)")
        return []
    try:
        import torch
    except ImportError:
        print(f"{NAME}: PyTorch not installed: comparison skipped (pip install torch==2.13.0, the CPU build, "
              "to include it)")
        return []
    default_threads = torch.get_num_threads()
    rows = []
    for threads in sorted({default_threads, 1}, reverse=True):
        run_t, torch_version = torch_epoch_fn(x, y, params, args.eta, args.batch_size, threads)
        rows.append(_row("torch", time_epochs(run_t, args.repeats), args.n, version=torch_version, threads=threads))
    torch.set_num_threads(default_threads)
    best = min(rows, key=lambda r: r["median_s"])
    for r in rows:
        if r is not best:
            r["impl"] = "torch-slower-threads"
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """ratio_vs_gdjax = median(impl) / median(gdjax), with each impl's target and whether it is met."""
    base = next(r["median_s"] for r in rows if r["impl"] == "gdjax")
    for r in rows:
        r["ratio_vs_gdjax"] = r["median_s"] / base
        r["target_ratio"] = TARGETS.get(r["impl"])
        r["target_status"] = common.target_status(r["ratio_vs_gdjax"] if r["target_ratio"] else None,
                                                  r["target_ratio"] or 0.0)
    return rows


def run(args) -> int:
    """Time the three implementations, write the JSON (+ CSV), print the table."""
    x, y, params = numpy_problem(args.net, args.n, args.seed)
    load0 = common.load_average()
    run_epoch, compile_s = gdjax_epoch_fn(x, y, params, args.eta, args.batch_size)
    rows = [_row("gdjax", time_epochs(run_epoch, args.repeats), args.n, compile_s=compile_s)]
    rows += torch_rows(x, y, params, args)
    m = args.numpy_examples or args.n
    run_np = numpy_epoch_fn(x[:m], y[:m], params, args.eta, args.batch_size)
    ts = [t * args.n / m for t in time_epochs(run_np, args.numpy_repeats)]
    rows.append(_row("numpy", ts, args.n, measured_examples=m, scaled=m != args.n))
    add_ratios(rows)
    config = {"n": args.n, "sizes": list(args.net), "batch_size": args.batch_size, "eta": args.eta,
              "repeats": args.repeats, "numpy_repeats": args.numpy_repeats, "seed": args.seed, "targets": TARGETS}
    out = results.save_results(args.path, rows, meta=common.meta(load0, dtype="float32"), config=config)
    print(report.training_throughput_table(results.load_results(out)))
    print(f"gdjax compile (once): {human_time(rows[0]['compile_s'])}")
    return common.wrote(out)


def _row(impl, ts, n, **extra):
    stats = common.time_stats(ts)
    return {"impl": impl, **stats, "examples_per_s": n / stats["median_s"], **extra}


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
