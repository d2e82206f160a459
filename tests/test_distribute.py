"""tf.distribute training (issue 11, point 2): TF_CONFIG checks, and two worker processes
on 127.0.0.1 that train like one process on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import EPOCH_SLEEP_HOOK, REPO, synthetic_driver
from synthetic import ETOILE_SETS, SYNTHETIC_SETS
from tfloc.config import ConfigError
from tfloc.run.distribute import parse_tf_config

#: every step's logged loss to TFLOC_TEST_STEP_LOG (a JSON list)
STEP_LOG_HOOK = """
steps, out = [], os.environ["TFLOC_TEST_STEP_LOG"]
def on_batch(self, batch, logs=None):
    steps.append(float(logs["loss"]))
    with open(out, "w") as fh:
        json.dump(steps, fh)
keras.callbacks.TensorBoard.on_train_batch_end = on_batch
"""

SETS = [*SYNTHETIC_SETS, *ETOILE_SETS, "training.epochs=1", "evaluation.evaluators=[position]", "model=ae_mlp",
        "data.batch_size=16"]


def test_tf_config_errors_name_what_is_wrong():
    ok = {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 1}}
    w = parse_tf_config(json.dumps(ok))
    assert (w.is_chief, w.index, w.num_workers) == (False, 1, 2)
    w = parse_tf_config(json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                    "task": {"type": "chief", "index": 0}}))
    assert (w.is_chief, w.index, w.num_workers) == (True, 0, 2)
    for text, needle in [(None, "needs the TF_CONFIG environment variable"),
                         ("{cluster: ", "TF_CONFIG: not valid JSON"),
                         ("[]", "must be a JSON object with 'cluster' and 'task'"),
                         (json.dumps({**ok, "task": {"type": "worker", "index": 2}}), "task.index 2 out of range"),
                         (json.dumps({**ok, "task": {"type": "ps", "index": 0}}), "task.type 'ps' is not a role"),
                         (json.dumps({"cluster": {"worker": ["127.0.0.1"]}, "task": ok["task"]}),
                          "must be a non-empty list of 'host:port'")]:
        with pytest.raises(ConfigError, match=needle):
            parse_tf_config(text)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cmd(tmp, run, sets):
    driver = synthetic_driver(tmp, STEP_LOG_HOOK + EPOCH_SLEEP_HOOK)
    args = [a for s in [*SETS, *sets] for a in ("--set", s)]
    return [sys.executable, driver, "--config", os.path.join(REPO, "configs", "etoile_supervised.yaml"),
            *args, "--run-dir", str(run)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def test_a_malformed_tf_config_is_a_one_line_error_before_anything_runs(tmp_path):
    r = subprocess.run(_cmd(tmp_path, tmp_path / "run", ["runtime.distribution=multi_worker"]),
                       cwd=tmp_path, env=_env(TF_CONFIG="{not json", TFLOC_TEST_STEP_LOG=str(tmp_path / "s")),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "error: TF_CONFIG: not valid JSON" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def _start_workers(tmp_path, run, sets=(), **env):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            _cmd(tmp_path, run, ["runtime.distribution=multi_worker", *sets]), cwd=tmp_path,
            env=_env(TF_CONFIG=tf_config, TFLOC_TEST_STEP_LOG=str(tmp_path / f"steps{i}.json"), **env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_only_the_chief_writes(tmp_path):
    # float32: the losses below must agree to 1e-5, and bfloat16's sums in another order
    # differ by 6e-5 (the killed-workers test keeps the config's mixed_bfloat16)
    sets = ["training.precision=float32"]
    run = tmp_path / "run"
    procs = _start_workers(tmp_path, run, sets)
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "worker 0 of 2 (worker): writes the run directory" in outs[0][1]
    assert "worker 1 of 2 (worker): writes nothing kept" in outs[1][1]
    report = json.loads((run / "report.json").read_text())
    assert report["timings_s"]["distribution"] == {"strategy": "multi_worker", "workers": 2,
                                                    "replicas": 2}
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "best.npz").is_file()
    assert (run / "export" / "etoile_supervised" / "1" / "saved_model.pb").is_file()
    # the worker wrote its own scratch directory, removed at its end
    import glob
    import hashlib
    import tempfile
    key = hashlib.sha1(os.path.abspath(run).encode()).hexdigest()[:12]
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"tfloc-worker*-{key}"))

    single = tmp_path / "single"
    r = subprocess.run(_cmd(tmp_path, single, [*sets, "export.enabled=false"]), cwd=tmp_path,
                       env=_env(TFLOC_TEST_STEP_LOG=str(tmp_path / "single.json")),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    two = [json.loads((tmp_path / f"steps{i}.json").read_text()) for i in range(2)]
    one = json.loads((tmp_path / "single.json").read_text())
    assert len(two[0]) == len(one) == len(two[1])             # the same steps of the global batch
    np.testing.assert_allclose(two[0], two[1], rtol=1e-6)     # both workers see the same loss
    # every step's loss matches the single process on the same global batch (measured: equal
    # to 1e-7; the MLP has no batch norm, whose statistics would be per replica of 8 UEs)
    np.testing.assert_allclose(two[0], one, rtol=1e-5)
    test_error = json.loads((single / "report.json").read_text())["model"]["mean_m"]
    assert report["model"]["mean_m"] == pytest.approx(test_error, rel=1e-5)


@pytest.mark.slow
def test_killed_workers_resume_together_from_the_chiefs_backup(tmp_path):
    import signal
    import time
    run = tmp_path / "run"
    sets = ["training.epochs=6", "training.early_stopping_patience=50", "export.enabled=false"]
    procs = _start_workers(tmp_path, run, sets, TFLOC_TEST_EPOCH_SLEEP="1.0")
    meta = run / "backup" / "train" / "training_metadata.json"
    deadline = time.time() + 600
    while not (meta.exists() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 2):
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    killed_at = json.loads(meta.read_text())["epoch"]
    procs = _start_workers(tmp_path, run, sets)
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert f"stage train: resuming after epoch {killed_at}" in err     # both workers
    report = json.loads((run / "report.json").read_text())
    assert report["resumed"] == {"stages": {"train": killed_at}} and report["timings_s"]["epochs"] == 6
