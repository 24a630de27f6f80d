"""Tables of the benchmark results under `benchmarks/results/cpu/`: one small renderer per table.

Each renderer reads only its file's `rows`, `config` and `meta`; `~` marks a time extrapolated from a subset.
"""

from __future__ import annotations

from gdjax.bench import analysis
from gdjax.bench.analysis import million_table
from gdjax.bench.config import EPOCH_BATCH, EPOCH_STEPS, FORWARD_PASS, MILLION_EXAMPLES
from gdjax.gradients import KINDS, available_methods, reference_method
from gdjax.report._core import (consistency, fmt_e, fmt_g, fmt_int, fmt_pct, fmt_s, fmt_x, median_spread, one, renderer,
                                select, source, stored_spread, table, target_note)

CPU = "benchmarks/results/cpu"
LECTURE = "784-30-10"

source("fd_vs_grad", f"{CPU}/fd_vs_grad.json", ["benchmarks/fd_vs_grad.py"], "bench")
source("fd_kernel", f"{CPU}/fd_kernel.json", ["benchmarks/fd_kernel.py"], "bench-fd-kernel")
source("estimators", f"{CPU}/estimators.json", ["benchmarks/estimators.py"], "bench-estimators")
source("training_throughput", f"{CPU}/training_throughput.json", ["benchmarks/training_throughput.py"],
       "bench-throughput")
source("scaling_devices", f"{CPU}/scaling_devices.json", ["benchmarks/scaling_devices.py"], "scaling-devices")
# Results files without a table renderer yet (written by the newer benchmarks): registered for staleness only.
source("fd_vs_grad_full", "benchmarks/results/cpu/fd_vs_grad_full.json", ["benchmarks/fd_vs_grad.py"], "bench-full")
source("equal_budget", "benchmarks/results/cpu/equal_budget.json", ["benchmarks/equal_budget.py"], "bench-budget")
source("gradcheck", "benchmarks/results/cpu/gradcheck.json", ["benchmarks/gradcheck.py"], "gradcheck")

def _label(method: str) -> str:
    """A method's name in tables, with its registry label ("`fd-loop` (naive)"); the forward pass alone is the
    benchmark's own row, not a method."""
    if method == FORWARD_PASS:
        return "forward pass alone"
    label = _entry(method).label if _entry(method) else ""
    return f"`{method}`" + (f" ({label})" if label else "")


def _entry(method: str):
    """The registry entry of `method` (its capabilities and theory), or None for a method this gdjax does not
    register (a results file written by another version)."""
    from gdjax.gradients import available_methods, method_info

    return method_info(method) if method in available_methods() else None


def _time(row, validation=None) -> str:
    """A row's time, `~` when extrapolated; with the run's `validation`, an extrapolation that reaches further
    than any the run validated says so: '~7.6 days (34,268x: unvalidated)'."""
    text = ("~" if row["extrapolated"] else "") + fmt_s(row["median_s"])
    if validation is not None and analysis.unvalidated(row, validation):
        text += f" ({fmt_int(analysis.extrapolation_factor(row))}x: unvalidated)"
    return text


def _unvalidated_note(data) -> str:
    """The sentence that defines 'unvalidated' for a run: the largest extrapolation factor it validated."""
    largest = analysis.validated_factor(data.get("validation") or [])
    reach = f"{fmt_g(largest)}x" if largest else "nothing"
    return (f"`unvalidated`: extrapolated over more directions than the largest factor (whole / timed directions) "
            f"this run checked against a whole gradient ({reach})")


def _pct_of_matmul(row) -> str:
    """% of the matmul reference; above 100% flagged '!' (the reference is then not this machine's ceiling for
    that program: see the row's `over_reference_reason`)."""
    f = row.get("peak_fraction")
    return fmt_pct(f) + ("!" if f is not None and f > 1 else "")


def _lecture_rows(data):
    rows = select(data["rows"], group="sweep", sizes=LECTURE)
    if not rows:
        one(data["rows"], group="sweep", sizes=LECTURE)  # raises MissingRow naming the selection
    return sorted(rows, key=lambda r: r["median_s"])


