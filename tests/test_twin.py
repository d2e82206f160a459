"""Maximum-likelihood refinement against the ray-traced twin (tfloc.physics.twin), on real
Sionna RT paths of the coarse etoile grid."""
import numpy as np
import pytest
import tensorflow as tf

from tfloc.data.config import DataConfig
from tfloc.data.csi import paths_to_csi
from tfloc.physics.bound import BoundSetup
from tfloc.physics.fisher import BoundError
from tfloc.physics.twin import refine, refine_links
from tfloc.sim.paths import PathSet


def _observed(ps, rows, max_paths=32):
    """The pipeline's noiseless CSI [n, U, antennas, K] of links ``rows`` (their strongest paths)."""
    data = DataConfig()
    from tfloc.data.csi import subcarrier_frequencies
    freqs = subcarrier_frequencies(data.num_subcarriers, data.subcarrier_spacing_hz)
    out = []
    for r in rows:
        idx = ps.strongest(int(r), max_paths)
        out.append(paths_to_csi(tf.constant(ps.a[idx][None]), tf.constant(ps.tau[idx][None]), freqs).numpy()[0])
    return np.stack(out)


def _twin(cfg, sectors):
    """trace(positions [m, 2]) -> the twin's PathSet at the UE height, row i from sector
    ``sectors[i]`` (each sample's serving panel)."""
    from tfloc.sim.tracer import SiteTracer
    tracer = SiteTracer(cfg)

    def trace(xy, samples=None):
        sec = sectors if samples is None else sectors[samples]
        pos = np.concatenate([xy, np.full((len(xy), 1), cfg.ue_grid.height_m)], 1)
        parts, order = [], []
        for s in np.unique(sec):
            i = np.flatnonzero(sec == s)
            parts.append(tracer.trace_pathset(pos[i], sector=int(s)))
            order.append(i)
        joined = PathSet.concatenate(parts)
        return joined.select(np.argsort(np.concatenate(order)))
    return trace


@pytest.fixture(scope="module")
def case(small_paths, small_sim_cfg):
    ps = small_paths
    rows = np.flatnonzero(ps.num_paths > 1)
    rows = rows[np.linspace(0, len(rows) - 1, 8).astype(int)]
    setup = BoundSetup.from_config(small_sim_cfg, DataConfig(), dims=2)
    return ps, rows, setup


def test_noiseless_csi_is_refined_to_the_true_position_from_a_metre_away(case, small_sim_cfg):
    """Physics sanity: the twin traced at a start 1.4 m off, the observed CSI noiseless and
    without clock offset: the likelihood's optimum is the true position."""
    ps, rows, setup = case
    y = _observed(ps, rows)
    truth = ps.positions[rows, :2].astype(np.float64)
    starts = (truth + np.array([1.0, -1.0]))[:, None]
    trace = _twin(small_sim_cfg, ps.sector[rows])
    r = refine(y, starts, trace, setup, rounds=3)
    err = np.linalg.norm(r.position - truth, axis=1)
    before = np.linalg.norm(starts[:, 0] - truth, axis=1)
    print("TWIN", np.round(before, 2), np.round(err, 4), r.kept_start, r.traces)
    assert np.all(r.cost <= r.start_cost)                        # never worse than the start
    assert np.median(err) < 0.02 and np.mean(err < 0.1) >= 0.75, (err, before)


def test_a_clock_offset_is_absorbed_within_its_prior(case, small_sim_cfg):
    ps, rows, setup = case
    freqs = setup.frequencies
    y = _observed(ps, rows) * np.exp(-2j * np.pi * 3e-9 * freqs)        # every path 3 ns late
    truth = ps.positions[rows, :2].astype(np.float64)
    twin = _twin(small_sim_cfg, ps.sector[rows])(truth + 0.5)
    r = refine_links(y, twin, setup)
    err = np.linalg.norm(r.position - truth, axis=1)
    assert np.median(err) < 0.05 and np.median(np.abs(r.clock_ns - 3.0)) < 0.2


def test_bad_input_is_one_line_and_a_link_without_twin_paths_keeps_its_start(case, small_sim_cfg):
    ps, rows, setup = case
    y = _observed(ps, rows[:2])
    twin = _twin(small_sim_cfg, ps.sector[rows[:2]])(ps.positions[rows[:2], :2].astype(float))
    bad = y.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(BoundError, match="NaN or Inf"):
        refine_links(bad, twin, setup)
    with pytest.raises(BoundError, match="expected complex"):
        refine_links(np.abs(y), twin, setup)
    no_geometry = PathSet(**{**{k: getattr(twin, k) for k in PathSet._ARRAYS}, "meta": {}})
    with pytest.raises(BoundError, match="no interaction geometry"):
        refine_links(y, no_geometry, setup)
    empty = twin.select(np.array([0, 1]))
    empty.offsets = np.zeros_like(empty.offsets)          # the twin found no path there
    r = refine_links(y, empty, setup)
    assert r.kept_start.all()
    np.testing.assert_array_equal(r.position, twin.positions[:2, :2])


def test_csi_no_nearby_position_explains_is_not_refined_with_the_fit_check(case, small_sim_cfg):
    """The fit check: each sample's observed CSI is another UE's, metres away, so no candidate
    near its start explains it down to the noise; with max_fit every start is kept, without it
    the likelihood moves them. On the sample's own CSI the exact twin passes the check."""
    ps, rows, setup = case
    y = _observed(ps, rows)
    truth = ps.positions[rows, :2].astype(np.float64)
    starts = (truth + np.array([1.0, -1.0]))[:, None]
    trace = _twin(small_sim_cfg, ps.sector[rows])
    other = np.roll(y, 3, axis=0)
    free = refine(other, starts, trace, setup, rounds=1)
    gated = refine(other, starts, trace, setup, rounds=1, max_fit=2.0)
    assert np.median(free.fit) > 10 and not free.kept_start.all()
    assert gated.kept_start.all()
    np.testing.assert_array_equal(gated.position, starts[:, 0])
    right = refine(y, starts, trace, setup, rounds=1, max_fit=2.0)
    assert np.mean(right.kept_start) <= 0.25 and np.median(right.fit) < 1.5
