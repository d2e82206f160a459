"""Gradient reversal (Ganin & Lempitsky): identity forward, -scale x gradient backward."""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfloc")
class GradientReversal(keras.layers.Layer):
    """Identity in the forward pass; multiplies the gradient by ``-scale`` going back.

    Put between a feature extractor and a domain classifier, it makes the
    features that fool the classifier (adversarial domain adaptation, seed 002's RDA).

    Input: any float tensor. Output: the same tensor.
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        scale = self.scale

        @tf.custom_gradient
        def reverse(v):
            return tf.identity(v), lambda dy: -scale * dy
        return reverse(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
