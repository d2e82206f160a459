"""Fisher information and the position error bound (issue 12, part 1: free-space paths):
closed forms, scaling laws, autodiff against finite differences, unbounded cases."""
import numpy as np
import pytest
import tensorflow as tf

from tfloc.physics import (csi_jacobian, csi_model, fisher_information, position_error_bound,
                           position_fim, upa_element_positions)

LAM = 0.1                                       # 3 GHz
FREQS = (np.arange(64) - 32) * 240e3            # baseband subcarriers, 240 kHz spacing
SNR = 10.0                                      # linear


def _inv(j):
    return np.linalg.inv(np.asarray(j))


def test_single_path_delay_bound_matches_the_closed_form():
    """One antenna, one path of unknown complex gain: var(tau) = sigma^2 / (2 |g|^2 (2 pi)^2
    sum_k (f_k - mean f)^2)."""
    g = 0.7 - 0.2j
    sigma2 = abs(g) ** 2 / SNR

    def fn(t):
        return csi_model(t[:1], tf.zeros(1, tf.float64), tf.zeros(1, tf.float64),
                         tf.complex(t[1:2], t[2:3]), FREQS, np.zeros((1, 3)), LAM)
    j = fisher_information(fn, [35e-9, g.real, g.imag], sigma2)
    want = sigma2 / (2 * abs(g) ** 2 * (2 * np.pi) ** 2 * np.sum((FREQS - FREQS.mean()) ** 2))
    assert _inv(j)[0, 0] == pytest.approx(want, rel=1e-3)


def test_single_path_angle_bound_matches_the_closed_form():
    """A uniform linear array along y, one subcarrier: var(az) = sigma^2 / (2 |g|^2
    (2 pi / lambda cos az)^2 sum_m (y_m - mean y)^2)."""
    g, az = 1.3 + 0.4j, 0.3
    elements = upa_element_positions(1, 8, LAM / 2)
    sigma2 = abs(g) ** 2 / SNR

    def fn(t):
        return csi_model(tf.zeros(1, tf.float64), t[:1], tf.zeros(1, tf.float64),
                         tf.complex(t[1:2], t[2:3]), np.zeros(1), elements, LAM)
    j = fisher_information(fn, [az, g.real, g.imag], sigma2)
    y = elements[:, 1]
    want = sigma2 / (2 * abs(g) ** 2 * (2 * np.pi / LAM * np.cos(az)) ** 2 * np.sum((y - y.mean()) ** 2))
    assert _inv(j)[0, 0] == pytest.approx(want, rel=1e-3)


BS = [0.0, 0.0, 10.0]
UE = [60.0, 0.0, 10.0]                          # on the array's boresight (+x): x is range, y cross-range


def _peb_parts(snr_db=10.0, freqs=FREQS, rows=2, cols=4):
    j, names = position_fim(UE, BS, 1e-4 * np.exp(0.3j), freqs, upa_element_positions(rows, cols, LAM / 2),
                            LAM, snr_db, dims=2)
    inv = _inv(j)
    return position_error_bound(j, 2), inv[0, 0], inv[1, 1]


def test_peb_scales_as_one_over_sqrt_snr():
    p0, _, _ = _peb_parts(0.0)
    p20, _, _ = _peb_parts(20.0)
    assert p0 / p20 == pytest.approx(10.0, rel=1e-6)


def test_range_error_falls_with_bandwidth_and_cross_range_error_with_the_array():
    _, x20, y20 = _peb_parts(freqs=(np.arange(64) - 32) * 312.5e3)     # 20 MHz
    _, x100, y100 = _peb_parts(freqs=(np.arange(64) - 32) * 1562.5e3)  # 100 MHz
    assert x20 / x100 == pytest.approx(25.0, rel=1e-3)      # range var ~ 1 / rms bandwidth^2
    assert y20 / y100 == pytest.approx(1.0, rel=1e-3)       # the angle does not care
    _, xs, ys = _peb_parts(rows=2, cols=4)
    _, xb, yb = _peb_parts(rows=4, cols=8)
    small, big = upa_element_positions(2, 4, LAM / 2)[:, 1], upa_element_positions(4, 8, LAM / 2)[:, 1]
    # cross-range var = r^2 var(az) ~ 1 / sum_m (y_m - mean y)^2 (same mean power per entry)
    assert ys / yb == pytest.approx(np.sum(big ** 2) / np.sum(small ** 2), rel=1e-3)
    assert xs / xb == pytest.approx(len(big) / len(small), rel=1e-3)   # more entries, same SNR each


