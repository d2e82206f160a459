"""Cloud-side fusion of several base stations' latents (seed 004 section III-B).

- :class:`ChannelMaskedAttention` (eq. 23-28): one attention over the L BS
  tokens and a learnable fusion token, the values gated by the softmax of the
  BS gains, so a weak (likely blocked) link contributes little.
- :class:`FrequencyEvidenceAccumulation` (eq. 32-33): an LSTM over the fused
  per-subcarrier tokens, with a position estimate after every subcarrier.
- :func:`accumulation_weights` (eq. 34): the weights 2 i / (N (N + 1)) of
  those estimates in the training loss.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfloc")
class ChannelMaskedAttention(keras.layers.Layer):
    """Gain-gated attention over BS tokens with a fusion token (seed 004 eq. 23-28).

    With the tokens of BS l flattened to b_l in R^(N d), a learnable fusion token
    b_0 is prepended, B = [b_0; b_1; ...; b_L] (eq. 24), and

        m = softmax(beta g)                        (eq. 23, g: the BS gains)
        M = diag([1, m_1, ..., m_L])               (eq. 26)
        O = softmax(B W_Q (B W_K)^T / sqrt(N d)) M B W_V    (eq. 25, 27)

    The fused representation is the fusion token's output row, reshaped to N
    tokens of d (eq. 28; the paper's text says row L + 1 with the fusion token
    prepended, its Fig. 4 the fusion token's own output: we take the latter,
    the only row that is the same function of every BS).

    Parameters
    ----------
    beta : temperature of the gain softmax (> 0); the gains should be on a scale
        where differences of about 1 / beta matter (e.g. normalised to the
        strongest BS)
    use_gain_mask : False replaces M by the identity (the same layer without
        gating, for ablations)

    Input: ``[tokens [b, L, N, d], gains [b, L]]`` float32.
    Output: fused tokens [b, N, d].
    """

    def __init__(self, beta: float = 5.0, use_gain_mask: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not beta > 0:
            raise ValueError(f"ChannelMaskedAttention: beta must be > 0, got {beta!r}")
        self.beta = float(beta)
        self.use_gain_mask = bool(use_gain_mask)

    def build(self, input_shape):
        tokens_shape = input_shape[0]
        if len(tokens_shape) != 4:
            raise ValueError(f"ChannelMaskedAttention: tokens must be [b, L, N, d], got {tokens_shape}")
        self.num_tokens, self.token_dim = int(tokens_shape[2]), int(tokens_shape[3])
        width = self.num_tokens * self.token_dim
        init = keras.initializers.GlorotUniform()
        self.fusion_token = self.add_weight(name="fusion_token", shape=(width,),
                                            initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.w_q = self.add_weight(name="w_q", shape=(width, width), initializer=init)
        self.w_k = self.add_weight(name="w_k", shape=(width, width), initializer=init)
        self.w_v = self.add_weight(name="w_v", shape=(width, width), initializer=init)
        self.built = True

    def gate(self, gains):
        """[1, m_1, ..., m_L] per sample [b, L + 1] (eq. 26's diagonal)."""
        gains = tf.convert_to_tensor(gains, tf.float32)
        m = tf.nn.softmax(self.beta * gains, axis=-1) if self.use_gain_mask else tf.ones_like(gains)
        return tf.concat([tf.ones_like(m[:, :1]), m], axis=-1)

    def call(self, inputs):
        tokens, gains = inputs
        tokens = tf.convert_to_tensor(tokens, tf.float32)
        b = tf.shape(tokens)[0]
        width = self.num_tokens * self.token_dim
        flat = tf.reshape(tokens, [b, -1, width])                                   # [b, L, N d]
        fusion = tf.tile(self.fusion_token[None, None, :], [b, 1, 1])
        stack = tf.concat([fusion, flat], axis=1)                                   # [b, L + 1, N d]
        q, k, v = (tf.einsum("blw,wu->blu", stack, w) for w in (self.w_q, self.w_k, self.w_v))
        v = v * self.gate(gains)[:, :, None]                                        # M B W_V
        scores = tf.einsum("bqw,bkw->bqk", q, k) / tf.sqrt(tf.cast(width, tf.float32))
        fused = tf.einsum("bk,bkw->bw", tf.nn.softmax(scores, axis=-1)[:, 0], v)   # fusion row
        return tf.reshape(fused, [b, self.num_tokens, self.token_dim])

    def compute_output_shape(self, input_shape):
        t = input_shape[0]
        return (t[0], t[2], t[3])

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "use_gain_mask": self.use_gain_mask}


def accumulation_weights(num_steps: int) -> np.ndarray:
    """w_i = 2 i / (N (N + 1)), i = 1..N (seed 004 eq. 34): positive, summing to 1,
    later estimates weighted more."""
    i = np.arange(1, num_steps + 1, dtype=np.float64)
    return (2 * i / (num_steps * (num_steps + 1))).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfloc")
