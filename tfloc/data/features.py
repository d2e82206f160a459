"""CSI -> angle-delay features (2D DFT over BS antennas and subcarriers).

Shared by the tf.data pipeline and the exported serving graph (through
:class:`tfloc.layers.AngleDelayTransform`), so training and serving compute the
same features.
"""
from __future__ import annotations

import tensorflow as tf

REPRESENTATIONS = ("magnitude", "real_imag")
NORMALIZATIONS = ("none", "sample_max", "sample_power")


def angle_delay_features(csi: tf.Tensor, num_delay_taps: int,
                         representation: str = "magnitude",
                         normalization: str = "sample_max") -> tf.Tensor:
    """Angle-delay domain features of real-stacked CSI.

    The angle domain is the DFT over BS antennas (shifted so broadside is in the
    middle), the delay domain the inverse DFT over subcarriers, of which the
    first ``num_delay_taps`` taps are kept (paths arrive early; the rest is noise).

    Input
    -----
    csi : [batch, num_ue_ant, num_bs_ant, num_subcarriers, 2], tf.float32 (real, imag)

    Output
    ------
    features : [batch, num_bs_ant, num_delay_taps, C], tf.float32
        ``C = num_ue_ant`` for "magnitude", ``2 * num_ue_ant`` for "real_imag".
    """
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    h = tf.complex(csi[..., 0], csi[..., 1])                     # [b, ue, bs, sc]
    h = tf.transpose(h, [0, 1, 3, 2])                            # [b, ue, sc, bs]
    ang = tf.signal.fftshift(tf.signal.fft(h), axes=-1)          # angle over bs
    ang = tf.transpose(ang, [0, 1, 3, 2])                        # [b, ue, bs, sc]
    ad = tf.signal.ifft(ang)[..., :num_delay_taps]               # delay over sc
    ad = tf.transpose(ad, [0, 2, 3, 1])                          # [b, bs, taps, ue]
    if representation == "magnitude":
        x = tf.abs(ad)
    else:
        x = tf.concat([tf.math.real(ad), tf.math.imag(ad)], axis=-1)
    if normalization == "sample_max":
        x = x / (tf.reduce_max(tf.abs(x), axis=[1, 2, 3], keepdims=True) + 1e-12)
    elif normalization == "sample_power":
        x = x / (tf.sqrt(tf.reduce_mean(tf.square(x), axis=[1, 2, 3], keepdims=True)) + 1e-12)
    return x
