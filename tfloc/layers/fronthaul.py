"""The fronthaul bottleneck of seed 004 (edge-cloud positioning): a Q-bit uniform
midrise quantizer with a straight-through gradient, and bit-exact packing of its
integer codes into the bytes a base station sends.

Eq. 19: with step Delta and Q bits there are 2^Q levels (k + 1/2) Delta,
k = -2^(Q-1) .. 2^(Q-1) - 1; a value y maps to floor(y / Delta) Delta + Delta / 2,
saturating at +-A, A = (2^Q - 1) Delta / 2. Eq. 35: the backward pass lets the
gradient through where |y| <= A and stops it outside.

The integer code of a value is its level index k + 2^(Q-1) in [0, 2^Q - 1];
:func:`pack_codes` writes D codes of Q bits, most significant bit first, into
exactly D Q bits (padded with zero bits to whole bytes only if D Q is not a
multiple of 8; seed 004's D = 768 always is).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import tfloc.data.transforms as T

MAX_BITS = 16


def check_bits(bits) -> int:
    """Q as an int, or ValueError if it is not an integer in 1..16."""
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"quantizer bits Q must be an integer in 1..{MAX_BITS}, got {bits!r}")
    return int(bits)


def check_step(step) -> float:
    """Delta as a float, or ValueError if it is not a finite positive number."""
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"quantizer step Delta must be a finite number > 0, got {step!r}")
    return float(step)


def midrise_codes(y, bits: int, step):
    """Eq. 19's level index of each value: int32 codes in [0, 2^Q - 1] (tf)."""
    half = 2 ** (bits - 1)
    k = tf.floor(tf.convert_to_tensor(y, tf.float32) / step)
    return tf.cast(tf.clip_by_value(k, -half, half - 1), tf.int32) + half


def midrise_values(codes, bits: int, step):
    """The level of each code: (code - 2^(Q-1) + 1/2) Delta (tf float32)."""
    half = 2 ** (bits - 1)
    return (tf.cast(codes, tf.float32) - half + 0.5) * step


def calibrate_step(values, bits: int, num_candidates: int = 64) -> float:
    """The step Delta minimising the mean squared quantisation error of ``values``
    (seed 004: 'calibrated on the training set').

    Candidates put the saturation level A = (2^Q - 1) Delta / 2 between the
    median and the largest magnitude of the values (log-spaced); the error of
    each is measured on the values themselves (NumPy).
    """
    bits = check_bits(bits)
    v = np.abs(np.asarray(values, np.float64).ravel())
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() <= 0:
        raise ValueError("calibrate_step: the values are empty or all zero")
    lo = max(np.median(v), v.max() * 1e-3)
    best, best_err = None, np.inf
    signed = np.asarray(values, np.float64).ravel()
    signed = signed[np.isfinite(signed)]
    half = 2 ** (bits - 1)
    for a in np.geomspace(lo, v.max(), num_candidates):
        step = 2 * a / (2 ** bits - 1)
        q = (np.clip(np.floor(signed / step), -half, half - 1) + 0.5) * step
        err = np.mean((q - signed) ** 2)
        if err < best_err:
            best, best_err = step, err
    return float(best)


