"""benchmarks/_common.py, the helpers every benchmark script shares: where results go, the measuring names
taken from gdjax, and the one-line errors of a script's main."""

import pytest
from conftest import ROOT, load_script


def _common():
    return load_script("benchmarks/_common.py")


def test_default_output_is_a_fresh_ignored_run_folder_never_the_reference(tmp_path):
    """Catches: a default run writing over the committed reference (benchmarks/results/...), and an output
    folder given by the user being refused or taken as a file name (issue 11's `--out /tmp/tt`)."""
    c = _common()
    default = c.output_path("fd_kernel", None, "fd_kernel.json")
    assert default.parent.parent == ROOT / "runs" and default.parent.name.startswith("fd_kernel-")
    assert "results" not in default.parts and default.name == "fd_kernel.json"
    assert c.output_path("x", tmp_path, "x.json") == tmp_path / "x.json"  # an existing folder
    assert c.output_path("x", tmp_path / "new", "x.json") == tmp_path / "new" / "x.json"  # a folder to create
    assert c.output_path("x", tmp_path / "mine.json", "x.json") == tmp_path / "mine.json"  # an explicit file
    (tmp_path / "file").write_text("")
    with pytest.raises(c.UsageError, match="--out"):
        c.output_path("x", tmp_path / "file", "x.json")  # a file where a folder is needed


def test_measuring_names_are_gdjax_s_own():
    """Catches: a second timer, formatter or problem growing back in the scripts' helpers (each must be gdjax's
    one implementation), and the lecture's problem of the scripts differing from `gdjax bench`'s."""
    from gdjax import profiling
    from gdjax.bench.problem import mlp_problem

    c = _common()
    assert c.human_time is profiling.format_seconds
    assert not any(hasattr(c, n) for n in ("interleaved_rounds", "round_ratio", "errors", "reference_gradient"))
    cost, params, batch = c.problem((4, 3, 2), 8, "float32", 0)
    prob = mlp_problem((4, 3, 2), 8, "float32", 0)
    assert float(cost(params, batch)) == float(prob.cost(prob.params, prob.batch))
    assert c.time_stats([3.0, 1.0, 2.0]) == {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "times_s": [3.0, 1.0, 2.0]}


def test_run_main_one_line_and_exit_status(capsys):
    """Catches: a usage error or a failure during the run printed as a traceback, or a failure exiting 0."""
    c = _common()

    def parse(argv):
        ap = c.Parser("demo", "A demo.", "demo.json")
        ap.add_argument("--n", type=int, default=1)
        args = ap.parse(argv)
        c.require(args, 1, "n")
        return args

    def run(args):
        raise RuntimeError("the run failed\nwith a second line")

    assert c.run_main("demo", parse, run, ["--n", "0"]) == 2
    assert capsys.readouterr().err == "demo: error: --n must be >= 1, got 0\n"
    assert c.run_main("demo", parse, run, ["--bogus"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert c.run_main("demo", parse, run, []) == 1
    assert capsys.readouterr().err == "demo: error: RuntimeError: the run failed with a second line\n"
