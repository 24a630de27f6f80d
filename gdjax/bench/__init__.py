"""The FD-vs-`jax.grad` benchmark (`gdjax bench`, `make bench`, docs/benchmarks.md), one concept per module:

    config.py    what a run measures: sizes, methods, budgets, the ordered points (`plan`), the targets
    problem.py   Problem(cost, params, batch): what any cost fills; the lecture's MLP problem is one factory
                 (`mlp_problem`), `load_problem("pkg.module:factory")` any other; reference gradient, error
    policy.py    when a point is timed whole, and otherwise on how many of its directions (pure functions)
    measure.py   one point: the forward pass, or one method whole / on its own subset, validated; one row
    sweep.py     every point in order, resumable, the matmul reference at start/middle/end, FLOP rates set once
    analysis.py  what the rows say: slopes, ratios, targets, the million table, a run beside the reference
    report.py    the text and Markdown tables, and the one human-readable time formatter
    run.py       one `gdjax bench` run: results files and the summary a user reads
    args.py      the argument-parser base under its earlier name (gdjax/_cli_args.py, below the CLI and bench)

Data flow: cli (parse) -> config.BenchConfig -> run.run -> sweep.run_sweep -> measure.measure_method per point
(policy decides) -> rows -> analysis / report -> results JSON; figures drawn by the caller (gdjax.cli ->
gdjax.plotting), so nothing in gdjax.bench imports upwards.
"""
