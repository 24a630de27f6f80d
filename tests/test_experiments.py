"""Smoke tests: every experiment runs its tiny `--quick` config end to end (JSON + PNG + SVG) and its numbers
carry the expected signs; config overrides reject unknown keys. The scripts are imported from experiments/."""

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXP = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXP))


def _run(name, tmp_path, *extra):
    mod = importlib.import_module(name)
    rc = mod.main(["--quick", f"results_dir={tmp_path}", f"figures_dir={tmp_path}", *extra])
    assert rc == 0
    data = json.loads((tmp_path / f"{name}.json").read_text())
    for ext in ("png", "csv", *(["svg"] if "figure_formats=png,svg" in extra else [])):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    assert data["rows"] and data["config"]["results_dir"] == str(tmp_path)
    assert "jax" in data["meta"] and data["meta"]["wall_s"] > 0
    return data


def test_taylor(tmp_path):
    data = _run("taylor", tmp_path)
    s = data["meta"]["summary"]
    assert 1.8 < s["slope_float64"] < 2.2  # remainder ~ h^2 (quick: 2 points per decade, 2 directions)
    assert 1.7 < s["slope_float32"] < 2.3


def test_fd_step(tmp_path):
    data = _run("fd_step", tmp_path)
    s = data["meta"]["summary"]
    assert 0.8 < s["slope_forward_float64"] < 1.2 and 1.7 < s["slope_central_float64"] < 2.3
    assert s["best_err_central_float64"] < s["best_err_forward_float64"]
    assert any(r["default"] for r in data["rows"])


def test_learning_rate(tmp_path):
    """Catches: a classifier that puts every eta in one class, an eta sweep wired to the wrong curves (a too-small
    eta ending below the lecture's), and a summary that does not say what the rows say."""
    data = _run("learning_rate", tmp_path)
    bowl = {r["eta_lambda_max"]: r["class"] for r in data["rows"] if r["part"] == "bowl"}
    assert bowl[0.05] == "slow" and bowl[1.0] == "converged" and bowl[1.95] == "oscillating"
    assert bowl[2.05] == "diverged" and bowl[2.3] == "diverged"
    net = {r["eta"]: r for r in data["rows"] if r["part"] == "network"}
    assert net[0.1]["class"] == "slow" and net[3.0]["class"] == "converged"  # the lecture's eta = 3 learns
    assert net[3.0]["final_cost"] < 0.8 * net[0.1]["final_cost"] < 0.8 * net[0.1]["initial_cost"]
    s = data["meta"]["summary"]
    assert s["network_best_eta"] == min(net, key=lambda e: net[e]["final_cost"])
    assert s["network_classes"] == {f"{e:g}": r["class"] for e, r in net.items()}


def test_learning_rate_classifiers():
    import numpy as np

    lr = importlib.import_module("learning_rate")
    assert lr.classify_curve([1.0, 0.5, np.nan], 0.1) == "diverged"
    assert lr.classify_curve([1.0, 0.9, 0.8], 0.1) == "slow"
    assert lr.classify_curve([1.0, 0.3, 0.11], 0.1) == "converged"
    assert lr.classify_curve([1.0, 0.5, 0.6, 0.4, 0.5, 0.3], 0.3) == "oscillating"
    assert lr.classify_curve([1.0, 0.5, 0.5], 0.1, grad_ratio=1e-4) == "diverged"  # stuck on a plateau


def test_landscape(tmp_path):
    data = _run("landscape", tmp_path, "figure_formats=png,svg")  # one smoke test draws the SVG too
    s = data["meta"]["summary"]
    assert s["himmelblau_minima_reached"] >= 2  # different starts, different minima
    assert "diverged" in s["bowl_statuses"]  # eta = 0.205 > 2 / lambda_max = 0.2


def test_batch_average(tmp_path):
    data = _run("batch_average", tmp_path)
    s = data["meta"]["summary"]
    assert -1.4 < s["variance_slope[init]"] < -0.6
    rows = [r for r in data["rows"] if r["point"] == "init"]
    assert rows[0]["cos_mean"] < rows[-1]["cos_mean"]  # averaging more images aligns with the full gradient


