"""Training throughput: one epoch of mini-batch SGD with gdjax vs a PyTorch eager loop vs a NumPy per-example loop.

The lecture's setting: 10,000 examples (x ~ U[0, 1]^784, random one-hot labels), network [784, 30, 10], sigmoid
hidden and output units, quadratic cost, plain SGD eta = 3.0, mini-batch 10 (1000 steps per epoch), float32.
  gdjax:   `gdjax.train.make_epoch` jitted once (donated state): shuffle, then 1000 steps under one `lax.scan`;
           per-step metrics (cost, gradient norm) stay on the device; one host sync per epoch.
  PyTorch: the usual eager loop (randperm, index, forward, loss.backward(), optimizer.step()) with
           torch.optim.SGD; optional (`pip install torch==2.13.0`, CPU build): skipped with a message without it.
           Timed with torch's default thread count and with 1 thread; the faster is the baseline ("torch"), the
           other is kept as "torch-slower-threads".
  NumPy:   Nielsen's network.py style: for every mini-batch, backpropagation one example at a time (the four
           equations, column vectors), then the averaged update. Our own code, below.
All three are timed in the same run: warm-up epoch first (compiles / allocates), then `--repeats` epochs each,
median and min/max reported; ratios = median(other) / median(gdjax). Targets: >= 8x PyTorch, >= 20x NumPy.
Writes benchmarks/results/<platform>/training_throughput.json (+ .csv).

    python benchmarks/training_throughput.py                 # ~1 min
    python benchmarks/training_throughput.py --repeats 3 --numpy-examples 2000   # quicker NumPy (scaled up)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gdjax  # noqa: E402
from gdjax import profiling, results, train  # noqa: E402

TARGETS = {"torch": 8.0, "numpy": 20.0}


def make_data(n: int, n_in: int, n_out: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_in), dtype=np.float32)
    y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, n)]
    return x, y


def init_params(sizes, seed: int):
    """Nielsen's init (N(0, 1) weights and biases) as NumPy float32 arrays, w: (n_in, n_out)."""
    rng = np.random.default_rng(seed + 1)
    return [(rng.standard_normal((a, b)).astype(np.float32), rng.standard_normal(b).astype(np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])]


# --- gdjax ---------------------------------------------------------------------------------------------------


