"""Strong scaling of the FD kernel: one gradient of a fixed network and batch over k devices and k processes.

    python benchmarks/scaling_devices.py            # devices 1, 2 and processes 1, 2, each on its own core
    python benchmarks/scaling_devices.py --quick    # a tiny network, seconds (the test runs this)
    python benchmarks/scaling_devices.py --no-pin   # every worker on every core (XLA's own threading)

The same FD gradient (`--method`, default "fd-forward") with its directions split over k devices (forced host
devices on CPU, `--xla_force_host_platform_device_count=k`, one subprocess per k; or the first k GPUs) and over k
processes joined by JAX's distributed runtime on loopback (`gdjax.launch.launch`, one device each), at the same
chunk size for every k. Per k: median time per gradient (`gdjax.profiling.time_fn`, `--repeats`, min and max
beside it), speed-up t1 / tk and efficiency t1 / (k tk) against the same mode's k = 1.

On CPU (unless `--no-pin`) each device or process gets its own core (`gdjax.launch.pin_command`, set before the
interpreter starts) and runs `--xla_cpu_multi_thread_eigen=false`, so t1 / tk measures the split of the
directions, not XLA's intra-op threading; a point with more workers than cores runs unpinned (`pinned: false`).
Unpinned, forced host devices share the machine's cores and the speed-up cannot exceed about the core count.

The problem is `_common.make_problem`'s (drawn with NumPy: the same in every process). Output: <out>/
scaling_devices.json (+ .csv, a .jsonl of finished points that `--resume` keeps) and scaling_devices.{png,svg}
(`--plot-only` redraws them); default <out> runs/scaling_devices-<date>/ (git-ignored). Errors: one line on
stderr, exit status 2 (bad options) or 1.
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
sys.path.insert(0, str(HERE.parent))  # benchmarks/_common.py

import _common as common  # noqa: E402

from gdjax.bench.report import human_time  # noqa: E402

NAME = "scaling_devices"
QUICK = {"sizes": "8,8,4", "batch": 32, "chunk_size": 8, "repeats": 3, "devices": "1,2", "processes": "1,2"}
# the lecture's net: one fd-forward gradient takes over a second on one core (23,861 evaluations on 256 examples)
DEFAULTS = {"sizes": "784,30,10", "batch": 256, "chunk_size": 64, "repeats": 5, "devices": "1,2",
            "processes": "1,2"}
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"  # one thread per device's program (XLA's CPU flag)


def parse_args(argv):
    """The options, every one checked before any work (UsageError: one line, exit status 2)."""
    from gdjax.gradients import available_methods, method_info

    p = common.Parser(NAME, __doc__, f"{NAME}.json",
                      quick="tiny network, 1-2 devices and processes, 3 repeats (options given explicitly still win)")
    p.add_argument("--sizes", default=None, help="layer widths (default 784,30,10: P = 23,860)")
    p.add_argument("--batch", type=int, default=None, help="examples in the batch (default 256)")
    p.add_argument("--method", default="fd-forward", help="a method with a `devices` option (default fd-forward)")
    p.add_argument("--chunk-size", type=int, default=None, help="directions per vmapped chunk per device (64)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--devices", default=None, help="device counts to time (default 1,2)")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin workers to their own cores, nor make each device single-threaded")
    p.add_argument("--processes", default=None, help="process counts to time, one device each (1,2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per point (default 5)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per measured point")
    p.add_argument("--resume", action="store_true", help="keep the finished points of the .jsonl")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the JSON and stop")
    # internal: one measurement in this process
    p.add_argument("--worker", choices=("devices", "processes", "probe"), help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse(argv, DEFAULTS, QUICK)
    args.net = common.sizes_list(args.sizes, one=True)[0]
    args.device_counts = common.int_list(args.devices, "--devices")
    args.process_counts = common.int_list(args.processes, "--processes")
    if not args.device_counts:
        raise common.UsageError("--devices: give at least one device count, e.g. 1,2,4")
    common.require(args, 1, "batch", "chunk_size", "repeats", "k")
    common.require(args, 0, "timeout", strict=True)
    if args.plot_only and not args.path.exists():
        raise common.UsageError(f"--plot-only: no results file {args.path}; give --out with an earlier run's folder")
    if args.method not in available_methods() or "devices" not in method_info(args.method).options:
        valid = [m for m in available_methods() if "devices" in method_info(m).options]
        raise common.UsageError(f"--method: {args.method!r} cannot split its work over devices; use one of "
                                f"{', '.join(valid)}")
    return args


def worker(args) -> dict | None:
    """Time one FD gradient on the first k devices (or all devices of k processes); the row, on process 0."""
    from gdjax import distributed

    distributed.initialize_from_env()  # set by the launcher in "processes" mode; a no-op otherwise
    import jax

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
    # the shared problem, drawn with numpy: the same in every process, and no eager ops to compile
    cost, params, batch = common.make_problem(args.net, args.batch, args.dtype, args.seed)
    est = gdjax.gradient(cost, args.method, chunk_size=args.chunk_size, devices=devices)
    timing = profiling.time_fn(est, params, batch, repeats=args.repeats, warmup=2)
    if info.process_id != 0:
        return None
    p = gdjax.n_params(params)
    env = results.environment()
    return {
        "mode": args.worker, "k": args.k, "method": args.method, "sizes": ",".join(map(str, args.net)),
        "n_params": p, "batch": args.batch, "dtype": args.dtype, "chunk_size": args.chunk_size,
        "evaluations": float(est.evaluations(p)), "devices_total": info.global_device_count,
        "processes": info.num_processes, "median_s": timing.median_s, "min_s": timing.min_s,
        "max_s": timing.max_s, "compile_s": timing.compile_s, "times": list(timing.times),
        "platform": info.platform, "device_kind": env["device_kind"], "cpu_count": env["cpu_count"],
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpus": _affinity(), "env": env,
    }


def _affinity() -> list[int] | None:
    """The cores this process may run on (what pinning set), or None where the OS does not say."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _worker_argv(args, mode: str, k: int) -> list[str]:
    return [sys.executable, str(HERE), "--worker", mode, "--k", str(k), "--sizes", ",".join(map(str, args.net)),
            "--batch", str(args.batch), "--method", args.method, "--chunk-size", str(args.chunk_size),
            "--dtype", args.dtype, "--repeats", str(args.repeats), "--seed", str(args.seed)]


