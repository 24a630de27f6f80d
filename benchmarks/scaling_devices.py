"""Strong scaling of the FD kernel: one gradient of a fixed network and batch over k devices and k processes.

    python benchmarks/scaling_devices.py            # devices 1, 2, 4 and processes 1, 2 on this machine
    python benchmarks/scaling_devices.py --quick    # a tiny network, seconds (the test runs this)

What is compared: the same FD gradient (`--method`, default the kernel's "fd-forward") with the direction axis
split over k devices -- forced host devices on CPU (`XLA_FLAGS=--xla_force_host_platform_device_count=k`, one
subprocess per k), or the first k GPUs -- and over k processes joined by JAX's distributed runtime on loopback
(`gdjax.distributed.launch`, one device each). The chunk size (directions per vmapped chunk per device) is the
same for every k, so every device runs the same kind of program on 1/k of the directions. Reported per k:
median time per gradient (after warm-up, `block_until_ready`, `--repeats` repetitions, min and max beside it),
speed-up t1 / tk and efficiency t1 / (k tk), where t1 is the same mode's one-device (one-process) time.

Read the CPU numbers with the machine in mind: forced host devices are threads of ONE process sharing the
machine's cores (`cpu_count` in the JSON), and XLA's CPU backend already spreads one device's matmuls over
several threads. So on a 2-core machine the speed-up cannot exceed about 2, whatever k; with 4 devices the
ideal efficiency there is 0.5, and anything else running on the machine shows up directly in the times.
Processes add the cost of the gloo collectives over TCP. Real speed-ups need real devices: several GPUs
(`--devices 1,2,4,8` on a multi-GPU host) or hosts.

Writes `benchmarks/results/<platform>/scaling_devices.json` (+ .csv, and a .jsonl of finished points: a rerun
with `--resume` skips them) and `scaling_devices.png` drawn from the JSON (`--plot-only` redraws it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"
NAME = "scaling_devices"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,2,4, got {text!r}")
    return values


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


QUICK = {"sizes": (8, 8, 4), "batch": 32, "chunk_size": 8, "repeats": 3, "devices": (1, 2), "processes": (1, 2)}
DEFAULTS = {"sizes": (64, 64, 10), "batch": 256, "chunk_size": 64, "repeats": 5, "devices": (1, 2, 4),
            "processes": (1, 2)}


def parse_args(argv=None):
    p = _Parser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny network, 1-2 devices and processes, 3 repeats "
                                                            "(options given explicitly still win)")
    p.add_argument("--sizes", type=_ints, default=None, help="layer widths (default 64,64,10: P = 4810)")
    p.add_argument("--batch", type=int, default=None, help="examples in the batch (default 256)")
    p.add_argument("--method", default="fd-forward", help="an FD method with a devices option (fd-forward, ...)")
    p.add_argument("--chunk-size", type=int, default=None, help="directions per vmapped chunk per device (64)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--devices", type=_ints, default=None, help="device counts to time (default 1,2,4)")
    p.add_argument("--processes", type=_ints, default=None, help="process counts to time, one device each (1,2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per point (default 5)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per measured point")
    p.add_argument("--out", type=Path, default=None, help="results folder (default results/<platform>/)")
    p.add_argument("--resume", action="store_true", help="keep the finished points of the .jsonl")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the JSON and stop")
    # internal: one measurement in this process
    p.add_argument("--worker", choices=("devices", "processes", "probe"), help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch", "chunk_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if len(args.sizes) < 2:
        p.error(f"--sizes needs at least two widths, got {args.sizes}")
    return args


# --- the worker: one measurement (runs in its own process) -----------------------------------------------------


def worker(args) -> dict | None:
    """Time one FD gradient on the first k devices (or all devices of k processes); the row, on process 0."""
    from gdjax import distributed

    distributed.initialize_from_env()  # set by the launcher in "processes" mode; a no-op otherwise
    import jax
    import numpy as np

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import gdjax
    from gdjax import profiling, results

    info = distributed.process_info()
    if args.worker == "probe":
        return {"platform": info.platform, "device_kind": jax.devices()[0].device_kind,
                "device_count": info.global_device_count}
    devices = jax.devices() if args.worker == "processes" else jax.devices()[: args.k]
    if len(devices) != args.k:
        raise ValueError(f"asked for {args.k} devices, this process sees {len(jax.devices())}")
    net = gdjax.MLP(tuple(args.sizes))
    cost = gdjax.make_cost(net, "quadratic")
    rng = np.random.default_rng(0)  # numpy: the same problem in every process, and no eager ops to compile
    params = tuple(gdjax.Layer((rng.normal(size=(m, n)) / np.sqrt(m)).astype(args.dtype), np.zeros(n, args.dtype))
                   for m, n in zip(args.sizes[:-1], args.sizes[1:]))  # LeCun-normal weights, zero biases
    batch = gdjax.Batch(rng.uniform(size=(args.batch, net.n_in)).astype(args.dtype),
                        np.eye(net.n_out, dtype=args.dtype)[rng.integers(0, net.n_out, size=args.batch)])
    est = gdjax.gradient(cost, args.method, chunk_size=args.chunk_size, devices=devices)
    timing = profiling.time_fn(est, params, batch, repeats=args.repeats, warmup=2)
    if info.process_id != 0:
        return None
    p = net.n_params()
    env = results.environment()
    return {
        "mode": args.worker, "k": args.k, "method": args.method, "sizes": ",".join(map(str, args.sizes)),
        "n_params": p, "batch": args.batch, "dtype": args.dtype, "chunk_size": args.chunk_size,
        "evaluations": float(est.evaluations(p)), "devices_total": info.global_device_count,
        "processes": info.num_processes, "median_s": timing.median_s, "min_s": timing.min_s,
        "max_s": timing.max_s, "compile_s": timing.compile_s, "times": list(timing.times),
        "platform": info.platform, "device_kind": env["device_kind"], "cpu_count": env["cpu_count"],
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "env": env,
    }


# --- the driver ------------------------------------------------------------------------------------------------


def _worker_argv(args, mode: str, k: int) -> list[str]:
    argv = [sys.executable, str(HERE), "--worker", mode, "--k", str(k), "--sizes", ",".join(map(str, args.sizes)),
            "--batch", str(args.batch), "--method", args.method, "--chunk-size", str(args.chunk_size),
            "--dtype", args.dtype, "--repeats", str(args.repeats)]
    return argv


def _env(args, host_devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDJAX_")}
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    flags += f" --xla_force_host_platform_device_count={host_devices}"
    env["XLA_FLAGS"] = flags.strip()
    return env


def _row_from(stdout: str) -> dict:
    for line in stdout.splitlines():
        if "RESULT {" in line:
            return json.loads(line.split("RESULT ", 1)[1])
    raise RuntimeError("the worker printed no RESULT line")


def run_point(args, mode: str, k: int, platform: str) -> dict:
    """Measure one (mode, k) point in fresh processes; returns process 0's row."""
    if mode == "devices":
        env = _env(args, k if platform == "cpu" else 1)
        proc = subprocess.run(_worker_argv(args, mode, k), env=env, text=True, capture_output=True,
                              timeout=args.timeout)
        if proc.returncode:
            raise RuntimeError(f"devices k={k} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return _row_from(proc.stdout)
    from gdjax import distributed

    out = io.StringIO()
    result = distributed.launch(_worker_argv(args, mode, k), k, timeout_s=args.timeout, env=_env(args, 1), out=out)
    if result.returncode:
        raise RuntimeError(f"processes k={k}: {result.message}\n{out.getvalue()[-2000:]}")
    return _row_from(out.getvalue())


def probe(args) -> dict:
    proc = subprocess.run([sys.executable, str(HERE), "--worker", "probe"], env=_env(args, 1), text=True,
                          capture_output=True, timeout=args.timeout)
    if proc.returncode:
        raise RuntimeError(f"probing the device failed: {proc.stderr.strip()[-2000:]}")
    return _row_from(proc.stdout)


def add_ratios(rows: list[dict]) -> list[dict]:
    """speed-up t1 / tk and efficiency t1 / (k tk) against the same mode's k = 1 row (None without one)."""
    base = {r["mode"]: r["median_s"] for r in rows if r["k"] == 1}
    for r in rows:
        t1 = base.get(r["mode"])
        r["speedup"] = t1 / r["median_s"] if t1 else None
        r["efficiency"] = t1 / (r["k"] * r["median_s"]) if t1 else None
    return rows


def plot(path: Path) -> Path:
    """Draw time per gradient and efficiency vs k, from the results file at `path`; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from gdjax import results

    data = results.load_results(path)
    rows, cfg = data["rows"], data["config"]
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, marker in (("devices", "o"), ("processes", "s")):
        pts = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["k"])
        if not pts:
            continue
        ks = [r["k"] for r in pts]
        ax_t.errorbar(ks, [r["median_s"] for r in pts], marker=marker, label=mode, capsize=3,
                      yerr=[[r["median_s"] - r["min_s"] for r in pts], [r["max_s"] - r["median_s"] for r in pts]])
        ax_t.plot(ks, [pts[0]["median_s"] / k for k in ks], ":", color="gray")
        ax_e.plot(ks, [r["efficiency"] for r in pts], marker=marker, label=mode)
    ax_t.set(xscale="log", yscale="log", xlabel="k (devices or processes)", ylabel="seconds per gradient",
             title=f"{cfg['method']}, sizes {cfg['sizes']}, batch {cfg['batch']} (dotted: ideal t1/k)")
    ax_e.axhline(1.0, color="gray", ls=":")
    cores = data["meta"].get("cpu_count")
    ks = sorted({r["k"] for r in rows})
    if data["meta"].get("platform") == "cpu" and cores:  # k devices on `cores` cores: efficiency <= cores / k
        ax_e.plot(ks, [min(1.0, cores / k) for k in ks], "--", color="gray", label=f"bound min(1, {cores}/k)")

    ax_e.set(xscale="log", ylim=(0, 1.1), xlabel="k", ylabel="efficiency t1 / (k tk)",
             title=f"strong scaling on {data['meta'].get('device_kind')} ({cores} cores)")
    for ax in (ax_t, ax_e):
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.legend()
    fig.tight_layout()
    png = Path(path).with_suffix(".png")
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, png)
    return png


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        row = worker(args)
        if row is not None:
            print("RESULT " + json.dumps(row), flush=True)
        return 0

    from gdjax import results

    dev = probe(args)
    folder = args.out or RESULTS / dev["platform"]  # cpu, gpu: as every benchmark here; meta names the device
    path = folder / f"{NAME}.json"
    if args.plot_only:
        print(plot(path))
        return 0
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
              if k not in ("worker", "k", "out", "resume", "plot_only", "timeout")}
    config["sizes"] = ",".join(map(str, args.sizes))
    points = [("devices", k) for k in args.devices]
    if dev["platform"] == "cpu":
        points += [("processes", k) for k in args.processes]
    else:  # one process per accelerator needs as many accelerators; not attempted here
        print(f"note: process scaling runs on CPU only here ({dev['platform']}: see README 'distributed')")
        points = [(m, k) for m, k in points if k <= dev["device_count"]]
    jsonl = folder / f"{NAME}.jsonl"
    same = {k: config[k] for k in ("sizes", "batch", "method", "chunk_size", "dtype", "repeats")}
    done = {}
    if args.resume and jsonl.exists():
        for r in results.read_jsonl(jsonl):
            if r.get("config") == same:
                done[(r["mode"], r["k"])] = r
    elif jsonl.exists():
        jsonl.unlink()
    rows, meta = [], None
    for mode, k in points:
        row = done.get((mode, k))
        if row is None:
            row = run_point(args, mode, k, dev["platform"])
            row["config"] = same
            results.append_jsonl(jsonl, row)
        meta = meta or row["env"]
        rows.append(row)
        print(f"{mode:>9} k={k}: {row['median_s'] * 1e3:9.2f} ms per gradient "
              f"(min {row['min_s'] * 1e3:.2f}, max {row['max_s'] * 1e3:.2f}, compile {row['compile_s']:.2f} s)",
              flush=True)
    rows = add_ratios([{k: v for k, v in r.items() if k not in ("env", "config", "times")} | {"times": r["times"]}
                       for r in rows])
    meta = dict(meta or {}, command=" ".join([Path(sys.executable).name, *sys.argv]))
    meta["note"] = (f"forced host devices share this machine's {meta.get('cpu_count')} cores: on CPU the speed-up "
                    "is bounded by the core count, not by k") if dev["platform"] == "cpu" else ""
    results.save_results(path, rows, meta=meta, config=config)
    png = plot(path)
    print(f"{'mode':>9} {'k':>3} {'median ms':>10} {'speed-up':>10} {'efficiency':>10}")
    for r in rows:
        ratios = "".join(f"{r[name]:10.2f}" if r[name] is not None else f"{'-':>10}" for name in ("speedup", "efficiency"))
        print(f"{r['mode']:>9} {r['k']:>3} {r['median_s'] * 1e3:10.2f}{ratios}")
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, TypeError, RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        print(f"scaling_devices: error: {str(err).strip().splitlines()[0] if str(err).strip() else err!r}",
              file=sys.stderr)
        sys.exit(1)
