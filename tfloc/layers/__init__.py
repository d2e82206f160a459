"""Custom Keras layers (all registered for serialisation under package 'tfloc')."""
from tfloc.layers.features import (AffineOutput, ChannelShuffle, ChannelSplit, CoordinateChannels,
                                   CSIFeatures, SectorRouting)
from tfloc.layers.fronthaul import (UniformMidriseQuantizer, calibrate_step, fronthaul_bits, pack_codes,
                                    pack_gain, packed_bytes, unpack_codes, unpack_gain)
from tfloc.layers.fusion import (ChannelMaskedAttention, EnsembleCombine,
                                 FrequencyEvidenceAccumulation, accumulation_weights)
from tfloc.layers.gaussian import GaussianOutput, num_gaussian_params
from tfloc.layers.gradient_reversal import GradientReversal

__all__ = ["AffineOutput", "ChannelMaskedAttention", "ChannelShuffle", "ChannelSplit",
           "CoordinateChannels", "CSIFeatures", "EnsembleCombine", "FrequencyEvidenceAccumulation", "GaussianOutput", "GradientReversal", "SectorRouting",
           "UniformMidriseQuantizer", "accumulation_weights", "calibrate_step", "fronthaul_bits",
           "num_gaussian_params",
           "pack_codes", "pack_gain", "packed_bytes", "unpack_codes", "unpack_gain"]
