"""Faults an unlucky or hostile user meets: damaged files, unwritable places, files left
half-written. Each test asserts the documented outcome (a one-line error with exit 2, or a
fallback) and that nothing already finished is lost."""
import os
import stat

import numpy as np
import pytest

from conftest import REPO
from tfloc.config import dump_yaml
from tfloc.run.experiment import load_config


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_written_atomically_get_the_mode_of_a_normally_opened_file(tmp_path):
    import keras
    from tfloc.methods.callbacks import save_state
    from tfloc.utils import atomic_write_text, normal_file_mode
    old = os.umask(0o022)
    try:
        assert normal_file_mode() == 0o644
        atomic_write_text(str(tmp_path / "simulation.json"), "{}")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        save_state(model, str(tmp_path / "latest.npz"))
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "simulation.json") == _mode(tmp_path / "plain.txt") == 0o644
    assert _mode(tmp_path / "latest.npz") == 0o644
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncated", "not a Keras archive"])
def test_a_damaged_model_file_is_named_as_damaged_before_any_tracing(damage, tmp_path, monkeypatch, capsys):
    import keras
    from tfloc.run import runner
    from tfloc.run.cli import evaluate_main, run_cli
    run = tmp_path / "run"
    run.mkdir()
    dump_yaml(load_config(os.path.join(REPO, "configs", "hda.yaml")), str(run / "config.yaml"))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(run / "model.keras")
    data = (run / "model.keras").read_bytes()
    damaged = data[: len(data) // 2] if damage == "truncated" else b"\0" * 64
    (run / "model.keras").write_bytes(damaged)
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: pytest.fail("traced before loading the model"))
    with pytest.raises(SystemExit) as e:
        run_cli(evaluate_main, ["--run-dir", str(run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and f"{run / 'model.keras'}: damaged model file" in line[0]
    assert (run / "model.keras").read_bytes() == damaged          # left as it was


def _tiny_paths():
    from tfloc.sim import PathSet
    n, p = 4, 6
    rng = np.random.default_rng(0)
    ang = lambda: rng.uniform(0, 1, p).astype(np.float32)   # noqa: E731
    return PathSet(positions=rng.normal(size=(n, 3)).astype(np.float32), sector=np.zeros(n, np.int32),
                   los=np.ones(n, bool), offsets=np.array([0, 2, 3, 5, 6], np.int64),
                   a=(rng.normal(size=(p, 1, 2)) + 0j).astype(np.complex64), tau=ang() * 1e-6,
                   theta_t=ang(), phi_t=ang(), theta_r=ang(), phi_r=ang(), meta={"traced": 4})


@pytest.mark.parametrize("damage, needle", [
    ("per-UE array one row short", "inconsistent path cache (4 UEs, 6 paths: los has 3 rows)"),
    ("per-path array one row short", "inconsistent path cache (4 UEs, 6 paths: tau has 5 rows)"),
    ("offsets going back", "the path offsets are not one increasing entry per UE"),
    ("meta.json a list", "meta.json: expected a mapping, got a list"),
])
def test_a_cache_entry_whose_parts_disagree_is_refused_at_load(damage, needle, tmp_path):
    from tfloc.sim import CacheError, PathSet
    entry = tmp_path / "entry"
    _tiny_paths().save(str(entry))
    assert PathSet.load(str(entry)).meta == {"traced": 4}
    with np.load(entry / "paths.npz") as z:
        arrays = {k: z[k] for k in z.files}
    if damage == "meta.json a list":
        (entry / "meta.json").write_text("[1, 2]")
    else:
        if damage.startswith("per-UE"):
            arrays["los"] = arrays["los"][:-1]
        elif damage.startswith("per-path"):
            arrays["tau"] = arrays["tau"][:-1]
        else:
            arrays["offsets"] = np.array([0, 3, 2, 5, 6])
        np.savez(entry / "paths.npz", **arrays)
    with pytest.raises(CacheError) as e:
        PathSet.load(str(entry))
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("xml, needle", [
    ("<scene version='2.1.0'><shape", "is not well-formed XML"),
    ("<html><body/></html>", "is not a Mitsuba scene (its root element is <html>, expected <scene>)"),
])
def test_a_malformed_scene_file_is_one_line_before_tracing(xml, needle, tmp_path, monkeypatch, capsys):
    from tfloc.run.cli import run_cli, train_main
    scene = tmp_path / "bad.xml"
    scene.write_text(xml)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_cli(train_main, ["--config", os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                             "--set", f"simulation.scene={scene}", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert e.value.code == 2 and len(line) == 1 and needle in line[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_scene_mitsuba_cannot_load_is_one_line(tmp_path):
    from tfloc.config import ConfigError
    from tfloc.sim.scenes import load_scene
    scene = tmp_path / "scene.xml"
    scene.write_text("<scene version='2.1.0'><shape type='ply' id='wall'>"
                     "<string name='filename' value='missing.ply'/></shape></scene>")
    with pytest.raises(ConfigError) as e:
        load_scene(str(scene))
    assert str(e.value).startswith(f"simulation.scene: '{scene}' cannot be loaded by Mitsuba (")
    assert "\n" not in str(e.value)


def test_a_second_training_into_a_running_run_dir_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import time
    from test_resume import _backup_epoch, _cmd, _env
    run = tmp_path / "run"
    first = subprocess.Popen(_cmd(tmp_path, run), cwd=tmp_path, env=_env(TFLOC_TEST_EPOCH_SLEEP="1.0"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while _backup_epoch(run) < 1:
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.05)
        second = subprocess.run(_cmd(tmp_path, run), cwd=tmp_path, env=_env(), capture_output=True,
                                text=True, timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        lines = [x for x in second.stderr.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert f"run directory {run} is being written by PID {first.pid} on " in lines[0]
        assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]   # the first is unharmed
    finally:
        if first.poll() is None:
            first.kill()
    assert (run / "report.json").is_file()
    assert (tmp_path / ".run.lock").is_file()     # the lock file stays beside the run, unlocked


BUILD_SCRIPT = """
import json, logging, os, sys, time
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {tests!r})
from test_faults import _tiny_paths
from tfloc.sim import build
from tfloc.sim.config import SimulationConfig
count = {count!r}
def fake_build(self, shard=(0, 1), progress=True):
    with open(count, "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
    time.sleep(3)
    return 1
build.DatasetBuild.build = fake_build
build.DatasetBuild.merge = lambda self: (_tiny_paths().save(self.final_dir), _tiny_paths())[1]
build.cache_key = lambda cfg: "k"
ps, entry, hit = build.load_or_trace(SimulationConfig(), {cache!r}, progress=False)
print(json.dumps({{"hit": hit, "n": ps.num_ue}}))
"""


def test_two_processes_building_one_cache_entry_trace_it_once(tmp_path):
    import json
    import subprocess
    import sys
    count = tmp_path / "builds.txt"
    script = tmp_path / "build.py"
    script.write_text(BUILD_SCRIPT.format(tests=os.path.join(REPO, "tests"), count=str(count),
                                          cache=str(tmp_path / "cache")))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    results = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outs), key=lambda r: r["hit"])
    assert results == [{"hit": False, "n": 4}, {"hit": True, "n": 4}]
    assert len(count.read_text().split()) == 1                      # traced once
    waited = [e for _, e in outs if "waiting for PID" in e]
    assert len(waited) == 1 and "which is building" in waited[0]


def test_replacing_a_cache_entry_never_shows_readers_a_missing_entry(tmp_path):
    import threading
    from tfloc.sim import PathSet
    entry = str(tmp_path / "entry")
    ps = _tiny_paths()
    ps.save(entry)
    stop, seen = threading.Event(), {"missing": 0, "reads": 0}

    def read():
        while not stop.is_set():
            try:
                PathSet.load(entry)
                seen["reads"] += 1
            except Exception:
                seen["missing"] += 1
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(200):
            ps.meta = {"version": k}
            ps.save(entry)
    finally:
        stop.set()
        reader.join()
    assert seen["reads"] > 0 and seen["missing"] == 0
    assert PathSet.load(entry).meta == {"version": 199}
    assert sorted(os.listdir(tmp_path)) == ["entry"]


def test_a_lock_whose_holder_was_killed_is_taken_over(tmp_path):
    import subprocess
    import sys
    from tfloc.utils import FileLock
    path = str(tmp_path / ".run.lock")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tfloc.utils import FileLock; "
                               f"lock = FileLock({path!r}); lock.acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(path)
        assert not lock.acquire() and lock.holder().startswith(f"PID {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait()
    assert lock.acquire() and lock.holder().startswith(f"PID {os.getpid()} on ")
    lock.release()


DIE_IN_EXPORT_HOOK = """
if os.environ.get("TFLOC_TEST_DIE_IN_EXPORT"):
    import tfloc.export.saved_model as sm
    def dying(self, path, examples=None):      # a kill with the export half-written
        with sm.atomic_dir(path) as tmp:
            open(os.path.join(tmp, "saved_model.pb"), "w").write("half")
            os._exit(9)
    sm.ServingModule.write = dying
"""


def test_a_kill_during_export_leaves_an_unfinished_run_that_the_same_command_completes(tmp_path):
    import json
    import subprocess
    import sys
    from test_resume import SETS, _env
    from conftest import synthetic_driver
    from tfloc.run.runner import run_finished
    driver = synthetic_driver(tmp_path, DIE_IN_EXPORT_HOOK)
    run = tmp_path / "run"
    sets = [a for s in [*SETS, "export.enabled=true"] for a in ("--set", s)]
    cmd = [sys.executable, driver, "--config", os.path.join(REPO, "configs", "etoile_supervised.yaml"),
           *sets, "--run-dir", str(run)]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(TFLOC_TEST_DIE_IN_EXPORT="1"), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 9, r.stderr[-3000:]
    export = run / "export" / "etoile_supervised"
    assert json.loads((run / "report.json").read_text())["finished"] is False and not run_finished(str(run))
    assert [p.name for p in export.iterdir()][0].startswith(".tmp-") and not (export / "1").exists()
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage train: finished in an earlier run" in r.stderr       # nothing trained again
    assert sorted(p.name for p in export.iterdir()) == ["1"] and (export / "1" / "saved_model.pb").stat().st_size > 4
    assert json.loads((run / "report.json").read_text())["finished"] is True and run_finished(str(run))


def _fill(folder) -> str:
    """Writes a file in ``folder`` until its file system is full; returns its path."""
    path = os.path.join(folder, "filler")
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 2 ** 20)
                fh.flush()
        except OSError:
            pass
    return path


def test_a_disk_that_fills_during_training_is_one_line_and_the_run_resumes(tmp_path):
    import subprocess
    import time
    from conftest import mounted_tmpfs
    from test_resume import _backup_epoch, _cmd, _env
    with mounted_tmpfs(tmp_path / "disk", "size=160m") as disk:
        run = disk / "run"
        proc = subprocess.Popen(_cmd(tmp_path, run), cwd=tmp_path, env=_env(TFLOC_TEST_EPOCH_SLEEP="1.0"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while _backup_epoch(run) < 2:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        filler = _fill(disk)
        err = proc.communicate(timeout=600)[1]
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert "No space left on device" in lines[0] and "run the same command again" in lines[0]
        done_before = _backup_epoch(run)
        assert done_before >= 2                           # what had finished is still there
        os.remove(filler)
        r = subprocess.run(_cmd(tmp_path, run), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"stage train: resuming after epoch {done_before}" in r.stderr
        assert (run / "report.json").is_file()