def _env(args, host_devices: int, single_thread: bool = False) -> dict:
    """The workers' environment: forced host devices, and (pinned runs) one thread per device's program."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDJAX_")}
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+|--xla_cpu_multi_thread_eigen=\S+", "",
                   env.get("XLA_FLAGS", ""))
    flags += f" --xla_force_host_platform_device_count={host_devices}"
    if single_thread:
        flags += f" {SINGLE_THREAD}"
    env["XLA_FLAGS"] = " ".join(flags.split())
    return env


def core_plan(mode: str, k: int, cores, pin: bool) -> list[frozenset] | None:
    """The cores of each worker process of a (mode, k) point: devices, one process on the first k cores;
    processes, process i on core i. None (unpinned) without `pin`, on a platform that cannot pin, or when k
    exceeds the cores available (`cores`, sorted ids)."""
    if not pin or cores is None or k > len(cores):
        return None
    if mode == "devices":
        return [frozenset(cores[:k])]
    return [frozenset({c}) for c in cores[:k]]


def _row_from(stdout: str) -> dict:
    """Process 0's RESULT row, with `cpus_per_process`: each worker's cores, in process order ("[i] " prefixes
    under launch)."""
    cpus = {}
    for line in stdout.splitlines():
        m = re.match(r"(?:\[(\d+)\] )?CPUS (.*)$", line)
        if m:
            cpus[int(m.group(1) or 0)] = json.loads(m.group(2))
    for line in stdout.splitlines():
        if "RESULT {" in line:
            return {**json.loads(line.split("RESULT ", 1)[1]), "cpus_per_process": [cpus[i] for i in sorted(cpus)]}
    raise RuntimeError("the worker printed no RESULT line")


def run_point(args, mode: str, k: int, platform: str) -> dict:
    """Measure one (mode, k) point in fresh processes, each pinned to its cores (`core_plan`) on CPU; returns
    process 0's row, with `pinned`."""
    from gdjax.launch import launch, pin_command

    plan = core_plan(mode, k, _affinity(), args.pin and platform == "cpu")
    single = plan is not None
    if mode == "devices":
        argv = _worker_argv(args, mode, k)
        return {**_worker(argv if plan is None else pin_command(argv, plan[0]),
                          _env(args, k if platform == "cpu" else 1, single), args.timeout, f"devices k={k}"),
                "pinned": single}
    out = io.StringIO()
    result = launch(_worker_argv(args, mode, k), k, timeout_s=args.timeout, env=_env(args, 1, single), out=out,
                    cpus=plan)
    if result.returncode:
        raise RuntimeError(f"processes k={k}: {result.message}\n{out.getvalue()[-2000:]}")
    return {**_row_from(out.getvalue()), "pinned": single}


