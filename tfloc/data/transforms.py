"""CSI forms and preprocessing from the papers, as TF graph functions.

Seed 004 (An et al.): LMMSE estimation (eq. 4), gain extraction and
normalisation (eq. 7-8), phase stabilisation against the strongest antenna
(eq. 9-11), real/imag stacking and the (T*Nr, Nsc, 2) reshape (eq. 13-14).
Seed 002 (Chu et al.): angle-delay power profile (eq. 5-6), real CSI, sample
covariance, and antenna-/subcarrier-/matrix-wise normalisation.

Shapes: ``[batch, T, Nr, Nsc]`` complex64 for multi-slot CSI at one BS
(T slots, Nr antennas, Nsc subcarriers), ``[batch, M, N]`` for one snapshot.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfloc.data.csi import to_real_imag


# --------------------------------------------------------------------------- #
# Seed 004: estimation and edge preprocessing
# --------------------------------------------------------------------------- #

def estimate_channel_covariance(h: tf.Tensor) -> tf.Tensor:
    """Per-subcarrier spatial covariance by long-term averaging.

    ``R_n = E[h_n h_n^H]``, averaged over every axis but antennas and subcarriers.

    Input: h [..., Nr, Nsc] complex64 (leading axes are realisations).
    Output: R [Nsc, Nr, Nr] complex64.
    """
    nr, nsc = h.shape[-2], h.shape[-1]
    v = tf.reshape(h, [-1, nr, nsc])                                  # [K, Nr, Nsc]
    v = tf.transpose(v, [2, 0, 1])                                    # [Nsc, K, Nr]
    k = tf.cast(tf.shape(v)[1], h.dtype)
    return tf.einsum("nki,nkj->nij", v, tf.math.conj(v)) / k


def lmmse_estimate(y: tf.Tensor, pilots: tf.Tensor, covariance: tf.Tensor,
                   noise_var: float | tf.Tensor) -> tf.Tensor:
    """Per-subcarrier LMMSE channel estimate (seed 004, eq. 4).

    ``h_n = R_n x_n^* (|x_n|^2 R_n + sigma^2 I)^{-1} y_n``

    Input
    -----
    y : [..., Nr, Nsc] complex64 -- received pilots ``y_n = x_n h_n + noise``
    pilots : [Nsc] complex64 -- the known pilot symbols ``x_n`` (non-zero)
    covariance : [Nsc, Nr, Nr] complex64 -- ``R_n``
    noise_var : sigma^2 per complex entry

    Output: h_hat [..., Nr, Nsc] complex64
    """
    nr = covariance.shape[-1]
    x = tf.cast(pilots, tf.complex64)[:, None, None]                 # [Nsc, 1, 1]
    s2 = tf.cast(noise_var, tf.complex64)
    c_yy = tf.cast(tf.abs(x) ** 2, tf.complex64) * covariance + s2 * tf.eye(nr, dtype=tf.complex64)
    w = tf.linalg.matmul(covariance * tf.math.conj(x), tf.linalg.inv(c_yy))  # [Nsc, Nr, Nr]
    return tf.einsum("nij,...jn->...in", w, y)


def gain_normalize(h: tf.Tensor, eps: float = 1e-12):
    """Gain ``g = ||H||_F`` per sample and ``H / (g + eps)`` (seed 004, eq. 7-8).

    Input: h [batch, ...] complex64. Output: (h_bar like h, g [batch] float32).
    """
    axes = list(range(1, len(h.shape)))
    g = tf.sqrt(tf.reduce_sum(tf.abs(h) ** 2, axis=axes))
    scale = tf.reshape(g + eps, [-1] + [1] * len(axes))
    return h / tf.cast(scale, h.dtype), g


def phase_stabilize(h: tf.Tensor, eps_angle: float = 1e-6) -> tf.Tensor:
    """Removes the per-(t, n) common phase using the strongest antenna (seed 004, eq. 9-11).

    ``m0 = argmax_m mean_{t,n} |h_{t,m,n}|^2``; ``phi_{t,n} = angle(h_{t,m0,n})``
    where ``|h_{t,m0,n}| >= eps_angle``, else 0; ``h~ = h exp(-j phi_{t,n})``.

    Input/Output: [batch, T, Nr, Nsc] complex64.
    """
    power = tf.reduce_mean(tf.abs(h) ** 2, axis=[1, 3])               # [b, Nr]
    m0 = tf.argmax(power, axis=-1)                                    # [b]
    # Select the reference antenna by a one-hot sum: tf.gather(batch_dims=1) on
    # complex64 crashed natively (double free) inside a parallel tf.data map.
    pick = tf.cast(tf.one_hot(m0, tf.shape(h)[2]), h.dtype)[:, None, :, None]
    ref = tf.reduce_sum(h * pick, axis=2)                             # [b, T, Nsc]
    phi = tf.where(tf.abs(ref) >= eps_angle, tf.math.angle(ref), tf.zeros_like(tf.abs(ref)))
    rot = tf.exp(tf.complex(tf.zeros_like(phi), -phi))[:, :, None, :]
    return h * rot


def stack_and_reshape(h: tf.Tensor) -> tf.Tensor:
    """[batch, T, Nr, Nsc] complex -> [batch, T*Nr, Nsc, 2] real (seed 004, eq. 13-14)."""
    x = to_real_imag(h)
    s = tf.shape(x)
    return tf.reshape(x, [s[0], s[1] * s[2], s[3], 2])


def subsample(h: tf.Tensor, subcarrier_step: int = 1, time_step: int = 1,
              subcarrier_offset: int = 0) -> tf.Tensor:
    """Keeps every ``subcarrier_step``-th subcarrier (e.g. one per resource block:
    288 -> 24 with step 12) and every ``time_step``-th slot of [batch, T, Nr, Nsc] CSI."""
    return h[:, ::time_step, :, subcarrier_offset::subcarrier_step]


# --------------------------------------------------------------------------- #
# Seed 002: fingerprint types and normalisations
# --------------------------------------------------------------------------- #

def _shifted_dft(m: int) -> np.ndarray:
    """``[V_M]_{i,k} = exp(-j 2 pi i (k - M/2) / M) / sqrt(M)`` (seed 002)."""
    i, k = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    return np.exp(-2j * np.pi * i * (k - m / 2) / m) / np.sqrt(m)


def angle_delay_power_profile(h: tf.Tensor, num_rows: int, num_cols: int) -> tf.Tensor:
    """Angle-delay power profile of a UPA (seed 002, eq. 5-6).

    ``G = (V_{My}^H kron V_{Mz}^H) H F^* / sqrt(M N)``, ``X = G * conj(G)``, with the
    unitary DFT ``F_N`` and antenna index ``m = row * num_cols + col``.

    Input: h [batch, M, N] complex64 with ``M = num_rows * num_cols``.
    Output: X [batch, M, N] float32.
    """
    m, n = h.shape[-2], h.shape[-1]
    if m != num_rows * num_cols:
        raise ValueError(f"{m} antennas do not form a {num_rows} x {num_cols} array")
    v = np.kron(_shifted_dft(num_rows).conj().T, _shifted_dft(num_cols).conj().T)
    f = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n) / np.sqrt(n)
    g = tf.einsum("ij,bjn,nk->bik", tf.constant(v, tf.complex64), h,
                  tf.constant(f.conj(), tf.complex64)) / np.sqrt(m * n)
    return tf.math.real(g * tf.math.conj(g))


def real_csi(h: tf.Tensor) -> tf.Tensor:
    """Real-valued CSI (RCSI): [batch, M, N] complex -> [batch, M, N, 2] (real, imag)."""
    return to_real_imag(h)


def sample_covariance(h: tf.Tensor) -> tf.Tensor:
    """Sample covariance over subcarriers, ``R = H H^H / N``: [..., M, N] complex ->
    [..., M, M, 2] real."""
    n = tf.cast(tf.shape(h)[-1], h.dtype)
    return to_real_imag(tf.linalg.matmul(h, h, adjoint_b=True) / n)


NORMALIZATIONS = ("antenna", "subcarrier", "matrix", "none")


def normalize(x: tf.Tensor, mode: str, eps: float = 1e-12) -> tf.Tensor:
    """Scales real fingerprints [batch, M, N(, C)] to unit peak magnitude per antenna
    row ("antenna"), per subcarrier column ("subcarrier"), per sample ("matrix"),
    or leaves them ("none") -- the four schemes compared in seed 002, Sec. V-D2."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
    if mode == "none":
        return x
    extra = list(range(3, len(x.shape)))
    axes = {"antenna": [2] + extra, "subcarrier": [1] + extra, "matrix": [1, 2] + extra}[mode]
    return x / (tf.reduce_max(tf.abs(x), axis=axes, keepdims=True) + eps)