def gdjax_epoch_fn(x, y, params_np, eta, batch_size):
    net = gdjax.MLP(tuple([params_np[0][0].shape[0]] + [w.shape[1] for w, _ in params_np]))
    cost = gdjax.make_cost(net, "quadratic")
    opt = optax.sgd(eta)
    params = tuple(gdjax.Layer(jnp.asarray(w), jnp.asarray(b)) for w, b in params_np)
    key = jax.random.key(0)
    state = jax.tree_util.tree_map(jnp.copy, train.init(params, opt, key))
    data = gdjax.Batch(jnp.asarray(x), jnp.asarray(y))
    epoch = jax.jit(train.make_epoch(train.make_step(cost, opt), x.shape[0], batch_size), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = epoch.lower(state, data, train.epoch_key(key, 0)).compile()
    compile_s = time.perf_counter() - t0
    box = {"state": state, "e": 0}

    def run_epoch():
        box["state"], m = compiled(box["state"], data, train.epoch_key(key, box["e"]))
        box["e"] += 1
        return float(jnp.mean(m["cost"]))  # the one host sync: the epoch's mean mini-batch cost

    return run_epoch, compile_s


# --- PyTorch (optional) ----------------------------------------------------------------------------------------


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


# --- NumPy, Nielsen-style per-example backprop -------------------------------------------------------------------


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_epoch_fn(x, y, params_np, eta, batch_size):
    """network.py's update_mini_batch: backprop one example at a time (column vectors), sum, average, step."""
    ws = [w.T.copy() for w, _ in params_np]  # (n_out, n_in) as in network.py
    bs = [b[:, None].copy() for _, b in params_np]
    rng = np.random.default_rng(0)
    n = x.shape[0]

    def backprop(xi, yi):
        act, acts, zs = xi, [xi], []
        for w, b in zip(ws, bs):
            z = w @ act + b
            zs.append(z)
            act = _sigmoid(z)
            acts.append(act)
        sp = acts[-1] * (1 - acts[-1])
        delta = (acts[-1] - yi) * sp
        nb, nw = [None] * len(ws), [None] * len(ws)
        nb[-1], nw[-1] = delta, delta @ acts[-2].T
        for layer in range(2, len(ws) + 1):
            s = acts[-layer] * (1 - acts[-layer])
            delta = (ws[-layer + 1].T @ delta) * s
            nb[-layer], nw[-layer] = delta, delta @ acts[-layer - 1].T
        return nb, nw

    def run_epoch():
        perm = rng.permutation(n)
        for i in range(n // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            sum_b = [np.zeros_like(b) for b in bs]
            sum_w = [np.zeros_like(w) for w in ws]
            for j in idx:
                db, dw = backprop(x[j][:, None], y[j][:, None])
                sum_b = [s + d for s, d in zip(sum_b, db)]
                sum_w = [s + d for s, d in zip(sum_w, dw)]
            for k in range(len(ws)):
                ws[k] -= (eta / len(idx)) * sum_w[k]
                bs[k] -= (eta / len(idx)) * sum_b[k]
        return 0.0

    run_epoch.params = lambda: [(w.T.copy(), b[:, 0].copy()) for w, b in zip(ws, bs)]  # (n_in, n_out) layout
    return run_epoch


def time_epochs(run_epoch, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` epochs after `warmup` untimed ones (gdjax.profiling.time_fn's loop; it
    waits on JAX results and passes the NumPy / PyTorch loops' plain return values through)."""
    return list(profiling.time_fn(run_epoch, repeats=repeats, warmup=warmup).times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="examples per epoch")
    ap.add_argument("--sizes", default="784,30,10")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=7, help="timed epochs per implementation (gdjax, torch)")
    ap.add_argument("--numpy-repeats", type=int, default=3)
    ap.add_argument("--numpy-examples", type=int, default=0,
                    help="time the NumPy loop on this many examples and scale to --n (0: all)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/<platform>/...)")
    args = ap.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
        for name in ("n", "batch_size", "repeats", "numpy_repeats"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if args.batch_size > args.n:
            raise ValueError(f"--batch-size {args.batch_size} is larger than --n {args.n}")
        if not (np.isfinite(args.eta) and args.eta > 0):
            raise ValueError(f"--eta must be finite and > 0, got {args.eta}")
    except ValueError as err:
        print(f"training_throughput: error: {err}", file=sys.stderr)
        return 2
    x, y = make_data(args.n, sizes[0], sizes[-1], 0)
    params = init_params(sizes, 0)
    rows = []
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    run_epoch, compile_s = gdjax_epoch_fn(x, y, params, args.eta, args.batch_size)
    ts = time_epochs(run_epoch, args.repeats)
    rows.append(_row("gdjax", ts, args, compile_s=compile_s))

    if args.no_torch:
        print("training_throughput: PyTorch comparison skipped (--no-torch)")
    else:
        try:
            import torch
        except ImportError:
            print("training_throughput: PyTorch not installed: comparison skipped "
                  "(pip install torch==2.13.0, the CPU build, to include it)")
        else:
            # the strongest eager baseline: torch's default thread count and 1 thread (tiny ops: threads can hurt)
            default_threads = torch.get_num_threads()
            for threads in sorted({args.torch_threads or default_threads, 1}, reverse=True):
                run_t, torch_version = torch_epoch_fn(x, y, params, args.eta, args.batch_size, threads)
                rows.append(_row("torch", time_epochs(run_t, args.repeats), args, version=torch_version,
                                 threads=threads))
            torch.set_num_threads(default_threads)
            t_rows = [r for r in rows if r["impl"] == "torch"]
            best = min(t_rows, key=lambda r: r["median_s"])
            for r in t_rows:
                if r is not best:
                    r["impl"] = "torch-slower-threads"

    m = args.numpy_examples or args.n
    xs, ys = x[:m], y[:m]
    run_np = numpy_epoch_fn(xs, ys, params, args.eta, args.batch_size)
    ts = [t * args.n / m for t in time_epochs(run_np, args.numpy_repeats)]
    rows.append(_row("numpy", ts, args, measured_examples=m, scaled=m != args.n))

    base = rows[0]["median_s"]
    for r in rows:
        r["ratio_vs_gdjax"] = r["median_s"] / base
        r["target_ratio"] = TARGETS.get(r["impl"])
        r["meets_target"] = None if r["target_ratio"] is None else r["ratio_vs_gdjax"] >= r["target_ratio"]
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = results.environment()
    meta.update({"dtype": "float32", "load_avg_1min_start": load0, "load_avg_1min_end": load1})
    config = {"n": args.n, "sizes": list(sizes), "batch_size": args.batch_size, "eta": args.eta,
              "repeats": args.repeats, "numpy_repeats": args.numpy_repeats, "targets": TARGETS}
    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results" / meta["platform"] / "training_throughput.json")
    results.save_results(out, rows, meta=meta, config=config)

    print(f"one epoch: {args.n} examples, {args.sizes}, mini-batch {args.batch_size}, eta {args.eta}, float32 "
          f"(load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'impl':<8} {'median s':>10} {'min s':>9} {'max s':>9} {'x gdjax':>8}  target")
    for r in rows:
        tgt = "" if r["target_ratio"] is None else (f">= {r['target_ratio']:g}x "
                                                    f"{'PASS' if r['meets_target'] else 'SHORT'}")
        note = " (scaled from %d examples)" % r["measured_examples"] if r.get("scaled") else ""
        print(f"{r['impl']:<8} {r['median_s']:10.4f} {r['min_s']:9.4f} {r['max_s']:9.4f} "
              f"{r['ratio_vs_gdjax']:8.1f}  {tgt}{note}")
    print(f"gdjax compile (once): {rows[0]['compile_s']:.2f} s; wrote {out}")
    return 0


def _row(impl, ts, args, **extra):
    return {"impl": impl, "median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "max_s": float(np.max(ts)),
            "times_s": [float(t) for t in ts], "examples_per_s": args.n / float(np.median(ts)), **extra}


if __name__ == "__main__":
    sys.exit(main())
