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


# -- a synthetic free-space site: LOS and a ground reflection, traced in closed form -------- #

def _free_space(num_bs=1, n_ant=8):
    """(setup, trace, observe, peb) of BSs at 10 m over a flat ground (LOS and the ground
    reflection): 8-element ULAs, the default data config's subcarriers, 20 dB SNR, TA error
    prior +-5 ns per link. ``trace`` gives ``num_bs`` consecutive rows (links) per position."""
    from tfloc.data.csi import subcarrier_frequencies
    from tfloc.physics.bound import sample_pebs
    data = DataConfig()
    freqs = subcarrier_frequencies(data.num_subcarriers, data.subcarrier_spacing_hz).numpy()
    wavelength = 3e8 / 3.5e9
    ula = np.stack([np.zeros(n_ant), (np.arange(n_ant) - (n_ant - 1) / 2) * wavelength / 2, np.zeros(n_ant)], 1)
    bss = np.array([[0.0, 0.0, 10.0], [60.0, 40.0, 10.0]])[:num_bs]
    setup = BoundSetup(frequencies=freqs[::data.subcarrier_stride].astype(np.float64), wavelength=wavelength,
                       elements=np.stack([ula] * num_bs), bs_positions=bss, snr_db=20.0, ta_max_s=5e-9, dims=2)

    def link(ue, bs):
        """[n, 2 paths, ...] arrays of the links from ``bs`` to the UEs ``ue`` [n, 3]."""
        out = {k: [] for k in ("a", "tau", "phi_t", "theta_t", "vertices", "interactions")}
        for target, gain, refl in ((ue, 1.0, False), (ue * np.array([1.0, 1.0, -1.0]), -0.6, True)):
            w = target - bs                                  # a reflection: toward the UE's mirror image
            d = np.linalg.norm(w, axis=1)
            k = w / d[:, None]
            g = gain * wavelength / (4 * np.pi * d) * np.exp(-2j * np.pi * 3.5e9 * d / 3e8)
            out["a"].append((g[:, None] * np.exp(2j * np.pi / wavelength * k @ ula.T))[:, None, :])
            out["tau"].append(d / 3e8)
            out["phi_t"].append(np.arctan2(k[:, 1], k[:, 0]))
            out["theta_t"].append(np.arccos(k[:, 2]))
            hit = bs + w * (bs[2] / (bs[2] - target[:, 2]))[:, None]           # where it meets z = 0
            out["vertices"].append(np.where(refl, hit, 0.0)[:, None, :])
            out["interactions"].append(np.full((len(ue), 1), int(refl)))
        return {k: np.stack(v, 1) for k, v in out.items()}

    def trace(xy, samples=None):
        n, L = len(xy), num_bs
        ue = np.concatenate([xy, np.full((n, 1), 1.5)], 1)
        links = [link(ue, bs) for bs in bss]
        cat = {k: np.stack([lk[k] for lk in links], 1).reshape(n * L * 2, *links[0][k].shape[2:])
               for k in links[0]}                            # UE-major, then link, then path
        dt = {"a": np.complex64, "vertices": np.float32, "interactions": np.uint8}
        return PathSet(positions=np.repeat(ue, L, 0).astype(np.float32), sector=np.tile(np.arange(L, dtype=np.int8), n),
                       los=np.ones(n * L, bool), offsets=np.arange(0, 2 * n * L + 1, 2),
                       theta_r=np.zeros(2 * n * L, np.float32), phi_r=np.zeros(2 * n * L, np.float32),
                       ue_id=np.repeat(np.arange(n, dtype=np.int32), L), realization=np.zeros(n * L, np.int16),
                       condition=np.zeros(n * L, np.int8), meta={},
                       **{k: v.astype(dt.get(k, np.float32)) for k, v in cat.items()})

    def observe(xy, clock_s, rng):
        """Observed CSI [n, (L,) 1, M, K]: the paths' CSI, a clock offset per link, noise."""
        ps, f = trace(xy), setup.frequencies
        clock_s = np.asarray(clock_s).reshape(-1)
        y = np.stack([np.einsum("pum,pk->umk", ps.a[2 * i:2 * i + 2],
                                np.exp(-2j * np.pi * f[None] * (ps.tau[2 * i:2 * i + 2, None] + clock_s[i])))
                      for i in range(ps.num_ue)])
        sigma2 = np.mean(np.abs(y) ** 2, axis=(1, 2, 3)) / 10 ** (setup.snr_db / 10)
        y = y + np.sqrt(sigma2 / 2)[:, None, None, None] * (rng.normal(size=y.shape + (2,)) @ np.array([1.0, 1j]))
        return y if num_bs == 1 else y.reshape(len(xy), num_bs, *y.shape[1:])

    def peb(xy):
        return sample_pebs(trace(xy), setup, groups=np.arange(len(xy) * num_bs).reshape(-1, num_bs), progress=False)
    return setup, trace, observe, peb


