"""ResNet backbones adapted to angle-delay inputs (small maps, few channels)."""
from __future__ import annotations

import keras

from tfloc.config import ResNetConfig
from tfloc.layers import AffineOutput, CoordinateChannels
from tfloc.models.registry import MODELS

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _basic_block(x, filters: int, stride: int, name: str, bn_momentum: float):
    L = keras.layers
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name + "_conv1")(x)
    y = L.BatchNormalization(momentum=bn_momentum, name=name + "_bn1")(y)
    y = L.ReLU(name=name + "_relu1")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=name + "_conv2")(y)
    y = L.BatchNormalization(momentum=bn_momentum, name=name + "_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=name + "_proj")(x)
        x = L.BatchNormalization(momentum=bn_momentum, name=name + "_proj_bn")(x)
    return L.ReLU(name=name + "_out")(L.Add(name=name + "_add")([x, y]))


@MODELS.register("resnet")
def build_resnet(cfg: ResNetConfig, input_shape, output_dim: int = 2,
                 target_offset=(0.0, 0.0), target_scale=(1.0, 1.0),
                 num_sectors: int = 0) -> keras.Model:
    """ResNet-18/34 (basic blocks) with a dense position head.

    Differences from the ImageNet model, for angle-delay maps of about 32 x 64:
    a 3x3 stem with stride ``stem_stride`` and no max-pool. With
    ``num_sectors > 0`` the serving sector enters the head as a one-hot vector:
    identical sector panels make the angle-delay map alone ambiguous up to the
    rotation between sectors.

    Input: {"features": [batch, num_angles, num_delay_taps, C] float32,
    "sector": [batch] int32 (only if num_sectors > 0)}.
    Output: [batch, output_dim] float32, in metres.
    """
    L = keras.layers
    inp = keras.Input(shape=tuple(input_shape), name="features")
    inputs = {"features": inp}
    x = CoordinateChannels(name="coords")(inp) if cfg.coord_channels else inp
    x = L.Conv2D(cfg.width, 3, strides=cfg.stem_stride, padding="same", use_bias=False,
                 name="stem_conv")(x)
    x = L.BatchNormalization(momentum=cfg.bn_momentum, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for stage, n_blocks in enumerate(_BLOCKS[cfg.depth]):
        for b in range(n_blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            x = _basic_block(x, cfg.width * 2 ** stage, stride, f"stage{stage + 1}_block{b + 1}",
                              cfg.bn_momentum)
    x = (L.Flatten(name="pool") if cfg.pooling == "flatten" else
         L.GlobalAveragePooling2D(name="pool"))(x)
    if num_sectors:
        sector = keras.Input(shape=(), dtype="int32", name="sector")
        inputs["sector"] = sector
        onehot = L.CategoryEncoding(num_sectors, output_mode="one_hot", name="sector_onehot")(
            L.Reshape((1,), name="sector_column")(sector))
        x = L.Concatenate(name="with_sector")([x, onehot])
    x = L.Dense(cfg.head_units, activation="relu", name="head_dense")(x)
    if cfg.dropout:
        x = L.Dropout(cfg.dropout, name="head_dropout")(x)
    x = L.Dense(output_dim, name="head_out")(x)
    out = AffineOutput(target_offset, target_scale, name="position")(x)
    return keras.Model(inputs, out, name=f"resnet{cfg.depth}")