def test_fd_training(tmp_path):
    data = _run("fd_training", tmp_path)
    s = data["meta"]["summary"]
    assert s["max_rel_train_cost_difference"] < 1e-2
    assert s["epoch_s_reverse"] > 0 and s["epoch_s_fd_central"] > 0  # timings: the full run, not a smoke test
    assert {r["method"] for r in data["rows"]} == {"reverse", "fd-central"}


def test_nielsen_mnist_quick_on_digits(tmp_path, monkeypatch, capsys):
    """Both networks must learn (test accuracy well above the 0.1 of chance on 10 classes): catches labels out of
    step with the images, a trainer that never updates, an optimiser that ignores its learning rate. The summary
    must be the last epoch's row of each model. MNIST is optional: absent, it is named in a
    note and the run still succeeds (exit 0) on the main dataset alone."""
    monkeypatch.setenv("GDJAX_DATA_DIR", str(tmp_path / "no-data-here"))
    data = _run("nielsen_mnist", tmp_path)
    assert "MNIST is optional and was not found" in capsys.readouterr().out
    s, rows = data["meta"]["summary"], data["rows"]
    assert {r["dataset"] for r in rows} == {"digits"}
    for model, floor in (("lecture", 0.25), ("strong", 0.5)):  # quick run (seed 0): 0.35 and 0.84
        rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["epoch"])
        assert [r["epoch"] for r in rs] == list(range(len(rs))) and len(rs) == 5
        assert s[f"{model}_test_accuracy[digits]"] == rs[-1]["test_accuracy"] > floor
        assert rs[-1]["train_cost"] < rs[0]["train_cost"]


def test_default_output_leaves_the_committed_reference_untouched(tmp_path, monkeypatch):
    """A run without --out writes a fresh runs/<name>-<date>/ and not one byte of results/ or figures/.
    Catches the default falling back to the committed folders (what `make reproduce` did before)."""
    common = importlib.import_module("_experiment")
    committed = [p for d in (common.RESULTS_DIR, common.FIGURES_DIR) for p in sorted(d.glob("taylor.*"))]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in committed}
    monkeypatch.setattr(common, "ROOT", tmp_path)  # runs/ goes under a temporary folder
    mod = importlib.import_module("taylor")
    assert mod.main(["--quick"]) == 0
    (run_dir,) = (tmp_path / "runs").glob("taylor-*")
    assert {p.name for p in run_dir.iterdir()} == {"taylor.json", "taylor.csv", "taylor.png"}
    assert before and {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in committed} == before
    # --out writes there, --reference names the committed folders (not run here: it would rewrite them)
    assert common.output_dirs("taylor", common.config_from_argv(mod.Config, ["--out", str(tmp_path / "o")])) == (
        tmp_path / "o", tmp_path / "o")
    cfg = common.config_from_argv(mod.Config, ["--reference"])
    assert common.output_dirs("taylor", cfg) == (common.RESULTS_DIR, common.FIGURES_DIR)


def test_get_data_without_the_dataset_says_the_two_ways_and_fails(tmp_path, monkeypatch, capsys):
    """`make data` with no Fashion-MNIST and no apt-get: exit 1 and one message naming the Debian package and the
    four IDX files in GDJAX_DATA_DIR. With the files in GDJAX_DATA_DIR it succeeds without installing anything,
    and a missing MNIST (optional) is reported, not an error. Catches a silent success without data, an install
    attempted when the files are there, and MNIST turned into a requirement."""
    from gdjax import data

    get_data = importlib.import_module("get_data")
    monkeypatch.setenv("GDJAX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_DIRS", {"fashion-mnist": str(tmp_path / "not-installed")})
    monkeypatch.setattr(get_data.shutil, "which", lambda name: None)  # no apt-get, no sudo
    assert get_data.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset-fashion-mnist" in err and "GDJAX_DATA_DIR" in err
    assert "t10k-labels-idx1-ubyte" in err and str(tmp_path) in err

    fm = tmp_path / "fashion-mnist"
    fm.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (fm / stem).write_bytes(b"")  # found by name; get_data does not parse them
    monkeypatch.setattr(get_data, "install", lambda: pytest.fail("installed although the files are there"))
    assert get_data.main([]) == 0
    out = capsys.readouterr().out
    assert f"fashion-mnist found in {fm}" in out and "mnist (optional) not found" in out
    assert get_data.main(["--nope"]) == 2