def test_free_space_refinement_reaches_the_bound_with_gains_and_clock_as_nuisance():
    """From starts 2 m off, with unknown path gains, a clock offset within the TA prior and
    20 dB noise, the refined positions are within a few times each sample's PEB."""
    rng = np.random.default_rng(1)
    setup, trace, observe, peb = _free_space()
    n = 12
    truth = np.stack([rng.uniform(15, 50, n), rng.uniform(-20, 20, n)], 1)
    clock = rng.uniform(-5e-9, 5e-9, n)
    y = observe(truth, clock, rng)
    angle = rng.uniform(0, 2 * np.pi, n)
    starts = truth + 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
    r = refine(y, starts[:, None], trace, setup, rounds=3)
    ratio = np.linalg.norm(r.position - truth, axis=1) / peb(truth)
    print("FREE SPACE error / PEB", np.round(ratio, 2), "clock error ns", np.round(r.clock_ns - clock * 1e9, 2))
    assert np.all(np.isfinite(ratio)) and np.median(ratio) < 2.0 and ratio.max() < 5.0, ratio
    assert not r.kept_start.any() and np.median(r.fit) < 1.2


def test_the_likelihood_check_keeps_the_start_where_the_refined_position_is_worse():
    """Among starts the best likelihood wins (a start 15 m off does not pull the result away),
    and a result whose posterior is worse than the start's (a prior of 1 mm around a start
    2 m off) is rejected: the start is kept."""
    rng = np.random.default_rng(2)
    setup, trace, observe, peb = _free_space()
    n = 6
    truth = np.stack([rng.uniform(15, 50, n), rng.uniform(-20, 20, n)], 1)
    y = observe(truth, np.zeros(n), rng)
    starts = np.stack([truth + [2.0, 0.0], truth + [-15.0, 10.0]], 1)
    both = refine(y, starts, trace, setup, rounds=3)
    assert np.all(np.linalg.norm(both.position - truth, axis=1) < 5 * peb(truth))
    tight = refine(y, starts[:, :1], trace, setup, rounds=3, prior_sigma_m=np.full(n, 0.001))
    assert tight.kept_start.all()
    np.testing.assert_array_equal(tight.position, starts[:, 0])


def test_the_links_of_a_multi_bs_sample_are_refined_jointly():
    """Two BSs, each link with its own clock offset: one position from both links, within a
    few times the joint PEB; the joint refinement beats the first link alone."""
    rng = np.random.default_rng(3)
    setup, trace, observe, peb = _free_space(num_bs=2)
    n = 8
    truth = np.stack([rng.uniform(15, 45, n), rng.uniform(-15, 30, n)], 1)
    clock = rng.uniform(-5e-9, 5e-9, (n, 2))
    y = observe(truth, clock, rng)                                     # [n, 2 links, 1, M, K]
    starts = (truth + [1.5, -1.5])[:, None]
    joint = refine(y, starts, trace, setup, rounds=3)
    bound = peb(truth)
    err = np.linalg.norm(joint.position - truth, axis=1)
    print("JOINT error / PEB", np.round(err / bound, 2))
    assert np.median(err / bound) < 2.0 and np.all(err / bound < 5.0)
    one = BoundSetup(**{**setup.__dict__, "elements": setup.elements[:1], "bs_positions": setup.bs_positions[:1]})
    alone = refine(y[:, 0], starts, lambda xy, s=None: trace(xy).select(np.arange(0, 2 * len(xy), 2)), one, rounds=3)
    assert np.median(err) < np.median(np.linalg.norm(alone.position - truth, axis=1))


