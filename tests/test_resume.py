"""Training that survives a kill (issue 11, point 4): BackupAndRestore in every fit, stages
that finished are restored, a damaged backup or another config's run directory is a
one-line error."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import EPOCH_SLEEP_HOOK, REPO, synthetic_driver
from synthetic import ETOILE_SETS, SYNTHETIC_SETS

EPOCHS = 8
SETS = [*SYNTHETIC_SETS, *ETOILE_SETS, "export.enabled=false", "evaluation.evaluators=[position]",
        f"training.epochs={EPOCHS}", "training.early_stopping_patience=50"]


def _cmd(tmp, run, sets=(), config="etoile_supervised.yaml"):
    driver = synthetic_driver(tmp, EPOCH_SLEEP_HOOK)
    args = [a for s in [*SETS, *sets] for a in ("--set", s)]
    return [sys.executable, driver, "--config", os.path.join(REPO, "configs", config),
            *args, "--run-dir", str(run)]


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _backup_epoch(run, stage="train"):
    try:
        with open(run / "backup" / stage / "training_metadata.json") as fh:
            return json.load(fh)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_then_rerun_resumes_at_the_last_finished_epoch(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tmp_path, run), cwd=tmp_path, env=_env(TFLOC_TEST_EPOCH_SLEEP="1.0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while _backup_epoch(run) < 3:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no backup after 10 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _backup_epoch(run)
    assert 3 <= killed_at < EPOCHS and not (run / "report.json").exists()
    # a copy whose best checkpoint was cut short (a kill or a full disk mid-write)
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    best = cut / "checkpoints" / "best.npz"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])

    r = subprocess.run(_cmd(tmp_path, run), cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"stage train: resuming after epoch {killed_at}" in r.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["resumed"] == {"stages": {"train": killed_at}}
    assert report["timings_s"]["epochs"] == EPOCHS      # the whole history, not the resumed part
    # the training time counts the killed process's epochs too (it slept >= 1 s in them)
    earlier = report["timings_s"]["training_s_earlier"]
    assert earlier >= 1.0 and report["timings_s"]["training_s"] > earlier
    assert report["model"]["mean_m"] > 0 and (run / "model.keras").is_file()
    record = json.loads((run / "checkpoints" / "done-train.json").read_text())
    assert record["resumed_at_epoch"] == killed_at and len(record["history"]["loss"]) == EPOCHS
    assert not (run / "backup" / "train").exists()      # removed once the fit finished

    # the copy with the damaged best checkpoint: found before training, the stage starts again
    r = subprocess.run(_cmd(tmp_path, cut), cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"stage train: the best checkpoint {best} cannot be read" in r.stderr
    assert "training the stage again from its start" in r.stderr and "resuming after" not in r.stderr
    record = json.loads((cut / "checkpoints" / "done-train.json").read_text())
    assert record["resumed_at_epoch"] == 0 and len(record["history"]["loss"]) == EPOCHS

    # a third run finds every stage finished: restores them, trains nothing, same test error
    r = subprocess.run(_cmd(tmp_path, run), cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage train: finished in an earlier run (8 epochs), weights restored" in r.stderr
    again = json.loads((run / "report.json").read_text())
    assert again["resumed"] == {"stages": {"train": "restored"}}
    assert again["model"]["mean_m"] == pytest.approx(report["model"]["mean_m"], rel=1e-6)


def _one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    r = subprocess.run(_cmd(tmp, tmp / "run"), cwd=tmp, env=_env(), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "run"


def _copy(run, tmp_path):
    import shutil
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_damaged_backup_is_a_one_line_error_naming_the_file(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    # a backup of epoch 2 whose weights file was cut short
    backup = run / "backup" / "train"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 2}')
    (backup / "latest.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    for f in (run / "checkpoints").glob("done-*"):
        f.unlink()
    r = subprocess.run(_cmd(tmp_path, run), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=900)
    _one_line_error(r, str(backup / "latest.npz"), "corrupt or truncated")
    (backup / "training_metadata.json").write_text('{"epo')
    r = subprocess.run(_cmd(tmp_path, run), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=900)
    _one_line_error(r, str(backup / "training_metadata.json"), "corrupt or truncated")


def test_run_dir_of_another_config_is_refused_before_anything_is_written(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    r = subprocess.run(_cmd(tmp_path, run, ["training.learning_rate=0.01"]), cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=900)
    _one_line_error(r, str(run), "training.learning_rate: 0.001 there, 0.01 here")
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_a_multi_stage_method_resumes_at_its_first_unfinished_stage(tmp_path, monkeypatch):
    """Autoencoder: pre-training finished, fine-tuning did not -> pre-training is restored
    (not retrained), fine-tuning trains again."""
    import tfloc.sim
    from synthetic import ETOILE_SITE, synthetic_pathset
    from tfloc.run.experiment import load_config
    from tfloc.run.runner import train_and_evaluate
    ps = synthetic_pathset()
    monkeypatch.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
    cfg = load_config(os.path.join(REPO, "configs", "autoencoder.yaml"),
                      [*SYNTHETIC_SETS, *ETOILE_SITE, "method.autoencoder.pretrain_epochs=2",
                       "export.enabled=false", "evaluation.evaluators=[position]"])
    run = tmp_path / "run"
    first = train_and_evaluate(cfg, str(run))
    assert "resumed" not in first
    for f in [run / "report.json", *(run / "checkpoints").glob("done-train.*")]:
        f.unlink()
    second = train_and_evaluate(cfg, str(run))
    assert second["resumed"] == {"stages": {"pretrain": "restored"}}
    keep = ("epochs", "best_epoch", "best_val_reconstruction_mse")
    assert {k: second["autoencoder"]["pretraining"][k] for k in keep} == \
        {k: first["autoencoder"]["pretraining"][k] for k in keep}
    assert second["timings_s"]["epochs"] == first["timings_s"]["epochs"]
    # a new run directory seeded with that finished stage (a study reusing an identical
    # stage) restores it too, and its report says so
    seeded = tmp_path / "seeded" / "checkpoints"
    seeded.mkdir(parents=True)
    for f in (run / "checkpoints").glob("done-pretrain.*"):
        shutil.copy(f, seeded / f.name)
    third = train_and_evaluate(cfg, str(seeded.parent))
    assert third["resumed"] == {"stages": {"pretrain": "restored"}}
