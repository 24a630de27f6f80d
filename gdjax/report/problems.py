"""The tables of docs/problems.md, rendered from `benchmarks/results/cpu/problems.json` (`make bench-problems`).

Registered when imported (`from gdjax.report import problems as _problems` in gdjax/report/__init__.py);
markers `<!-- report:problems.timing -->` and `<!-- report:problems.checker -->` in docs/problems.md.
"""

from __future__ import annotations

from gdjax.report._core import fmt_g, fmt_int, fmt_s, renderer, source, stored_spread, table, target_note

source("problems", "benchmarks/results/cpu/problems.json", ["benchmarks/problems.py", "benchmarks/problems"],
       "bench-problems")


@renderer("problems.timing", "problems")
def problems_timing(data) -> str:
    """Per problem: P, the objective's time, and the three same-round ratios (median, min-max over rounds)."""
    rows = [r for r in data["rows"] if r["section"] == "timing"]
    body = [[f"`{r['problem']}`", fmt_int(r["P"]), fmt_s(r["objective_s"]), stored_spread(r, "kernel_over_P_objective"),
             stored_spread(r, "kernel_over_loop"), stored_spread(r, "reverse_over_objective")] for r in rows]
    return table(["problem", "P", "objective", "FD kernel / (P x objective)", "FD kernel / fd-loop",
                  "jax.grad / objective"], body, ["l", "r", "r", "r", "r", "r"])


@renderer("problems.checker", "problems")
def problems_checker(data) -> str:
    """Per problem and tool: seconds of the first and of a repeated call ('absent' with the reason otherwise),
    and torch slow mode / check_grad for the same call."""
    rows = [r for r in data["rows"] if r["section"] == "checker"]
    body = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for tool, mode in dict.fromkeys((r["tool"], r["mode"]) for r in rows if r["problem"] == problem):
            calls = {r["call"]: r for r in rows if (r["problem"], r["tool"], r["mode"]) == (problem, tool, mode)}
            first, again = calls.get("first", {}), calls.get("repeated", {})
            if first.get("absent", True):
                body.append([f"`{problem}`", f"`{tool}` {mode}", "absent", "absent", first.get("reason", "-")])
                continue
            speed = " / ".join(fmt_g(c.get("torch_slow_over_this")) + "x" if c.get("torch_slow_over_this") else "-"
                               for c in (first, again))
            body.append([f"`{problem}`", f"`{tool}` {mode}", fmt_s(first["seconds"]), fmt_s(again.get("seconds")),
                         speed])
    return table(["problem", "checker", "first call", "repeated call", "torch slow / this (first / repeated)"],
                 body, ["l", "l", "r", "r", "l"])


@renderer("problems.plan", "problems")
def problems_plan(data) -> str:
    """Per problem: the kernel's plan (widths, planning seconds and their share of one gradient) and the kernel
    against each fixed chunk width timed in the same rounds (median seconds; kernel / best width per round)."""
    rows = [r for r in data["rows"] if r["section"] == "timing" and "chunks" in r]
    if not rows:
        return table(["problem", "plan"], [["-", "not measured in this run (`make bench-problems` measures it)"]])
    chunks = rows[0]["chunks"]
    body = [[f"`{r['problem']}`", f"{r['plan_source']} {r['plan_widths']}", fmt_s(r["plan_s"]),
             fmt_g(r["plan_over_one_gradient"]), fmt_s(r["kernel_s"]), *(fmt_s(r[f"chunk{c}_s"]) for c in chunks),
             stored_spread(r, "kernel_over_best_chunk")] for r in rows]
    return table(["problem", "plan (widths per leaf)", "planning", "planning / one gradient", "kernel",
                  *(f"chunk {c}" for c in chunks), "kernel / best fixed width"],
                 body, ["l", "l", *["r"] * (4 + len(chunks))])


