"""Custom Keras layers (all registered for serialisation under package 'tfloc')."""
from tfloc.layers.features import AffineOutput, CoordinateChannels, CSIFeatures

__all__ = ["AffineOutput", "CoordinateChannels", "CSIFeatures"]
