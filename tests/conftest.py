import contextlib
import inspect
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # ``-n N``: each worker (and the processes it starts) gets its share of the cores, so N
    # TF thread pools do not fight over them; set before TensorFlow is imported
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


@pytest.fixture(scope="session")
def small_sim_cfg():
    """The shipped etoile site with a coarse grid: a few hundred UEs."""
    from tfloc.run.experiment import load_config
    cfg = load_config(os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                      ["simulation.ue_grid.spacing_m=15.0"])
    return cfg.simulation


#: fixtures that trace real Sionna RT: a test that uses one is ``slow``
TRACING_FIXTURES = ("small_paths",)


#: session fixtures cheap enough to build once per xdist worker without grouping their tests
CHEAP_SHARED_FIXTURES = ("small_sim_cfg",)


def shared_fixture_group(item) -> str | None:
    """The xdist group of a test that uses a costly module- or session-scoped fixture: the
    fixture's name (session) or the module's (module), so ``-n 2 --dist loadgroup`` builds
    it on one worker only; None for a test that can run anywhere."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    scopes = {name: d[-1].scope for name, d in defs.items()          # ours, not pytest's own
              if d and name not in CHEAP_SHARED_FIXTURES
              and os.path.dirname(os.path.abspath(inspect.getfile(d[-1].func))) == TESTS}
    session = sorted(n for n, s in scopes.items() if s == "session")
    if session:
        return session[0]
    if "module" in scopes.values():
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)     # before pytest-xdist writes the groups into the node ids
def pytest_collection_modifyitems(config, items):
    """Marks every test that traces real Sionna RT through a fixture as ``slow``, so
    ``-m "not slow"`` is the inner loop without ray tracing; and groups the tests that share
    a costly fixture for pytest-xdist (``--dist loadgroup``; a test that asks for one at run
    time carries its ``xdist_group`` mark itself)."""
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in TRACING_FIXTURES):
            item.add_marker(pytest.mark.slow)
        group = shared_fixture_group(item)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def small_paths(small_sim_cfg):
    """Real Sionna RT paths of the coarse etoile grid (traced once per session)."""
    from tfloc.sim import trace_site
    return trace_site(small_sim_cfg, progress=False)


#: epochs of the contract runs that must learn (tests/test_contract.py); TFLOC_LEARN_EPOCHS
#: tries another count (at 15, 8 of the 16 methods missed the learning margin)
LEARN_EPOCHS = int(os.environ.get("TFLOC_LEARN_EPOCHS", 30))


@pytest.fixture(scope="session")
def synthetic_stage1(tmp_path_factory):
    """A finished supervised run of configs/etoile_supervised.yaml on the synthetic set (no
    tracing): the stage 1 (``init_from``) of the semi-supervised methods' tests."""
    import tfloc.sim
    from synthetic import ETOILE_SETS, LEARNABLE_BS, LEARNABLE_SETS, SYNTHETIC_SETS, synthetic_pathset
    from tfloc.run.experiment import load_config
    from tfloc.run.runner import train_and_evaluate
    ps = synthetic_pathset(bs=LEARNABLE_BS)
    run = tmp_path_factory.mktemp("stage1") / "supervised"
    cfg = load_config(os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                      [*SYNTHETIC_SETS, *ETOILE_SETS, *LEARNABLE_SETS, "runtime.deterministic=true",
                       f"training.epochs={LEARN_EPOCHS}",
                       "export.enabled=false", "evaluation.evaluators=[position]"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
        train_and_evaluate(cfg, str(run))
    return run


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_spec(feature_shape=(16, 8, 2), dims=2, num_sectors=0, links=1, csi_shape=(2, 16, 12, 2),
              representation="magnitude", mean=None, std=None):
    """A DataSpec for model tests, without tracing anything."""
    from tfloc.data.spec import DataSpec
    return DataSpec(site="multi_bs" if links > 1 else ("sectored" if num_sectors else "single_bs"),
                    links=links, csi_shape=tuple(csi_shape), feature_shape=tuple(feature_shape),
                    position_dims=dims, num_sectors=num_sectors, has_car_conditions=False,
                    num_delay_taps=feature_shape[1], representation=representation,
                    normalization="sample_max", array_shape=(1, 1, 1),
                    target_mean=tuple(mean or [0.0] * dims), target_std=tuple(std or [1.0] * dims))


def run_python(args, cwd, timeout=900, check=True):
    """Runs ``python *args`` in a fresh process; asserts success unless ``check`` is False."""
    r = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def train_tiny(config, sets, tmp):
    """train.py on a shipped config with tiny-scale overrides into ``tmp/run``; returns (run, result)."""
    args = [a for s in sets + [f"runtime.cache_dir={tmp / 'cache'}"] for a in ("--set", s)]
    run = tmp / "run"
    r = run_python([os.path.join(REPO, "train.py"), "--config", os.path.join(REPO, "configs", config),
                    *args, "--run-dir", str(run)], cwd=tmp)
    return run, r


#: code a synthetic driver runs before the CLI: TFLOC_TEST_EPOCH_SLEEP seconds after each
#: epoch, so a test can kill the process between epochs
EPOCH_SLEEP_HOOK = """
pause = float(os.environ.get("TFLOC_TEST_EPOCH_SLEEP", "0"))
if pause:
    end = keras.callbacks.TensorBoard.on_epoch_end
    keras.callbacks.TensorBoard.on_epoch_end = lambda self, e, logs=None: (time.sleep(pause), end(self, e, logs))
"""


def synthetic_driver(tmp, hooks: str = "") -> str:
    """A script that runs train.py's CLI on the synthetic path set (no tracing) in a fresh
    process, after ``hooks`` (test instrumentation); returns its path."""
    path = tmp / "driver.py"
    path.write_text(f"""
import json, os, sys, time
sys.path.insert(0, {os.path.join(REPO, "tests")!r})
import keras, tfloc.sim
from synthetic import synthetic_pathset
ps = synthetic_pathset()
tfloc.sim.load_or_trace = lambda cfg, cache, progress=True: (ps, "synthetic", True)
{hooks}
from tfloc.run.cli import run_cli, train_main
run_cli(train_main, sys.argv[1:])
""")
    return str(path)


@contextlib.contextmanager
def mounted_tmpfs(path, options: str):
    """A tmpfs mounted at ``path`` with ``options`` (e.g. "ro" or "size=1m", a small disk to
    fill) for the duration; skips the test where this machine does not allow mounting."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
