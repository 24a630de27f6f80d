"""Tables of the lecture's experiments (`results/<name>.json`, written by `experiments/<name>.py`)."""

from __future__ import annotations

import statistics

from gdjax.report._core import fmt_e, fmt_g, fmt_s, fmt_x, median_spread, one, renderer, select, source, table

EXPERIMENTS = ("taylor", "fd_step", "learning_rate", "landscape", "batch_average", "fd_training", "nielsen_mnist")
for _name in EXPERIMENTS:
    source(_name, f"results/{_name}.json",
           [f"experiments/{_name}.py", "experiments/_experiment.py", "experiments/run_all.py"], "experiments")


@renderer("nielsen_mnist.final", "nielsen_mnist")
def nielsen_final(data) -> str:
    """Each model's last epoch on Fashion-MNIST: test accuracy, best over epochs, training time (measured rows
    only: the published reference the experiment draws in its figure is no measurement of this run)."""
    rows = data["rows"]
    body = []
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        run = select(rows, dataset=dataset, model=model)
        last = max(run, key=lambda r: r["epoch"])
        body.append([last["label"], dataset, last["epoch"], fmt_g(last["test_accuracy"], 4),
                     fmt_g(max(r["test_accuracy"] for r in run), 4), fmt_s(last["wall_s"])])
    return table(["model", "dataset", "epochs", "test accuracy", "best over epochs", "training time"], body,
                 ["l", "l", "r", "r", "r", "r"])


@renderer("taylor.slopes", "taylor")
def taylor_slopes(data) -> str:
    """Fitted slope of the Taylor remainder against h, per dtype: median (min-max) over directions."""
    body = []
    for dtype in dict.fromkeys(r["dtype"] for r in data["rows"]):
        rows = select(data["rows"], dtype=dtype)
        slopes = [one(rows, direction=d)["slope"] for d in dict.fromkeys(r["direction"] for r in rows)]
        body.append([dtype, len(slopes), median_spread(slopes), fmt_e(rows[0]["rounding_floor"])])
    return table(["dtype", "directions", "fitted slope (2 expected)", "rounding floor eps_m C"], body)


@renderer("fd_step.defaults", "fd_step")
def fd_step_defaults(data) -> str:
    """Per dtype and scheme: the library's default step and its error against the best step of the sweep."""
    body = []
    s = data["meta"]["summary"]
    for dtype, scheme in dict.fromkeys((r["dtype"], r["scheme"]) for r in data["rows"]):
        d = one(data["rows"], dtype=dtype, scheme=scheme, default=True)
        ok = [r for r in select(data["rows"], dtype=dtype, scheme=scheme, status="ok", default=False)
              if r["rel_error"] is not None]
        best = min(ok, key=lambda r: r["rel_error"])
        slope = s[f"slope_{scheme}_{dtype}"]
        body.append([dtype, scheme, fmt_e(d["eps"]), fmt_e(d["rel_error"]), fmt_e(best["eps"], 1),
                     fmt_e(best["rel_error"]), fmt_g(slope)])
    return table(["dtype", "scheme", "default eps", "error at default", "best eps of the sweep", "error at best",
                  "fitted truncation slope"], body, ["l", "l", "r", "r", "r", "r", "r"])


@renderer("learning_rate.classes", "learning_rate")
def learning_rate_classes(data) -> str:
    """Each learning rate's outcome on the bowl and the digits network, with eta x lambda_max."""
    body = [[r["part"], f"{r['eta']:.3g}", f"{r['eta_lambda_max']:.3g}", r["class"], fmt_e(r["final_cost"])]
            for r in data["rows"]]
    return table(["problem", "eta", "eta x lambda_max", "outcome", "final cost"], body, ["l", "r", "r", "l", "r"])


@renderer("landscape.runs", "landscape")
def landscape_runs(data) -> str:
    """Per surface: runs, how many reached a minimum, the distinct minima reached, diverged, not converged."""
    body = []
    for surface in dict.fromkeys(r["surface"] for r in data["rows"]):
        rows = select(data["rows"], surface=surface)
        minima = {r["status"] for r in rows if r["status"].startswith("minimum")}
        body.append([surface, len(rows), sum(r["status"].startswith("minimum") for r in rows), len(minima),
                     sum(r["status"] == "diverged" for r in rows), sum(r["status"] == "not converged" for r in rows)])
    return table(["surface", "runs", "reached a minimum", "distinct minima", "diverged", "not converged"], body)


@renderer("batch_average.cosines", "batch_average")
def batch_average_cosines(data) -> str:
    """Cosine of a mini-batch gradient with the full one, per batch size m, and the variance's slope in m."""
    points = list(dict.fromkeys(r["point"] for r in data["rows"]))
    ms = sorted({r["m"] for r in data["rows"]})
    shown = [m for m in ms if m in (1, 10, 100, 1000) or m == ms[-1]]
    body = [[f"m = {m}"] + [f"{fmt_g(one(data['rows'], point=p, m=m)['cos_mean'], 2)} +- "
                            f"{fmt_g(one(data['rows'], point=p, m=m)['cos_std'], 2)}" for p in points] for m in shown]
    summary = data["meta"]["summary"]
    body.append(["fitted slope of the variance in m (-1 expected)"]
                + [fmt_g(summary[f"variance_slope[{p}]"]) for p in points])
    return table(["mini-batch", *(f"cosine ({p})" for p in points)], body)


@renderer("fd_training.compare", "fd_training")
def fd_training_compare(data) -> str:
    """`fd-central` against `reverse` from the same init and batches: final cost, accuracy, time per epoch."""
    rows = data["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    epoch_s = {m: [r["epoch_s"] for r in select(rows, method=m) if r["epoch"] > 0] for m in methods}
    body = []
    for m in methods:
        last = max(select(rows, method=m), key=lambda r: r["epoch"])
        body.append([f"`{m}`", last["epoch"], fmt_g(last["train_cost"], 4), fmt_g(last["test_accuracy"], 4),
                     median_spread(epoch_s[m], fmt_s)])
    a, b = methods[0], methods[-1]
    diff = max(abs(x["train_cost"] - one(rows, method=b, epoch=x["epoch"])["train_cost"])
               for x in select(rows, method=a))
    ratio = statistics.median(epoch_s[b]) / statistics.median(epoch_s[a])
    return (table(["method", "epochs", "train cost", "test accuracy", "seconds per epoch"], body)
            + f"\n\nLargest train-cost difference over the epochs: {fmt_e(diff)}; an `{b}` epoch takes "
              f"{fmt_x(ratio)} the time of a `{a}` epoch (medians; P / 2 = {fmt_g(data['meta']['summary']['n_params'] / 2)}).")