def test_autodiff_jacobian_agrees_with_numpy_finite_differences():
    elements = upa_element_positions(2, 4, LAM / 2)
    freqs = FREQS[::8]

    def fn(t):
        tau = tf.norm(t[:3] - tf.constant(BS, tf.float64))[None] / 299_792_458.0
        v = t[:3] - tf.constant(BS, tf.float64)
        return csi_model(tau, tf.math.atan2(v[1], v[0])[None], tf.math.asin(v[2] / tf.norm(v))[None],
                         tf.complex(t[3:4], t[4:5]), freqs, elements, LAM)
    theta = np.array([40.0, 12.0, 4.0, 0.3, -0.8])
    d = csi_jacobian(fn, theta).numpy()
    fd = np.zeros_like(d)
    for i in range(len(theta)):
        h = 1e-6 * max(1.0, abs(theta[i]))
        e = np.zeros_like(theta)
        e[i] = h
        fd[:, i] = (fn(tf.constant(theta + e)).numpy().ravel() - fn(tf.constant(theta - e)).numpy().ravel()) / (2 * h)
    np.testing.assert_allclose(d, fd, rtol=1e-5, atol=1e-7 * np.abs(d).max())


def test_unidentifiable_position_is_unbounded_and_nan_snr_an_error():
    # one antenna, one subcarrier: no delay spread, no aperture -> the 2D position is not identifiable
    j, _ = position_fim(UE, BS, 1e-4, np.zeros(1), np.zeros((1, 3)), LAM, 10.0, dims=2)
    assert position_error_bound(j, 2) == float("inf")
    # an unknown clock offset takes the range away from a single LOS path ...
    j, names = position_fim(UE, BS, 1e-4, FREQS, upa_element_positions(2, 4, LAM / 2), LAM, 10.0,
                            dims=2, clock_prior_std_s=None)
    assert names[-1] == "clock" and position_error_bound(j, 2) == float("inf")
    # ... and a prior on it (the timing-advance error's) gives it back: range and clock add up,
    # var(range) = var(range | known clock) + (c sigma_clock)^2
    j, _ = position_fim(UE, BS, 1e-4, FREQS, upa_element_positions(2, 4, LAM / 2), LAM, 10.0,
                        dims=2, clock_prior_std_s=10e-9)
    known, _ = position_fim(UE, BS, 1e-4, FREQS, upa_element_positions(2, 4, LAM / 2), LAM, 10.0, dims=2)
    assert _inv(j)[0, 0] == pytest.approx(_inv(known)[0, 0] + (10e-9 * 299_792_458.0) ** 2, rel=1e-3)
    j, _ = position_fim(UE, BS, 1e-4, FREQS, upa_element_positions(2, 4, LAM / 2), LAM, float("nan"), dims=2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        position_error_bound(j, 2)


def test_nlos_paths_as_nuisance_only_cost_information():
    """At one noise level, a free NLOS path carries no position information: the PEB can
    only grow, barely for a path far from the LOS one in delay and angle, more for one that
    overlaps it."""
    elements = upa_element_positions(2, 4, LAM / 2)
    tau_los = np.hypot(60.0, 0.0) / 299_792_458.0

    def peb(paths):
        j, names = position_fim(UE, BS, 1e-4, FREQS, elements, LAM, None, dims=2, nuisance_paths=paths,
                                noise_var=1e-9)
        return position_error_bound(j, 2), names
    alone, _ = peb(None)
    far, names = peb({"tau": [tau_los + 400e-9], "az": [1.0], "el": [0.1], "gain": [5e-5j]})
    near, _ = peb({"tau": [tau_los + 5e-9], "az": [0.05], "el": [0.0], "gain": [5e-5]})
    assert names[-5:] == ["path0_tau", "path0_az", "path0_el", "path0_gain_re", "path0_gain_im"]
    assert alone <= far < 1.05 * alone           # resolvable: next to no cost
    assert near > 1.2 * far                      # overlapping the LOS path: a real cost


# -- the bound of traced links (tfloc.physics.bound) -------------------------------------- #
def _los_pathset(position, bs, elements, gain, wavelength):
    """A PathSet of one UE with one free-space path to a single-polarised array at ``bs``."""
    from tfloc.physics.array import direction
    from tfloc.sim.paths import PathSet
    v = np.asarray(position, float) - bs
    dist = np.linalg.norm(v)
    theta, phi = np.arccos(v[2] / dist), np.arctan2(v[1], v[0])
    steer = np.exp(2j * np.pi / wavelength * (elements @ direction(phi, theta)))
    f32 = lambda x: np.array([x], np.float32)  # noqa: E731
    return PathSet(positions=np.array([position], np.float32), sector=np.zeros(1, np.int8),
                   los=np.ones(1, bool), offsets=np.array([0, 1]),
                   a=(gain * steer)[None, None, :].astype(np.complex64), tau=f32(dist / 299_792_458.0),
                   theta_t=f32(theta), phi_t=f32(phi), theta_r=f32(0), phi_r=f32(0),
                   vertices=np.zeros((1, 2, 3), np.float32), interactions=np.zeros((1, 2), np.uint8))


@pytest.mark.parametrize("mode", ["mirror", "nuisance"])
def test_site_bound_of_one_los_path_equals_the_single_path_model(mode):
    """The batched bound of a traced link (forward-mode autodiff, per-antenna coefficients,
    TA prior) reproduces the single-UE reverse-mode model on a free-space path."""
    from tfloc.physics.bound import BoundSetup, sample_pebs
    bs = np.array([0.0, 0.0, 10.0])
    elements = upa_element_positions(2, 4, LAM / 2)
    pos = [40.0, 25.0, 1.5]
    ps = _los_pathset(pos, bs, elements, 0.3 - 0.1j, LAM)
    ta = 2e-9
    setup = BoundSetup(frequencies=FREQS, wavelength=LAM, elements=elements[None], bs_positions=bs[None],
                       snr_db=10.0, ta_max_s=ta, dims=2, mode=mode)
    got = sample_pebs(ps, setup, progress=False)
    j, _ = position_fim(pos, bs, 0.3 - 0.1j, FREQS, elements, LAM, 10.0, dims=2,
                        clock_prior_std_s=ta / np.sqrt(3))
    assert got[0] == pytest.approx(position_error_bound(j, 2), rel=1e-6)


def _strongest_rows(ps, max_paths=32):
    return np.concatenate([ps.strongest(i, max_paths) for i in range(ps.num_ue)])


def test_traced_paths_follow_their_mirror_images(small_paths, small_sim_cfg):
    """Physics sanity on real Sionna paths: each specular path's delay is |image - BS| / c and
    its departure direction points at the image of the UE in the planes it reflects off; the
    per-antenna coefficients are one pattern/polarisation term times the array response."""
    import tensorflow as tf
    from tfloc.data.config import DataConfig
    from tfloc.physics.array import direction
    from tfloc.physics.bound import BoundSetup, mirror_paths, reflection_planes
    ps = small_paths
    assert ps.has_geometry and set(np.unique(ps.interactions)) <= {0, 1}
    rows = np.flatnonzero(ps.num_paths > 0)
    setup = BoundSetup.from_config(small_sim_cfg, DataConfig())
    panel = ps.sector[rows].astype(int)
    for i, r in enumerate(rows[:40]):
        idx = np.arange(ps.offsets[r], ps.offsets[r + 1])
        bs, pos = setup.bs_positions[panel[i]][None], ps.positions[r].astype(float)[None]
        pts, nrm, refl = reflection_planes(bs, ps.vertices[idx][None], ps.interactions[idx][None], pos)
        tau, k = mirror_paths(tf.constant(pos), tf.constant(bs), tf.constant(pts), tf.constant(nrm),
                              tf.constant(refl))
        np.testing.assert_allclose(tau.numpy()[0], ps.tau[idx], rtol=1e-6)
        want = direction(ps.phi_t[idx].astype(float), ps.theta_t[idx].astype(float))
        np.testing.assert_allclose(k.numpy()[0], want, atol=2e-6)
        steer = np.exp(2j * np.pi / setup.wavelength * (want @ setup.elements[panel[i]].T))
        coef = ps.a[idx].reshape(len(idx), ps.a.shape[1], setup.num_pol, -1) / steer[:, None, None, :]
        spread = np.abs(coef - coef.mean(-1, keepdims=True)).max(-1)
        assert np.all(spread <= 1e-4 * np.abs(coef).max()), "coefficients are not pattern x array response"


def test_site_bound_modes_los_nlos_and_bad_input(small_paths, small_sim_cfg):
    """Mirror images add information (bound never above the conservative one); the
    conservative bound of an NLOS link is unbounded (inf, not a number); the bound falls
    10x from 0 to 20 dB (clock unknown); an older cache (no geometry), a NaN SNR and paths of
    another array are one-line errors."""
    from tfloc.data.config import DataConfig
    from tfloc.physics.bound import BoundError, BoundSetup, sample_pebs
    ps = small_paths
    rows = np.flatnonzero(ps.num_paths > 0)
    rows = np.concatenate([rows[ps.los[rows]][:12], rows[~ps.los[rows]][:12]])
    sub = ps.select(rows)
    mirror = sample_pebs(sub, BoundSetup.from_config(small_sim_cfg, DataConfig()), progress=False)
    nuis = sample_pebs(sub, BoundSetup.from_config(small_sim_cfg, DataConfig(), mode="nuisance"),
                       progress=False)
    assert np.all(np.isfinite(mirror)) and np.all(mirror > 0)
    assert np.all(mirror <= nuis * (1 + 1e-6))
    assert np.all(np.isfinite(nuis[sub.los])) and np.all(np.isinf(nuis[~sub.los]))
    # without the TA prior (which does not scale with the SNR) the bound is 1 / sqrt(SNR)
    hi, lo = (sample_pebs(sub, BoundSetup.from_config(small_sim_cfg, DataConfig(), snr_db=snr,
                                                      clock="unknown"), progress=False) for snr in (20.0, 0.0))
    np.testing.assert_allclose(lo / hi, 10.0, rtol=1e-5)
    old = ps.select(rows)
    old.vertices = old.interactions = None
    with pytest.raises(BoundError, match="traced before interaction geometry"):
        sample_pebs(old, BoundSetup.from_config(small_sim_cfg, DataConfig()), progress=False)
    # the conservative mode finds the LOS path of an older cache by its length
    again = sample_pebs(old, BoundSetup.from_config(small_sim_cfg, DataConfig(), mode="nuisance"),
                        progress=False)
    np.testing.assert_allclose(again, nuis, rtol=1e-6)
    with pytest.raises(BoundError, match="not a number"):
        BoundSetup.from_config(small_sim_cfg, DataConfig(), snr_db=float("nan"))
    sub.a = sub.a[:, :, :16]                     # paths of a sub-array, not the configured array
    with pytest.raises(BoundError, match="16 BS antennas but the site's array has 32"):
        sample_pebs(sub, BoundSetup.from_config(small_sim_cfg, DataConfig()), progress=False)


def test_bound_cli_writes_map_and_summary_and_rejects_bad_input(small_paths, small_sim_cfg, tmp_path, capsys):
    """python -m tfloc.sim bound DIR: bound.json / bound.npz / bound.png for every UE with paths;
    an entry traced before geometry was stored is a one-line error (exit 2)."""
    import dataclasses
    import json
    import subprocess
    import sys
    from conftest import REPO
    rows = np.flatnonzero(small_paths.num_paths > 0)[:30]
    entry = tmp_path / "entry"
    small_paths.select(np.concatenate([rows, [int(np.flatnonzero(small_paths.num_paths == 0)[0])]])) \
        .save(str(entry))
    (entry / "simulation.json").write_text(json.dumps(dataclasses.asdict(small_sim_cfg)))

    def cli(*args, directory=entry):
        return subprocess.run([sys.executable, "-m", "tfloc.sim", "bound", str(directory), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    r = cli("--snr-db", "10")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "30 UEs" in r.stdout and "LOS: median" in r.stdout
    summary = json.loads((entry / "bound.json").read_text())
    assert summary["snr_db"] == 10.0 and summary["samples_with_paths"] == 30
    assert summary["peb_m"]["n_unbounded"] == 0 and summary["subcarriers"] == 136
    z = np.load(entry / "bound.npz")
    assert z["peb"].shape == (31,) and np.isnan(z["peb"][-1]) and np.all(np.isfinite(z["peb"][:-1]))
    assert (entry / "bound.png").stat().st_size > 10_000
    old = small_paths.select(rows)
    old.vertices = old.interactions = None
    old.save(str(tmp_path / "old"))
    (tmp_path / "old" / "simulation.json").write_text(json.dumps(dataclasses.asdict(small_sim_cfg)))
    # (a NaN SNR: the same BoundError, tested above); the same CLI, in this process
    from tfloc.run.cli import run_cli
    from tfloc.run.dataset import main
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["bound", str(tmp_path / "old")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "traced before interaction geometry" in last
