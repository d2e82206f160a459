"""Export for TF Serving: raw CSI in, the method's named outputs out, features in the graph.

A method serves one or more :class:`ExportModule` s; the runner writes each to
``export/<name>/<version>/`` (the TF Serving layout), atomically, with
``assets.extra/tfloc.json`` describing inputs, outputs and condition classes and
``assets.extra/tf_serving_warmup_requests`` (TF Serving's warm-up file: PredictionLog
records of batch 1 and a larger batch, real test CSI where the runner gives it).
Every signature answers an empty batch with empty outputs.
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfloc.layers import CSIFeatures
from tfloc.utils import atomic_dir

#: units and meaning of the outputs a method may serve (for tfloc.json)
OUTPUT_DOCS = {"position": "metres, scene coordinates",
               "position_std": "metres, 1-sigma per axis",
               "position_scale_tril": "metres, Cholesky factor L of the position covariance L L^T",
               "condition_probs": "probability of each condition class",
               "position_weighted": "metres, the ensemble members' weighted average",
               "position_consensus": "metres, the mean of the ensemble members that agree"}


def after_checks(checks, tensors: dict) -> dict:
    """``tensors`` passed through ``tf.identity`` after every op of ``checks``, so the input
    checks run before any computation on the inputs: ops without a data dependency have
    no set order in a graph, and a bad shape could otherwise fail first inside the model
    with an opaque error (seen: "slice index 5 of dimension 1 out of bounds")."""
    with tf.control_dependencies([c for c in checks if c is not None]):
        return {k: tf.identity(v) for k, v in tensors.items()}


SIGNATURE = "serving_default"
WARMUP_FILE = "tf_serving_warmup_requests"


class ExportModule:
    """One SavedModel a method serves. Subclasses implement :meth:`build_archive` and
    register their signature with :meth:`add_serving_endpoint`."""

    #: batch sizes of the warm-up requests (TF Serving replays each once at load)
    warmup_batches = (1, 32)

    def __init__(self, name: str, metadata: dict | None = None):
        self.name = name
        self.metadata = dict(metadata or {})
        self.input_specs = None

    def build_archive(self) -> keras.export.ExportArchive:
        raise NotImplementedError

    def add_serving_endpoint(self, archive, serve, specs):
        """``serving_default`` = ``serve`` for a non-empty batch, empty outputs (of the
        right inner shape and dtype) for an empty one: graphs that reshape by the batch
        cannot run on zero rows, and a server should not fail on an empty request.
        Outputs whose inner shape is only known at run time are cut from ``serve`` on one
        zero row."""
        outs = tf.function(serve).get_concrete_function(*specs).structured_outputs
        static = all(v.shape[1:].is_fully_defined() for v in outs.values())

        def empty():
            if static:
                return {k: tf.zeros([0, *v.shape[1:]], v.dtype) for k, v in outs.items()}
            row = serve(*[tf.zeros([1, *s.shape[1:]], s.dtype) for s in specs])
            return {k: v[:0] for k, v in row.items()}

        def safe(*args):
            return tf.cond(tf.shape(args[0])[0] > 0, lambda: serve(*args), empty)
        archive.add_endpoint(name=SIGNATURE, fn=safe, input_signature=specs)
        self.input_specs = list(specs)

    def warmup_inputs(self, examples: dict | None) -> list[dict]:
        """One input dict per warm-up request (:attr:`warmup_batches`): by default values of
        the signature's shapes (seeded normal floats, zero integers); modules that take the
        runner's ``examples`` (raw serving inputs of test UEs) override it."""
        rng = np.random.default_rng(0)
        out = []
        for b in self.warmup_batches:
            x = {}
            for spec in self.input_specs:
                shape = [b, *spec.shape[1:]]
                x[spec.name] = (rng.standard_normal(shape).astype(spec.dtype.as_numpy_dtype)
                                if spec.dtype.is_floating else np.zeros(shape, spec.dtype.as_numpy_dtype))
            out.append(x)
        return out

    def write(self, path: str, examples: dict | None = None) -> str:
        archive = self.build_archive()
        with atomic_dir(path) as tmp:
            archive.write_out(tmp, verbose=False)
            extra = os.path.join(tmp, "assets.extra")
            os.makedirs(extra, exist_ok=True)
            with open(os.path.join(extra, "tfloc.json"), "w") as fh:
                json.dump(self.metadata, fh, indent=2)
            write_warmup(os.path.join(extra, WARMUP_FILE), self.name, self.warmup_inputs(examples))
        return path


