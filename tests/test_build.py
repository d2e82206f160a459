"""The dataset tool: sharded and resumed builds give the single build's dataset."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tfloc.run.experiment import load_config
from tfloc.sim import CacheError, DatasetBuild, PathSet, load_or_trace
from tfloc.sim.build import parse_shard

from conftest import REPO

pytestmark = pytest.mark.slow  # real Sionna RT; deselect with -m 'not slow'

SETS = ["simulation.ue_grid.spacing_m=10.0", "simulation.receivers_per_batch=4"]
CONFIG = os.path.join(REPO, "configs", "etoile_supervised.yaml")


@pytest.fixture(scope="module")
def sim_cfg():
    return load_config(CONFIG, SETS).simulation


@pytest.fixture(scope="module")
def single(sim_cfg, tmp_path_factory):
    ps, directory, hit = load_or_trace(sim_cfg, str(tmp_path_factory.mktemp("single")), progress=False)
    assert not hit and not os.path.exists(directory + ".build")
    return ps


def _same(a: PathSet, b: PathSet):
    """Same UEs, labels and paths (count and order) exactly; gains, delays and angles
    to float32 rounding (Dr.Jit's multithreaded arithmetic is not bit-reproducible:
    runs differ by about one ulp)."""
    for name in ("positions", "sector", "los", "offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_allclose(a.tau, b.tau, rtol=1e-6, atol=0)
    np.testing.assert_allclose(a.a, b.a, rtol=1e-4, atol=1e-5 * np.abs(a.a).max())
    for name in ("theta_t", "phi_t", "theta_r", "phi_r"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(a.interactions, b.interactions)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-3)


def test_sharded_build_equals_single(sim_cfg, single, tmp_path):
    b = DatasetBuild(sim_cfg, str(tmp_path))
    n0 = b.build(shard=(0, 2), progress=False)
    with pytest.raises(CacheError, match="chunks not traced yet"):
        b.merge()
    n1 = b.build(shard=(1, 2), progress=False)
    assert n0 > 0 and n1 > 0 and n0 + n1 == len(b.plan()["chunks"])
    _same(b.merge(), single)
    assert not os.path.exists(b.build_dir)
    _same(PathSet.load(b.final_dir), single)


def test_killed_build_resumes_without_loss(sim_cfg, single, tmp_path):
    cmd = [sys.executable, "-m", "tfloc.sim", "build", "--config", CONFIG,
           *[a for s in SETS + [f"runtime.cache_dir={tmp_path}"] for a in ("--set", s)]]
    b = DatasetBuild(sim_cfg, str(tmp_path))
    chunks = os.path.join(b.build_dir, "chunks")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [d for d in os.listdir(chunks) if d.startswith("chunk-")] if os.path.isdir(chunks) else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_chunks = len(b.plan()["chunks"])
    partial = len([d for d in os.listdir(chunks) if d.startswith("chunk-")])
    assert 3 <= partial < n_chunks, "the build must be interrupted midway"
    assert not os.path.exists(b.final_dir)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    traced = int(r.stdout.split("traced ")[1].split()[0])
    assert traced == n_chunks - partial            # only what was missing was traced
    _same(PathSet.load(b.final_dir), single)


def test_corrupt_chunk_names_the_file(sim_cfg, tmp_path):
    b = DatasetBuild(sim_cfg, str(tmp_path))
    b.build(progress=False)
    bad = os.path.join(b.chunk_dir(1), "paths.npz")
    with open(bad, "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(CacheError, match=r"chunk-00001/paths.npz: corrupt or truncated"):
        b.merge()


def test_parse_shard_errors():
    from tfloc.config import ConfigError
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_inspect_cli(single, tmp_path):
    single.save(str(tmp_path / "entry"))
    r = subprocess.run([sys.executable, "-m", "tfloc.sim", "inspect", str(tmp_path / "entry")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"UE positions: {single.num_ue} " in r.stdout and "per sector" in r.stdout
    n_los = int(single.los.sum())
    assert f"conditions: LOS {n_los} " in r.stdout
    assert (tmp_path / "entry" / "coverage.png").stat().st_size > 10_000
    r = subprocess.run([sys.executable, "-m", "tfloc.sim", "inspect", str(tmp_path / "nope")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no such cache entry" in r.stderr


def test_ray_build_with_two_local_workers_equals_single(single, tmp_path):
    """python -m tfloc.sim build --executor ray --workers 2: a local Ray cluster, each worker
    loads the scene once and traces chunks; same plan and merge as every other build."""
    pytest.importorskip("ray")
    args = ["--config", CONFIG, *[a for s in [*SETS, f"runtime.cache_dir={tmp_path}"] for a in ("--set", s)]]
    r = subprocess.run([sys.executable, "-m", "tfloc.sim", "build", *args, "--executor", "ray",
                        "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 Ray workers" in r.stderr and "traced " in r.stdout and "dataset: " in r.stdout
    entry = r.stdout.strip().splitlines()[-1].split("dataset: ")[1]
    _same(PathSet.load(entry), single)
    assert not os.path.exists(entry + ".build")


def test_ray_build_errors_are_one_line_before_anything_runs(tmp_path, capsys):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                     # nothing listens there now
    common = ["build", "--config", CONFIG, "--set", f"runtime.cache_dir={tmp_path}"]
    # the command itself, against a port where nothing listens
    r = subprocess.run([sys.executable, "-m", "tfloc.sim", *common, "--executor", "ray", "--address",
                        f"127.0.0.1:{port}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"--address 127.0.0.1:{port}: cannot reach the Ray cluster" in r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    # the argument checks, in this process (the same CLI function)
    from tfloc.run.cli import run_cli
    from tfloc.run.dataset import main
    for extra, needle in [(["--executor", "ray", "--address", "nohostport"], "expected HOST:PORT"),
                          (["--address", "127.0.0.1:6379"], "--address and --workers go with --executor ray"),
                          (["--executor", "ray", "--shard", "0/2"], "choose one")]:
        with pytest.raises(SystemExit) as e:
            run_cli(main, [*common, *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.iterdir())


def test_ray_missing_says_how_to_install(tmp_path):
    """Without Ray (simulated: ray made unimportable) the error names the extra."""
    code = ("import sys; sys.modules['ray'] = None; from tfloc.run.cli import run_cli; "
            "from tfloc.run.dataset import main; run_cli(main, ['build', '--config', %r, "
            "'--executor', 'ray'])" % CONFIG)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and 'pip install -e ".[ray]"' in r.stderr, r.stderr[-2000:]