class FrequencyEvidenceAccumulation(keras.layers.Layer):
    """An LSTM over per-subcarrier tokens with a position after every step (seed 004
    eq. 32-33): (s_n, c_n) = LSTM(v_n, s_{n-1}, c_{n-1}), p_n = f_reg(s_n).

    Parameters
    ----------
    units : LSTM state size
    dims : position dimensions (3)
    head_units : hidden widths of f_reg (ReLU) before its linear output

    Input: tokens [b, N, d]. Output: per-step estimates [b, N, dims] (in the
    units the model's output layer maps to metres); the final estimate is the
    last step's.
    """

    def __init__(self, units: int = 128, dims: int = 3, head_units=(64,), **kwargs):
        super().__init__(**kwargs)
        self.units, self.dims = int(units), int(dims)
        self.head_units = [int(u) for u in head_units]
        self.lstm = keras.layers.LSTM(self.units, return_sequences=True, name="lstm")
        self.head = [keras.layers.Dense(u, activation="relu", name=f"reg{i + 1}")
                     for i, u in enumerate(self.head_units)]
        self.out = keras.layers.Dense(self.dims, name="reg_out")

    def build(self, input_shape):
        self.lstm.build(input_shape)
        shape = (input_shape[0], input_shape[1], self.units)
        for layer in self.head:
            layer.build(shape)
            shape = (shape[0], shape[1], layer.units)
        self.out.build(shape)
        self.built = True

    def call(self, tokens, training=None):
        h = self.lstm(tokens, training=training)
        for layer in self.head:
            h = layer(h)
        return self.out(h)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.dims)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dims": self.dims,
                "head_units": list(self.head_units)}


@keras.saving.register_keras_serializable(package="tfloc")
class RelativeGainDb(keras.layers.Layer):
    """BS gains (linear amplitudes, eq. 7) -> their level relative to the strongest BS
    of the sample, in units of ``scale_db`` (0 for the strongest, -1 for
    ``scale_db`` weaker): the scale on which eq. 23's softmax(beta g) gates links.
    Raw gains span many decades of path loss; a common factor (transmit power,
    noise level) cancels.

    Input: gains [b, L] float32 (> 0). Output: [b, L] float32 (<= 0).
    """

    def __init__(self, scale_db: float = 10.0, floor_db: float = -200.0, **kwargs):
        super().__init__(**kwargs)
        self.scale_db, self.floor_db = float(scale_db), float(floor_db)

    def call(self, gains):
        db = 20.0 * tf.math.log(tf.maximum(tf.convert_to_tensor(gains, tf.float32), 1e-30)) / np.log(10.0)
        db = tf.maximum(db, self.floor_db)
        return (db - tf.reduce_max(db, axis=-1, keepdims=True)) / self.scale_db

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale_db": self.scale_db, "floor_db": self.floor_db}


@keras.saving.register_keras_serializable(package="tfloc")
class LinkSelect(keras.layers.Layer):
    """The ``index``-th link of multi-BS inputs: [b, L, ...] -> [b, ...] (one BS's share)."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="tfloc")
class EnsembleCombine(keras.layers.Layer):
    """Seed 000 section III-B: combines M members' positions by weighted averaging and by
    consensus voting.

    Weighted: ``sum_m w_m p_m`` (weights normalised). Consensus: each member votes for
    every member within ``radius_m`` of it (itself included), votes weighted by w; the
    members agreeing with the most-voted one are averaged with their weights. Where
    no two members agree within the radius, the consensus is the weighted average.

    Input: [batch, M, dims] positions. Output: (weighted [batch, dims], consensus
    [batch, dims], group size [batch] (members in the consensus, 1: no agreement)).
    """

    def __init__(self, weights, radius_m: float, **kwargs):
        super().__init__(**kwargs)
        w = np.asarray(weights, np.float64)
        if w.ndim != 1 or len(w) < 2 or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"EnsembleCombine: need >= 2 non-negative weights, got {list(weights)}")
        self.member_weights = [float(v) for v in w / w.sum()]
        self.radius_m = float(radius_m)

    def call(self, p):
        w = tf.constant(self.member_weights, p.dtype)                                # [M]
        weighted = tf.einsum("bmd,m->bd", p, w)
        dist = tf.norm(p[:, :, None, :] - p[:, None, :, :], axis=-1)                 # [b, M, M]
        agree = tf.cast(dist < self.radius_m, p.dtype)
        best = tf.argmax(tf.einsum("bij,j->bi", agree, w), axis=1, output_type=tf.int32)
        group = tf.gather(agree, best, batch_dims=1) * w                           # [b, M]
        consensus = tf.einsum("bm,bmd->bd", group, p) / tf.reduce_sum(group, axis=1, keepdims=True)
        size = tf.reduce_sum(tf.gather(agree, best, batch_dims=1), axis=1)
        consensus = tf.where(size[:, None] > 1.5, consensus, weighted)
        return weighted, consensus, size

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2]), (input_shape[0], input_shape[2]), (input_shape[0],)

    def get_config(self):
        return {**super().get_config(), "weights": self.member_weights, "radius_m": self.radius_m}
