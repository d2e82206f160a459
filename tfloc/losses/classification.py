"""Classification losses (per sample)."""
from __future__ import annotations

import tensorflow as tf


def focal_cross_entropy(labels, logits, gamma: float = 2.0):
    """Modulated cross-entropy ``-(1 - p_c)^gamma log p_c`` (seed 002 eq. 9, Lin et al.).

    Equals the plain cross-entropy at ``gamma = 0``.

    Input: labels [b] int (class index); logits [b, C] float. Output: [b] float32.
    """
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    logp_c = tf.gather(logp, tf.cast(labels, tf.int32), axis=-1, batch_dims=1)
    if gamma == 0:
        return -logp_c
    return -tf.pow(1.0 - tf.exp(logp_c), gamma) * logp_c