@renderer("fd_vs_grad.headline", "fd_vs_grad_full")
def fd_vs_grad_headline(data) -> str:
    """[784, 30, 10]: time per gradient, / reverse, % of the matmul rate, relative error, per method."""
    rows = _lecture_rows(data)
    ref = reference_method()
    rev = one(rows, method=ref)["median_s"]
    r0 = rows[0]
    meta = data["meta"]
    cores = f", {meta['cpu_count']} cores" if meta.get("platform") == "cpu" and meta.get("cpu_count") else ""
    validation = data.get("validation") or []
    over = any((r.get("peak_fraction") or 0) > 1 for r in rows)
    head = (f"[784, 30, 10], P = {r0['P']:,}, N = {r0['batch_size']}, {r0['dtype']}, on {meta['device_kind']}{cores}"
            f" (`~`: timed on two parts of the method's own program and extrapolated, `extrapolated` in the JSON"
            + ("; " + _unvalidated_note(data) if any(analysis.unvalidated(r, validation) for r in rows) else "")
            + ("; `!`: above 100% of the matmul reference, which is then no ceiling for that program" if over else "")
            + "):\n\n")
    # the reworked bench measures forward-pass equivalents (XLA FLOPs); older files count cost evaluations
    cost, title = ("forward_equivalents", "forward-pass equivalents (XLA FLOPs)") if "forward_equivalents" in r0 \
        else ("evaluations", "cost evaluations")
    dot = any("forward_equivalents_dot" in r for r in rows)  # dot/convolution FLOPs only: no random numbers
    if dot:
        title = "forward-pass equivalents (all XLA FLOPs, random-number generation included)"
    body = [[_label(r["method"]), fmt_int(r[cost]) if cost == "evaluations" else fmt_g(r[cost]),
             *([fmt_g(r.get("forward_equivalents_dot"))] if dot else []), _time(r, validation),
             ("~" if r["extrapolated"] else "") + fmt_g(r["median_s"] / rev), _pct_of_matmul(r),
             _error(r)] for r in rows]
    return head + table(["method", title, *(["forward-pass equivalents (dot and convolution FLOPs)"] if dot else []),
                         "time per gradient", f"/ {ref}", "% of matmul rate", "rel. error vs f64 grad"], body)


def _stochastic(method: str) -> bool:
    """The registry's capability (a method unknown to this gdjax counts as deterministic)."""
    return bool(_entry(method) and _entry(method).stochastic)


def _error(row) -> str:
    """A row's relative error; for a stochastic estimator, mean +- std over keys with k (the directions per
    gradient) where the row has them (the sweep's `rel_error_mean` / `rel_error_std` over `error_keys`, or the
    ladder's `rel_error` / `rel_error_std` over `keys`), else the one draw it is, said so."""
    keys = row.get("error_keys") or row.get("keys")  # the sweep's column, the estimator ladder's column
    k = f", k = {row['num_directions']}" if row.get("num_directions") else ""
    if row.get("rel_error_std") is not None and keys:
        mean = row["rel_error_mean"] if row.get("rel_error_mean") is not None else row["rel_error"]
        return _spread_over_keys(mean, row["rel_error_std"], f"{keys} keys{k}")
    if _stochastic(row["method"]) and row.get("rel_error") is not None:
        return f"{fmt_e(row['rel_error'])} (one key{k})"
    return fmt_e(row["rel_error"])


def _spread_over_keys(mean, std, keys: str) -> str:
    """'mean +- std (keys)', both to 2 significant digits: a stochastic error over several keys."""
    return f"{fmt_g(mean, 2)} +- {fmt_g(std, 2)} ({keys})"


@renderer("fd_vs_grad.methods", "fd_vs_grad_full")
def fd_vs_grad_methods(data) -> str:
    """The methods: theoretical cost and error order (their registry entries) beside the measured error at
    [784, 30, 10]; exact methods first, then FD, then stochastic, within each those whose cost is one pass
    before those timed per direction (`subset`), then in registration order."""
    rows = [r for r in _lecture_rows(data) if r["method"] != FORWARD_PASS]
    r0 = rows[0]
    body = [[f"`{r['method']}`", *_theory(r["method"]), _error(r)] for r in sorted(rows, key=lambda r: _order(r["method"]))]
    return table(["method", "cost per gradient (F = one forward pass)", "error, in theory",
                  f"measured rel. error ({r0['dtype']}, [784, 30, 10], N = {r0['batch_size']})"], body,
                 ["l", "l", "l", "r"])