def test_a_start_outside_the_scene_is_flagged_and_kept_and_bad_starts_are_one_line():
    rng = np.random.default_rng(4)
    setup, trace, observe, peb = _free_space()
    truth = np.array([[20.0, 5.0], [30.0, -10.0], [25.0, 0.0]])
    y = observe(truth, np.zeros(3), rng)
    starts = np.stack([truth + [1.0, 1.0], truth + [-1.0, 1.0]], 1)
    starts[1, 0] = [500.0, 0.0]                             # the estimate lies outside the scene
    bounds = np.array([[-100.0, -100.0, 0.0], [100.0, 100.0, 30.0]])
    r = refine(y, starts, trace, setup, bounds=bounds, rounds=2)
    np.testing.assert_array_equal(r.outside, [False, True, False])
    assert r.kept_start[1] and np.array_equal(r.position[1], starts[1, 0])
    assert np.all(np.linalg.norm(r.position[[0, 2]] - truth[[0, 2]], axis=1) < 5 * peb(truth[[0, 2]]))
    starts[0, 1, 0] = np.nan
    with pytest.raises(BoundError, match="NaN or Inf"):
        refine(y, starts, trace, setup, bounds=bounds)


def test_the_fit_threshold_chosen_on_validation_gates_out_wrong_places():
    """Two samples refined to the truth where the twin explains their CSI (fit about 1), two
    moved to wrong places that the twin explains badly: the chosen threshold keeps the first
    and rejects the second; with no check the mean error is larger. Where refining only
    harms, every start is kept."""
    from tfloc.evaluation.twin import FIT_GRID, choose_max_fit
    truth = np.zeros((4, 2))
    start = np.full((4, 2), 3.0)
    refined = np.array([[0.01, 0.0], [0.0, 0.02], [20.0, 0.0], [0.0, -25.0]])
    chosen, scores = choose_max_fit(np.array([1.0, 1.02, 4.0, 9.0]), refined, start, truth)
    assert chosen == 1.05 and scores["none"] > scores["1.05"] and scores["0"] > scores["1.05"]
    chosen, _ = choose_max_fit(np.array([1.0, 1.02, 1.03, 1.04]), np.zeros((4, 2)), start, truth)
    assert chosen == 1.05
    wrong = np.array([[20.0, 0.0], [0.0, -25.0], [9.0, 9.0], [-8.0, 7.0]])   # refining never helps
    chosen, _ = choose_max_fit(np.array([1.0, 1.02, 1.03, 1.04]), wrong, start, truth)
    assert chosen == 0.0                          # every start kept
    chosen, _ = choose_max_fit(np.array([1.0, 1.02, 2.5, 2.6]), np.zeros((4, 2)), start, truth)
    assert chosen == 3.0                         # every refined position right: the loosest that keeps them


def test_several_looks_of_one_link_are_refined_jointly():
    """Two time slots of a link (their path gains differ) in a row: one position from both,
    each look with its own gains, within a few times the PEB of one look."""
    rng = np.random.default_rng(5)
    setup, trace, observe, peb = _free_space()
    truth = np.stack([rng.uniform(15, 50, 6), rng.uniform(-20, 20, 6)], 1)
    looks = np.stack([observe(truth, np.zeros(6), rng), observe(truth, np.zeros(6), rng) * 1j], 1)
    r = refine(looks, (truth + [2.0, 0.0])[:, None], trace, setup, rounds=3)
    assert np.median(np.linalg.norm(r.position - truth, axis=1) / peb(truth)) < 2.0


def test_a_link_whose_bs_observed_nothing_is_left_out_of_the_joint_refinement():
    """A multi-BS sample where one BS did not hear the UE (its CSI all zero, as the pipeline
    gives a link without paths): the other link refines the position; nothing is NaN."""
    rng = np.random.default_rng(6)
    setup, trace, observe, peb = _free_space(num_bs=2)
    truth = np.stack([rng.uniform(15, 45, 4), rng.uniform(-15, 30, 4)], 1)
    y = observe(truth, np.zeros((4, 2)), rng)
    y[:, 1] = 0.0
    r = refine(y, (truth + [1.0, -1.0])[:, None], trace, setup, rounds=2)
    assert np.all(np.isfinite(r.fit)) and not r.kept_start.any()
    assert np.all(np.linalg.norm(r.position - truth, axis=1) < 0.5)
