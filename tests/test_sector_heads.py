"""Seed 000 section III-C: sector rotation geometry, routed heads, the sector_heads method."""
import os

import keras
import numpy as np
import pytest

from conftest import REPO, make_spec
from synthetic import ETOILE_SETS, SYNTHETIC_SETS
from tfloc.config import ConfigError
from tfloc.run.experiment import load_config
from tfloc.sim.site import rotate_into_sector, sector_of

BS = (100.0, -100.0, 30.0)
AZ = (30.0, 150.0, 270.0)


def test_rotation_keeps_range_height_and_bearing_to_boresight(rng):
    pos = np.concatenate([rng.uniform(-30, 230, (200, 2)), np.full((200, 1), 1.5)], 1)
    src = sector_of(pos, BS, AZ)
    dst = (src + 1) % 3
    out = rotate_into_sector(pos, BS, AZ, src, dst)
    d_in, d_out = pos[:, :2] - BS[:2], out[:, :2] - BS[:2]
    np.testing.assert_allclose(np.linalg.norm(d_out, axis=1), np.linalg.norm(d_in, axis=1), rtol=1e-9)
    np.testing.assert_array_equal(out[:, 2], pos[:, 2])
    rel = lambda d, s: (np.degrees(np.arctan2(d[:, 1], d[:, 0])) - np.asarray(AZ)[s] + 180) % 360 - 180  # noqa: E731
    np.testing.assert_allclose(rel(d_out, dst), rel(d_in, src), atol=1e-9)
    np.testing.assert_array_equal(sector_of(out, BS, AZ), dst)       # lands in the target sector
    # a UE on sector 0's boresight, 50 m out, goes onto sector 1's boresight
    p = np.array([[BS[0] + 50 * np.cos(np.radians(30)), BS[1] + 50 * np.sin(np.radians(30)), 1.5]])
    q = rotate_into_sector(p, BS, AZ, [0], [1])
    np.testing.assert_allclose(q[0, :2], [BS[0] + 50 * np.cos(np.radians(150)),
                                          BS[1] + 50 * np.sin(np.radians(150))], atol=1e-9)
    np.testing.assert_allclose(rotate_into_sector(pos, BS, AZ, src, src), pos, atol=1e-9)


def test_routed_heads_pick_the_serving_sectors_head_and_serialise(tmp_path, rng):
    from tfloc.models import ModelConfig, build_model
    from tfloc.models.heads import with_sector_heads
    spec = make_spec(feature_shape=(8, 16, 2), num_sectors=3)
    mc = ModelConfig("resnet")
    mc.options.width = 4
    m = with_sector_heads(build_model(mc, spec), spec)
    x = {"features": rng.random((6, 8, 16, 2), np.float32), "sector": np.array([0, 1, 2, 2, 1, 0], np.int32)}
    heads = keras.Model(m.input, [m.get_layer(f"sector{k}_position").output for k in range(3)])(x)
    want = np.stack([np.asarray(heads[s])[i] for i, s in enumerate(x["sector"])])
    np.testing.assert_allclose(m(x)["position"], want, rtol=1e-6)
    m.save(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(keras.models.load_model(str(tmp_path / "m.keras"))(x)["position"],
                               m(x)["position"], rtol=1e-6)


@pytest.fixture
def synthetic(monkeypatch):
    """A synthetic set whose UEs are split into three sectors about the origin BS."""
    import tfloc.sim
    from synthetic import synthetic_pathset
    ps = synthetic_pathset()
    ps.sector = sector_of(ps.positions, (0.0, -8.0, 5.0), AZ)
    monkeypatch.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
    return ps


def test_sector_heads_trains_on_rotated_copies_and_serves_routed_heads(synthetic, tmp_path):
    from tfloc.run.runner import train_and_evaluate
    cfg = load_config(os.path.join(REPO, "configs", "sector_heads.yaml"),
                      [*SYNTHETIC_SETS, *ETOILE_SETS, "simulation.bs_position_m=[0.0, -8.0, 5.0]",
                       "evaluation.evaluators=[position]"])
    rep = train_and_evaluate(cfg, str(tmp_path / "run"))
    sh = rep["sector_heads"]
    n = rep["n_train_labelled"]
    assert sum(sh["labelled_per_sector"]) == n and sh["training_per_sector"] == [n, n, n]
    m = keras.models.load_model(str(tmp_path / "run" / "model.keras"))
    assert isinstance(m.get_layer("position"), __import__("tfloc").layers.SectorRouting)


def test_sector_heads_refuses_a_site_without_sectors():
    from tfloc.run.runner import make_task
    for sets in (["data.use_sector=false"], ["simulation.sector_azimuths_deg=[30.0]"]):
        cfg = load_config(os.path.join(REPO, "configs", "sector_heads.yaml"), sets)
        with pytest.raises(ConfigError, match="method 'sector_heads' needs a sectored site"):
            make_task(cfg)


def _combine_reference(p, w, r):
    """NumPy: weighted average, and the consensus of the most-voted member's group."""
    w = np.asarray(w) / np.sum(w)
    weighted = np.einsum("bmd,m->bd", p, w)
    out, sizes = [], []
    for b in range(len(p)):
        agree = np.linalg.norm(p[b][:, None] - p[b][None], axis=-1) < r
        best = np.argmax(agree @ w)
        g = agree[best]
        sizes.append(g.sum())
        out.append((w[g][:, None] * p[b][g]).sum(0) / w[g].sum() if g.sum() > 1 else weighted[b])
    return weighted, np.array(out), np.array(sizes)


def test_ensemble_combination_matches_numpy_and_serialises(rng, tmp_path):
    from tfloc.layers import EnsembleCombine
    p = rng.normal(scale=4.0, size=(50, 4, 2)).astype(np.float32)
    p[:5] = [[0, 0], [1, 0], [0, 1], [30, 30]]                      # three agree, one outlier
    layer = EnsembleCombine([1.0, 2.0, 1.0, 4.0], radius_m=3.0)
    got = [np.asarray(v) for v in layer(p)]
    want = _combine_reference(p, [1.0, 2.0, 1.0, 4.0], 3.0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1][0], (np.array([0, 0]) + 2 * np.array([1, 0]) + np.array([0, 1])) / 4)
    assert got[2][0] == 3
    inp = keras.Input((4, 2))
    m = keras.Model(inp, layer(inp))
    m.save(str(tmp_path / "m.keras"))
    again = keras.models.load_model(str(tmp_path / "m.keras"))(p)
    np.testing.assert_allclose(again[1], got[1], rtol=1e-6)
    with pytest.raises(ValueError, match="need >= 2 non-negative weights"):
        EnsembleCombine([1.0], 3.0)


def test_site_variant_becomes_simulation_overrides():
    """The study's overrides trace the same dataset (cache key) as the site's own config."""
    from tfloc.sim.build import cache_key
    from tfloc.studies.seed000 import site_sets
    site = os.path.join(REPO, "configs", "data", "etoile_uneven.yaml")
    cfg = load_config(os.path.join(REPO, "configs", "etoile_supervised.yaml"), site_sets(site))
    own = load_config(site)
    assert cfg.simulation.sector_azimuths_deg == own.simulation.sector_azimuths_deg
    assert cache_key(cfg.simulation) == cache_key(own.simulation)
    default = load_config(os.path.join(REPO, "configs", "etoile_supervised.yaml"))
    assert cache_key(default.simulation) != cache_key(own.simulation)
