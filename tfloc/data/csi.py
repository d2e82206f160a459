"""CIR -> CSI synthesis and CSI impairments, in the TF graph.

Complex tensors live here (the simulation side of the Keras boundary); what
leaves this module for Keras is real: :func:`to_real_imag`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def subcarrier_frequencies(num_subcarriers: int, spacing_hz: float) -> tf.Tensor:
    """Baseband subcarrier frequencies [Hz] (Sionna PHY), ``[num_subcarriers]``, float32."""
    from sionna.phy.channel import subcarrier_frequencies as sf
    return tf.cast(sf(num_subcarriers, spacing_hz), tf.float32)


def paths_to_csi(a: tf.Tensor, tau: tf.Tensor, frequencies: tf.Tensor) -> tf.Tensor:
    """Channel frequency response from per-path coefficients (Sionna PHY).

    Input
    -----
    a : [batch, num_paths, num_ue_ant, num_bs_ant], tf.complex64
    tau : [batch, num_paths], tf.float32 -- delays [s]; zero-gain padding paths allowed
    frequencies : [num_subcarriers], tf.float32

    Output
    ------
    h : [batch, num_ue_ant, num_bs_ant, num_subcarriers], tf.complex64
        ``h[..., k] = sum_p a_p exp(-j 2 pi f_k tau_p)``
    """
    from sionna.phy.channel import cir_to_ofdm_channel
    # Sionna's layout: a [b, rx, rx_ant, tx, tx_ant, paths, time]. tau is given
    # per antenna pair with singleton antenna axes, [b, rx, 1, tx, 1, paths]: it
    # broadcasts, where the 4-D form would be tiled over all BS antennas first.
    a_s = tf.transpose(a, [0, 2, 3, 1])[:, None, :, None, :, :, None]
    tau_s = tau[:, None, None, None, None, :]
    h = cir_to_ofdm_channel(frequencies, a_s, tau_s, normalize=False)
    return h[:, 0, :, 0, :, 0, :]


def timing_advance_shift(h: tf.Tensor, frequencies: tf.Tensor, delta_tau: tf.Tensor) -> tf.Tensor:
    """Delays every path of each sample by ``delta_tau`` [s]: a phase ramp over subcarriers.

    Input: h [batch, ..., num_subcarriers] complex64, delta_tau [batch] float32.
    """
    rank = len(h.shape)
    dt = tf.reshape(delta_tau, [-1] + [1] * (rank - 1))
    phase = -2.0 * np.pi * dt * frequencies
    return h * tf.exp(tf.complex(tf.zeros_like(phase), phase))


def add_awgn(h: tf.Tensor, snr_db: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Adds circularly-symmetric complex Gaussian noise at ``snr_db`` per sample.

    SNR is the ratio of the sample's mean CSI power (over all antennas and
    subcarriers) to the noise variance per complex entry.

    Input: h [batch, ...] complex64, snr_db [batch] float32, seed [2] int (stateless).
    """
    rank = len(h.shape)
    axes = list(range(1, rank))
    p_signal = tf.reduce_mean(tf.abs(h) ** 2, axis=axes, keepdims=True)
    n0 = p_signal / tf.reshape(10.0 ** (snr_db / 10.0), [-1] + [1] * (rank - 1))
    std = tf.sqrt(n0 / 2.0)
    noise = tf.random.stateless_normal(tf.concat([tf.shape(h), [2]], 0), seed=seed)
    return h + tf.complex(noise[..., 0] * std, noise[..., 1] * std)


def to_real_imag(h: tf.Tensor) -> tf.Tensor:
    """complex [..., n] -> float32 [..., n, 2] (real, imaginary)."""
    return tf.stack([tf.math.real(h), tf.math.imag(h)], axis=-1)


def from_real_imag(x: tf.Tensor) -> tf.Tensor:
    """float32 [..., n, 2] -> complex64 [..., n]."""
    return tf.complex(x[..., 0], x[..., 1])


def slot_variation(a: tf.Tensor, num_slots: int, max_doppler_hz: float, slot_s: float,
                   seed: tf.Tensor) -> tf.Tensor:
    """Path coefficients over ``num_slots`` slots of a slowly moving UE.

    Path ``p`` gets a Doppler shift ``f_p = max_doppler_hz * cos(alpha_p)`` with
    ``alpha_p ~ U(0, 2 pi)`` (a random direction of motion relative to the path),
    so slot ``t`` sees ``a_p exp(j 2 pi f_p t slot_s)``: a small, physically
    consistent slot-to-slot variation (delays move by far less than a sample).

    Input: a [batch, num_paths, ...] complex64; seed [2] int (stateless).
    Output: [batch, num_slots, num_paths, ...] complex64.
    """
    shape = tf.shape(a)[:2]
    alpha = tf.random.stateless_uniform(shape, seed, 0.0, 2.0 * np.pi)
    f_d = max_doppler_hz * tf.cos(alpha)                                # [b, P]
    t = tf.range(num_slots, dtype=tf.float32) * slot_s                  # [T]
    phase = 2.0 * np.pi * f_d[:, None, :] * t[None, :, None]           # [b, T, P]
    rot = tf.exp(tf.complex(tf.zeros_like(phase), phase))
    extra = len(a.shape) - 2
    rot = tf.reshape(rot, tf.concat([tf.shape(rot), tf.ones([extra], tf.int32)], 0))
    return a[:, None] * rot