def _theory(method: str) -> tuple[str, str]:
    """(cost per gradient, error in theory) from the method's registry entry; "-" for a method not registered."""
    e = _entry(method)
    return (e.cost_formula, e.error_order) if e else ("-", "-")


def _order(method: str) -> tuple:
    """Where a method's row goes in the methods table (`fd_vs_grad_methods`); unregistered methods last."""
    e = _entry(method)
    return (KINDS.index(e.kind), e.subset, available_methods().index(method)) if e else (len(KINDS),)


def _bench_targets(data) -> list[dict]:
    """The benchmark's targets recomputed from the file's rows and validation (`analysis.targets`), never read
    from its stored `targets` list (which `fd_vs_grad_stored_targets` checks against these)."""
    cfg = data["config"]
    return analysis.targets(data["rows"], data.get("validation") or [], cfg.get("batch_size", 1000),
                            cfg.get("dtype", "float32"))


@renderer("fd_vs_grad.targets", "fd_vs_grad_full")
def fd_vs_grad_targets(data) -> str:
    """The benchmark's targets, each met or short, recomputed from the committed run's rows."""
    body = [[t["target"], fmt_g(t["value"]), target_note(t["value"], t["threshold"], t["comparison"]), t["how"]]
            for t in _bench_targets(data)]
    return table(["target", "measured", "status", "how"], body, ["l", "r", "l", "l"])


def _stored_mismatch(stored, recomputed, key="target", fields=("value", "status")) -> list[str]:
    """One line per stored target whose fields differ from the recomputed ones (relative 1e-9 for numbers)."""
    import math

    fresh = {t[key]: t for t in recomputed}
    out = []
    for t in stored:
        r = fresh.get(t[key])
        if r is None:
            continue  # a target this code no longer computes: the rendering shows the recomputed ones
        for f in fields:
            a, b = t.get(f), r.get(f)
            same = (a == b) if not (isinstance(a, float) and isinstance(b, float)) else math.isclose(a, b, rel_tol=1e-9)
            if not same:
                out.append(f"stored target {t[key]!r} has {f} {a!r}, its rows give {b!r}")
    return out


@consistency("fd_vs_grad")
@consistency("fd_vs_grad_full")
def fd_vs_grad_stored_targets(data) -> list[str]:
    """The stored `targets` against the targets recomputed from the rows (an edited value or status is caught),
    and each validation entry's `ratio` against its times."""
    out = _stored_mismatch(data.get("targets") or [], _bench_targets(data))
    for v in data.get("validation") or []:
        if abs(v["ratio"] - v["extrapolated_s"] / v["whole_s"]) > 1e-9 * abs(v["ratio"]):
            out.append(f"validation {v['method']} {v['sizes']} N={v['batch_size']}: ratio {v['ratio']!r} is not "
                       f"extrapolated_s / whole_s = {v['extrapolated_s'] / v['whole_s']!r}")
    return out


@renderer("fd_vs_grad.million", "fd_vs_grad_full")
def fd_vs_grad_million(data) -> str:
    """The million weights: per network and method, one gradient over 60,000 examples (and / reverse), and one
    epoch of 6000 mini-batch gradients (N = 10); `~` where extrapolated."""
    tab = million_table(data["rows"])
    if not tab:
        one(data["rows"], group="million")  # raises MissingRow naming the selection
    body = []
    ref = reference_method()
    for sizes in dict.fromkeys(t["sizes"] for t in tab):
        at = [t for t in tab if t["sizes"] == sizes]
        rev = next((t for t in at if t["method"] == ref), None)
        for t in sorted(at, key=lambda t: t["gradient_s"] or float("inf")):
            grad, epoch = t["gradient_s"], t["epoch_s"]
            over = grad / rev["gradient_s"] if grad and rev and rev["gradient_s"] else None
            flag = "~" if t["gradient_extrapolated"] else ""
            full = analysis.find(analysis.ok_rows(data["rows"], "million"), sizes, t["method"], MILLION_EXAMPLES)
            body.append([f"[{sizes.replace('-', ', ')}]", f"{t['P']:,}", _label(t["method"]),
                         _time(full, data.get("validation") or []) if grad is not None else "-",
                         ("~" if flag or (rev and rev["gradient_extrapolated"]) else "") + fmt_x(over)
                         if over is not None else "-",
                         _epoch(t, data) if epoch is not None else "-"])
    head = (f"One gradient on {MILLION_EXAMPLES:,} examples and one epoch = {EPOCH_STEPS:,} gradients on "
            f"mini-batches of {EPOCH_BATCH} (`~`: timed on a subset of directions and extrapolated; "
            f"{_unvalidated_note(data)}):\n\n")
    return head + table(["network", "P", "method", f"gradient (N = {MILLION_EXAMPLES:,})", f"/ {ref}",
                         f"epoch ({EPOCH_STEPS:,} x N = {EPOCH_BATCH})"], body, ["l", "r", "l", "r", "r", "r"])


