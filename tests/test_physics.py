"""Physics sanity of the simulation side, each asserting a number."""
import numpy as np
import pytest

from tfloc.sim.config import ArrayConfig, SimulationConfig
from tfloc.sim import SiteTracer

pytestmark = pytest.mark.slow  # real Sionna RT; deselect with -m 'not slow'

C = 299_792_458.0


def _free_space_cfg():
    return SimulationConfig(scene="empty", frequency_hz=3.5e9, bs_position_m=[0.0, 0.0, 10.0],
                            sector_azimuths_deg=[0.0], bs_downtilt_deg=0.0,
                            bs_array=ArrayConfig(pattern="iso", polarization="V"),
                            ue_array=ArrayConfig(pattern="iso", polarization="V"))


@pytest.mark.parametrize("distance_m", [10.0, 100.0, 1000.0])
def test_free_space_gain_matches_friis(distance_m):
    tr = SiteTracer(_free_space_cfg())
    tr.set_sector(0)
    res = tr.trace(np.array([[distance_m, 0.0, 10.0]], np.float32))
    assert len(res["tau"][0]) == 1 and res["los"][0]          # nothing to reflect from
    gain_db = 10 * np.log10(np.sum(np.abs(res["a"][0]) ** 2))
    lam = C / 3.5e9
    friis_db = 20 * np.log10(lam / (4 * np.pi * distance_m))
    assert abs(gain_db - friis_db) < 0.5
    assert res["tau"][0][0] * C == pytest.approx(distance_m, rel=1e-5)


def test_synthetic_array_matches_explicit_trace(small_sim_cfg):
    """Plane-wave phase shifts (synthetic array) against tracing every antenna pair."""
    import mitsuba as mi
    from sionna.rt import PathSolver
    tr = SiteTracer(small_sim_cfg)
    tr.set_sector(0)
    # two LOS UEs in front of sector 0 (boresight 30 degrees), 40-70 m from the BS
    tr._set_receivers(np.array([[140.0, -80.0, 1.5], [150.0, -60.0, 1.5]], np.float32))
    freqs = mi.Float(np.linspace(-50e6, 50e6, 33) + 0.0)
    out = {}
    for synthetic in (True, False):
        paths = PathSolver()(tr.scene, max_depth=small_sim_cfg.max_depth, synthetic_array=synthetic,
                             samples_per_src=small_sim_cfg.samples_per_src,
                             max_num_paths_per_src=small_sim_cfg.max_num_paths_per_src,
                             refraction=False, seed=small_sim_cfg.seed)
        out[synthetic] = paths.cfr(frequencies=freqs, normalize_delays=False, out_type="numpy")
    h_syn, h_full = out[True], out[False]
    assert h_syn.shape == h_full.shape                      # [rx, rx_ant, tx, tx_ant, time, freq]
    nmse_db = 10 * np.log10(np.sum(np.abs(h_syn - h_full) ** 2) / np.sum(np.abs(h_full) ** 2))
    assert nmse_db < -20.0, nmse_db
