"""Position regression losses (per sample), in units of the training labels' spread."""
from __future__ import annotations

import tensorflow as tf


def standardized_squared_error(y_true, y_pred, scale):
    """``sum_d ((y_pred - y_true) / scale_d)^2`` per sample (seed 002 eq. 8, L_CR).

    Input: y_true, y_pred [b, dims] (metres); scale [dims]. Output: [b].
    """
    s = tf.constant(scale, tf.float32)
    d = (tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)) / s
    return tf.reduce_sum(tf.square(d), axis=-1)


def position_huber(y_true, y_pred, scale, delta: float = 1.0):
    """Huber loss of the standardised error, summed over axes. Output: [b]."""
    s = tf.constant(scale, tf.float32)
    d = tf.abs((tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)) / s)
    q = tf.minimum(d, delta)
    return tf.reduce_sum(0.5 * tf.square(q) + delta * (d - q), axis=-1)


def accumulated_squared_error(y_true, sequence, scale):
    """Seed 004 eq. 34: ``sum_i w_i ||p - p_i||^2`` with ``w_i = 2 i / (N (N + 1))``, the
    estimates p_i after each of N subcarriers, in units of the label spread.

    Input: y_true [b, dims] (metres); sequence [b, N, dims] (metres); scale [dims].
    Output: [b].
    """
    from tfloc.layers.fusion import accumulation_weights
    n = sequence.shape[1]
    s = tf.constant(scale, tf.float32)
    d = (tf.cast(sequence, tf.float32) - tf.cast(y_true, tf.float32)[:, None, :]) / s
    return tf.reduce_sum(tf.reduce_sum(tf.square(d), axis=-1) * accumulation_weights(n), axis=-1)


def negative_cosine_similarity(x, x_hat, eps: float = 1e-8):
    """Seed 004 eq. 22: ``-|<h, h^>| / (||h|| ||h^|| + eps)`` of complex CSI given as
    real/imag pairs (the complex inner product, so a common phase costs nothing).

    Input: x, x_hat [b, ..., 2] float32 (last axis: real, imag). Output: [b] in [-1, 0].
    """
    x, x_hat = tf.cast(x, tf.float32), tf.cast(x_hat, tf.float32)
    axes = list(range(1, len(x.shape) - 1))
    xr, xi, yr, yi = x[..., 0], x[..., 1], x_hat[..., 0], x_hat[..., 1]
    re = tf.reduce_sum(xr * yr + xi * yi, axis=axes)          # Re <x, x^> = sum conj(x) x^
    im = tf.reduce_sum(xr * yi - xi * yr, axis=axes)
    norm2 = (tf.reduce_sum(tf.square(x), axis=axes + [len(x.shape) - 1])
             * tf.reduce_sum(tf.square(x_hat), axis=axes + [len(x.shape) - 1]))
    # eps^2 under both roots: finite gradients where x or x^ is zero (a link without paths)
    return -tf.sqrt(re ** 2 + im ** 2 + eps ** 2) / (tf.sqrt(norm2 + eps ** 2) + eps)
