"""Custom Keras layers (all registered for serialisation under package 'tfloc')."""
from tfloc.layers.features import AffineOutput, CoordinateChannels, CSIFeatures
from tfloc.layers.gaussian import GaussianOutput, num_gaussian_params
from tfloc.layers.gradient_reversal import GradientReversal

__all__ = ["AffineOutput", "CoordinateChannels", "CSIFeatures", "GaussianOutput", "GradientReversal", "num_gaussian_params"]
