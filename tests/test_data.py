"""tfloc.data against NumPy references written from the equations."""
import numpy as np
import pytest
import tensorflow as tf

from tfloc.data.config import DataConfig
from tfloc.data import (CSIPipeline, add_awgn, csi_features, make_splits, paths_to_csi,
                        subcarrier_frequencies, timing_advance_shift, to_real_imag)


def _random_paths(rng, b=3, p=5, ue=2, bs=8):
    a = (rng.normal(size=(b, p, ue, bs)) + 1j * rng.normal(size=(b, p, ue, bs))).astype(np.complex64)
    tau = rng.uniform(0, 1e-6, size=(b, p)).astype(np.float32)
    return a, tau


def test_subcarrier_frequencies_centered():
    f = subcarrier_frequencies(8, 30e3).numpy()
    np.testing.assert_allclose(f, (np.arange(8) - 4) * 30e3)


def test_paths_to_csi_matches_sum_of_paths(rng):
    a, tau = _random_paths(rng)
    f = subcarrier_frequencies(16, 240e3)
    h = paths_to_csi(tf.constant(a), tf.constant(tau), f).numpy()
    ref = np.einsum("bpuk,bpf->bukf", a.astype(np.complex128),
                    np.exp(-2j * np.pi * tau[..., None].astype(np.float64) * f.numpy()[None, None]))
    assert h.shape == (3, 2, 8, 16) and h.dtype == np.complex64
    np.testing.assert_allclose(h, ref, rtol=1e-4, atol=1e-4)


def test_los_delay_lands_in_expected_tap():
    # one path at delay = k / bandwidth -> delay-domain peak at tap k
    n_sc, df, k = 64, 1e6, 7
    a = np.zeros((1, 1, 1, 4), np.complex64); a[..., 0] = 1.0
    tau = np.array([[k / (n_sc * df)]], np.float32)
    h = paths_to_csi(tf.constant(a), tf.constant(tau), subcarrier_frequencies(n_sc, df))
    feats = csi_features(to_real_imag(h), n_sc, "magnitude", "none").numpy()
    assert np.argmax(feats[0, :, :, 0].max(axis=0)) == k


def test_angle_delay_matches_numpy(rng):
    h = (rng.normal(size=(2, 2, 8, 12)) + 1j * rng.normal(size=(2, 2, 8, 12))).astype(np.complex64)
    x = to_real_imag(tf.constant(h))
    ref = np.fft.ifft(np.fft.fftshift(np.fft.fft(h, axis=2), axes=2), axis=3)[..., :5]
    ref = np.transpose(ref, (0, 2, 3, 1))                        # [b, bs, taps, ue]
    got = csi_features(x, 5, "real_imag", "none").numpy()
    np.testing.assert_allclose(got, np.concatenate([ref.real, ref.imag], -1), atol=1e-5)
    mag = csi_features(x, 5, "magnitude", "sample_max").numpy()
    ref_mag = np.abs(ref) / np.abs(ref).max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(mag, ref_mag, atol=1e-5)
    pw = csi_features(x, 5, "magnitude", "sample_power").numpy()
    np.testing.assert_allclose(np.mean(pw ** 2, axis=(1, 2, 3)), 1.0, rtol=1e-4)


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_angle_delay_graph_modes_agree(rng, mode):
    x = tf.constant(rng.normal(size=(2, 2, 8, 12, 2)).astype(np.float32))
    fn = lambda t: csi_features(t, 6, "magnitude", "sample_max")  # noqa: E731
    if mode == "function":
        fn = tf.function(fn)
    elif mode == "xla":
        fn = tf.function(fn, jit_compile=True)
    np.testing.assert_allclose(fn(x).numpy(), csi_features(x, 6).numpy(), atol=1e-5)