def test_experiment_needing_fashion_mnist_fails_in_one_line_naming_make_data(tmp_path, monkeypatch, capsys):
    """Where the data is truly needed (nielsen_mnist on Fashion-MNIST) a missing dataset is exit 2 with one line
    that says how to get it (`make data`), and nothing is written. Catches a traceback, a silent fallback to
    another dataset, or a results file written for a run that never happened."""
    from gdjax import data

    monkeypatch.setenv("GDJAX_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "DEBIAN_DIRS", {"fashion-mnist": str(tmp_path / "not-installed")})
    mod = importlib.import_module("nielsen_mnist")
    assert mod.main(["mnist=false", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fashion-mnist: IDX files not found" in err and "make data" in err
    assert not (tmp_path / "out").exists()


def test_get_data_installs_with_sudo_when_not_root(monkeypatch):
    """The install command: apt-get as root, through sudo otherwise, none without apt-get (the message then)."""
    get_data = importlib.import_module("get_data")
    monkeypatch.setattr(get_data.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(get_data.os, "geteuid", lambda: 1000)
    assert get_data.apt_install_command()[0] == "sudo" and "dataset-fashion-mnist" in get_data.apt_install_command()
    monkeypatch.setattr(get_data.os, "geteuid", lambda: 0)
    assert get_data.apt_install_command()[:2] == ["apt-get", "install"]
    monkeypatch.setattr(get_data.shutil, "which", lambda name: None)
    assert get_data.apt_install_command() is None


@pytest.mark.parametrize("arg, match", [("nope=1", "unknown config key 'nope'; valid keys:"),
                                        ("epochs=many", "epochs='many': expected an integer"),
                                        ("--fast", "unknown option '--fast'")])
def test_bad_override_is_one_line_and_exit_2(tmp_path, capsys, arg, match):
    mod = importlib.import_module("fd_training")
    assert mod.main([arg, f"results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert not (tmp_path / "fd_training.json").exists()


def test_overrides_convert_types():
    common = importlib.import_module("_experiment")
    lr = importlib.import_module("learning_rate")
    cfg = common.parse_overrides(lr.Config(), ["net_etas=0.1,1", "bowl_steps=7", "results_dir=x"])
    assert cfg.net_etas == (0.1, 1.0) and cfg.bowl_steps == 7 and cfg.results_dir == "x"


def test_run_all_rejects_unknown_experiment():
    out = subprocess.run([sys.executable, str(EXP / "run_all.py"), "--only", "nope"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "valid: taylor" in out.stderr and out.stderr.count("\n") == 1


def test_run_all_writes_one_fresh_runs_folder_unless_asked():
    """`make reproduce` (run_all without output options) sends every experiment to one runs/reproduce-<date>/;
    --out and --reference pass through, and combining them is refused. Catches a default that falls back to
    the committed results/ (each experiment's own default would then split the run over several folders)."""
    run_all = importlib.import_module("run_all")
    names, args = run_all.parse(["--quick"])
    assert names == list(run_all.EXPERIMENTS) and args[0] == "--quick" and len(args) == 2
    out = Path(args[1].split("=", 1)[1])
    assert args[1].startswith("--out=") and out.parent == run_all.ROOT / "runs" and out.name.startswith("reproduce-")
    assert run_all.parse(["--only", "taylor", "--out", "/tmp/x"]) == (["taylor"], ["--out=/tmp/x"])
    assert run_all.parse(["--reference"])[1] == ["--reference"]
    with pytest.raises(ValueError, match="do not combine"):
        run_all.parse(["--reference", "--out", "/tmp/x"])


def test_help_says_where_a_run_writes(capsys):
    """--help is an answer (exit 0), not an unknown option; it names the default runs/ folder and the keys."""
    mod = importlib.import_module("taylor")
    assert mod.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "runs/taylor-<date>/" in out and "n_directions=5" in out and "--reference" in out
    assert importlib.import_module("run_all").main(["--help"]) == 0
    assert "runs/reproduce-<date>/" in capsys.readouterr().out
