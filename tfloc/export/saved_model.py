"""Export for TF Serving: raw CSI in, position out, features computed in the graph."""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfloc.layers import CSIFeatures
from tfloc.utils import atomic_dir


def serving_model(model: keras.Model, csi_shape, num_delay_taps: int, representation: str,
                  normalization: str, num_sectors: int, array_shape=(1, 1, 1)) -> keras.Model:
    """Wraps a feature-domain model so it takes raw CSI [batch, *csi_shape] (and the sector)."""
    csi = keras.Input(shape=tuple(csi_shape), name="csi")
    feats = CSIFeatures(num_delay_taps, representation, normalization, array_shape,
                        name="csi_features")(csi)
    inputs, model_in = {"csi": csi}, {"features": feats}
    if num_sectors:
        inputs["sector"] = model_in["sector"] = keras.Input(shape=(), dtype="int32", name="sector")
    return keras.Model(inputs, model(model_in), name="serving")


def export_saved_model(model: keras.Model, csi_shape, export_root: str, model_name: str,
                       version: int, *, num_delay_taps: int, representation: str,
                       normalization: str, num_sectors: int, array_shape=(1, 1, 1)) -> str:
    """Writes ``export_root/<model_name>/<version>/`` (TF Serving layout), atomically.

    Signature ``serving_default``: ``csi`` float32 [batch, *csi_shape] (real, imag
    last) and, if ``num_sectors > 0``, ``sector`` int32 [batch] (the serving
    sector's index) -> ``position`` float32 [batch, 2]. CSI of the wrong shape or
    with NaN/Inf, and sector indices outside [0, num_sectors), are rejected with an
    InvalidArgumentError naming the input.
    """
    serve_model = serving_model(model, csi_shape, num_delay_taps, representation,
                                normalization, num_sectors, array_shape)
    csi_spec = tf.TensorSpec([None, *csi_shape], tf.float32, name="csi")
    shape_msg = f"input 'csi' must have shape [batch, {', '.join(map(str, csi_shape))}]"

    def check_csi(csi):
        # A loaded signature does not enforce static shapes, and the transform would
        # accept another subcarrier count, so check explicitly.
        tf.debugging.assert_equal(tf.shape(csi)[1:], tf.constant(csi_shape, tf.int32), shape_msg)
        tf.debugging.assert_all_finite(csi, "input 'csi' contains NaN or Inf values")

    archive = keras.export.ExportArchive()
    archive.track(serve_model)
    if num_sectors:
        def serve(csi, sector):
            check_csi(csi)
            tf.debugging.assert_equal(tf.shape(sector)[0], tf.shape(csi)[0],
                                      "inputs 'csi' and 'sector' differ in batch size")
            tf.debugging.assert_less(sector, num_sectors, f"input 'sector' must be < {num_sectors}")
            tf.debugging.assert_non_negative(sector, "input 'sector' must be >= 0")
            return {"position": serve_model({"csi": csi, "sector": sector}, training=False)}
        specs = [csi_spec, tf.TensorSpec([None], tf.int32, name="sector")]
    else:
        def serve(csi):
            check_csi(csi)
            return {"position": serve_model({"csi": csi}, training=False)}
        specs = [csi_spec]
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=specs)
    path = os.path.join(export_root, model_name, str(version))
    with atomic_dir(path) as tmp:
        archive.write_out(tmp, verbose=False)
    return path