def test_timing_advance_is_phase_ramp(rng):
    h = (rng.normal(size=(2, 3, 10)) + 1j * rng.normal(size=(2, 3, 10))).astype(np.complex64)
    f = subcarrier_frequencies(10, 1e6)
    dt = np.array([5e-9, -20e-9], np.float32)
    got = timing_advance_shift(tf.constant(h), f, tf.constant(dt)).numpy()
    ref = h * np.exp(-2j * np.pi * dt[:, None, None] * f.numpy()[None, None])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.abs(got), np.abs(h), rtol=1e-5)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_awgn_power_matches_snr(rng, snr_db):
    h = (rng.normal(size=(4, 2, 32, 128)) + 1j * rng.normal(size=(4, 2, 32, 128))).astype(np.complex64)
    h *= np.array([1, 3, 10, 0.1], np.float32)[:, None, None, None]
    y = add_awgn(tf.constant(h), tf.fill([4], snr_db), tf.constant([1, 2])).numpy()
    noise = y - h
    measured = 10 * np.log10(np.mean(np.abs(h) ** 2, axis=(1, 2, 3)) /
                             np.mean(np.abs(noise) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(measured, snr_db, atol=0.1)
    # circular: real and imaginary parts carry half the power each
    np.testing.assert_allclose(np.var(noise.real) / np.var(noise.imag), 1.0, atol=0.05)


def test_splits_are_disjoint_fixed_and_exclude_no_path(small_paths):
    cfg = DataConfig(labelled_fraction=0.1, val_fraction=0.1, test_fraction=0.2)
    s1, s2 = make_splits(small_paths, cfg, seed=3), make_splits(small_paths, cfg, seed=3)
    parts = [s1.train, s1.val, s1.test, s1.unlabelled]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)
    assert np.all(small_paths.num_paths[allidx] > 0)
    assert len(allidx) + len(s1.no_path) == small_paths.num_ue
    np.testing.assert_array_equal(s1.train, s2.train)
    n = int((small_paths.num_paths > 0).sum())
    assert abs(len(s1.test) - 0.2 * n) <= 1 and abs(len(s1.train) - 0.1 * n) <= 1


def test_pipeline_shapes_and_noise_protocol(small_paths):
    cfg = DataConfig(num_subcarriers=32, subcarrier_spacing_hz=3e6, num_delay_taps=16, batch_size=8)
    pipe = CSIPipeline(small_paths, cfg, seed=5)
    idx = np.flatnonzero(small_paths.num_paths > 0)[:20]
    x, y = next(iter(pipe.csi_dataset(idx, training=False)))
    assert x["csi"].shape == (8, 2, 32, 32, 2) and x["csi"].dtype == tf.float32
    y = y["position"]
    assert y.shape == (8, 2)
    np.testing.assert_array_equal(x["sector"], small_paths.sector[idx[:8]])
    np.testing.assert_allclose(y, small_paths.positions[idx[:8], :2])
    f, _ = next(iter(pipe.feature_dataset(idx, training=False)))
    assert f["features"].shape == (8, 32, 16, 2) and f["sector"].shape == (8,)
    # evaluation sets: identical noise on every pass; training: fresh noise each epoch
    ev = pipe.csi_dataset(idx, training=False)
    np.testing.assert_array_equal(next(iter(ev))[0]["csi"], next(iter(ev))[0]["csi"])
    tr = pipe.csi_dataset(idx[:8], training=True)
    e1 = sorted(map(tuple, next(iter(tr))[1]["position"].numpy()))
    e2 = sorted(map(tuple, next(iter(tr))[1]["position"].numpy()))
    assert e1 == e2  # same samples
    a1 = np.sort(next(iter(tr))[0]["csi"].numpy().ravel())
    a2 = np.sort(next(iter(tr))[0]["csi"].numpy().ravel())
    assert not np.allclose(a1, a2)  # different noise


def test_too_few_ues_for_splits_is_a_config_error(small_paths):
    from tfloc.config import ConfigError
    few = small_paths.select(np.flatnonzero(small_paths.num_paths > 0)[:2])
    with pytest.raises(ConfigError, match="spacing_m: only 2 UEs have paths"):
        make_splits(few, DataConfig(), seed=0)


def test_evaluation_noise_ignores_global_seed(small_paths):
    """evaluate.py in a new process must see the test noise train.py saw."""
    cfg = DataConfig(num_subcarriers=16, subcarrier_spacing_hz=6e6, num_delay_taps=8, batch_size=4)
    pipe = CSIPipeline(small_paths, cfg, seed=5)
    idx = np.flatnonzero(small_paths.num_paths > 0)[:8]
    tf.random.set_seed(1)
    a = next(iter(pipe.csi_dataset(idx, training=False)))[0]["csi"].numpy()
    tf.random.set_seed(2)
    b = next(iter(pipe.csi_dataset(idx, training=False)))[0]["csi"].numpy()
    np.testing.assert_array_equal(a, b)


FORMS = ["magnitude", "real_imag", "adp", "real_csi", "sample_covariance", "stabilized", "csi"]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_has_its_documented_shape(rng, form):
    from tfloc.data import feature_shape
    x = tf.constant(rng.normal(size=(3, 2, 16, 10, 2)).astype(np.float32))
    y = csi_features(x, 4, form, "none", array_shape=(2, 4, 2))
    assert tuple(y.shape) == (3, *feature_shape((2, 16, 10, 2), 4, form, (2, 4, 2)))
    assert y.dtype == tf.float32


def test_adp_form_follows_sionna_port_order(rng):
    """ports: polarisation-major, then column, then row -> eq. 6 with M_y = cols, M_z = rows."""
    from tfloc.data.transforms import angle_delay_power_profile
    rows, cols, pols, ue, sc = 2, 4, 2, 2, 10
    h = (rng.normal(size=(1, ue, rows * cols * pols, sc)) + 1j * rng.normal(size=(1, ue, rows * cols * pols, sc))).astype(np.complex64)
    got = csi_features(to_real_imag(tf.constant(h)), sc, "adp", "none", (rows, cols, pols)).numpy()
    for u in range(ue):
        for p in range(pols):
            block = h[:, u, p * rows * cols:(p + 1) * rows * cols]
            ref = angle_delay_power_profile(tf.constant(block), cols, rows).numpy()[0]
            np.testing.assert_allclose(got[0, :, :, u * pols + p], ref, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="do not form a 3 x 3 x 2"):
        csi_features(to_real_imag(tf.constant(h)), sc, "adp", "none", (3, 3, 2))


def test_covariance_and_stabilized_forms_match_numpy(rng):
    h = (rng.normal(size=(2, 2, 4, 6)) + 1j * rng.normal(size=(2, 2, 4, 6))).astype(np.complex64)
    x = to_real_imag(tf.constant(h))
    cov = csi_features(x, 6, "sample_covariance", "none").numpy()
    ref = np.einsum("buin,bujn->biju", h, h.conj()) / 6
    np.testing.assert_allclose(cov, np.concatenate([ref.real, ref.imag], -1), atol=1e-5)
    st = csi_features(x, 6, "stabilized", "none").numpy()
    assert st.shape == (2, 8, 6, 2)
    g = np.sqrt((np.abs(h) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(np.sqrt((st ** 2).sum(axis=(1, 2, 3))), 1.0, rtol=1e-5)  # unit gain
    hb = h / g[:, None, None, None]
    m0 = np.argmax((np.abs(hb) ** 2).mean(axis=(1, 3)), axis=1)
    for b in range(2):
        phi = np.angle(hb[b, :, m0[b], :])                          # [ue (=T), sc]
        ref_b = (hb[b] * np.exp(-1j * phi)[:, None, :]).reshape(8, 6)
        np.testing.assert_allclose(st[b, ..., 0] + 1j * st[b, ..., 1], ref_b, atol=1e-5)


@pytest.mark.parametrize("mode, axes", [("antenna", (2, 3)), ("subcarrier", (1, 3)),
                                        ("matrix", (1, 2, 3))])
def test_seed002_normalizations_on_features(rng, mode, axes):
    x = tf.constant(rng.normal(size=(2, 2, 8, 10, 2)).astype(np.float32))
    y = csi_features(x, 10, "real_csi", mode).numpy()
    np.testing.assert_allclose(np.abs(y).max(axis=axes), 1.0, rtol=1e-5)


def test_fresh_samples_every_epoch(small_paths):
    """Seed 004 protocol: each epoch draws new UEs from the pool; val/test stay fixed."""
    cfg = DataConfig(num_subcarriers=16, subcarrier_spacing_hz=6e6, num_delay_taps=8,
                     batch_size=8, fresh_samples_per_epoch=24)
    splits = make_splits(small_paths, cfg, seed=1)
    assert len(splits.unlabelled) == 0                # the whole pool is labelled
    assert len(np.intersect1d(splits.train, np.concatenate([splits.val, splits.test]))) == 0
    pipe = CSIPipeline(small_paths, cfg, seed=1)
    ds = pipe.csi_dataset(splits.train, training=True)
    pool = {tuple(p) for p in small_paths.positions[splits.train, :2]}
    epochs = []
    for _ in range(3):
        pos = np.concatenate([y["position"].numpy() for _, y in ds])
        assert len(pos) == 24 and len({tuple(p) for p in pos}) == 24  # 24 distinct UEs
        assert {tuple(p) for p in pos} <= pool
        epochs.append({tuple(p) for p in pos})
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    # evaluation sets are not drawn: all of them, every pass
    n_val = sum(len(y["position"]) for _, y in pipe.csi_dataset(splits.val, training=False))
    assert n_val == len(splits.val)


def test_environments_from_sectors(small_paths):
    from tfloc.data.environments import make_environments, multi_environment_dataset, split_by_sector
    cfg = DataConfig(num_subcarriers=16, subcarrier_spacing_hz=6e6, num_delay_taps=8, batch_size=8,
                     labelled_fraction=0.3, val_fraction=0.1, test_fraction=0.2)
    views = split_by_sector(small_paths)
    assert sorted(views) == ["sector0", "sector1", "sector2"]
    assert sum(v.num_ue for v in views.values()) == small_paths.num_ue
    for s, name in enumerate(sorted(views)):
        assert np.all(views[name].sector == s)
    envs = make_environments(views, cfg, seed=3)
    # sources sector0 + sector1, target sector2 kept unseen
    ds = multi_environment_dataset(envs, ["sector0", "sector1"], "train", training=True)
    ids, n = [], 0
    for x, y in ds:
        assert x["features"].shape[1:] == (32, 8, 2) and y["position"].shape[1:] == (2,)
        ids.append(x["environment"].numpy())
        n += len(y["position"])
    ids = np.concatenate(ids)
    assert set(ids) == {0, 1} and n <= len(envs["sector0"].splits.train) + len(envs["sector1"].splits.train)
    # evaluation: every sample of each environment, tagged in order
    ev = multi_environment_dataset(envs, ["sector2"], "test", training=False)
    got = np.concatenate([y["position"].numpy() for _, y in ev])
    np.testing.assert_allclose(np.sort(got[:, 0]),
                               np.sort(views["sector2"].positions[envs["sector2"].splits.test, 0]))
    with pytest.raises(KeyError, match="unknown environment"):
        multi_environment_dataset(envs, ["sector9"], training=False)
