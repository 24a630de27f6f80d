"""benchmarks/_common.py, the helpers every benchmark script shares: where results go, within-round ratios,
interleaved rounds, and the one-line errors of a script's main."""

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


def test_round_ratio_is_the_median_of_same_round_ratios_not_the_ratio_of_medians():
    """Catches: ratios of medians (which mix rounds). The numerator was disturbed in round 2 only; per round the
    ratios are 1, 10, 1 (median 1), while median(a) / median(b) would read 10 / 1 = 10."""
    c = _common()
    r = c.round_ratio([1.0, 10.0, 100.0], [1.0, 1.0, 100.0])
    assert r == {"median": 1.0, "min": 1.0, "max": 10.0}
    with pytest.raises(ValueError, match="equally long"):
        c.round_ratio([1.0, 2.0], [1.0])


def test_interleaved_rounds_runs_each_call_once_per_round_in_order():
    """Catches: rounds not interleaved (all repeats of one call, then the next) and the measured value of the
    round's reference not recorded first in each round."""
    c = _common()
    order = []
    values = c.interleaved_rounds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3,
                                  {"ref": lambda: order.append("ref") or 7.0})
    assert order == ["ref", "a", "b"] * 3
    assert values["ref"] == [7.0] * 3 and len(values["a"]) == len(values["b"]) == 3
    assert all(t >= 0 for t in values["a"] + values["b"])


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
