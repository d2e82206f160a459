"""CSI forms of seeds 002 and 004 against NumPy written from the papers' equations."""
import numpy as np
import pytest
import tensorflow as tf

from tfloc.data import transforms as T


def _cn(rng, *shape):
    return ((rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)).astype(np.complex64)


def test_covariance_long_term_average(rng):
    h = _cn(rng, 50, 3, 4, 6)                        # [realisations, T, Nr, Nsc]
    r = T.estimate_channel_covariance(tf.constant(h)).numpy()
    v = h.reshape(-1, 4, 6)
    for n in range(6):
        ref = sum(np.outer(v[k, :, n], v[k, :, n].conj()) for k in range(v.shape[0])) / v.shape[0]
        np.testing.assert_allclose(r[n], ref, atol=1e-5)


def test_lmmse_matches_eq4_and_beats_least_squares(rng):
    nr, nsc, k = 4, 8, 4000
    # strongly correlated (rank-1 per subcarrier) channel: LMMSE should use it
    mix = _cn(rng, nsc, nr, 1)
    h = np.einsum("nij,kjn->kin", mix, _cn(rng, k, 1, nsc)).astype(np.complex64)
    x = np.exp(1j * rng.uniform(0, 2 * np.pi, nsc)).astype(np.complex64) * 1.5
    s2 = 0.5
    y = (h * x[None, None, :] + np.sqrt(s2) * _cn(rng, k, nr, nsc)).astype(np.complex64)
    r = T.estimate_channel_covariance(tf.constant(h)).numpy()
    got = T.lmmse_estimate(tf.constant(y[:5]), tf.constant(x), tf.constant(r), s2).numpy()
    for b in range(5):
        for n in range(nsc):
            w = r[n] * np.conj(x[n]) @ np.linalg.inv(abs(x[n]) ** 2 * r[n] + s2 * np.eye(nr))
            np.testing.assert_allclose(got[b, :, n], w @ y[b, :, n], rtol=1e-3, atol=1e-4)
    full = T.lmmse_estimate(tf.constant(y), tf.constant(x), tf.constant(r), s2).numpy()
    mse_lmmse = np.mean(np.abs(full - h) ** 2)
    mse_ls = np.mean(np.abs(y / x[None, None] - h) ** 2)
    assert mse_lmmse < 0.5 * mse_ls  # about 1/Nr of the noise survives a rank-1 prior


def test_gain_normalize_eq7_8(rng):
    h = _cn(rng, 3, 2, 4, 5)
    hb, g = T.gain_normalize(tf.constant(h), eps=1e-3)
    ref_g = np.sqrt((np.abs(h) ** 2).reshape(3, -1).sum(1))
    np.testing.assert_allclose(g.numpy(), ref_g, rtol=1e-5)
    np.testing.assert_allclose(hb.numpy(), h / (ref_g + 1e-3)[:, None, None, None], rtol=1e-5)


def test_phase_stabilization_eq9_11(rng):
    h = _cn(rng, 2, 3, 4, 5)
    h[:, :, 2] *= 3.0                                 # antenna 2 is the strongest
    h[0, 1, 2, 3] = 1e-9                              # below eps: phase left alone
    got = T.phase_stabilize(tf.constant(h), eps_angle=1e-6).numpy()
    ref = np.empty_like(h)
    for b in range(2):
        m0 = np.argmax((np.abs(h[b]) ** 2).mean(axis=(0, 2)))
        assert m0 == 2
        for t in range(3):
            for n in range(5):
                ref_el = h[b, t, m0, n]
                phi = np.angle(ref_el) if abs(ref_el) >= 1e-6 else 0.0
                ref[b, t, :, n] = h[b, t, :, n] * np.exp(-1j * phi)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # eq. 12: the reference antenna becomes real and relative phases are kept
    assert np.abs(got[1, :, 2, :].imag).max() < 1e-5
    rel = np.angle(got[1, :, 0] * np.conj(got[1, :, 2]))
    np.testing.assert_allclose(rel, np.angle(h[1, :, 0] * np.conj(h[1, :, 2])), atol=1e-4)


