"""Seed 002's network (Chu et al., section V-A): a 4-layer CNN feature net and two MLP heads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import keras

from tfloc.config import param
from tfloc.models.heads import output_heads, sector_onehot, single_link_inputs
from tfloc.models.registry import MODELS


@dataclass
class SemanticCNNConfig:
    filters: List[int] = param(factory=lambda: [16, 32, 64, 64], min=1,
                               doc="filters of the four conv-BN-maxpool-ReLU layers (Theta_1)")
    kernel_size: int = param(3, min=1)
    head_units: List[int] = param(factory=lambda: [256, 128], min=1,
                                  doc="Dense-BN-ReLU layers of each head (Theta_2, Theta_3)")
    bn_momentum: float = param(0.9, min=0.0, max=0.999)


@MODELS.register("semantic_cnn", config=SemanticCNNConfig)
def build_semantic_cnn(cfg: SemanticCNNConfig, spec, *, num_conditions: int = 0,
                       position_std: bool = False, name: str | None = None):
    """Feature net Theta_1 = N x (Conv2D, BatchNorm, MaxPool, ReLU), flattened to omega;
    coordinate head Theta_2 and condition head Theta_3 = (Dense, BN, ReLU) x 2 then linear.

    Glorot (Xavier) initialisation throughout (Keras' default). The paper ends
    Theta_3 with a sigmoid; with a cross-entropy over exclusive conditions we
    use the softmax, which the paper's own loss (eq. 9, 18) assumes.

    Input: {"features": [batch, H, W, C] (the ADP), "sector" if sectors}.
    Output: see :func:`tfloc.models.heads.output_heads`; ``embedding`` is omega >= 0.
    """
    L = keras.layers
    inputs, x = single_link_inputs(spec, "semantic_cnn")
    for i, f in enumerate(cfg.filters):
        x = L.Conv2D(f, cfg.kernel_size, padding="same", name=f"theta1_conv{i + 1}")(x)
        x = L.BatchNormalization(momentum=cfg.bn_momentum, name=f"theta1_bn{i + 1}")(x)
        x = L.MaxPooling2D(2, padding="same", name=f"theta1_pool{i + 1}")(x)
        x = L.ReLU(name=f"theta1_relu{i + 1}")(x)
    omega = L.Flatten(name="omega")(x)
    out = output_heads(omega, spec, num_conditions=num_conditions, position_std=position_std,
                       units=tuple(cfg.head_units),
                       batch_norm=True, bn_momentum=cfg.bn_momentum,
                       side=sector_onehot(inputs, spec.num_sectors))
    return keras.Model(inputs, out, name=name or "semantic_cnn")
