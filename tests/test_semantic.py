"""Seed-002 components against NumPy/SciPy references written from the paper's equations."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import multivariate_normal

from tfloc.layers import GradientReversal
from tfloc.losses import (HomoscedasticWeighting, coral, focal_cross_entropy, gaussian_nll,
                          global_alignment, lambda_ramp, local_alignment, mmd, multilinear_map,
                          standardized_squared_error, symmetric_kl, weight_l2)


def _softmax(u):
    e = np.exp(u - u.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _dist(x):  # eq. 10: omega = P' / sum P', P' the batch mean
    p = x.reshape(len(x), -1).mean(0) + 1e-8
    return p / p.sum()


def _skl(p, q):
    return np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_cross_entropy_matches_numpy(rng, gamma):
    logits = rng.normal(size=(7, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 7)
    p = _softmax(logits.astype(np.float64))[np.arange(7), labels]
    ref = -(1 - p) ** gamma * np.log(p)
    np.testing.assert_allclose(focal_cross_entropy(labels, logits, gamma), ref, rtol=1e-5)


def test_focal_equals_cross_entropy_at_gamma_zero(rng):
    logits = rng.normal(size=(9, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 9)
    ce = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(focal_cross_entropy(labels, logits, 0.0), ce, rtol=1e-5)
    assert np.all(focal_cross_entropy(labels, logits, 2.0).numpy() <= ce.numpy() + 1e-7)


def test_symmetric_kl_zero_for_equal_and_symmetric(rng):
    a, b = rng.random((16, 10)), rng.random((12, 10))
    assert float(local_alignment(a, a)) == pytest.approx(0.0, abs=1e-9)
    assert float(local_alignment(a, b)) == pytest.approx(float(local_alignment(b, a)), rel=1e-6)
    np.testing.assert_allclose(float(local_alignment(a, b)), _skl(_dist(a), _dist(b)), rtol=1e-4)
    p, q = _dist(a), _dist(b)
    assert float(symmetric_kl(p.astype(np.float32), q.astype(np.float32))) > 0


def test_multilinear_map_and_global_alignment_match_numpy(rng):
    gamma = 2.0
    xs, zs = _softmax(rng.normal(size=(8, 3))), rng.random((8, 3))
    xt, zt = _softmax(rng.normal(size=(6, 3))), rng.random((6, 3))

    def phi(xi, z):  # eq. 12, per sample: -(1 - xi)^gamma log(xi) (x) zeta
        return np.stack([np.kron(-(1 - x) ** gamma * np.log(x), v) for x, v in zip(xi, z)])
    np.testing.assert_allclose(multilinear_map(xs, zs, gamma), phi(xs, zs), rtol=1e-5)
    ref = _skl(_dist(phi(xs, zs)), _dist(phi(xt, zt)))
    np.testing.assert_allclose(float(global_alignment(xs, zs, xt, zt, gamma)), ref, rtol=1e-4)
    assert float(global_alignment(xs, zs, xs, zs, gamma)) == pytest.approx(0.0, abs=1e-7)


def test_lambda3_ramp():
    k = np.linspace(0, 1, 11)
    np.testing.assert_allclose(lambda_ramp(k), 2 / (1 + np.exp(-10 * k)) - 1, rtol=1e-6)
    assert float(lambda_ramp(0.0)) == 0.0 and float(lambda_ramp(1.0)) > 0.9999
    assert np.all(np.diff(lambda_ramp(k).numpy()) > 0)


def test_weight_l2_and_coordinate_loss(rng):
    ws = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    assert float(weight_l2([tf.constant(w) for w in ws])) == pytest.approx(
        0.5 * sum((w.astype(np.float64) ** 2).sum() for w in ws), rel=1e-5)
    y, yh = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    std = np.array([2.0, 1.0, 0.5])
    np.testing.assert_allclose(standardized_squared_error(y, yh, std),
                               (((yh - y) / std) ** 2).sum(-1), rtol=1e-5)   # eq. 8


def test_gaussian_nll_matches_scipy(rng):
    y, loc = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    scale = rng.uniform(0.3, 2.0, size=(5, 3))
    ref = [-multivariate_normal(loc[i], np.diag(scale[i] ** 2)).logpdf(y[i]) for i in range(5)]
    np.testing.assert_allclose(gaussian_nll(y, loc, scale), ref, rtol=1e-4)


def test_homoscedastic_weighting_matches_eq15_closed_form(rng):
    layer = HomoscedasticWeighting(gamma=0.0)
    layer.build(None)
    s1, s2 = 0.4, -0.7                          # log sigma_1^2, log sigma_2^2
    layer.log_var.assign([s1, s2])
    y, yh = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    labels, logits = rng.integers(0, 3, 6), rng.normal(size=(6, 3))
    sig1_sq, sig2_sq = np.exp(s1), np.exp(s2)
    D = 3
    ce = -np.log(_softmax(logits)[np.arange(6), labels])
    # eq. 15, negated, with the D-dimensional Gaussian's D log sigma_1 and its 2 pi constant
    ref = (((y - yh) ** 2).sum(-1) / (2 * sig1_sq) + D * 0.5 * np.log(sig1_sq)
           + 0.5 * D * np.log(2 * np.pi) + ce / sig2_sq + np.log(sig2_sq))
    got = layer([y.astype(np.float32), yh.astype(np.float32), labels, logits.astype(np.float32)])
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    clone = HomoscedasticWeighting.from_config(layer.get_config())
    assert clone.gamma == 0.0


def test_gradient_reversal_sign_and_serialisation(tmp_path):
    layer = GradientReversal(scale=0.5)
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_allclose(tape.gradient(loss, x), [[-0.5, -1.0, -1.5]])
    clone = GradientReversal.from_config(layer.get_config())
    assert clone.scale == 0.5
    model = keras.Sequential([keras.Input((3,)), layer])
    model.save(tmp_path / "g.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "g.keras")(x), x)


def test_mmd_and_coral(rng):
    a = rng.normal(size=(32, 5)).astype(np.float32)
    b = (rng.normal(size=(32, 5)) + 2.0).astype(np.float32)
    assert float(mmd(a, a)) == pytest.approx(0.0, abs=1e-6)
    # NumPy reference of the biased estimate with the same kernels and bandwidths
    z = np.concatenate([a, b]).astype(np.float64)
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    k = sum(np.exp(-d2 / (d2.mean() * w)) for w in (0.25, 0.5, 1.0, 2.0, 4.0))
    want = k[:32, :32].mean() + k[32:, 32:].mean() - 2 * k[:32, 32:].mean()
    np.testing.assert_allclose(float(mmd(a, b)), want, rtol=1e-4)
    # a shifted sample is far, a second sample of the same distribution is near
    a2 = rng.normal(size=(32, 5)).astype(np.float32)
    assert float(mmd(a, b)) > 10 * float(mmd(a, a2)) > 0
    assert float(coral(a, a)) == pytest.approx(0.0, abs=1e-9)
    ca, cb = np.cov(a.T), np.cov((b * 3).T)
    np.testing.assert_allclose(float(coral(a, b * 3)), ((ca - cb) ** 2).sum() / (4 * 25), rtol=1e-3)


def test_gaussian_crps_closed_form_and_integral(rng):
    from scipy.integrate import quad
    from scipy.stats import norm
    from tfloc.losses import gaussian_crps
    y, mu, s = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng.uniform(0.2, 3.0, (4, 2))
    w = (y - mu) / s
    closed = s * (w * (2 * norm.cdf(w) - 1) + 2 * norm.pdf(w) - 1 / np.sqrt(np.pi))
    got = gaussian_crps(y, mu, s).numpy()
    np.testing.assert_allclose(got, closed, rtol=1e-4, atol=1e-6)
    # eq. 7: integral of (F(x) - 1{x >= y})^2
    for i, j in [(0, 0), (3, 1)]:
        F = norm(mu[i, j], s[i, j]).cdf
        lo, hi = mu[i, j] - 12 * s[i, j], mu[i, j] + 12 * s[i, j]
        integral = quad(lambda x: F(x) ** 2, lo, y[i, j])[0] + quad(lambda x: (1 - F(x)) ** 2, y[i, j], hi)[0]
        assert got[i, j] == pytest.approx(integral, rel=1e-4)
