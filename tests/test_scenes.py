"""The three scenes' data: campus generation, multi-BS sites, cars and conditions,
slot variation, realization splits (issue 3)."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfloc.config import ConfigError
from tfloc.data.config import DataConfig
from tfloc.run.experiment import load_config
from tfloc.sim.paths import PathSet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 299_792_458.0


# -- campus ------------------------------------------------------------------- #

def test_campus_is_identical_across_generations(tmp_path):
    from tfloc.sim.campus import generate_campus, scene_digest
    a = os.path.dirname(generate_campus(4, str(tmp_path / "a")))
    b = os.path.dirname(generate_campus(4, str(tmp_path / "b")))
    c = os.path.dirname(generate_campus(5, str(tmp_path / "c")))
    assert scene_digest(a) == scene_digest(b)
    assert scene_digest(a) != scene_digest(c)


def test_campus_layout_sites_on_roofs_inside_area():
    from tfloc.sim.campus import AREA_M, NUM_SITES, layout
    lay = layout(4)
    assert len(lay["sites"]) == NUM_SITES
    heights = [b["height"] for b in lay["buildings"]]
    assert len(lay["buildings"]) >= 12 and max(heights) - min(heights) > 15  # varied heights
    areas = [(b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) for b in lay["buildings"]]
    assert max(areas) > 2 * min(areas)                                      # varied footprints
    for s in lay["sites"]:
        x, y, z = s["position"]
        assert 0 <= x <= AREA_M[0] and 0 <= y <= AREA_M[1]
        roof = max(b["height"] for b in lay["buildings"]
                   if b["x0"] <= x <= b["x1"] and b["y0"] <= y <= b["y1"])
        assert z == pytest.approx(roof + 4.0)                              # 4 m mast on a roof


def test_campus_loads_in_sionna_with_itu_materials(tmp_path):
    import sionna.rt as rt
    from tfloc.sim.campus import BUILDING_MATERIALS, generate_campus
    scene = rt.load_scene(generate_campus(4, str(tmp_path / "s")), merge_shapes=False)
    mats = {o.radio_material.name for o in scene.objects.values()}
    assert "medium_dry_ground" in mats and mats & set(BUILDING_MATERIALS)


# -- config ------------------------------------------------------------------- #

def test_base_stations_list_of_typed_entries(tmp_path):
    cfg = load_config(None, ['simulation.base_stations=[{position_m: [1, 2, 3], azimuth_deg: 45}]'])
    (b,) = cfg.simulation.base_stations
    assert b.position_m == [1.0, 2.0, 3.0] and b.azimuth_deg == 45.0 and b.downtilt_deg == 10.0
    with pytest.raises(ConfigError, match=r"base_stations\[0\].height: unknown key"):
        load_config(None, ['simulation.base_stations=[{height: 3}]'])
    with pytest.raises(ConfigError, match=r"base_stations\[0\].position_m: expected \[x, y, z\]"):
        load_config(None, ['simulation.base_stations=[{position_m: [1, 2]}]'])


def test_realization_split_needs_enough_realizations():
    with pytest.raises(ConfigError, match="needs 120 realizations"):
        load_config(os.path.join(REPO, "configs", "data", "street_canyon.yaml"),
                    ["data.realization_splits=[50, 20, 50]"])


# -- data side ---------------------------------------------------------------- #

def _links(n_ue=4, n_bs=3, n_real=1, paths_per_link=3, seed=0):
    """A synthetic multi-BS PathSet laid out as tfloc.sim writes it."""
    rng = np.random.default_rng(seed)
    rows = n_ue * n_bs * n_real
    counts = np.full(rows, paths_per_link)
    counts[1] = 0                                    # one link without paths
    total = int(counts.sum())
    pos = rng.uniform(0, 100, (n_ue, 3)).astype(np.float32)
    ue = np.tile(np.repeat(np.arange(n_ue), n_bs), n_real)
    real = np.repeat(np.arange(n_real), n_ue * n_bs)
    return PathSet(positions=pos[ue], sector=np.tile(np.arange(n_bs), n_ue * n_real).astype(np.int8),
                   los=counts > 0, offsets=np.concatenate([[0], np.cumsum(counts)]),
                   a=(rng.normal(size=(total, 1, 8)) + 1j * rng.normal(size=(total, 1, 8))).astype(np.complex64),
                   tau=rng.uniform(0, 1e-6, total).astype(np.float32),
                   theta_t=np.zeros(total, np.float32), phi_t=np.zeros(total, np.float32),
                   theta_r=np.zeros(total, np.float32), phi_r=np.zeros(total, np.float32),
                   ue_id=ue.astype(np.int32), realization=real.astype(np.int16),
                   meta={"site": "multi_bs", "bs_positions": rng.uniform(0, 50, (n_bs, 3)).tolist()})


def test_sample_groups_and_multi_bs_dataset():
    from tfloc.data import CSIPipeline
    from tfloc.data.pipeline import make_splits
    from tfloc.sim.paths import sample_groups
    ps = _links(n_ue=40, n_bs=3)
    g = sample_groups(ps)
    assert g.shape == (40, 3)
    assert np.all(ps.ue_id[g] == ps.ue_id[g[:, :1]])
    cfg = DataConfig(num_subcarriers=48, subcarrier_spacing_hz=60e3, subcarrier_stride=12,
                     num_delay_taps=4, num_slots=5, position_dims=3, representation="stabilized",
                     normalization="none", val_fraction=0.2, test_fraction=0.2, labelled_fraction=0.5,
                     batch_size=4)
    sp = make_splits(ps, cfg, seed=0)
    assert sp.test.shape[1] == 3 and len(sp.no_path) == 0     # a sample with one dead link stays
    pipe = CSIPipeline(ps, cfg, seed=0, array_shape=(2, 4, 1))
    assert pipe.csi_shape == (5, 8, 4, 2)                     # 48 subcarriers / 12 -> 4
    x, y = next(iter(pipe.feature_dataset(sp.test, training=False)))
    assert x["features"].shape == (4, 3, 5 * 8, 4, 2)         # [B, L, T*Nr, Nsc, 2]
    np.testing.assert_allclose(x["bs_positions"][0], ps.meta["bs_positions"], rtol=1e-6)
    np.testing.assert_allclose(y["position"], ps.positions[sp.test[:4, 0]], rtol=1e-6)
    assert y["condition"].shape == (4, 3)                     # a condition per link
    # seed 004's edge models take the CSI itself: [B, L, T, Nr, Nsc, 2], gain kept
    from dataclasses import replace
    raw = CSIPipeline(ps, replace(cfg, representation="csi"), seed=0, array_shape=(2, 4, 1))
    xr, _ = next(iter(raw.feature_dataset(sp.test, training=False)))
    assert xr["features"].shape == (4, 3, 5, 8, 4, 2)
    np.testing.assert_allclose(xr["features"], next(iter(raw.csi_dataset(sp.test, training=False)))[0]["csi"])


def test_subcarrier_stride_keeps_one_per_resource_block():
    from tfloc.data import CSIPipeline
    cfg = DataConfig(num_subcarriers=288, subcarrier_spacing_hz=60e3, subcarrier_stride=12,
                     num_delay_taps=24)
    pipe = CSIPipeline(_links(), cfg, seed=0)
    ref = (np.arange(288) - 144) * 60e3
    np.testing.assert_allclose(pipe.frequencies.numpy(), ref[::12])
    assert pipe.num_subcarriers == 24


def test_slot_variation_is_a_per_path_doppler_ramp():
    from tfloc.data.csi import slot_variation
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(2, 6, 1, 8)) + 1j * rng.normal(size=(2, 6, 1, 8))).astype(np.complex64)
    f_max, slot = 11.7, 0.25e-3
    a_t = slot_variation(tf.constant(a), 10, f_max, slot, tf.constant([1, 2])).numpy()
    assert a_t.shape == (2, 10, 6, 1, 8)
    np.testing.assert_allclose(a_t[:, 0], a, rtol=1e-6)                   # slot 0 unchanged
    np.testing.assert_allclose(np.abs(a_t), np.abs(a)[:, None].repeat(10, 1), rtol=1e-5)
    step = np.angle(a_t[:, 1, :, 0, 0] / a[:, :, 0, 0])                    # [b, P]
    assert np.all(np.abs(step) <= 2 * np.pi * f_max * slot + 1e-6)
    ref = a[:, None] * np.exp(1j * step[:, None, :, None, None] * np.arange(10)[None, :, None, None, None])
    np.testing.assert_allclose(a_t, ref, rtol=1e-4, atol=1e-5)            # linear in t


def test_realization_split_and_paths_per_realization():
    from tfloc.data import CSIPipeline
    from tfloc.data.pipeline import make_splits
    ps = _links(n_ue=6, n_bs=1, n_real=10, paths_per_link=30)
    cfg = DataConfig(split_by="realization", realization_splits=[4, 2, 3], max_paths_range=[10, 25],
                     num_subcarriers=16, num_delay_taps=8)
    sp = make_splits(ps, cfg, seed=0)
    assert set(ps.realization[sp.train]) == {0, 1, 2, 3}
    assert set(ps.realization[sp.val]) == {4, 5}
    assert set(ps.realization[sp.test]) == {7, 8, 9}
    pipe = CSIPipeline(ps, cfg, seed=0)
    a, _ = pipe._padded(ps)
    kept = (np.abs(a).sum(axis=(2, 3)) > 0).sum(axis=1)              # paths kept per link
    for r in range(10):
        k = kept[(ps.realization == r) & (ps.num_paths > 0)]
        assert len(set(k)) == 1 and 10 <= k[0] <= 25                  # one P per realization
    assert len(set(kept[ps.num_paths > 0])) > 1                       # and it varies


def test_spiral_geometry_and_bad_trajectory_configs():
    from tfloc.sim.config import TrajectoryConfig
    from tfloc.sim.trajectory import spiral
    t = TrajectoryConfig(center_m=[10.0, -5.0], radius_m=4.0, turns=2.0,
                         height_range_m=[2.0, 12.0], snapshots=9)
    p = spiral(t)
    assert p.shape == (9, 3) and p.dtype == np.float32
    np.testing.assert_allclose(np.hypot(p[:, 0] - 10, p[:, 1] + 5), 4.0, rtol=1e-5)
    np.testing.assert_allclose(p[:, 2], np.linspace(2, 12, 9), rtol=1e-6)
    np.testing.assert_allclose(p[[0, 4, 8], :2], [[14, -5]] * 3, atol=1e-4)   # whole turns
    for sets, needle in ((["evaluation.trajectory.center_m=[1, 2, 3]"], "center_m: expected"),
                         (["evaluation.trajectory.height_range_m=[0, 5]"], "above the ground"),
                         (["evaluation.trajectory.snapshots=1"], "below the minimum")):
        with pytest.raises(ConfigError, match=needle):
            load_config(os.path.join(REPO, "configs", "ecc.yaml"), sets)


# -- real Sionna RT -------------------------------------------------------------- #

@pytest.mark.slow
def test_multi_bs_trace_links_and_los_delays():
    from tfloc.sim.tracer import SiteTracer, plan_site, trace_chunk
    cfg = load_config(os.path.join(REPO, "configs", "data", "campus.yaml"),
                      ["simulation.ue_grid.num_ues=24", "simulation.max_depth=1"]).simulation
    tr = SiteTracer(cfg)
    plan = plan_site(cfg, tr)
    ps = trace_chunk(tr, plan, 0)
    n = len(plan["positions"])
    assert ps.num_ue == 6 * n and np.all(ps.sector == np.tile(np.arange(6), n))
    assert np.all(ps.ue_id == np.repeat(np.arange(n), 6))
    assert np.all(plan["positions"][:, 2] <= 30.0) and plan["positions"][:, 2].std() > 3
    bs = np.array([s["position"] for s in tr.panels])
    for i in np.flatnonzero(ps.los)[:10]:
        d = np.linalg.norm(ps.positions[i] - bs[ps.sector[i]])
        tau = ps.tau[ps.offsets[i]:ps.offsets[i + 1]]
        assert tau.min() * C == pytest.approx(d, rel=1e-4)            # LOS delay = distance / c


@pytest.mark.slow
def test_spiral_trajectory_traced_in_time_order_and_cached(tmp_path):
    """A spiral crossing a building: the indoor snapshots drop, the rest keep their time."""
    from tfloc.sim.campus import layout
    from tfloc.sim.config import TrajectoryConfig
    from tfloc.sim.trajectory import load_or_trace_trajectory, spiral
    cfg = load_config(os.path.join(REPO, "configs", "data", "campus.yaml"),
                      ["simulation.max_depth=1"]).simulation
    b = layout(cfg.scene_seed)["buildings"][0]
    inside = [(b["x0"] + b["x1"]) / 2, (b["y0"] + b["y1"]) / 2]
    traj = TrajectoryConfig(center_m=[inside[0] - 3.0, inside[1]], radius_m=3.0, turns=1.0,
                            height_range_m=[1.5, b["height"] + 5.0], snapshots=12)
    pos = spiral(traj)
    ps = load_or_trace_trajectory(cfg, pos, str(tmp_path))
    src = np.asarray(ps.meta["source"])
    assert 0 < len(src) < 12                                         # some were indoor
    assert ps.meta["n_indoor_excluded"] == 12 - len(src)
    assert np.allclose(ps.positions[::6], pos[src]) and ps.num_ue == 6 * len(src)
    assert np.array_equal(src, np.flatnonzero(pos[:, 2] > b["height"]))  # above the roof only
    again = load_or_trace_trajectory(cfg, pos, str(tmp_path))       # from the cache
    assert again.meta["source"] == ps.meta["source"] and np.array_equal(again.tau, ps.tau)


@pytest.mark.slow
def test_car_on_the_los_line_makes_nlos_by_car():
    from tfloc.sim.paths import LOS, NLOS_CAR
    from tfloc.sim.tracer import SiteTracer
    cfg = load_config(os.path.join(REPO, "configs", "data", "street_canyon.yaml"),
                      ["simulation.cars.num_realizations=1", "data.split_by=random"]).simulation
    tr = SiteTracer(cfg)
    ue = np.array([[8.0, 7.8, 1.0]], np.float32)               # north sidewalk, before a facade
    bs = np.array(tr.panels[0]["position"])
    static = tr.static_los(ue)
    assert static.all()
    # The point of the LOS line over the north lane's far edge, where it is lowest.
    lane_y = cfg.cars.lanes_y_m[-1]
    s = (lane_y + 0.7 - bs[1]) / (ue[0, 1] - bs[1])
    on_line = bs + s * (ue[0] - bs)
    assert on_line[2] < 1.5                                     # below a car's roof
    home = tr.car_positions(0)
    far = home.copy()
    far[:, 0] = ue[0, 0] + 40 + 6 * np.arange(len(far))         # all cars well away
    blocked = far.copy()
    blocked[0] = [on_line[0], lane_y, home[0, 2]]
    conds = {}
    for name, cars in (("clear", far), ("blocked", blocked)):
        tr.car_positions = lambda r, c=cars: c
        conds[name] = int(tr.trace_pathset(ue, realization=0, static_los=static).condition[0])
    assert conds == {"clear": LOS, "blocked": NLOS_CAR}


def test_supervised_refuses_multi_bs_datasets_before_tracing(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "train.py", "--config", "configs/data/campus.yaml",
                        "--set", f"runtime.cache_dir={tmp_path}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "method 'supervised' trains on one link per sample" in r.stderr
    assert not os.listdir(tmp_path)                                   # nothing traced


@pytest.mark.slow
def test_a_later_traffic_start_shifts_the_realizations_in_time_and_keeps_old_cache_keys():
    from tfloc.sim.build import cache_key
    from tfloc.sim.tracer import SiteTracer
    cfg = load_config(os.path.join(REPO, "configs", "data", "street_canyon.yaml")).simulation
    late = load_config(os.path.join(REPO, "configs", "data", "street_canyon.yaml"),
                       ["simulation.cars.start_s=2.1"]).simulation      # 3 intervals of 0.7 s
    a, b = SiteTracer(cfg), SiteTracer(late)
    np.testing.assert_allclose(b.car_positions(0), a.car_positions(3), atol=1e-9)
    np.testing.assert_allclose(b.car_positions(4), a.car_positions(7), atol=1e-9)
    assert not np.allclose(b.car_positions(0), a.car_positions(0))
    # the option at its default leaves the key of caches traced before it existed
    before = json.loads(json.dumps(dataclasses.asdict(cfg)))
    before["cars"].pop("start_s")
    assert cache_key(cfg) != cache_key(late)
    assert "start_s" not in str(before) and cache_key(cfg) == _key_of(before)


def _key_of(sim: dict) -> str:
    """cache_key's hash of a simulation section given as a dict (as before an option existed)."""
    import hashlib
    import sionna.rt
    from tfloc.sim.build import TRACER_VERSION
    sim = dict(sim)
    sim.pop("receivers_per_batch")
    payload = {"sim": sim, "tracer_version": TRACER_VERSION,
               "sionna_rt": getattr(sionna.rt, "__version__", "?")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.slow
def test_car_placement_does_not_depend_on_move_history():
    from tfloc.sim.tracer import SiteTracer
    cfg = load_config(os.path.join(REPO, "configs", "data", "street_canyon.yaml")).simulation
    tr = SiteTracer(cfg)
    params = tr.scene.mi_scene_params

    def vertices():
        return [np.array(params[tr._vertex_key(c)]).copy() for c in tr.cars]
    tr.set_realization(3)
    direct = vertices()
    for r in (7, None, 1, 9, 3):
        tr.set_realization(r)
    for v, w in zip(direct, vertices()):
        np.testing.assert_array_equal(v, w)
    centres = np.array([np.array(c.position).reshape(-1)[:3] for c in tr.cars])
    # x, y: where the traffic puts them; z differs for taller vehicles, whose floor
    # stays where the scene's car stood
    np.testing.assert_allclose(centres[:, :2], tr.car_positions(3)[:, :2], atol=1e-3)
    floors = [np.array(params[tr._vertex_key(c)]).reshape(-1, 3)[:, 2].min() for c in tr.cars]
    np.testing.assert_allclose(floors, [v[:, 2].min() for v in tr._car_vertices], atol=1e-4)
    lanes = np.array(cfg.cars.lanes_y_m)
    assert np.all(np.min(np.abs(centres[:, 1:2] - lanes[None]), axis=1) < 1e-3)  # on a lane


@pytest.mark.slow
def test_cars_in_a_scene_without_cars_is_a_clear_error(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "tfloc.sim", "build", "--config",
                        "configs/data/etoile.yaml", "--set", "simulation.cars.num_realizations=2",
                        "--set", f"runtime.cache_dir={tmp_path}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "no object of scene 'etoile' matches name_regex 'car'" in r.stderr


@pytest.mark.slow
def test_tall_vehicle_blocks_where_a_car_does_not():
    """The LOS line to the far sidewalk crosses the inner north lane about 2.1-2.7 m up:
    a 1.5 m car there leaves it LOS, a 3.5 m truck (a scaled copy of a car mesh) blocks it."""
    from tfloc.sim.paths import LOS, NLOS_CAR
    from tfloc.sim.tracer import SiteTracer, vehicle_size
    cfg = load_config(os.path.join(REPO, "configs", "data", "street_canyon.yaml"), [
        "simulation.cars.num_realizations=1", "data.split_by=random",
        "simulation.cars.fleet=[{name: car, count: 1}, "
        "{name: truck, count: 1, length_m: 8.0, width_m: 2.5, height_m: 3.5}]"]).simulation
    tr = SiteTracer(cfg)
    assert len(tr.cars) == 2
    np.testing.assert_allclose(vehicle_size(tr._car_vertices[1]), [8.0, 2.5, 3.5], rtol=1e-6)
    assert vehicle_size(tr._car_vertices[0])[2] < 1.6
    ue = np.array([[8.0, 7.8, 1.0]], np.float32)
    bs = np.array(tr.panels[0]["position"])
    static = tr.static_los(ue)
    assert static.all()
    lane_y = cfg.cars.lanes_y_m[2]
    s = (lane_y - bs[1]) / (ue[0, 1] - bs[1])
    on_line = bs + s * (ue[0] - bs)
    assert 1.6 < on_line[2] < 3.4                              # between the roofs
    home = tr.car_positions(0)
    far = home.copy()
    far[:, 0] = ue[0, 0] + 40 + 10 * np.arange(len(far))
    conds = {}
    for name, k in (("car", 0), ("truck", 1)):
        placed = far.copy()
        placed[k] = [on_line[0], lane_y, home[k, 2]]
        tr.car_positions = lambda r, c=placed: c
        conds[name] = int(tr.trace_pathset(ue, realization=0, static_los=static).condition[0])
    assert conds == {"car": LOS, "truck": NLOS_CAR}
