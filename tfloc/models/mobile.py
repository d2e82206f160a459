"""Light backbones of seed 000's Table I, adapted to angle-delay inputs: MobileNetV2
(Sandler et al. 2018) and ShuffleNetV2 (Ma et al. 2018).

Written here rather than taken from keras.applications: those expect images of at
least 32 x 32 pixels and three channels, start with a stride of 4 (MobileNetV2: 2, then
2 more in the first stage), and have no coordinate channels or side inputs. Ours keep
each paper's stage table (channels, repeats, expansion), scaled by ``width_multiplier``,
take ``stem_stride`` as the ResNets do, and end in the shared output heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras

from tfloc.config import param
from tfloc.layers import ChannelShuffle, ChannelSplit, CoordinateChannels
from tfloc.models.heads import output_heads, sector_onehot, single_link_inputs
from tfloc.models.registry import MODELS

#: MobileNetV2's bottleneck table (Table 2): expansion t, channels c, repeats n, stride s
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))
#: ShuffleNetV2 1.0x (Table 5): stem 24, stages of (output channels, repeats), conv5 1024
_SHUFFLENET_V2 = ((116, 4), (232, 8), (464, 4))


@dataclass
class MobileConfig:
    width_multiplier: float = param(1.0, min=0.1, max=4.0, doc="alpha: every layer's channels x this")
    stem_stride: int = param(2, min=1, max=4)
    head_units: int = param(128, min=1)
    coord_channels: bool = param(True, doc="append row/column channels (see resnet)")
    dropout: float = param(0.0, min=0.0, max=0.9)
    bn_momentum: float = param(0.9, min=0.0, max=0.999)


def _channels(c: float, divisor: int = 8) -> int:
    """Rounds to a multiple of ``divisor`` without losing more than 10 % (the papers' rule)."""
    v = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return v + divisor if v < 0.9 * c else v


def _conv_bn(x, filters, kernel, stride, name, m, relu=True, depthwise=False):
    L = keras.layers
    if depthwise:
        x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    else:
        x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(momentum=m, name=name + "_bn")(x)
    return L.ReLU(6.0 if relu == "relu6" else None, name=name + "_relu")(x) if relu else x


def _stem(cfg, spec, name):
    inputs, x = single_link_inputs(spec, name)
    if cfg.coord_channels:
        x = CoordinateChannels(name="coords")(x)
    return inputs, x


def _heads(x, inputs, spec, cfg, num_conditions, position_std):
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return output_heads(x, spec, num_conditions=num_conditions, position_std=position_std,
                        units=(cfg.head_units,), dropout=cfg.dropout,
                        side=sector_onehot(inputs, spec.num_sectors))


@MODELS.register("mobilenet_v2", config=MobileConfig)
def build_mobilenet_v2(cfg: MobileConfig, spec, *, num_conditions: int = 0,
                       position_std: bool = False, name: str | None = None):
    """MobileNetV2: inverted residual blocks (1x1 expand, ReLU6, 3x3 depthwise, ReLU6, linear
    1x1 projection; a shortcut where shape allows), stem 32 and last 1x1 conv 1280 channels
    (both x alpha, the last one only when alpha > 1, as in the paper).

    Input/output: as :func:`tfloc.models.resnet.build_resnet`."""
    L, m, a = keras.layers, cfg.bn_momentum, cfg.width_multiplier
    inputs, x = _stem(cfg, spec, "mobilenet_v2")
    x = _conv_bn(x, _channels(32 * a), 3, cfg.stem_stride, "stem_conv", m, relu="relu6")
    for i, (t, c, n, s) in enumerate(_MOBILENET_V2):
        for j in range(n):
            block, inp = f"block{i + 1}_{j + 1}", x
            y = x if t == 1 else _conv_bn(x, x.shape[-1] * t, 1, 1, block + "_expand", m, relu="relu6")
            y = _conv_bn(y, None, 3, s if j == 0 else 1, block + "_dw", m, relu="relu6", depthwise=True)
            y = _conv_bn(y, _channels(c * a), 1, 1, block + "_project", m, relu=False)
            x = L.Add(name=block + "_add")([inp, y]) if (j > 0 or s == 1) and inp.shape[-1] == y.shape[-1] else y
    x = _conv_bn(x, _channels(1280 * max(1.0, a)), 1, 1, "last_conv", m, relu="relu6")
    return keras.Model(inputs, _heads(x, inputs, spec, cfg, num_conditions, position_std),
                       name=name or "mobilenet_v2")


@MODELS.register("shufflenet_v2", config=MobileConfig)
def build_shufflenet_v2(cfg: MobileConfig, spec, *, num_conditions: int = 0,
                        position_std: bool = False, name: str | None = None):
    """ShuffleNetV2: stride-1 units split the channels, transform one half (1x1, 3x3
    depthwise, 1x1) and shuffle; stride-2 units transform both copies and double the
    channels. Stem 24 channels (3x3, ``stem_stride``; the paper's max-pool is left out),
    stages of 116 / 232 / 464 channels (x alpha, even), conv5 of 1024 channels.

    Input/output: as :func:`tfloc.models.resnet.build_resnet`."""
    L, m, a = keras.layers, cfg.bn_momentum, cfg.width_multiplier
    inputs, x = _stem(cfg, spec, "shufflenet_v2")
    x = _conv_bn(x, _channels(24 * a, 4), 3, cfg.stem_stride, "stem_conv", m)
    for i, (c, n) in enumerate(_SHUFFLENET_V2):
        out = _channels(c * a, 4)
        for j in range(n):
            unit = f"stage{i + 2}_unit{j + 1}"
            if j == 0:   # stride 2: both branches see the whole input
                left = _conv_bn(x, None, 3, 2, unit + "_left_dw", m, relu=False, depthwise=True)
                left = _conv_bn(left, out // 2, 1, 1, unit + "_left_pw", m)
                right = x
            else:
                left, right = ChannelSplit(name=unit + "_split")(x)
            right = _conv_bn(right, out // 2, 1, 1, unit + "_pw1", m)
            right = _conv_bn(right, None, 3, 2 if j == 0 else 1, unit + "_dw", m, relu=False,
                             depthwise=True)
            right = _conv_bn(right, out // 2, 1, 1, unit + "_pw2", m)
            x = ChannelShuffle(2, name=unit + "_shuffle")(L.Concatenate(name=unit + "_concat")([left, right]))
    x = _conv_bn(x, _channels(1024 * max(1.0, a), 4), 1, 1, "conv5", m)
    return keras.Model(inputs, _heads(x, inputs, spec, cfg, num_conditions, position_std),
                       name=name or "shufflenet_v2")
