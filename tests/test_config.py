import contextlib
import math
import glob
import os
import subprocess
import sys

import pytest

from tfloc.config import ConfigError, to_dict
from tfloc.run.experiment import ExperimentConfig, from_dict, load_config

from conftest import REPO


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)


def test_defaults_and_override():
    cfg = load_config(None, ["training.epochs=5", "data.snr_db=[0, 10]", "model.resnet.depth=34"])
    assert cfg.training.epochs == 5
    assert cfg.data.snr_db == [0.0, 10.0]
    assert cfg.model.resnet.depth == 34


def test_exponent_floats_without_a_dot(tmp_path):
    # YAML 1.1 reads 1e-3 as a string; numbers must still work in files and --set
    cfg = load_config(_write(tmp_path, "training: {learning_rate: 1e-3}\n"),
                      ["data.subcarrier_spacing_hz=240e3"])
    assert cfg.training.learning_rate == 1e-3 and cfg.data.subcarrier_spacing_hz == 240e3
    with pytest.raises(ConfigError, match="training.learning_rate: expected a number, got 'fast'"):
        load_config(_write(tmp_path, "training: {learning_rate: fast}\n"))


def test_round_trip_through_dict():
    cfg = load_config(None, ["simulation.ue_grid.spacing_m=2.5"])
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("text, needle", [
    ("training: {epochz: 3}", "training.epochz: unknown key"),
    ("training: {epochs: three}", "training.epochs: expected an integer"),
    ("training: {epochs: 0}", "training.epochs: 0 is below the minimum 1"),
    ("data: {snr_db: [20, 10]}", "data.snr_db: range [20.0, 10.0] is negative"),
    ("data: {representation: phase}", "data.representation: 'phase' is not one of"),
    ("model: {type: transformer9000}", "model.type: unknown model 'transformer9000'"),
    ("simulation: {ue_grid: 3}", "simulation.ue_grid: expected a mapping"),
    ("data: {labelled_fraction: 0.9, test_fraction: 0.5}", "> 1"),
    ("training: {learning_rate: .nan}", "training.learning_rate: expected a finite number"),
    ("training: {learning_rate: nan}", "training.learning_rate: expected a finite number"),
    ("data: {snr_db: [20, .inf]}", "data.snr_db[1]: expected a finite number"),
    ("", "the config file is empty"),
    ("# only a comment\n", "the config file is empty"),
])
def test_bad_configs_name_file_and_key(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert needle in msg
    assert msg.startswith(path)
    assert "\n" not in msg


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nope/x.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["training.epochs"])
    with pytest.raises(ConfigError, match="--set training.nope=1: training.nope: unknown key"):
        load_config(None, ["training.nope=1"])


