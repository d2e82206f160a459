"""CSI -> model features, one function for every form the papers use.

Shared by the tf.data pipeline and the exported serving graph (through
:class:`tfloc.layers.CSIFeatures`), so training and serving compute the same
features.

Forms (``representation``):

- ``magnitude`` / ``real_imag``: angle-delay domain by a 2D DFT over BS antennas
  and subcarriers (seed 000), magnitude or real and imaginary parts;
- ``adp``: angle-delay power profile of the UPA (seed 002, eq. 5-6), one per
  UE antenna and polarisation;
- ``real_csi``: the CSI itself, real and imaginary parts (seed 002 "RCSI");
- ``sample_covariance``: BS-side covariance over subcarriers (seed 002 "SCM");
- ``stabilized``: gain normalisation and phase stabilisation against the
  strongest antenna, stacked as (T*Nr, Nsc, 2) with the UE antennas as T
  (seed 004, eq. 7-14).
"""
from __future__ import annotations

import tensorflow as tf

import tfloc.data.transforms as T

REPRESENTATIONS = ("magnitude", "real_imag", "adp", "real_csi", "sample_covariance", "stabilized",
                   "csi")
NORMALIZATIONS = ("none", "sample_max", "sample_power", "antenna", "subcarrier", "matrix")


def _angle_delay(h, num_delay_taps):
    """[b, ue, bs, sc] complex -> [b, bs (angle, broadside centred), taps, ue] complex."""
    h = tf.transpose(h, [0, 1, 3, 2])                            # [b, ue, sc, bs]
    ang = tf.signal.fftshift(tf.signal.fft(h), axes=-1)          # angle over bs
    ang = tf.transpose(ang, [0, 1, 3, 2])                        # [b, ue, bs, sc]
    ad = tf.signal.ifft(ang)[..., :num_delay_taps]               # delay over sc
    return tf.transpose(ad, [0, 2, 3, 1])


def _adp(h, num_delay_taps, array_shape):
    """Seed 002 ADP per (UE antenna, polarisation): [b, rows*cols, taps, ue*pol]."""
    rows, cols, pols = array_shape
    b, ue, bs, sc = (tf.shape(h)[0], h.shape[1], h.shape[2], h.shape[3])
    if bs != rows * cols * pols:
        raise ValueError(f"{bs} BS antennas do not form a {rows} x {cols} x {pols}-polarisation array")
    # Sionna's port order: polarisation-major, then column, then row (m = col*rows + row),
    # so in eq. 6's m = i_y * M_z + i_z the columns are y (M_y = cols) and rows z.
    x = tf.reshape(h, [-1, rows * cols, sc])                     # [b*ue*pol, M, N]
    taps = min(num_delay_taps, sc)
    p = T.angle_delay_power_profile(x, cols, rows)[..., :taps]
    p = tf.reshape(p, [b, ue * pols, rows * cols, taps])
    return tf.transpose(p, [0, 2, 3, 1])


def csi_features(csi: tf.Tensor, num_delay_taps: int, representation: str = "magnitude",
                 normalization: str = "sample_max", array_shape=(1, 1, 1)) -> tf.Tensor:
    """Model features of real-stacked CSI.

    Input
    -----
    csi : [batch, ..., num_ue_ant, num_bs_ant, num_subcarriers, 2], tf.float32 (real, imag);
        leading dimensions (e.g. one CSI per BS) are kept: output [batch, ..., H, W, C]
    num_delay_taps : delay taps kept by the angle-delay forms (paths arrive early)
    array_shape : (rows, cols, polarisations) of the BS array, for ``adp``

    Output
    ------
    [batch, H, W, C] tf.float32 ("image" layout):

    ================== ============================ ==================
    representation     H x W                        C
    ================== ============================ ==================
    magnitude          num_bs_ant x num_delay_taps  num_ue_ant
    real_imag          num_bs_ant x num_delay_taps  2 * num_ue_ant
    adp                rows*cols x num_delay_taps   num_ue_ant * pols
    real_csi           num_bs_ant x num_subcarriers 2 * num_ue_ant
    sample_covariance  num_bs_ant x num_bs_ant      2 * num_ue_ant
    stabilized         ue*bs x num_subcarriers      2
    csi                the CSI itself [ue, bs, sc, 2], not normalised (seed 004: the
                       model's own edge stage normalises it and keeps the gain)
    ================== ============================ ==================

    ``normalization`` is per sample: ``sample_max``/``matrix`` (unit peak),
    ``sample_power`` (unit mean square), ``antenna`` (unit peak per row H),
    ``subcarrier`` (unit peak per column W, seed 002) or ``none``.
    """
    csi = tf.cast(csi, tf.float32)
    if representation == "csi":
        return csi
    if len(csi.shape) != 5:
        lead = tf.shape(csi)[:-4]
        flat = tf.reshape(csi, tf.concat([[-1], tf.shape(csi)[-4:]], 0))
        f = csi_features(flat, num_delay_taps, representation, normalization, array_shape)
        return tf.reshape(f, tf.concat([lead, tf.shape(f)[1:]], 0))
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    h = tf.complex(csi[..., 0], csi[..., 1])                     # [b, ue, bs, sc]

    def ri_channels(z):  # [b, H, W, C] complex -> [b, H, W, 2C] real
        return tf.concat([tf.math.real(z), tf.math.imag(z)], axis=-1)

    if representation == "magnitude":
        x = tf.abs(_angle_delay(h, num_delay_taps))
    elif representation == "real_imag":
        x = ri_channels(_angle_delay(h, num_delay_taps))
    elif representation == "adp":
        x = _adp(h, num_delay_taps, array_shape)
    elif representation == "real_csi":
        x = ri_channels(tf.transpose(h, [0, 2, 3, 1]))
    elif representation == "sample_covariance":
        r = T.sample_covariance(h)                                # [b, ue, bs, bs, 2]
        r = tf.transpose(r, [0, 2, 3, 4, 1])                      # [b, bs, bs, 2, ue]
        x = tf.reshape(r, [-1, r.shape[1], r.shape[2], 2 * r.shape[4]])  # real..., imag...
    else:  # stabilized
        hb, _ = T.gain_normalize(h, eps=1e-12)
        x = T.stack_and_reshape(T.phase_stabilize(hb))

    if normalization in ("sample_max", "matrix"):
        x = T.normalize(x, "matrix")
    elif normalization == "sample_power":
        x = x / (tf.sqrt(tf.reduce_mean(tf.square(x), axis=[1, 2, 3], keepdims=True)) + 1e-12)
    elif normalization in ("antenna", "subcarrier"):
        x = T.normalize(x, normalization)
    return x


def feature_shape(csi_shape, num_delay_taps: int, representation: str, array_shape=(1, 1, 1)):
    """[H, W, C] of :func:`csi_features` for one CSI sample of shape [ue, bs, sc, 2]."""
    ue, bs, sc = csi_shape[:3]
    rows, cols, pols = array_shape
    return {"magnitude": (bs, num_delay_taps, ue), "real_imag": (bs, num_delay_taps, 2 * ue),
            "adp": (rows * cols, num_delay_taps, ue * pols), "real_csi": (bs, sc, 2 * ue),
            "sample_covariance": (bs, bs, 2 * ue), "stabilized": (ue * bs, sc, 2),
            "csi": (ue, bs, sc, 2)}[representation]
