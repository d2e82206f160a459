"""ResNet backbones adapted to angle-delay inputs (small maps, few channels)."""
from __future__ import annotations

from dataclasses import dataclass

import keras

from tfloc.config import param
from tfloc.layers import CoordinateChannels
from tfloc.models.heads import model_inputs, output_heads, sector_onehot
from tfloc.models.registry import MODELS

#: blocks per stage; 18/34 use basic blocks, 50/101 bottlenecks (He et al. 2016, Table 1)
_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


@dataclass
class ResNetConfig:
    depth: int = param(18, choices=[18, 34, 50, 101])
    width: int = param(32, min=4, doc="filters of the first stage (torchvision: 64)")
    stem_stride: int = param(2, min=1, max=4)
    head_units: int = param(128, min=1)
    # Where a peak sits in the angle-delay map is the position information
    # (delay tap = range, angle bin = bearing); coordinate channels keep it
    # through global pooling (flatten overfits small labelled sets).
    coord_channels: bool = param(True)
    pooling: str = param("avg", choices=["avg", "flatten"])
    dropout: float = param(0.0, min=0.0, max=0.9)
    # Small labelled sets give few steps per epoch; Keras' 0.99 leaves the
    # inference statistics far from the data for many epochs.
    bn_momentum: float = param(0.9, min=0.0, max=0.999)


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


def _bottleneck_block(x, filters: int, stride: int, name: str, bn_momentum: float):
    """1x1 reduce to ``filters``, 3x3 (stride), 1x1 expand to 4 x ``filters``; projection
    shortcut when the shape changes (torchvision's v1.5: the stride sits on the 3x3)."""
    L = keras.layers
    y = x
    for i, (f, k, s) in enumerate([(filters, 1, 1), (filters, 3, stride), (4 * filters, 1, 1)]):
        y = L.Conv2D(f, k, strides=s, padding="same", use_bias=False, name=f"{name}_conv{i + 1}")(y)
        y = L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i + 1}")(y)
        if i < 2:
            y = L.ReLU(name=f"{name}_relu{i + 1}")(y)
    if stride != 1 or x.shape[-1] != 4 * filters:
        x = L.Conv2D(4 * filters, 1, strides=stride, use_bias=False, name=name + "_proj")(x)
        x = L.BatchNormalization(momentum=bn_momentum, name=name + "_proj_bn")(x)
    return L.ReLU(name=name + "_out")(L.Add(name=name + "_add")([x, y]))


@MODELS.register("resnet", config=ResNetConfig)
def build_resnet(cfg: ResNetConfig, spec, *, num_conditions: int = 0, position_std: bool = False,
                 name: str | None = None):
    """ResNet-18/34 (basic blocks) or ResNet-50/101 (bottlenecks) with the shared output heads.

    Differences from the ImageNet model, for angle-delay maps of about 32 x 64:
    a 3x3 stem with stride ``stem_stride`` and no max-pool. With sectors in
    ``spec`` the serving sector enters the heads as a one-hot vector: identical
    sector panels make the angle-delay map alone ambiguous up to the rotation
    between sectors.

    Input: {"features": [batch, H, W, C] float32, "sector": [batch] int32 (if sectors)}.
    Output: see :func:`tfloc.models.heads.output_heads`.
    """
    if spec.links != 1:
        raise ValueError(f"resnet takes one CSI per sample; this dataset has {spec.links} links")
    L = keras.layers
    inputs = model_inputs(spec)
    inp = inputs["features"]
    x = CoordinateChannels(name="coords")(inp) if cfg.coord_channels else inp
    x = L.Conv2D(cfg.width, 3, strides=cfg.stem_stride, padding="same", use_bias=False,
                 name="stem_conv")(x)
    x = L.BatchNormalization(momentum=cfg.bn_momentum, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    block = _basic_block if cfg.depth < 50 else _bottleneck_block
    for stage, n_blocks in enumerate(_BLOCKS[cfg.depth]):
        for b in range(n_blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            x = block(x, cfg.width * 2 ** stage, stride, f"stage{stage + 1}_block{b + 1}",
                      cfg.bn_momentum)
    x = (L.Flatten(name="pool") if cfg.pooling == "flatten" else
         L.GlobalAveragePooling2D(name="pool"))(x)
    out = output_heads(x, spec, num_conditions=num_conditions, position_std=position_std,
                       units=(cfg.head_units,),
                       dropout=cfg.dropout, side=sector_onehot(inputs, spec.num_sectors))
    return keras.Model(inputs, out, name=name or f"resnet{cfg.depth}")
