"""Real Sionna RT checks on the etoile site (coarse grid)."""
import os

import numpy as np
import pytest

from tfloc.sim import CacheError, PathSet, SiteTracer, is_indoor, load_or_trace, sector_of
from tfloc.sim import build as build_mod

C = 299_792_458.0

pytestmark = pytest.mark.slow  # real Sionna RT; deselect with -m 'not slow'


def test_los_delay_equals_distance_over_c(small_paths, small_sim_cfg):
    ps = small_paths
    bs = np.asarray(small_sim_cfg.bs_position_m)
    los_ues = np.flatnonzero(ps.los)
    assert len(los_ues) > 10
    for i in los_ues:
        s, e = ps.offsets[i], ps.offsets[i + 1]
        d = np.linalg.norm(ps.positions[i].astype(np.float64) - bs)
        assert ps.tau[s:e].min() * C == pytest.approx(d, rel=1e-4)
    # every path is at least as long as the direct line
    for i in np.flatnonzero(ps.num_paths > 0):
        s, e = ps.offsets[i], ps.offsets[i + 1]
        d = np.linalg.norm(ps.positions[i].astype(np.float64) - bs)
        assert ps.tau[s:e].min() * C >= d * (1 - 1e-4)


def test_pathset_shapes_and_labels(small_paths, small_sim_cfg):
    ps = small_paths
    assert ps.a.shape[1:] == (2, 32) and ps.a.dtype == np.complex64
    assert ps.offsets[-1] == ps.a.shape[0] == ps.tau.shape[0]
    assert set(np.unique(ps.sector)) <= {0, 1, 2}
    np.testing.assert_array_equal(ps.sector, sector_of(ps.positions, small_sim_cfg.bs_position_m,
                                                       small_sim_cfg.sector_azimuths_deg))
    assert ps.meta["n_no_path"] == int((ps.num_paths == 0).sum())
    assert not ps.los[ps.num_paths == 0].any()
    assert np.allclose(ps.positions[:, 2], 1.5)


def test_batch_equals_one_at_a_time(small_paths, small_sim_cfg):
    """Sionna issue #1172: many receivers sharing the path buffer must not change paths."""
    ps = small_paths
    has = np.flatnonzero(ps.num_paths > 0)
    pick = np.concatenate([has[ps.los[has]][:3], has[~ps.los[has]][:3]])
    positions = ps.positions[pick]
    tr = SiteTracer(small_sim_cfg)
    tr.set_sector(0)
    batch = tr.trace(positions)
    for j in range(len(pick)):
        single = tr.trace(positions[j:j + 1])
        ob, os_ = np.argsort(batch["tau"][j]), np.argsort(single["tau"][0])
        assert len(ob) == len(os_)
        np.testing.assert_allclose(batch["tau"][j][ob], single["tau"][0][os_], rtol=1e-5)
        np.testing.assert_allclose(batch["a"][j][ob], single["a"][0][os_], rtol=1e-3, atol=1e-9)
        assert batch["los"][j] == single["los"][0]


def test_sector_assignment():
    bs = [0.0, 0.0, 30.0]
    pts = np.array([[10, 1, 1.5], [-10, 1, 1.5], [0, -10, 1.5], [1, 10, 1.5]], np.float32)
    np.testing.assert_array_equal(sector_of(pts, bs, [30, 150, 270]), [0, 1, 2, 0])


def test_indoor_filter(small_sim_cfg):
    from tfloc.sim import load_scene
    scene = load_scene("etoile")
    # (150, -50) lies under a 27.5 m roof; the Etoile roundabout (-60, 0) is open
    pts = np.array([[150, -50, 1.5], [-60, 0, 1.5]], np.float32)
    np.testing.assert_array_equal(is_indoor(scene.mi_scene, pts), [True, False])


def test_cache_roundtrip_hit_and_corruption(small_paths, small_sim_cfg, tmp_path, monkeypatch):
    calls = []

    def fake_build(self, shard=(0, 1), progress=True):
        calls.append(1)
        return 0

    def fake_merge(self):
        small_paths.save(self.final_dir)
        return small_paths
    monkeypatch.setattr(build_mod.DatasetBuild, "build", fake_build)
    monkeypatch.setattr(build_mod.DatasetBuild, "merge", fake_merge)
    p1, d1, hit1 = load_or_trace(small_sim_cfg, str(tmp_path))
    p2, d2, hit2 = load_or_trace(small_sim_cfg, str(tmp_path))
    assert (hit1, hit2) == (False, True) and d1 == d2 and len(calls) == 1
    for name in PathSet._ARRAYS:
        np.testing.assert_array_equal(getattr(p1, name), getattr(p2, name))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []
    # a truncated cache file is reported by name
    npz = os.path.join(d1, "paths.npz")
    with open(npz, "r+b") as fh:
        fh.truncate(os.path.getsize(npz) // 2)
    with pytest.raises(CacheError, match="paths.npz: corrupt or truncated"):
        load_or_trace(small_sim_cfg, str(tmp_path))


def test_failed_save_leaves_nothing(small_paths, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        small_paths.save(str(tmp_path / "entry"))
    assert os.listdir(tmp_path) == []


def test_missing_scene_file_error():
    from tfloc.sim import scene_file
    with pytest.raises(KeyError, match="unknown scene 'atlantis'"):
        scene_file("atlantis")
