"""The tables of docs/problems.md, rendered from `benchmarks/results/cpu/problems.json` (`make bench-problems`).

Registered when imported (`from gdjax.report import problems as _problems` in gdjax/report/__init__.py);
markers `<!-- report:problems.timing -->` and `<!-- report:problems.checker -->` in docs/problems.md.
"""

from __future__ import annotations

from gdjax.report._core import fmt_g, fmt_int, fmt_s, renderer, source, table

source("problems", "benchmarks/results/cpu/problems.json", ["benchmarks/problems.py", "benchmarks/problems"],
       "bench-problems")


def _ratio(row: dict, key: str) -> str:
    """A median of per-round ratios with its min-max: '0.78 (0.74-0.81)'."""
    return f"{fmt_g(row[key])} ({fmt_g(row[f'{key}_min'])}-{fmt_g(row[f'{key}_max'])})"


@renderer("problems.timing", "problems")
def problems_timing(data) -> str:
    """Per problem: P, the objective's time, and the three same-round ratios (median, min-max over rounds)."""
    rows = [r for r in data["rows"] if r["section"] == "timing"]
    body = [[f"`{r['problem']}`", fmt_int(r["P"]), fmt_s(r["objective_s"]), _ratio(r, "kernel_over_P_objective"),
             _ratio(r, "kernel_over_loop"), _ratio(r, "reverse_over_objective")] for r in rows]
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
