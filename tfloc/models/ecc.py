"""Seed 004's edge-cloud cooperative (ECC) network: per-BS Res-SegNet encoders and
Q-bit quantizers at the edge, channel-masked attention and frequency evidence
accumulation at the cloud.

Edge (per BS l):  CSI [b, T, Nr, Nsc, 2] -> EdgePreprocessing (eq. 7-15)
                  -> X [b, T Nr, Nsc, 2], g [b]
                  -> encoder E_l (Res-SegNet, Fig. 3) -> Z [b, Nsc, d_z] (eq. 16)
                  -> UniformMidriseQuantizer (eq. 19) -> Z^ (sent as D Q bits + g)
Cloud:            Z^ [b, L, Nsc, d_z], g [b, L] -> token projection [b, L, Nsc, d]
                  -> ChannelMaskedAttention (eq. 23-28) -> [b, Nsc, d]
                  -> FrequencyEvidenceAccumulation (eq. 32-33) -> [b, Nsc, 3] -> metres

Our reading of Fig. 3: the encoder's residual stages halve the time-antenna
axis (T Nr) and keep the subcarrier axis, so the latent stays frequency
aligned (one d_z token per subcarrier); a last convolution spans what is left
of the time-antenna axis. The decoder mirrors it (Stage I, eq. 22).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import keras

from tfloc.config import param
from tfloc.layers import (AffineOutput, ChannelMaskedAttention, FrequencyEvidenceAccumulation,
                          UniformMidriseQuantizer)
from tfloc.layers.fronthaul import EdgePreprocessing
from tfloc.layers.fusion import RelativeGainDb
from tfloc.models.registry import MODELS
from tfloc.utils import dtype_policy


@dataclass
class ECCConfig:
    encoder_filters: List[int] = param(factory=lambda: [16, 32, 64], min=1,
                                       doc="filters of the encoder's residual stages, each halving "
                                       "the time-antenna axis (the decoder mirrors them)")
    latent_dim: int = param(32, min=1, doc="d_z: latent values per subcarrier (seed 004: 32, D = 768)")
    token_dim: int = param(32, min=1, doc="d: the cloud's token projection per subcarrier")
    fusion: str = param("cma", choices=["cma", "transformer"],
                        doc="cma (eq. 23-28) or the Transformer ablation (multi-head "
                        "self-attention over BS tokens, no gain mask)")
    beta: float = param(1.0, min=1e-6, doc="CMA temperature on gains relative to the strongest BS "
                        "in units of gain_scale_db")
    gain_scale_db: float = param(10.0, min=1e-3, doc="dB per unit of the CMA's relative gain")
    num_heads: int = param(4, min=1, doc="heads of the Transformer ablation")
    lstm_units: int = param(128, min=1)
    head_units: List[int] = param(factory=lambda: [64], min=1, doc="f_reg's hidden widths")
    bits: int = param(10, min=1, max=16, doc="Q: bits per latent value")
    bn_momentum: float = param(0.9, min=0.0, max=1.0, doc="batch-norm moving-average momentum "
                               "(Keras' 0.99 lags far behind at a few hundred steps)")


def residual_block(x, filters: int, name: str, bn_momentum: float = 0.9):
    """conv3x3-BN-ReLU, conv3x3-BN, + (projected) shortcut, ReLU."""
    L = keras.layers
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(y))
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    s = x if x.shape[-1] == filters else L.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([y, s]))


def _reduced_rows(rows: int, stages: int) -> int:
    for _ in range(stages):
        rows = -(-rows // 2)
    return rows


def build_encoder(cfg: ECCConfig, input_shape, name: str = "encoder") -> keras.Model:
    """E: X [b, T Nr, Nsc, 2] -> Z [b, Nsc, d_z] (frequency-aligned latent, eq. 16)."""
    L = keras.layers
    rows, nsc, ch = input_shape
    x_in = keras.Input((rows, nsc, ch), name="x")
    x = x_in
    for i, f in enumerate(cfg.encoder_filters):
        x = residual_block(x, f, f"{name}_stage{i + 1}", cfg.bn_momentum)
        x = L.MaxPooling2D((2, 1), padding="same", name=f"{name}_down{i + 1}")(x)
    left = _reduced_rows(rows, len(cfg.encoder_filters))
    # the latent is float32 under any policy: the quantizer resolves it to Q bits (up to 16),
    # finer than bfloat16's 8
    z = L.Conv2D(cfg.latent_dim, (left, 1), padding="valid", name=f"{name}_latent",
                 dtype="float32")(x)                                                    # [b, 1, Nsc, d_z]
    z = L.Reshape((nsc, cfg.latent_dim), name=f"{name}_tokens", dtype="float32")(z)
    return keras.Model(x_in, z, name=name)


def build_decoder(cfg: ECCConfig, output_shape, name: str = "decoder") -> keras.Model:
    """D: Z [b, Nsc, d_z] -> reconstructed X [b, T Nr, Nsc, 2] (Stage I only)."""
    L = keras.layers
    rows, nsc, ch = output_shape
    z_in = keras.Input((nsc, cfg.latent_dim), name="z")
    filters = list(reversed(cfg.encoder_filters))
    left = _reduced_rows(rows, len(filters))
    x = L.Reshape((1, nsc, cfg.latent_dim), name=f"{name}_grid")(z_in)
    x = L.Conv2DTranspose(filters[0], (left, 1), padding="valid", name=f"{name}_expand")(x)
    for i, f in enumerate(filters):
        x = L.UpSampling2D((2, 1), name=f"{name}_up{i + 1}")(x)
        x = residual_block(x, f, f"{name}_stage{i + 1}", cfg.bn_momentum)
    if x.shape[1] != rows:
        x = L.Cropping2D(((0, x.shape[1] - rows), (0, 0)), name=f"{name}_crop")(x)
    x = L.Conv2D(ch, 1, name=f"{name}_out")(x)
    return keras.Model(z_in, x, name=name)


def build_edge(cfg: ECCConfig, csi_shape, name: str = "edge", step: float | None = None) -> keras.Model:
    """One BS: estimated CSI [b, T, Nr, Nsc, 2] -> {"latent" (quantised, [b, Nsc, d_z]),
    "latent_continuous", "gain" [b], "x" (the preprocessed CSI)}.

    The quantizer starts bypassed (Stage I); calibrate its step and switch the
    bypass off for joint training.
    """
    t, nr, nsc, _ = csi_shape
    csi = keras.Input((t, nr, nsc, 2), name="csi")
    # preprocessing (complex math, the gain) and the quantizer stay float32 under a mixed
    # policy; only the encoder's convolutions compute in the policy's dtype
    x, gain = EdgePreprocessing(name=f"{name}_preprocess", dtype="float32")(csi)
    z = build_encoder(cfg, (t * nr, nsc, 2), name=f"{name}_encoder")(x)
    zq = UniformMidriseQuantizer(cfg.bits, step, bypass=True, name=f"{name}_quantizer", dtype="float32")(z)
    return keras.Model(csi, {"latent": zq, "latent_continuous": z, "gain": gain, "x": x}, name=name)


def build_cloud(cfg: ECCConfig, spec, num_bs: int, num_subcarriers: int, latent_dim: int,
                name: str = "cloud") -> keras.Model:
    """The CU: {"latents" [b, L, Nsc, d_z], "gains" [b, L]} -> {"position" [b, 3] m (the
    last step's), "position_sequence" [b, Nsc, 3] m (after each subcarrier)}.
    ``latent_dim`` is d_z."""
    L = keras.layers
    if not spec.target_mean:
        raise ValueError("the spec has no target statistics: call spec.with_targets(train positions)")
    latents = keras.Input((num_bs, num_subcarriers, latent_dim), name="latents")
    gains = keras.Input((num_bs,), name="gains")
    tokens = L.Dense(cfg.token_dim, name="token_projection")(latents)           # [b, L, Nsc, d]
    if cfg.fusion == "cma":
        rel = RelativeGainDb(cfg.gain_scale_db, name="relative_gain")(gains)
        fused = ChannelMaskedAttention(cfg.beta, name="cma")([tokens, rel])
    else:   # ablation: self-attention across the BS tokens, no gains, mean over BSs
        width = num_subcarriers * cfg.token_dim
        flat = L.Reshape((num_bs, width), name="bs_tokens")(tokens)
        att = L.MultiHeadAttention(cfg.num_heads, max(1, width // cfg.num_heads),
                                   name="transformer")(flat, flat)
        fused = L.Reshape((num_subcarriers, cfg.token_dim), name="fused_tokens")(
            L.GlobalAveragePooling1D(name="bs_mean")(L.LayerNormalization(name="ln")(
                L.Add(name="residual")([flat, att]))))
    seq = FrequencyEvidenceAccumulation(cfg.lstm_units, spec.position_dims, cfg.head_units,
                                        name="accumulation")(fused)
    seq_m = AffineOutput(spec.target_mean, spec.target_std, name="position_sequence")(seq)
    last = L.Reshape((spec.position_dims,), name="position")(
        L.Cropping1D((num_subcarriers - 1, 0), name="last_step")(seq_m))
    return keras.Model({"latents": latents, "gains": gains},
                       {"position": last, "position_sequence": seq_m}, name=name)


def compose_ecc(edges: list, cloud: keras.Model, spec, name: str = "ecc") -> keras.Model:
    """The end-to-end model: {"features": CSI [b, L, T, Nr, Nsc, 2], "bs_positions"} ->
    {"position", "position_sequence", "embedding" (the cloud's input latents, flattened)}.
    BS l's CSI goes through edge l (the order of the training data's BSs)."""
    from tfloc.layers.fusion import LinkSelect
    from tfloc.models.heads import float32_output, model_inputs
    L = keras.layers
    inputs = model_inputs(spec)
    outs = [e(LinkSelect(l, name=f"link{l}")(inputs["features"])) for l, e in enumerate(edges)]
    lat_shape = tuple(outs[0]["latent"].shape[1:])
    latents = L.Concatenate(axis=1, name="latents")(
        [L.Reshape((1, *lat_shape), name=f"latent{l}")(o["latent"]) for l, o in enumerate(outs)])
    gains = L.Concatenate(axis=1, name="gains")(
        [L.Reshape((1,), name=f"gain{l}")(o["gain"]) for l, o in enumerate(outs)])
    res = cloud({"latents": latents, "gains": gains})
    emb = float32_output(L.Flatten(name="embedding")(latents), "embedding_out")
    return keras.Model(inputs, {"embedding": emb, "position": res["position"],
                                "position_sequence": res["position_sequence"]}, name=name)


@MODELS.register("ecc", config=ECCConfig)
def build_ecc(cfg: ECCConfig, spec, *, num_conditions: int = 0, position_std: bool = False,
              name: str | None = None):
    """Seed 004's ECC network on multi-BS CSI (``data.representation: csi``): one edge per
    BS (preprocessing, Res-SegNet encoder, quantizer) and the cloud. The edges and the
    cloud are the returned model's ``edges`` and ``cloud`` attributes. The quantizers start
    bypassed; a strategy without fronthaul compression (lossless CSI) leaves them so."""
    if spec.links < 2 or spec.representation != "csi":
        raise ValueError("model 'ecc' takes several BSs' CSI per sample (a multi-BS site with "
                         f"data.representation: csi); got {spec.links} link(s) of "
                         f"'{spec.representation}'")
    if num_conditions or position_std:
        raise ValueError("model 'ecc' has no condition or sigma head")
    t, nr, nsc, _ = spec.feature_shape
    edges = [build_edge(cfg, (t, nr, nsc, 2), name=f"edge{l}") for l in range(spec.links)]
    # the cloud reads Q-bit latents, and the composition routes CSI and latents: float32 under
    # any policy (a mixed one speeds up the edge encoders only)
    with dtype_policy("float32"):
        cloud = build_cloud(cfg, spec, spec.links, nsc, cfg.latent_dim)
        model = compose_ecc(edges, cloud, spec, name=name or "ecc")
    model.edges, model.cloud = edges, cloud
    return model


#: what the contract tests feed it
build_ecc.example_spec = {"links": 3, "representation": "csi", "feature_shape": (2, 8, 6, 2),
                          "dims": 3}