@pytest.mark.parametrize("args, needle", [
    (["--config", "/nope/missing.yaml"], "config file not found"),
    (["--config", "BAD", "--set", "data.snr_db=[30, 5]"], "data.snr_db: range [30.0, 5.0] is negative"),
    (["--config", "BAD", "--set", "simulation.scene=atlantis"], "simulation.scene: unknown scene 'atlantis'"),
    (["--config", "BAD", "--set", "simulation.scene=/nope/missing.xml"], "does not exist"),
    (["--config", "BAD", "--set", "method=nope"], "method.type: unknown method 'nope'"),
    (["--config", "configs/consistency.yaml", "--set", "data.labelled_fraction=0.75"],
     "method 'consistency' needs an unlabelled pool"),
    (["--config", "configs/consistency.yaml", "--set", "method.consistency.radius_m=0"],
     "method.consistency.radius_m: must be > 0 m"),
    (["--config", "configs/fixmatch.yaml", "--set", "method.fixmatch.init_from=/nope"],
     "method.fixmatch.init_from: '/nope' is not a finished run"),
    (["--config", "configs/sector_heads.yaml", "--set", "data.use_sector=false"],
     "method 'sector_heads' needs a sectored site"),
    (["--config", "BAD", "--set", "training.learning_rate=nan"],
     "training.learning_rate: expected a finite number, got 'nan'"),
    (["--config", "BAD", "--set", "data.snr_db=[-.inf, 10]"], "data.snr_db[0]: expected a finite number"),
    (["--config", "configs/ensemble.yaml", "--set", "method.ensemble.members=[{seed: 1}]"],
     "method.ensemble.members: an ensemble needs at least 2 members, got 1"),
])
def test_cli_user_errors_exit_2_one_line(tmp_path, args, needle, monkeypatch, capsys):
    """train.py's CLI, run in this process (the script itself: test_evaluate_cli_missing_run_dir
    and test_too_coarse_grid_fails_cleanly_without_run_dir)."""
    from tfloc.run.cli import run_cli, train_main
    good = _write(tmp_path, "name: t\n")
    args = [good if a == "BAD" else os.path.join(REPO, a) if a.startswith("configs/") else a
            for a in args]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_cli(train_main, [*args, "--run-dir", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    err_lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(err_lines) == 1 and needle in err_lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_evaluate_cli_missing_run_dir(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--run-dir",
                        str(tmp_path / "nope")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "run directory not found" in r.stderr and "Traceback" not in r.stderr


def test_too_coarse_grid_fails_cleanly_without_run_dir(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--config",
                        os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                        "--set", "simulation.ue_grid.spacing_m=120", "--set",
                        f"runtime.cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "spacing_m: only" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_one_of_sections(tmp_path):
    cfg = load_config(None, ["method=hda"])
    assert cfg.method.type == "hda" and cfg.method.hda.weighting == "uncertainty"
    cfg = load_config(None, ["method={type: mda, mda: {coordinate_weight: 0.3}}"])
    assert cfg.method.mda.coordinate_weight == 0.3 and cfg.method.mda.weighting == "fixed"
    with pytest.raises(ConfigError, match=r"method.hda: unknown key \(allowed with type 'mda': type, mda\)"):
        load_config(None, ["method={type: mda, hda: {num_conditions: 2}}"])
    with pytest.raises(ConfigError, match="method.supervised: unknown key"):
        load_config(None, ["method={type: supervised, supervised: {x: 1}}"])   # no options
    with pytest.raises(ConfigError, match="model.type: unknown model 'vit'"):
        load_config(None, ["model=vit"])
    assert from_dict(to_dict(load_config(None, ["method=hda"]))).method.hda.weighting == "uncertainty"


def test_base_includes_and_cycles(tmp_path):
    (tmp_path / "data.yaml").write_text("name: data\ndata: {batch_size: 7, snr_db: [1, 2]}\n")
    (tmp_path / "exp.yaml").write_text("base: data.yaml\nname: exp\ndata: {batch_size: 9}\n")
    cfg = load_config(str(tmp_path / "exp.yaml"))
    assert cfg.name == "exp" and cfg.data.batch_size == 9 and cfg.data.snr_db == [1.0, 2.0]
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="'base' includes itself"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(str(tmp_path / "c.yaml"))


def test_config_module_imports_no_component():
    """tfloc.config is machinery only: importing it loads no model, method or scene module."""
    r = subprocess.run([sys.executable, "-c", "import sys, tfloc.config; "
                        "print(sorted(m for m in sys.modules if m.startswith('tfloc')))"],
                       capture_output=True, text=True, timeout=120)
    mods = eval(r.stdout.strip())
    assert set(mods) <= {"tfloc", "tfloc.config"}, mods


def test_cli_start_is_quiet_but_keeps_real_stderr():
    """TF's CUDA plugin lines on a CPU-only machine are held back; other stderr output,
    C++ or Python, during and after the import still gets through."""
    code = ("import os, sys\n"
            "from tfloc.utils import quiet_tensorflow, filtered_stderr\n"
            "quiet_tensorflow()\n"
            "import tensorflow as tf\n"
            "with filtered_stderr():\n"
            "    os.write(2, b'Unable to register cuDNN factory: noise\\nkept line\\n')\n"
            "print(float(tf.reduce_sum(tf.ones(3))))\n"
            "print('after', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3.0"
    assert r.stderr.splitlines() == ["kept line", "after"]


@pytest.mark.parametrize("case", ["file on the path", "read-only file system", "full file system"])
def test_an_unwritable_run_dir_is_one_line_before_any_tracing(case, tmp_path, monkeypatch, capsys):
    from conftest import mounted_tmpfs
    from tfloc.run import runner
    from tfloc.run.cli import run_cli, train_main
    if case == "file on the path":
        (tmp_path / "afile").write_text("x")
        mount, run, needle = contextlib.nullcontext(), tmp_path / "afile" / "run", "afile is a file, not a directory"
    elif case == "read-only file system":
        mount = mounted_tmpfs(tmp_path / "fs", "ro,size=1m")
        run, needle = tmp_path / "fs" / "run", "cannot write in"
    else:       # 1 MB: less than a run needs
        mount = mounted_tmpfs(tmp_path / "fs", "size=1m")
        run, needle = tmp_path / "fs" / "run", "MB free on its file system, a run needs at least 100 MB"
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: pytest.fail("traced before checking the run dir"))
    monkeypatch.chdir(tmp_path)
    with mount:
        with pytest.raises(SystemExit) as e:
            run_cli(train_main, ["--config", os.path.join(REPO, "configs", "hda.yaml"), "--run-dir", str(run)])
        assert not run.exists()
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Traceback" not in err


def test_a_float_whose_default_nan_means_unset_round_trips():
    """A tuning space's min / max are NaN when not set; a resolved config.yaml holds them as
    .nan and must load again (every other float must be finite)."""
    cfg = load_config(None, ["tuning.space=[{key: training.learning_rate, values: [0.001, 0.01]}]"])
    again = from_dict(to_dict(cfg))          # what a run's config.yaml holds, loaded back
    assert math.isnan(cfg.tuning.space[0].min) and math.isnan(again.tuning.space[0].max)
    with pytest.raises(ConfigError, match=r"tuning.space\[0\].step: expected a finite number"):
        load_config(None, ["tuning.space=[{key: training.learning_rate, step: .nan}]"])