def _epoch(t, data) -> str:
    """An epoch's time (6000 x one mini-batch gradient), flagged as the mini-batch row is."""
    mini = analysis.find(analysis.ok_rows(data["rows"], "million"), t["sizes"], t["method"], EPOCH_BATCH)
    return "-" if mini is None else _time({**mini, "median_s": t["epoch_s"]}, data.get("validation") or [])


@renderer("fd_vs_grad.validation", "fd_vs_grad_full")
def fd_vs_grad_validation(data) -> str:
    """Each validated point: the whole gradient's time, what extrapolation predicted, their ratio, and how far
    the extrapolation reached (whole / timed directions); the worst deviation over every point and over the
    points that take at least one subset call."""
    body = [[f"`{v['method']}`", f"[{v['sizes'].replace('-', ', ')}]", f"{v['P']:,}", v["batch_size"],
             fmt_s(v["whole_s"]), fmt_s(v["extrapolated_s"]), fmt_g(v["extrapolated_s"] / v["whole_s"]),
             f"{fmt_g(v['total'] / v['covered'])}x",
             "yes" if v.get("counted", True) else "no (shorter than one subset call)"] for v in data["validation"]]
    worst, n = analysis.validation_worst(data["validation"])
    worst_c, n_c = analysis.validation_worst(data["validation"], counted_only=True)
    largest = analysis.validated_factor(data["validation"])
    return (table(["method", "network", "P", "N", "whole", "extrapolated", "extrapolated / whole",
                   "factor (whole / timed directions)", "at least one subset call"], body,
                  ["l", "l", "r", "r", "r", "r", "r", "r", "l"])
            + f"\n\nWorst |extrapolated / whole - 1|: {fmt_g(worst)} over all {n} points, {fmt_g(worst_c)} over the "
              f"{n_c} that take at least one subset call; the largest factor validated: "
              f"{fmt_g(largest) + 'x' if largest else '-'}.")


fd_vs_grad_quick_validation = renderer("fd_vs_grad.quick_validation", "fd_vs_grad")(fd_vs_grad_validation)
fd_vs_grad_quick_targets = renderer("fd_vs_grad.quick_targets", "fd_vs_grad")(fd_vs_grad_targets)


def _round_ratios(loop_row, row) -> list[float]:
    """Per-round fd-loop / kernel time (same round index), for the median and spread."""
    return [a / b for a, b in zip(loop_row["times_s"], row["times_s"])]


# what the FD kernel benchmark's targets measure (not the README's "% of matmul rate", which is XLA FLOPs of the
# timed program over the run's best matmul)
KERNEL_TARGETS = {"of_matmul": "counted FLOPs / same-round matmul", "loop_over_kernel": "fd-loop time / kernel time"}


def _kernel_targets(data) -> list[dict]:
    """The FD kernel's targets recomputed from the rows' per-round times (never from the stored
    `config.target_results`): at the default chunk of `fd-forward`, the median over rounds of its counted FLOPs
    rate over the same round's matmul (`of_matmul_n1000`), and of fd-loop's time over its own in the same round
    (`loop_over_kernel_n*`); thresholds from the run's `config.targets`."""
    import statistics

    rows, thresholds = data["rows"], data["config"]["targets"]
    fd, naive = analysis.fd_kernel_method(rows), analysis.naive_loop_method()
    out = []
    for name, threshold in thresholds.items():
        field, _, n = name.rpartition("_n")
        if field not in KERNEL_TARGETS or not n.isdigit():
            raise KeyError(f"config.targets[{name!r}] (known: <{'|'.join(KERNEL_TARGETS)}>_n<N>)")
        n = int(n)
        kernel = next((r for r in rows if r["method"] == fd and r["default_chunk"] and r["batch_size"] == n), None)
        value = bound = None
        if kernel is not None and name.startswith("of_matmul"):
            value = statistics.median(kernel["work_flops"] / t / m for t, m in zip(kernel["times_s"], kernel["matmul_rates"]))
            bound = 1.0
        elif kernel is not None:
            loop = one(rows, batch_size=n, method=naive)
            value = statistics.median(_round_ratios(loop, kernel))
            bound = statistics.median(a / (kernel["work_flops"] / m) for a, m in zip(loop["times_s"], kernel["matmul_rates"]))
        out.append({"target": name, "value": value, "threshold": threshold, "bound": bound,
                    "status": "n/a" if value is None else ("PASS" if value >= threshold else "SHORT")})
    return out