def _worker(argv, env, timeout: float, what: str) -> dict:
    """The row a one-process worker prints (`_row_from`); RuntimeError with its stderr's tail when it fails."""
    proc = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return _row_from(proc.stdout)


def add_ratios(rows: list[dict]) -> list[dict]:
    """speed-up t1 / tk and efficiency t1 / (k tk) against the same mode's k = 1 row (None without one)."""
    base = {r["mode"]: r["median_s"] for r in rows if r["k"] == 1}
    for r in rows:
        t1 = base.get(r["mode"])
        r["speedup"] = t1 / r["median_s"] if t1 else None
        r["efficiency"] = t1 / (r["k"] * r["median_s"]) if t1 else None
    return rows


def plot(path: Path) -> list[Path]:
    """Draw time per gradient and efficiency vs k from the results file at `path`: its .png and .svg paths."""
    import matplotlib.ticker

    from gdjax import plotting, results

    plt = plotting.plt
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
    return plotting.save_figure(fig, Path(path).with_suffix(""))


def point_config(args) -> dict:
    """The options a measured point depends on (a resumed point must match them)."""
    return {"sizes": ",".join(map(str, args.net)), "batch": args.batch, "method": args.method,
            "chunk_size": args.chunk_size, "dtype": args.dtype, "repeats": args.repeats, "seed": args.seed,
            "pin": args.pin}


def measure(args, platform: str, device_count: int, jsonl: Path) -> list[dict]:
    """Every (mode, k) point, each in fresh processes, appended to `jsonl` as it finishes; with --resume the
    points already there (same problem and options) are kept. Rows of process 0, in plan order."""
    from gdjax import results

    points = [("devices", k) for k in args.device_counts]
    if platform == "cpu":
        points += [("processes", k) for k in args.process_counts]
    else:  # one process per accelerator needs as many accelerators; not attempted here
        print(f"note: process scaling runs on CPU only here ({platform}: see README 'distributed')")
        points = [(m, k) for m, k in points if k <= device_count]
    same = point_config(args)
    done = {}
    if args.resume:
        done = {(r["mode"], r["k"]): r for r in results.read_jsonl(jsonl) if r.get("config") == same}
    elif jsonl.exists():
        jsonl.unlink()
    rows = []
    for mode, k in points:
        row = done.get((mode, k))
        if row is None:
            row = run_point(args, mode, k, platform)
            row["config"] = same
            results.append_jsonl(jsonl, row)
        rows.append(row)
        print(f"{mode:>9} k={k}: {human_time(row['median_s'])} per gradient", flush=True)
    return rows


def run(args) -> int:
    """The worker's one measurement, or the driver: probe, measure every point, write, draw, print."""
    if args.worker:
        row = worker(args)
        print("CPUS " + json.dumps(_affinity()), flush=True)  # every process: the driver checks the pinning
        if row is not None:
            print("RESULT " + json.dumps(row), flush=True)
        return 0
    from gdjax import results
    from gdjax.report import benchmarks as report

    path = args.path
    if args.plot_only:
        print(*plot(path))
        return 0
    load0 = common.load_average()
    dev = _worker([sys.executable, str(HERE), "--worker", "probe"], _env(args, 1), args.timeout,
                  "probing the device")  # in a subprocess: this process never holds a device (the workers need them)
    rows = measure(args, dev["platform"], dev["device_count"], path.with_suffix(".jsonl"))
    # meta: the workers' environment (device, versions, git commit and git_dirty), this command and the load
    meta = dict(rows[0]["env"], command=" ".join([Path(sys.executable).name, *sys.argv]),
                load_avg_1min_start=load0, load_avg_1min_end=common.load_average())
    meta["note"] = "" if dev["platform"] != "cpu" else (
        f"each device / process pinned to its own core ({SINGLE_THREAD}); points with more workers than the "
        f"{len(_affinity() or [])} cores available run unpinned (pinned: false)" if args.pin else
        f"unpinned: forced host devices share this machine's {meta.get('cpu_count')} cores, so on CPU the "
        "speed-up is bounded by the core count, not by k")
    rows = add_ratios([{k: v for k, v in r.items() if k not in ("env", "config")} for r in rows])
    config = {**point_config(args), "devices": args.device_counts, "processes": args.process_counts,
              "quick": args.quick}
    results.save_results(path, rows, meta=meta, config=config)
    print(report.scaling_devices_table(results.load_results(path)))
    return common.wrote(path, *plot(path))


def main(argv=None) -> int:
    return common.run_main(NAME, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