def write_warmup(path: str, model_name: str, requests: list[dict]):
    """TF Serving's warm-up file: a TFRecord of ``PredictionLog`` s, one PredictRequest per
    input dict, on :data:`SIGNATURE`."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    with tf.io.TFRecordWriter(path) as w:
        for x in requests:
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
                name=model_name, signature_name=SIGNATURE))
            for k, v in x.items():
                req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req))
            w.write(log.SerializeToString())


def read_warmup(path: str) -> list[dict]:
    """The input dicts of a warm-up file (NumPy), in order."""
    from tensorflow_serving.apis import prediction_log_pb2
    out = []
    for rec in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(rec.numpy())
        out.append({k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()})
    return out


class ServingModule(ExportModule):
    """Serves a feature-domain model on raw CSI.

    Signature ``serving_default``: the named inputs of ``spec.serving_inputs``
    -- ``csi`` float32 [batch, (L,) *csi_shape] (real, imag last), and
    ``sector`` int32 [batch] or ``bs_positions`` float32 [batch, L, 3] where
    the model takes them -- and the model outputs named in ``outputs``.
    CSI of the wrong shape or with NaN/Inf, and sector indices out of range, are
    rejected with an InvalidArgumentError naming the input.
    """

    def __init__(self, name: str, model: keras.Model, spec, outputs=("position",),
                 metadata: dict | None = None):
        missing = [o for o in outputs if o not in model.output]
        if missing:
            raise ValueError(f"model '{model.name}' has no output(s) {missing}; "
                             f"it has {sorted(model.output)}")
        self.model, self.spec, self.outputs = model, spec, tuple(outputs)
        inputs = {k: {"shape": [None, *s], "dtype": d} for k, (s, d) in spec.serving_inputs.items()}
        super().__init__(name, {"inputs": inputs,
                                "outputs": {o: OUTPUT_DOCS.get(o, "") for o in self.outputs},
                                **(metadata or {})})

    def serving_model(self) -> keras.Model:
        """The model on raw CSI (features computed by :class:`CSIFeatures`)."""
        s = self.spec
        inputs = {name: keras.Input(shape=shape, dtype=dtype, name=name)
                  for name, (shape, dtype) in s.serving_inputs.items()}
        feats = CSIFeatures(s.num_delay_taps, s.representation, s.normalization, s.array_shape,
                            name="csi_features")(inputs["csi"])
        model_in = {"features": feats, **{k: v for k, v in inputs.items() if k != "csi"}}
        out = self.model(model_in)
        return keras.Model(inputs, {k: out[k] for k in self.outputs}, name="serving")

    def build_archive(self):
        s = self.spec
        serve_model = self.serving_model()
        names = list(s.serving_inputs)
        specs = [tf.TensorSpec([None, *shape], dtype, name=name)
                 for name, (shape, dtype) in s.serving_inputs.items()]
        csi_shape = list(s.serving_inputs["csi"][0])
        shape_msg = f"input 'csi' must have shape [batch, {', '.join(map(str, csi_shape))}]"
        num_sectors = s.num_sectors

        def serve(*args):
            x = dict(zip(names, args))
            csi = x["csi"]
            # A loaded signature does not enforce static shapes, and the transform would
            # accept another subcarrier count, so check explicitly.
            checks = [tf.debugging.assert_equal(tf.shape(csi)[1:], tf.constant(csi_shape, tf.int32),
                                                shape_msg),
                      tf.debugging.assert_all_finite(csi, "input 'csi' contains NaN or Inf values")]
            for k, v in x.items():
                if k != "csi":
                    checks.append(tf.debugging.assert_equal(tf.shape(v)[0], tf.shape(csi)[0],
                                                            f"inputs 'csi' and '{k}' differ in batch size"))
            if "sector" in x:
                checks += [tf.debugging.assert_less(x["sector"], num_sectors,
                                                    f"input 'sector' must be < {num_sectors}"),
                           tf.debugging.assert_non_negative(x["sector"], "input 'sector' must be >= 0")]
            if "bs_positions" in x:
                checks.append(tf.debugging.assert_all_finite(
                    x["bs_positions"], "input 'bs_positions' contains NaN or Inf values"))
            return serve_model(after_checks(checks, x), training=False)

        archive = keras.export.ExportArchive()
        archive.track(serve_model)
        self.add_serving_endpoint(archive, serve, specs)
        return archive

    def warmup_inputs(self, examples):
        """Real test CSI (and sector / BS positions) when the runner gives it."""
        names = list(self.spec.serving_inputs)
        if not examples or any(k not in examples for k in names):
            return super().warmup_inputs(examples)
        n = len(examples["csi"])
        return [{k: np.asarray(examples[k])[:b] for k in names}
                for b in sorted({min(b, n) for b in self.warmup_batches})]