@consistency("fd_kernel")
def fd_kernel_stored_targets(data) -> list[str]:
    """The stored `config.target_results` against the targets recomputed from the per-round times."""
    return _stored_mismatch(data["config"].get("target_results") or [], _kernel_targets(data),
                            fields=("value", "status"))


@renderer("fd_kernel.table", "fd_kernel")
def fd_kernel_table(data) -> str:
    """Whole FD-kernel gradients against fd-loop and the same round's matmul: median (min-max) over rounds."""
    rows = data["rows"]
    naive = analysis.naive_loop_method()
    body = []
    for r in rows:
        loop = one(rows, batch_size=r["batch_size"], method=naive)
        chunk = "-" if r["chunk_size"] is None else f"{r['chunk_size']}" + (" (default)" if r["default_chunk"] else "")
        pct = f"{fmt_pct(r['of_matmul'])} ({fmt_pct(r['of_matmul_min'])}-{fmt_pct(r['of_matmul_max'])})"
        speed = "1" if r is loop else median_spread(_round_ratios(loop, r))
        body.append([r["batch_size"], f"`{r['method']}`", chunk, median_spread(r["times_s"]), pct, speed,
                     "" if r is loop else fmt_g(r["bound_loop_over_kernel"])])
    cfg = data["config"]
    head = (f"{cfg['rounds']} interleaved rounds, [{', '.join(map(str, cfg['sizes']))}], {cfg['dtype']}; "
            f"median (min-max) over the rounds; the speed-up is taken within each round; the rate is counted "
            f"evaluations x the forward pass's XLA FLOPs over the same round's matmul, not the README's "
            f"\"% of matmul rate\":\n\n")
    return head + table(["N", "method", "chunk", "seconds per gradient", "counted FLOPs / same-round matmul",
                         "x faster than fd-loop", "bound"], body, ["r", "l", "r", "r", "r", "r", "r"])


@renderer("fd_kernel.plan", "fd_kernel")
def fd_kernel_plan(data) -> str:
    """The kernel's measured plan per batch size: how it was chosen, its widths, the planning seconds and their
    share of one gradient (target <= 0.1 at N = 1000), and the kernel / the best fixed chunk width of the same
    round (median, min-max; target <= 1.1)."""
    rows = [r for r in data["rows"] if r.get("default_chunk") and "over_best_fixed" in r]
    if not rows:
        return table(["N", "plan"], [["-", "not measured in this run (`make bench-fd-kernel` measures it)"]])
    body = [[fmt_int(r["batch_size"]), f"{r['plan_source']} {r['plan_widths']}", fmt_s(r["plan_s"]),
             fmt_g(r["plan_over_one_gradient"]) + (f" ({target_note(r['plan_over_one_gradient'], 0.1, '<=')})"
                                                   if r["batch_size"] == 1000 else ""),
             stored_spread(r, "over_best_fixed") + "; "
             + target_note(r["over_best_fixed"], 1.1, "<=")] for r in sorted(rows, key=lambda r: r["batch_size"])]
    return table(["N", "plan (widths per leaf)", "planning", "planning / one gradient", "kernel / best fixed chunk"],
                 body, ["r", "l", "r", "l", "l"])


@renderer("fd_kernel.targets", "fd_kernel")
def fd_kernel_targets(data) -> str:
    """The FD kernel's targets recomputed from its rows: median over rounds, met or short, with the bound of a
    kernel at 100% of the same-round matmul."""
    body = [[f"{KERNEL_TARGETS.get(t['target'].rsplit('_n', 1)[0], t['target'])}, N = {t['target'].rsplit('_n', 1)[1]} "
             f"(`{t['target']}`)", fmt_g(t["value"]), target_note(t["value"], t["threshold"], ">="), fmt_g(t["bound"])]
            for t in _kernel_targets(data)]
    return table(["target", "measured (median over rounds)", "status", "bound"], body, ["l", "r", "l", "r"])


