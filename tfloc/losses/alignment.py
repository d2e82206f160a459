"""Domain-alignment terms between a labelled source batch and an unlabelled target batch.

Seed 002 (Chu et al.) aligns batch-level feature distributions with the
symmetric KL divergence (eq. 10) locally, on the shared features, and
globally, on the multilinear conditioning map of both heads (eq. 11-12). The
transfer-learning and adversarial baselines use MMD, CORAL or a domain
classifier (:class:`tfloc.layers.GradientReversal`).
"""
from __future__ import annotations

import tensorflow as tf

_EPS = 1e-8


def batch_distribution(x):
    """``omega = P' / sum P'`` with ``P'`` the batch mean of non-negative features (eq. 10).

    Input: x [b, ...] >= 0. Output: [n] (flattened), sums to 1.
    """
    p = tf.reduce_mean(tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1]), axis=0) + _EPS
    return p / tf.reduce_sum(p)


def symmetric_kl(p, q):
    """``D_KL(p || q) + D_KL(q || p)`` of two distributions [n] (scalar)."""
    return tf.reduce_sum((p - q) * (tf.math.log(p) - tf.math.log(q)))


def local_alignment(features_source, features_target):
    """L_loc (eq. 10): SKL between the batch distributions of the shared features."""
    return symmetric_kl(batch_distribution(features_source), batch_distribution(features_target))


def multilinear_map(probs, coords, gamma: float = 2.0):
    """``Phi = -(1 - xi)^gamma log(xi) (x) zeta`` per sample (eq. 12).

    Input: probs xi [b, C] (softmax), coords zeta [b, D] (non-negative).
    Output: [b, C * D] (the per-sample Kronecker product).
    """
    xi = tf.clip_by_value(tf.cast(probs, tf.float32), _EPS, 1.0)
    w = -tf.pow(1.0 - xi, gamma) * tf.math.log(xi)
    return tf.reshape(w[:, :, None] * tf.cast(coords, tf.float32)[:, None, :],
                      [tf.shape(xi)[0], -1])


def global_alignment(probs_s, coords_s, probs_t, coords_t, gamma: float = 2.0):
    """L_global (eq. 11): SKL between the batch distributions of the conditioning maps."""
    return symmetric_kl(batch_distribution(multilinear_map(probs_s, coords_s, gamma)),
                        batch_distribution(multilinear_map(probs_t, coords_t, gamma)))


def lambda_ramp(progress):
    """``2 / (1 + exp(-10 kappa)) - 1``: 0 at the start, -> 1 as training progresses (kappa 0 -> 1)."""
    k = tf.cast(progress, tf.float32)
    return 2.0 / (1.0 + tf.exp(-10.0 * k)) - 1.0


def weight_l2(variables):
    """L_WR = 1/2 sum ||W||^2 over the given (kernel) variables (eq. 17's regulariser)."""
    return 0.5 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables] or [tf.constant(0.0)])


def mmd(x, y, bandwidths=(0.25, 0.5, 1.0, 2.0, 4.0)):
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (biased estimate).

    Bandwidths are multiples of the mean pairwise squared distance (a median-like
    heuristic), so the term is scale free. Input: x [n, d], y [m, d]. Output: scalar.
    """
    x = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
    y = tf.reshape(tf.cast(y, tf.float32), [tf.shape(y)[0], -1])
    z = tf.concat([x, y], 0)
    sq = tf.reduce_sum(z * z, 1)
    d2 = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(z, z, transpose_b=True), 0.0)
    scale = tf.stop_gradient(tf.reduce_mean(d2)) + _EPS
    k = tf.add_n([tf.exp(-d2 / (scale * b)) for b in bandwidths])
    n = tf.shape(x)[0]
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return tf.reduce_mean(kxx) + tf.reduce_mean(kyy) - 2.0 * tf.reduce_mean(kxy)


def coral(x, y):
    """CORAL: ``||C_x - C_y||_F^2 / (4 d^2)`` between feature covariances (Sun & Saenko)."""
    def cov(a):
        a = tf.reshape(tf.cast(a, tf.float32), [tf.shape(a)[0], -1])
        a = a - tf.reduce_mean(a, 0, keepdims=True)
        return tf.matmul(a, a, transpose_a=True) / tf.cast(tf.maximum(tf.shape(a)[0] - 1, 1), tf.float32)
    d = tf.cast(tf.shape(tf.reshape(x, [tf.shape(x)[0], -1]))[1], tf.float32)
    return tf.reduce_sum(tf.square(cov(x) - cov(y))) / (4.0 * d * d)
