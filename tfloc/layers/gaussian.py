"""A Gaussian position output: mean and (log-)scale from one dense output (seed 001)."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def num_gaussian_params(dims: int, covariance: str) -> int:
    """Raw outputs a Gaussian over ``dims`` coordinates needs: the mean plus D log-sigmas
    (``diag``) or the D (D + 1) / 2 entries of a Cholesky factor (``full``)."""
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
    return dims + (dims if covariance == "diag" else dims * (dims + 1) // 2)


@keras.saving.register_keras_serializable(package="tfloc")
class GaussianOutput(keras.layers.Layer):
    """Raw network outputs -> a Gaussian over the position, in metres.

    Seed 001 ends its model with one dense layer of 2 (MSE) or 4 outputs (NLL):
    the mean and the log-sigma of x and y. The network works in units of the
    training labels' spread; this layer maps to metres.

    - ``diag``: ``raw = [mu (D), log sigma (D)]``; sigma = ``(exp(clip(log sigma)) + min_std)``
      times the spread: positive, never zero (the likelihood stays finite) and
      never overflowing (the log is clipped to +-``max_log_std``).
    - ``full``: ``raw = [mu (D), D (D + 1) / 2 Cholesky entries]`` (row-major lower
      triangle); the diagonal goes through the same exp as ``diag``, the
      off-diagonal entries are free, so ``L L^T`` is a valid covariance.

    Input: raw [b, num_gaussian_params(D, covariance)].
    Output: ``(position [b, D], position_std [b, D])`` and for ``full`` also
    ``position_scale_tril`` [b, D, D] (metres; covariance = L L^T; std = its
    diagonal's square root).
    """

    def __init__(self, offset, scale, covariance: str = "diag", min_std: float = 1e-3,
                 max_log_std: float = 7.0, **kwargs):
        super().__init__(**kwargs)
        self.offset = [float(v) for v in offset]
        self.scale = [float(v) for v in scale]
        self.covariance = covariance
        self.min_std = float(min_std)
        self.max_log_std = float(max_log_std)
        num_gaussian_params(len(self.offset), covariance)  # validates

    @property
    def dims(self) -> int:
        return len(self.offset)

    def _positive(self, log_s):
        return tf.exp(tf.clip_by_value(log_s, -self.max_log_std, self.max_log_std)) + self.min_std

    def call(self, raw):
        D = self.dims
        scale = tf.constant(self.scale, raw.dtype)
        loc = raw[:, :D] * scale + tf.constant(self.offset, raw.dtype)
        if self.covariance == "diag":
            return loc, self._positive(raw[:, D:2 * D]) * scale
        rows, cols = np.tril_indices(D)
        index = np.full((D, D), len(rows), np.int64)      # the extra zero entry
        index[rows, cols] = np.arange(len(rows))
        entries = raw[:, D:]
        diag = rows == cols
        entries = tf.where(tf.constant(diag)[None], self._positive(entries), entries)
        padded = tf.concat([entries, tf.zeros_like(entries[:, :1])], axis=1)
        tril = tf.reshape(tf.gather(padded, index.reshape(-1), axis=1), [-1, D, D])
        tril = tril * scale[:, None]                       # metres: diag(spread) L
        std = tf.sqrt(tf.reduce_sum(tril ** 2, axis=-1))   # sqrt(diag(L L^T))
        return loc, std, tril

    def compute_output_shape(self, input_shape):
        b, D = input_shape[0], self.dims
        out = ((b, D), (b, D))
        return out if self.covariance == "diag" else out + ((b, D, D),)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset, "scale": self.scale,
                "covariance": self.covariance, "min_std": self.min_std,
                "max_log_std": self.max_log_std}