def _speedup_vs_fd(data, row) -> float | None:
    """time(FD kernel) / time(this rung) at the same network, from the rows' times; the FD kernel's rung is the
    one labelled with its method's name (`analysis.fd_kernel_method`: fd-forward)."""
    kernel = analysis.fd_kernel_method(select(data["rows"], group="ladder"))
    fd = [r for r in select(data["rows"], group="ladder", sizes=row["sizes"], label=kernel) if r.get("median_s")]
    return fd[0]["median_s"] / row["median_s"] if fd and row.get("median_s") else None


@consistency("estimators")
def estimators_stored_speedups(data) -> list[str]:
    """Each rung's stored `speedup_vs_fd` against the one the times give."""
    out = []
    for r in select(data["rows"], group="ladder"):
        want, have = _speedup_vs_fd(data, r), r.get("speedup_vs_fd")
        if (want is None) != (have is None) or (want is not None and abs(have - want) > 1e-9 * want):
            out.append(f"ladder {r['sizes']} {r['label']}: stored speedup_vs_fd {have!r}, its times give {want!r}")
    return out


@renderer("estimators.ladder", "estimators")
def estimators_ladder(data) -> str:
    """The ladder per network: seconds per gradient, speed-up over the FD kernel, error (+- spread over keys)."""
    body = []
    for r in select(data["rows"], group="ladder"):
        err = fmt_e(r["rel_error"]) if r.get("rel_error_std") is None else (
            _spread_over_keys(r["rel_error"], r["rel_error_std"], f"{r['keys']} keys"))
        body.append([f"[{r['sizes'].replace('-', ', ')}]", f"`{r['label']}`", f"{r['P']:,}" if "P" in r else "-",
                     _time(r), fmt_x(_speedup_vs_fd(data, r)), err, fmt_g(r["cosine"], 3), fmt_g(r["fp_equivalents"])])
    kernel = analysis.fd_kernel_method(select(data["rows"], group="ladder"))
    return table(["network", "rung", "P", "s / gradient", f"vs `{kernel}`", "rel. error", "cosine",
                  "forward-pass equivalents (XLA FLOPs)"], body, ["l", "l", "r", "r", "r", "r", "r", "r"])


@renderer("estimators.training", "estimators")
def estimators_training(data) -> str:
    """Training the digits net with each rung: the last epoch's train cost, test accuracy and wall time."""
    rows = [r for r in data["rows"] if r.get("group") == "training"]
    body = []
    for label in dict.fromkeys(r["label"] for r in rows):
        last = max(select(rows, label=label), key=lambda r: r["epoch"])
        body.append([f"`{label}`", last["epoch"], fmt_g(last["train_cost"]), fmt_g(last["test_accuracy"]),
                     fmt_s(last["wall_s"])])
    r0 = rows[0]
    head = (f"[{r0['sizes'].replace('-', ', ')}] on digits, SGD eta {r0['lr']:g}, mini-batch "
            f"{r0['batch_size']}, the same learning rate for every rung:\n\n")
    return head + table(["rung", "epochs", "train cost", "test accuracy", "training time"], body)


def _throughput_ratio(data, row) -> float:
    """median(row's epoch times) / median(gdjax's), from the times (not the stored `ratio_vs_gdjax`)."""
    import statistics

    base = one(data["rows"], impl="gdjax")
    return statistics.median(row["times_s"]) / statistics.median(base["times_s"])


@consistency("training_throughput")
def training_throughput_stored_ratios(data) -> list[str]:
    """Each row's stored `ratio_vs_gdjax` and `target_status` against the ones its times give."""
    out = []
    for r in data["rows"]:
        ratio = _throughput_ratio(data, r)
        if abs(r["ratio_vs_gdjax"] - ratio) > 1e-9 * ratio:
            out.append(f"row {r['impl']}: stored ratio_vs_gdjax {r['ratio_vs_gdjax']!r}, its times give {ratio!r}")
        if r.get("target_ratio") is not None:
            status = "PASS" if ratio >= r["target_ratio"] else "SHORT"
            if r.get("target_status") != status:
                out.append(f"row {r['impl']}: stored target_status {r.get('target_status')!r}, its times give {status!r}")
    return out


