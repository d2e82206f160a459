import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def small_sim_cfg():
    """The shipped etoile site with a coarse grid: a few hundred UEs."""
    from tfloc.config import load_config
    cfg = load_config(os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                      ["simulation.ue_grid.spacing_m=15.0"])
    return cfg.simulation


@pytest.fixture(scope="session")
def small_paths(small_sim_cfg):
    """Real Sionna RT paths of the coarse etoile grid (traced once per session)."""
    from tfloc.sim import trace_site
    return trace_site(small_sim_cfg, progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
