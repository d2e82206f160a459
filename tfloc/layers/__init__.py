"""Custom Keras layers (all registered for serialisation under package 'tfloc')."""
from tfloc.layers.angle_delay import AffineOutput, AngleDelayTransform, CoordinateChannels

__all__ = ["AffineOutput", "AngleDelayTransform", "CoordinateChannels"]
