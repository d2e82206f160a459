"""Likelihood losses with learnt uncertainty, through TensorFlow Probability."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfloc.losses.classification import focal_cross_entropy


def _tfd():
    import tensorflow_probability as tfp
    return tfp.distributions


def gaussian_nll(y_true, loc, scale):
    """``-log N(y; loc, diag(scale^2))`` per sample, by TFP's MultivariateNormalDiag.

    Input: y_true, loc [b, D]; scale [b, D] or broadcastable (> 0). Output: [b].
    """
    y = tf.cast(y_true, tf.float32)
    scale = tf.broadcast_to(tf.cast(scale, tf.float32), tf.shape(y))
    return -_tfd().MultivariateNormalDiag(loc=tf.cast(loc, tf.float32), scale_diag=scale).log_prob(y)


def gaussian_nll_tril(y_true, loc, scale_tril):
    """``-log N(y; loc, L L^T)`` per sample (full covariance by its Cholesky factor),
    by TFP's MultivariateNormalTriL.

    Input: y_true, loc [b, D]; scale_tril [b, D, D] lower triangular, positive diagonal.
    Output: [b].
    """
    return -_tfd().MultivariateNormalTriL(loc=tf.cast(loc, tf.float32),
                                          scale_tril=tf.cast(scale_tril, tf.float32)).log_prob(
        tf.cast(y_true, tf.float32))


def gaussian_crps(y_true, loc, scale):
    """CRPS of N(loc, scale^2) at y per axis, closed form (seed 001 eq. 9):
    ``sigma [w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)]`` with ``w = (y - loc) / sigma``.

    Input: y_true, loc, scale [b, D] (scale > 0). Output: [b, D] (same units as y).
    """
    y, mu = tf.cast(y_true, tf.float32), tf.cast(loc, tf.float32)
    s = tf.broadcast_to(tf.cast(scale, tf.float32), tf.shape(y))
    normal = _tfd().Normal(0.0, 1.0)
    w = (y - mu) / s
    return s * (w * (2.0 * normal.cdf(w) - 1.0) + 2.0 * normal.prob(w) - 1.0 / tf.sqrt(np.pi))


@keras.saving.register_keras_serializable(package="tfloc")
class HomoscedasticWeighting(keras.layers.Layer):
    """Joint negative log-likelihood of a regression and a classification task (seed 002, HDA).

    Two learnt task uncertainties, kept as ``s_k = log sigma_k^2`` (unconstrained,
    so sigma stays positive):

    ``-log N(y; y_hat, sigma_1^2 I)  +  focal(u, c) / sigma_2^2  +  log sigma_2^2``

    The regression part is TFP's Gaussian log-likelihood of the D coordinates
    (``||y - y_hat||^2 / (2 sigma_1^2) + D log sigma_1 + D/2 log 2 pi``); eq. 15
    writes ``log sigma_1`` once for the whole vector, the exact D-dimensional
    likelihood has it D times. The classification part is eq. 15's
    ``L_2 / sigma_2^2 + log sigma_2^2`` with the focal loss of eq. 9 as ``L_2``
    (eq. 16's approximation of a tempered softmax reduces to it at sigma_2 = 1).

    Input: ``[y_true, y_pred, class_labels, logits]`` with positions in units
    of the label spread [b, D], labels [b] int, logits [b, C].
    Output: [b] per-sample loss.
    """

    def __init__(self, gamma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)

    def build(self, input_shape=None):
        self.log_var = self.add_weight(name="log_var", shape=(2,), initializer="zeros")

    def call(self, inputs):
        y_true, y_pred, labels, logits = inputs
        s1, s2 = self.log_var[0], self.log_var[1]
        nll_position = gaussian_nll(y_true, y_pred, tf.exp(0.5 * s1))
        nll_condition = tf.exp(-s2) * focal_cross_entropy(labels, logits, self.gamma) + s2
        return nll_position + nll_condition

    @property
    def sigmas(self):
        """(sigma_1, sigma_2) as tensors."""
        return tf.exp(0.5 * self.log_var[0]), tf.exp(0.5 * self.log_var[1])

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}
