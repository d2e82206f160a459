"""Seed 003 (Dash et al.): autoencoder encoders for self-supervised pre-training, each
with an MLP position head.

``ae_mlp``: encoder of dense layers 256-128-64-32 (ReLU) on the flattened features.
``ae_cnn``: encoder of two conv layers (32 filters, 3x3; 64 filters, 2x2), each with
ReLU and 2x2 max-pooling, flattened. The position head is the paper's MLP (128-64,
ReLU, then the coordinates), with the serving sector's one-hot joining it where the
data has sectors. The encoder is a nested model named ``encoder``; :func:`build_decoder`
mirrors it for the reconstruction pre-training (``method: autoencoder``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import keras
import numpy as np

from tfloc.config import param
from tfloc.models.heads import output_heads, sector_onehot, single_link_inputs
from tfloc.models.registry import MODELS


@dataclass
class MLPEncoderConfig:
    units: List[int] = param(factory=lambda: [256, 128, 64, 32], min=1, doc="encoder layers")
    head_units: List[int] = param(factory=lambda: [128, 64], min=1, doc="position head layers")


@dataclass
class CNNEncoderConfig:
    filters: List[int] = param(factory=lambda: [32, 64], min=1)
    kernels: List[int] = param(factory=lambda: [3, 2], min=1)
    head_units: List[int] = param(factory=lambda: [128, 64], min=1, doc="position head layers")

    def validate(self):
        from tfloc.config import ConfigError
        if len(self.filters) != len(self.kernels):
            raise ConfigError(f"filters and kernels: one kernel per conv layer, got "
                              f"{len(self.filters)} and {len(self.kernels)}")


def _mlp_encoder(cfg, shape):
    L = keras.layers
    x = inp = keras.Input(shape, name="features")
    x = L.Flatten(name="flatten")(x)
    for i, u in enumerate(cfg.units):
        x = L.Dense(u, activation="relu", name=f"enc_dense{i + 1}")(x)
    return keras.Model(inp, x, name="encoder")


def _cnn_encoder(cfg, shape):
    L = keras.layers
    pool = 2 ** len(cfg.filters)
    if shape[0] % pool or shape[1] % pool:
        raise ValueError(f"ae_cnn: feature maps {shape[:2]} must divide by {pool} "
                         f"({len(cfg.filters)} 2x2 poolings, mirrored by the decoder)")
    x = inp = keras.Input(shape, name="features")
    for i, (f, k) in enumerate(zip(cfg.filters, cfg.kernels)):
        x = L.Conv2D(f, k, padding="same", activation="relu", name=f"enc_conv{i + 1}")(x)
        x = L.MaxPooling2D(2, name=f"enc_pool{i + 1}")(x)
    return keras.Model(inp, L.Flatten(name="flatten")(x), name="encoder")


def _positioner(encoder, cfg, spec, num_conditions, position_std, name):
    inputs, feats = single_link_inputs(spec, name)
    z = encoder(feats)
    out = output_heads(z, spec, num_conditions=num_conditions, position_std=position_std,
                       units=tuple(cfg.head_units), side=sector_onehot(inputs, spec.num_sectors))
    return keras.Model(inputs, out, name=name)


@MODELS.register("ae_mlp", config=MLPEncoderConfig)
def build_ae_mlp(cfg: MLPEncoderConfig, spec, *, num_conditions: int = 0, position_std: bool = False,
                 name: str | None = None):
    """MLP encoder + position head. Input/output: as :func:`tfloc.models.resnet.build_resnet`."""
    return _positioner(_mlp_encoder(cfg, spec.feature_shape), cfg, spec, num_conditions,
                       position_std, name or "ae_mlp")


@MODELS.register("ae_cnn", config=CNNEncoderConfig)
def build_ae_cnn(cfg: CNNEncoderConfig, spec, *, num_conditions: int = 0, position_std: bool = False,
                 name: str | None = None):
    """CNN encoder + position head. Input/output: as :func:`tfloc.models.resnet.build_resnet`."""
    return _positioner(_cnn_encoder(cfg, spec.feature_shape), cfg, spec, num_conditions,
                       position_std, name or "ae_cnn")


def build_decoder(encoder, cfg, feature_shape):
    """The mirror of ``encoder`` (a model's nested ``encoder``): latent -> features.

    MLP: dense layers in reverse order (ReLU), then linear to the flattened features.
    CNN: 2x2-stride transposed convolutions in reverse order (the filters of the layer
    before, ReLU), the last to the feature channels, linear (features may be negative).
    """
    L = keras.layers
    z = keras.Input(encoder.output.shape[1:], name="latent")
    if isinstance(cfg, MLPEncoderConfig):
        x = z
        for i, u in enumerate(list(cfg.units[:-1])[::-1]):
            x = L.Dense(u, activation="relu", name=f"dec_dense{i + 1}")(x)
        x = L.Dense(int(np.prod(feature_shape)), name="dec_out")(x)
        return keras.Model(z, L.Reshape(tuple(feature_shape), name="dec_reshape")(x), name="decoder")
    pool = 2 ** len(cfg.filters)
    h, w = feature_shape[0] // pool, feature_shape[1] // pool
    x = L.Reshape((h, w, cfg.filters[-1]), name="dec_reshape")(z)
    outs = list(cfg.filters[:-1])[::-1] + [feature_shape[-1]]
    for i, (f, k) in enumerate(zip(outs, list(cfg.kernels)[::-1])):
        last = i == len(outs) - 1
        x = L.Conv2DTranspose(f, max(k, 2), strides=2, padding="same",
                              activation=None if last else "relu", name=f"dec_deconv{i + 1}")(x)
    return keras.Model(z, x, name="decoder")
