"""Export for TF Serving: raw CSI in, position out, features computed in the graph."""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfloc.layers import AngleDelayTransform
from tfloc.utils import atomic_dir


def serving_model(model: keras.Model, csi_shape, num_delay_taps: int,
                  representation: str, normalization: str) -> keras.Model:
    """Wraps a feature-domain model so it takes raw CSI [batch, *csi_shape]."""
    csi = keras.Input(shape=tuple(csi_shape), name="csi")
    feats = AngleDelayTransform(num_delay_taps, representation, normalization,
                                name="angle_delay")(csi)
    return keras.Model(csi, model(feats), name="serving")


def export_saved_model(model: keras.Model, csi_shape, export_root: str, model_name: str,
                       version: int, *, num_delay_taps: int, representation: str,
                       normalization: str) -> str:
    """Writes ``export_root/<model_name>/<version>/`` (TF Serving layout), atomically.

    Signature ``serving_default``: ``csi`` float32 [batch, *csi_shape] (real, imag last)
    -> ``position`` float32 [batch, 2]. CSI with NaN/Inf is rejected with an
    InvalidArgumentError naming the input.
    """
    serve_model = serving_model(model, csi_shape, num_delay_taps, representation, normalization)
    spec = tf.TensorSpec([None, *csi_shape], tf.float32, name="csi")

    def serve(csi):
        tf.debugging.assert_all_finite(csi, "input 'csi' contains NaN or Inf values")
        return {"position": serve_model(csi, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(serve_model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])
    path = os.path.join(export_root, model_name, str(version))
    with atomic_dir(path) as tmp:
        archive.write_out(tmp, verbose=False)
    return path
