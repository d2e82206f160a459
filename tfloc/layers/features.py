"""Keras layers of the feature path (serialisable, real tensors in and out)."""
from __future__ import annotations

import keras
import tensorflow as tf

from tfloc.data.features import csi_features, feature_shape


@keras.saving.register_keras_serializable(package="tfloc")
class CSIFeatures(keras.layers.Layer):
    """Raw CSI -> model features (any form of :func:`tfloc.data.csi_features`),
    so a served model takes CSI.

    Parameters
    ----------
    num_delay_taps : int
    representation : "magnitude" | "real_imag" | "adp" | "real_csi" | "sample_covariance" |
        "stabilized" | "csi" (the CSI itself)
    normalization : "none" | "sample_max" | "sample_power" | "antenna" | "subcarrier" | "matrix"
    array_shape : (rows, cols, polarisations) of the BS array

    Input
    -----
    csi : [batch, ..., num_ue_ant, num_bs_ant, num_subcarriers, 2], float32
        any leading dimensions (e.g. one CSI per BS: [batch, L, ...])

    Output
    ------
    [batch, ..., H, W, C], float32
    """

    def __init__(self, num_delay_taps: int, representation: str = "magnitude",
                 normalization: str = "sample_max", array_shape=(1, 1, 1), **kwargs):
        super().__init__(**kwargs)
        self.num_delay_taps = int(num_delay_taps)
        self.representation = representation
        self.normalization = normalization
        self.array_shape = tuple(int(v) for v in array_shape)

    def call(self, csi):
        return csi_features(csi, self.num_delay_taps, self.representation, self.normalization,
                            self.array_shape)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-4], *feature_shape(input_shape[-4:], self.num_delay_taps,
                                                  self.representation, self.array_shape))

    def get_config(self):
        return {**super().get_config(), "num_delay_taps": self.num_delay_taps,
                "representation": self.representation, "normalization": self.normalization,
                "array_shape": list(self.array_shape)}


@keras.saving.register_keras_serializable(package="tfloc")
class AffineOutput(keras.layers.Layer):
    """``y = x * scale + offset`` with fixed per-coordinate constants.

    Lets a network predict standardised coordinates while the model outputs
    metres (the constants come from the labelled training positions).
    """

    def __init__(self, offset, scale, **kwargs):
        super().__init__(**kwargs)
        self.offset = [float(v) for v in offset]
        self.scale = [float(v) for v in scale]

    def call(self, x):
        return x * tf.constant(self.scale, x.dtype) + tf.constant(self.offset, x.dtype)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset, "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfloc")
class CoordinateChannels(keras.layers.Layer):
    """Appends two channels holding each pixel's row and column in [-1, 1] (CoordConv).

    Input: [batch, H, W, C] float32. Output: [batch, H, W, C + 2] float32.
    """

    def call(self, x):
        b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        rows = tf.linspace(-1.0, 1.0, h)[:, None] * tf.ones([1, w])
        cols = tf.ones([h, 1]) * tf.linspace(-1.0, 1.0, w)[None, :]
        grid = tf.tile(tf.stack([rows, cols], axis=-1)[None], [b, 1, 1, 1])
        return tf.concat([x, tf.cast(grid, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


@keras.saving.register_keras_serializable(package="tfloc")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: channels viewed as [groups, C / groups], transposed.

    Input: [batch, H, W, C] with C divisible by ``groups``. Output: same shape, channel
    ``g * (C / groups) + i`` moved to ``i * groups + g``.
    """

    def __init__(self, groups: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        s = tf.shape(x)
        c = x.shape[-1]
        if c % self.groups:
            raise ValueError(f"ChannelShuffle: {c} channels do not split into {self.groups} groups")
        y = tf.reshape(x, tf.stack([s[0], s[1], s[2], self.groups, c // self.groups]))
        y = tf.transpose(y, [0, 1, 2, 4, 3])
        return tf.reshape(y, s)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="tfloc")
class ChannelSplit(keras.layers.Layer):
    """Splits the channels in two halves (ShuffleNetV2's channel split).

    Input: [batch, H, W, C], C even. Output: two [batch, H, W, C / 2] tensors.
    """

    def call(self, x):
        c = x.shape[-1]
        if c % 2:
            raise ValueError(f"ChannelSplit: {c} channels do not split in halves")
        return x[..., :c // 2], x[..., c // 2:]

    def compute_output_shape(self, input_shape):
        half = (*input_shape[:-1], input_shape[-1] // 2)
        return half, half


@keras.saving.register_keras_serializable(package="tfloc")
class SectorRouting(keras.layers.Layer):
    """Picks, per sample, the output of the head of its serving sector (seed 000's
    decoupled mapping heads).

    Input: [heads: list of K tensors [batch, d], sector: [batch] int in 0..K-1].
    Output: [batch, d].
    """

    def call(self, inputs):
        heads, sector = inputs[:-1], inputs[-1]
        stacked = tf.stack(heads, axis=1)                         # [b, K, d]
        return tf.gather(stacked, tf.cast(tf.reshape(sector, [-1]), tf.int32), batch_dims=1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]