@keras.saving.register_keras_serializable(package="tfloc")
class UniformMidriseQuantizer(keras.layers.Layer):
    """Q-bit uniform midrise quantizer (seed 004 eq. 19) with the straight-through
    gradient of eq. 35.

    Parameters
    ----------
    bits : Q, 1..16
    step : Delta > 0; None until :meth:`calibrate` sets it from training latents
    bypass : if True the layer is the identity (seed 004's Stage I keeps the
        bottleneck continuous); a model switches it with :meth:`set_bypass`

    Input: latents [..., D] float32. Output: their quantised levels, the same
    shape (float32). ``encode`` gives the integer codes, ``decode`` the levels of
    codes. Delta is a non-trainable weight, so it is saved with the model.
    """

    def __init__(self, bits: int, step: float | None = None, bypass: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.bits = check_bits(bits)
        self.initial_step = None if step is None else check_step(step)
        self.bypass = bool(bypass)

    def build(self, input_shape=None):
        self.step = self.add_weight(name="step", shape=(), trainable=False,
                                    initializer=keras.initializers.Constant(self.initial_step or 0.0))
        self.built = True

    @property
    def saturation(self) -> float:
        """A = (2^Q - 1) Delta / 2: the largest level (the STE's pass-band)."""
        return (2 ** self.bits - 1) * float(self.step.numpy()) / 2

    def _ensure_built(self):
        if not self.built:
            self.build(None)

    def calibrate(self, values) -> float:
        """Sets Delta to :func:`calibrate_step` of ``values`` (e.g. training latents); returns it."""
        self._ensure_built()
        step = calibrate_step(values, self.bits)
        self.step.assign(step)
        self.initial_step = step
        return step

    def set_bypass(self, bypass: bool):
        self.bypass = bool(bypass)

    def _checked_step(self):
        self._ensure_built()
        return tf.debugging.assert_positive(self.step, message="UniformMidriseQuantizer: Delta is "
                                            "not set (calibrate it on training latents first)")

    def encode(self, y):
        """Integer codes [..., D] int32 in [0, 2^Q - 1]."""
        with tf.control_dependencies([self._checked_step()]):
            return midrise_codes(y, self.bits, tf.identity(self.step))

    def decode(self, codes):
        """Levels [..., D] float32 of integer codes."""
        self._ensure_built()
        return midrise_values(codes, self.bits, self.step)

    def call(self, y):
        if self.bypass:
            return y
        y = tf.convert_to_tensor(y, tf.float32)
        levels = self.decode(self.encode(y))
        a = (2 ** self.bits - 1) * self.step / 2
        inside = tf.cast(tf.abs(y) <= a, y.dtype)
        # straight-through (eq. 35): forward the levels, backward d/dy = 1 inside [-A, A], 0 outside
        return inside * y + tf.stop_gradient(levels - inside * y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        step = self.initial_step
        if self.built and float(self.step.numpy()) > 0:
            step = float(self.step.numpy())
        return {**super().get_config(), "bits": self.bits, "step": step, "bypass": self.bypass}


def packed_bytes(num_codes: int, bits: int) -> int:
    """Bytes of ``num_codes`` codes of Q bits: ceil(D Q / 8)."""
    return -(-num_codes * check_bits(bits) // 8)


def pack_codes(codes, bits: int):
    """Integer codes [..., D] (each < 2^Q) -> bytes [..., ceil(D Q / 8)] uint8 (tf).

    Code i occupies bits i Q .. (i + 1) Q - 1 of the stream, most significant
    bit first; a stream of D Q bits not a multiple of 8 ends in zero bits.
    """
    bits = check_bits(bits)
    codes = tf.cast(codes, tf.int32)
    lead = tf.shape(codes)[:-1]
    d = codes.shape[-1]
    shifts = tf.range(bits - 1, -1, -1, dtype=tf.int32)                        # MSB first
    stream = tf.bitwise.bitwise_and(tf.bitwise.right_shift(codes[..., None], shifts), 1)
    stream = tf.reshape(stream, tf.concat([lead, [d * bits]], 0))
    pad = packed_bytes(d, bits) * 8 - d * bits
    if pad:
        stream = tf.concat([stream, tf.zeros(tf.concat([lead, [pad]], 0), tf.int32)], -1)
    stream = tf.reshape(stream, tf.concat([lead, [-1, 8]], 0))
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(stream * weights, -1), tf.uint8)


def unpack_codes(payload, bits: int, num_codes: int):
    """Bytes [..., ceil(D Q / 8)] uint8 -> the D integer codes [..., D] int32 (tf)."""
    bits = check_bits(bits)
    payload = tf.cast(payload, tf.int32)
    lead = tf.shape(payload)[:-1]
    shifts = tf.range(7, -1, -1, dtype=tf.int32)
    stream = tf.bitwise.bitwise_and(tf.bitwise.right_shift(payload[..., None], shifts), 1)
    stream = tf.reshape(stream, tf.concat([lead, [-1]], 0))[..., :num_codes * bits]
    stream = tf.reshape(stream, tf.concat([lead, [num_codes, bits]], 0))
    weights = tf.bitwise.left_shift(1, tf.range(bits - 1, -1, -1, dtype=tf.int32))
    return tf.reduce_sum(stream * weights, -1)


def pack_gain(gain):
    """Gain side information (B_g = 32 bits): float32 [...] -> 4 bytes [..., 4] uint8, big-endian."""
    raw = tf.bitcast(tf.cast(gain, tf.float32), tf.uint8)                      # native order
    return raw if _big_endian() else tf.reverse(raw, [-1])


def unpack_gain(payload):
    """4 bytes [..., 4] uint8 (big-endian) -> float32 [...]."""
    raw = tf.cast(payload, tf.uint8)
    return tf.bitcast(raw if _big_endian() else tf.reverse(raw, [-1]), tf.float32)


def _big_endian() -> bool:
    import sys
    return sys.byteorder == "big"


@keras.saving.register_keras_serializable(package="tfloc")
class EdgePreprocessing(keras.layers.Layer):
    """A BS's preprocessing of its estimated CSI (seed 004 eq. 7-15), so the edge
    model takes estimated CSI: gain g = ||H||_F (eq. 7), H / (g + eps) (eq. 8),
    phase stabilisation against the strongest antenna (eq. 9-11), real/imag
    stacking and the (T Nr, Nsc, 2) reshape (eq. 13-15).

    Input: CSI [b, T, Nr, Nsc, 2] float32 (real, imag).
    Output: ``(x [b, T Nr, Nsc, 2] float32, gain [b] float32)``.
    """

    def __init__(self, eps: float = 1e-12, eps_angle: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps, self.eps_angle = float(eps), float(eps_angle)

    def call(self, csi):
        csi = tf.convert_to_tensor(csi, tf.float32)
        h = tf.complex(csi[..., 0], csi[..., 1])            # complex only inside the layer
        hb, gain = T.gain_normalize(h, eps=self.eps)
        return T.stack_and_reshape(T.phase_stabilize(hb, self.eps_angle)), gain

    def compute_output_shape(self, input_shape):
        b, t, nr, nsc, _ = input_shape
        return (b, None if t is None or nr is None else t * nr, nsc, 2), (b,)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "eps_angle": self.eps_angle}


def fronthaul_bits(num_codes: int, bits: int, csi_shape, gain_bits: int = 32) -> dict:
    """Seed 004 eq. 37-39: payload bits per BS and snapshot, and the ratio to lossless CSI
    (complex64: 64 bits per entry of the T x Nr x Nsc CSI)."""
    t, nr, nsc = csi_shape[:3]
    lossless = 64 * t * nr * nsc
    emb = num_codes * bits
    return {"embedding_bits": emb, "gain_bits": gain_bits, "lossless_bits": lossless,
            "eta": emb / lossless, "eta_total": (emb + gain_bits) / lossless,
            "payload_bytes": packed_bytes(num_codes, bits) + gain_bits // 8}