@renderer("training_throughput.table", "training_throughput")
def training_throughput_table(data) -> str:
    """One epoch of the lecture's training: gdjax against PyTorch eager and a NumPy loop, with the targets."""
    body = []
    for r in data["rows"]:
        ratio = _throughput_ratio(data, r)
        target = "" if r.get("target_ratio") is None else target_note(ratio, r["target_ratio"], ">=")
        name = r["impl"] + (f" {r['version']}, {r['threads']} thread(s)" if r.get("threads") else "")
        body.append([name, median_spread(r["times_s"], fmt_s), fmt_g(r["examples_per_s"]), fmt_x(ratio), target])
    cfg = data["config"]
    head = (f"One epoch of {cfg['n']:,} examples, [{', '.join(map(str, cfg['sizes']))}], mini-batch "
            f"{cfg['batch_size']}, eta {cfg['eta']:g}, all in the same run; median (min-max) over repeats:\n\n")
    return head + table(["implementation", "seconds per epoch", "examples / s", "x slower than gdjax", "target"],
                        body, ["l", "r", "r", "r", "l"])


@renderer("scaling_devices.table", "scaling_devices")
def scaling_devices_table(data) -> str:
    """Strong scaling of one FD gradient over k devices / processes: time, speed-up t1/tk, efficiency."""
    body = [[r["mode"], r["k"], median_spread(r["times"], fmt_s) if r.get("times") else fmt_s(r["median_s"]),
             fmt_x(r["speedup"]), fmt_pct(r["efficiency"])] for r in data["rows"]]
    r0 = data["rows"][0]
    head = (f"`{r0['method']}` at [{r0['sizes'].replace(',', ', ')}], N = {r0['batch']}, {r0['dtype']}, on "
            f"{r0['cpu_count']} CPU cores; median (min-max) over repeats:\n\n")
    return head + table(["split over", "k", "seconds per gradient", "speed-up", "efficiency"], body)



def _mean_spread(entry, key, fmt=fmt_g) -> str:
    """'mean (min-max)' of a summary entry's `key_mean`, `key_min`, `key_max`; '-' when not measured."""
    if entry[f"{key}_mean"] is None:
        return "-"
    return f"{fmt(entry[f'{key}_mean'])} ({fmt(entry[f'{key}_min'])}-{fmt(entry[f'{key}_max'])})"


@consistency("equal_budget")
def equal_budget_stored_summary(data) -> list[str]:
    """Each stored summary entry (what the table renders) against its runs: seeds, targets reached, and the
    mean / min / max over seeds of every number the table shows."""
    out = []
    for e in data["summary"]:
        runs = select(data["rows"], net=e["net"], method=e["method"])
        if len(runs) != e["seeds"] or sum(bool(r["reached_target"]) for r in runs) != e["reached_target"]:
            out.append(f"summary {e['net']} {e['method']}: seeds / reached_target differ from its {len(runs)} runs")
        for key in ("acc_at_seconds", "acc_at_fpe", "seconds_to_target", "fpe_to_target", "best_acc"):
            vals = [r[key] for r in runs if r[key] is not None]
            want = (sum(vals) / len(vals), min(vals), max(vals)) if vals else (None, None, None)
            have = (e[f"{key}_mean"], e[f"{key}_min"], e[f"{key}_max"])
            if any((a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9 * max(abs(b), 1e-300))
                   for a, b in zip(have, want)):
                out.append(f"summary {e['net']} {e['method']}: {key} mean/min/max {have}, its runs give {want}")
    return out


@renderer("equal_budget.table", "equal_budget")
def equal_budget_table(data) -> str:
    """Per net and method at its chosen learning rate: test accuracy at equal seconds and at equal forward-pass
    equivalents, and the cost to reach the target accuracy (mean (min-max) over seeds)."""
    cfg = data["config"]
    target = f"{100 * cfg['target']:g}%"
    body = []
    for e in data["summary"]:
        to_target = "not reached" if not e["reached_target"] else (
            f"{_mean_spread(e, 'seconds_to_target', fmt_s)}; {_mean_spread(e, 'fpe_to_target')} FPE "
            f"({e['reached_target']}/{e['seeds']} seeds)")
        body.append([e["net"], f"`{e['method']}`", f"{e['learning_rate']:g}", _mean_spread(e, "acc_at_seconds"),
                     _mean_spread(e, "acc_at_fpe"), to_target, _mean_spread(e, "best_acc")])
    head = (f"{cfg['dataset']}, budgets of {cfg['seconds']:g} s and {cfg['fpe']:g} forward-pass equivalents (FPE: XLA "
            f"FLOPs of a step, random-number generation included, over a forward pass's) per run, {cfg['seeds']} "
            f"seeds; test accuracy mean (min-max) over the seeds:\n\n")
    return head + table(["net", "method", "learning rate", "accuracy at equal seconds", "accuracy at equal FPE",
                         f"to {target}: seconds; FPE", "best accuracy"], body, ["l", "l", "r", "r", "r", "r", "r"])