def test_stack_and_reshape_eq13_14(rng):
    h = _cn(rng, 2, 3, 4, 5)
    x = T.stack_and_reshape(tf.constant(h)).numpy()
    assert x.shape == (2, 12, 5, 2)
    # row t * Nr + m holds slot t, antenna m
    np.testing.assert_array_equal(x[1, 1 * 4 + 2, :, 0], h[1, 1, 2].real)
    np.testing.assert_array_equal(x[1, 1 * 4 + 2, :, 1], h[1, 1, 2].imag)


def test_subsample_one_per_resource_block(rng):
    h = _cn(rng, 1, 10, 8, 288)
    s = T.subsample(tf.constant(h), subcarrier_step=12, time_step=2).numpy()
    assert s.shape == (1, 5, 8, 24)
    np.testing.assert_array_equal(s, h[:, ::2, :, ::12])


def test_adp_eq5_6(rng):
    my, mz, n = 2, 4, 6
    h = _cn(rng, 2, my * mz, n)

    def v(m):  # [V_M]_{i,k} = exp(-j 2 pi i (k - M/2) / M) / sqrt(M)
        return np.array([[np.exp(-2j * np.pi * i * (k - m / 2) / m) for k in range(m)]
                         for i in range(m)]) / np.sqrt(m)
    f = np.array([[np.exp(-2j * np.pi * i * k / n) for k in range(n)] for i in range(n)]) / np.sqrt(n)
    got = T.angle_delay_power_profile(tf.constant(h), my, mz).numpy()
    for b in range(2):
        g = np.kron(v(my).conj().T, v(mz).conj().T) @ h[b] @ f.conj() / np.sqrt(my * mz * n)
        np.testing.assert_allclose(got[b], (g * g.conj()).real, rtol=1e-4, atol=1e-7)
    # unitary transforms: total power is kept up to the 1/(MN) scaling
    np.testing.assert_allclose(got.sum(axis=(1, 2)), (np.abs(h) ** 2).sum(axis=(1, 2)) / (my * mz * n),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="do not form a 3 x 3 array"):
        T.angle_delay_power_profile(tf.constant(h), 3, 3)


def test_real_csi_and_sample_covariance(rng):
    h = _cn(rng, 2, 4, 7)
    np.testing.assert_array_equal(T.real_csi(tf.constant(h)).numpy()[..., 1], h.imag)
    got = T.sample_covariance(tf.constant(h)).numpy()
    for b in range(2):
        ref = sum(np.outer(h[b, :, n], h[b, :, n].conj()) for n in range(7)) / 7
        np.testing.assert_allclose(got[b, ..., 0] + 1j * got[b, ..., 1], ref, atol=1e-5)
    # Hermitian: R = R^H
    np.testing.assert_allclose(got[..., 0], np.swapaxes(got[..., 0], 1, 2), atol=1e-6)


@pytest.mark.parametrize("mode", T.NORMALIZATIONS)
def test_normalizations(rng, mode):
    x = rng.normal(size=(2, 4, 6)).astype(np.float32)
    got = T.normalize(tf.constant(x), mode).numpy()
    a = np.abs(x)
    ref = {"antenna": x / a.max(axis=2, keepdims=True),
           "subcarrier": x / a.max(axis=1, keepdims=True),
           "matrix": x / a.max(axis=(1, 2), keepdims=True),
           "none": x}[mode]
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_normalize_rejects_unknown_mode():
    with pytest.raises(ValueError, match="normalization must be one of"):
        T.normalize(tf.zeros((1, 2, 2)), "global")


@pytest.mark.parametrize("jit", [False, True])
def test_edge_chain_in_graph(rng, jit):
    """gain -> phase stabilisation -> stacking runs inside one tf.function (and XLA)."""
    h = tf.constant(_cn(rng, 2, 3, 4, 5))

    def chain(x):
        hb, g = T.gain_normalize(x)
        return T.stack_and_reshape(T.phase_stabilize(hb)), g
    eager = chain(h)
    graph = tf.function(chain, jit_compile=jit)(h)
    np.testing.assert_allclose(graph[0], eager[0], atol=1e-5)
    np.testing.assert_allclose(graph[1], eager[1], rtol=1e-5)
