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
