"""Seed 001's two-part network (Foliadis et al., Fig. 7-8): f = g_env(phi(H)).

phi, the environment-independent part, is two pooling blocks and the first
dense layer; g, the environment's head, is the remaining dense layers and the
output. The paper's parameter counts fix the split: g has 33,282 parameters,
which is exactly two dense layers of 128 (2 x 16,512) and the 2-unit output
(258), so of the "3 dense layers of 128" the first belongs to phi.

A pooling block (Fig. 8, after Zhang et al. [30]) is our reading of the figure:
two 3x3 conv-BN layers with a 1x1 projected shortcut, ReLU, and a 2x2 max-pool
that halves both axes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import keras

from tfloc.config import param
from tfloc.layers import AffineOutput, GaussianOutput, num_gaussian_params
from tfloc.models.heads import OUTPUT_DTYPE, float32_output, model_inputs, single_link_inputs
from tfloc.models.registry import MODELS


@dataclass
class PoolingCNNConfig:
    filters: List[int] = param(factory=lambda: [16, 32], min=1,
                               doc="filters of each pooling block (seed 001: two blocks; with "
                               "an 8 x 64 input phi then has 148,000 parameters, the paper's 152,640)")
    dense_units: int = param(128, min=1, doc="width of the 3 dense layers")
    phi_dense_layers: int = param(1, min=0, doc="dense layers in phi (the rest are the head g)")
    head_dense_layers: int = param(2, min=0, doc="dense layers in g before the output")
    covariance: str = param("diag", choices=["diag", "full"],
                            doc="with a sigma head: diagonal (mean, log-sigma: 2D -> 4 outputs) or "
                            "a full covariance by its Cholesky factor (2D -> 5 outputs)")


def pooling_block(x, filters: int, name: str):
    """conv3x3-BN-ReLU, conv3x3-BN, + 1x1 shortcut, ReLU, 2x2 max-pool."""
    L = keras.layers
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(name=f"{name}_bn1")(y))
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = L.BatchNormalization(name=f"{name}_bn2")(y)
    s = L.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_shortcut")(x)
    y = L.ReLU(name=f"{name}_relu2")(L.Add(name=f"{name}_add")([y, s]))
    return L.MaxPooling2D(2, padding="same", name=f"{name}_pool")(y)


def build_phi(cfg: PoolingCNNConfig, spec, name: str = "phi") -> keras.Model:
    """phi: features [b, H, W, C] -> z [b, dense_units] (environment independent)."""
    L = keras.layers
    inputs, x = single_link_inputs(spec, "pooling_cnn")
    for i, f in enumerate(cfg.filters):
        x = pooling_block(x, f, f"block{i + 1}")
    z = L.Flatten(name="flatten")(x)
    for i in range(cfg.phi_dense_layers):
        z = L.Dense(cfg.dense_units, activation="relu", name=f"phi_dense{i + 1}")(z)
    return keras.Model(inputs["features"], z, name=name)


def build_head(cfg: PoolingCNNConfig, spec, z_dim: int, *, position_std: bool = False,
               num_conditions: int = 0, name: str = "head") -> keras.Model:
    """g: z [b, z_dim] -> {"position" [b, D] m(, "position_std" [b, D] m, "position_scale_tril")}.

    The output layer has D units (MSE) or the Gaussian's parameters (NLL: 2D for a
    diagonal covariance, D + D(D+1)/2 for a full one); ``spec``'s label
    statistics map the standardised outputs to metres.
    """
    L = keras.layers
    if not spec.target_mean:
        raise ValueError("the spec has no target statistics: call spec.with_targets(train positions)")
    z = keras.Input(shape=(z_dim,), name="z")
    h = z
    for i in range(cfg.head_dense_layers):
        h = L.Dense(cfg.dense_units, activation="relu", name=f"g_dense{i + 1}")(h)
    D = spec.position_dims
    if not position_std:
        raw = L.Dense(D, name="g_out", dtype=OUTPUT_DTYPE)(h)
        out = {"position": AffineOutput(spec.target_mean, spec.target_std, name="position",
                                        dtype=OUTPUT_DTYPE)(raw)}
    else:
        raw = L.Dense(num_gaussian_params(D, cfg.covariance), name="g_out", dtype=OUTPUT_DTYPE)(h)
        parts = GaussianOutput(spec.target_mean, spec.target_std, cfg.covariance, name="gaussian",
                               dtype=OUTPUT_DTYPE)(raw)
        out = {"position": parts[0], "position_std": parts[1]}
        if cfg.covariance == "full":
            out["position_scale_tril"] = parts[2]
    if num_conditions:   # not in seed 001; lets the model serve methods with a condition task
        logits = L.Dense(num_conditions, name="condition_logits", dtype=OUTPUT_DTYPE)(h)
        out["condition_logits"] = logits
        out["condition_probs"] = L.Softmax(name="condition_probs", dtype=OUTPUT_DTYPE)(logits)
    return keras.Model(z, out, name=name)


def compose(phi: keras.Model, head: keras.Model, spec, name: str = "pooling_cnn") -> keras.Model:
    """The inference model g(phi(features)) with the house's dict outputs (``embedding`` = z)."""
    inputs = model_inputs(spec)
    z = phi(inputs["features"])
    return keras.Model(inputs, {"embedding": float32_output(z, "embedding_out"), **head(z)}, name=name)


@MODELS.register("pooling_cnn", config=PoolingCNNConfig)
def build_pooling_cnn(cfg: PoolingCNNConfig, spec, *, num_conditions: int = 0,
                      position_std: bool = False, name: str | None = None):
    """phi (pooling blocks, first dense layer) then g (dense layers, output) as one model.

    Input: {"features": [batch, H, W, C]}. Output: ``position`` [b, D] m,
    ``embedding`` [b, dense_units] (z = phi(H)), with ``position_std`` also
    ``position_std`` [b, D] m (and ``position_scale_tril`` for a full covariance), with
    ``num_conditions`` also ``condition_logits`` / ``condition_probs`` from g.
    """
    phi = build_phi(cfg, spec)
    head = build_head(cfg, spec, int(phi.output.shape[-1]), position_std=position_std,
                      num_conditions=num_conditions)
    return compose(phi, head, spec, name=name or "pooling_cnn")