@renderer("gradcheck.detection", "gradcheck")
def gradcheck_detection(data) -> str:
    """Planted bugs: how often `check_grad` (full mode) and `jax.test_util.check_grads` flag each one."""
    body = [[f"`{r['kind']}`", r["arch"], r["dtype"], f"`{r['leaf']}`", r["seeds"], fmt_pct(r["check_grad_rate"]),
             f"{r['check_grad_named']}/{r['seeds']}", fmt_pct(r["check_grads_rate"])]
            for r in select(data["rows"], section="detection")]
    return table(["planted bug", "net", "dtype", "leaf", "seeds", "`check_grad` flags", "names the leaf",
                  "`check_grads` flags"], body, ["l", "l", "l", "l", "r", "r", "r", "r"])


@renderer("gradcheck.false_alarms", "gradcheck")
def gradcheck_false_alarms(data) -> str:
    """Correct gradients: failures of each checker per configuration (0 expected)."""
    body = [[r["arch"], r["act"], r["dtype"], r["cases"], r["check_grad_failures"], r["check_grads_failures"],
             fmt_g(r["max_err_over_tol"])] for r in select(data["rows"], section="false_alarm")]
    return table(["net", "activation", "dtype", "cases", "`check_grad` failures", "`check_grads` failures",
                  "worst error / tolerance"], body, ["l", "l", "l", "r", "r", "r", "r"])


def _torch_slow_over(data, row) -> float | None:
    """torch.autograd.gradcheck's slow-mode seconds over this row's, from the rows' times (None for the rows
    that carry no ratio, or without a torch row)."""
    if row.get("torch_slow_over_this") is None and row.get("target") is None:
        return None
    slow = select(data["rows"], section="speed", tool="torch.autograd.gradcheck", call="slow mode")
    return slow[0]["seconds"] / row["seconds"] if slow else None


@consistency("gradcheck")
def gradcheck_stored_speed(data) -> list[str]:
    """Each speed row's stored ratio to torch's slow mode and its status against the ones the times give."""
    out = []
    for r in select(data["rows"], section="speed"):
        ratio = _torch_slow_over(data, r)
        stored = r.get("torch_slow_over_this")
        if (stored is None) != (ratio is None) or (ratio is not None and abs(stored - ratio) > 1e-9 * ratio):
            out.append(f"speed row {r['tool']} ({r['call']}): stored torch_slow_over_this {stored!r}, its times give "
                       f"{ratio!r}")
        if r.get("target") is not None and ratio is not None and r.get("status") is not None:
            status = "PASS" if ratio >= r["target"] else "SHORT"
            if r["status"] != status:
                out.append(f"speed row {r['tool']} ({r['call']}): stored status {r['status']!r}, its times give "
                           f"{status!r}")
    return out


@renderer("gradcheck.speed", "gradcheck")
def gradcheck_speed(data) -> str:
    """Seconds per check of each tool, first call and repeated, with torch.gradcheck's slow mode as the unit."""
    body = []
    for r in select(data["rows"], section="speed"):
        ratio = _torch_slow_over(data, r)
        target = "" if r.get("target") is None or ratio is None else target_note(ratio, r["target"], ">=")
        body.append([r["tool"], r["call"], fmt_s(r["seconds"]), fmt_x(ratio), target])
    r0 = one(data["rows"], section="speed")
    head = f"[{r0['sizes'].replace('-', ', ')}], N = {r0['batch']}, {r0['dtype']}, P = {r0['n_params']:,}:\n\n"
    return head + table(["tool", "call", "seconds", "torch slow mode / this", "target"], body,
                        ["l", "l", "r", "r", "l"])