@renderer("problems.localising", "problems")
def problems_localising(data) -> str:
    """The localising mode's planted-error and correct-case counts, and the second-process first call."""
    loc = [r for r in data["rows"] if r["section"] == "localising"]
    cache = {r["problem"]: r for r in data["rows"] if r["section"] == "cache"}
    body = [[f"`{r['problem']}`", f"{r['named']}/{r['seeds']}", fmt_g(r["evaluations_median"]),
             f"{r['false_alarms']}/{r['correct_cases']}", f"{r['not_ok']}/{r['correct_cases']}",
             fmt_s(cache[r["problem"]]["first_process_s"]) if r["problem"] in cache else "-",
             fmt_s(cache[r["problem"]]["second_process_s"]) if r["problem"] in cache else "-"] for r in loc]
    if not body:
        body = [["-", "not measured in this run (`make bench-problems` measures it)", *["-"] * 5]]
    return table(["problem", "planted 1% errors named", "evaluations (median)", "false alarms",
                  "not ok (correct cases)", "first call, 1st process", "first call, 2nd process"],
                 body, ["l", "r", "r", "r", "r", "r", "r"])


def _checker(rows, problem, tool, mode, call):
    """The seconds of one checker row, None when it is absent or missing."""
    for r in rows:
        if (r["section"], r["problem"], r.get("tool"), r.get("mode"), r.get("call")) == (
                "checker", problem, tool, mode, call) and not r.get("absent"):
            return r["seconds"]
    return None


def _ratio_of(num, den):
    return None if num is None or den is None or den == 0 else num / den


def problem_targets(data) -> list[dict]:
    """Issue 24's targets on the suite, recomputed from the rows (never from stored verdicts): per problem the
    kernel / best fixed width (<= 1.1) and kernel / fd-loop (<= 1); on the GMM the full check's repeated call /
    (2P x objective) (<= 1.3) and torch slow / check_grad (first call >= 2 full, >= 5 localising; repeated
    >= 20 localising); the localising planted errors named (all seeds) and false alarms (0); the second
    process's first call (>= 2x faster)."""
    rows = data["rows"]
    out = []
    for r in (r for r in rows if r["section"] == "timing"):
        name = r["problem"]
        if "kernel_over_best_chunk" in r:
            out.append(dict(target=f"{name}: FD kernel / best fixed chunk", value=r["kernel_over_best_chunk"],
                            threshold=1.1, comparison="<="))
        out.append(dict(target=f"{name}: FD kernel / fd-loop", value=r["kernel_over_loop"], threshold=1.0,
                        comparison="<="))
        if name.startswith("gmm"):
            two_p = 2 * r["P"] * r["objective_s"]
            out.append(dict(target=f"{name}: check_grad full, repeated / (2P x objective)",
                            value=_ratio_of(_checker(rows, name, "gdjax.check_grad", "full", "repeated"), two_p),
                            threshold=1.3, comparison="<="))
            for mode, call, threshold in (("full", "first", 2.0), ("directions", "first", 5.0),
                                          ("directions", "repeated", 20.0)):
                out.append(dict(target=f"{name}: torch slow / check_grad {mode}, {call} call",
                                value=_ratio_of(_checker(rows, name, "torch.autograd.gradcheck", "slow", call),
                                                _checker(rows, name, "gdjax.check_grad", mode, call)),
                                threshold=threshold, comparison=">="))
    for r in (r for r in rows if r["section"] == "localising"):
        out.append(dict(target=f"{r['problem']}: localising, planted errors named (of {r['seeds']})",
                        value=r["named"], threshold=r["seeds"], comparison=">="))
        out.append(dict(target=f"{r['problem']}: localising, false alarms (of {r['correct_cases']})",
                        value=r["false_alarms"], threshold=0, comparison="<="))
    for r in (r for r in rows if r["section"] == "cache"):
        out.append(dict(target=f"{r['problem']}: first check_grad call, 1st / 2nd process", value=r["speedup"],
                        threshold=2.0, comparison=">="))
    return out


@renderer("problems.targets", "problems")
def problems_targets(data) -> str:
    """Issue 24's targets recomputed from the rows: value and met or short."""
    body = [[t["target"], fmt_int(t["value"]) if isinstance(t["value"], int) else fmt_g(t["value"]),
             target_note(t["value"], t["threshold"], t["comparison"])]
            for t in problem_targets(data)]
    return table(["target", "measured", "status"], body, ["l", "r", "l"])
