"""Seed 004's split deployment: an edge SavedModel per BS (estimated CSI -> the
fronthaul bytes) and a cloud SavedModel (every BS's bytes -> position).

The edge sends, per snapshot, ``payload`` = the D latent codes of Q bits packed
into ceil(D Q / 8) bytes (:func:`tfloc.layers.pack_codes`) and ``gain`` = its
32-bit gain g (eq. 7) as 4 bytes. The cloud unpacks and dequantises each BS's
codes with that BS's step and runs the cloud network. Composing the two gives
the same positions as the trained end-to-end model (tested).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfloc.export.saved_model import OUTPUT_DOCS, ExportModule, after_checks
from tfloc.layers.fronthaul import (fronthaul_bits, pack_codes, pack_gain, packed_bytes, unpack_codes,
                                   unpack_gain)


def _quantizer(edge: keras.Model):
    from tfloc.layers import UniformMidriseQuantizer
    found = [l for l in edge.layers if isinstance(l, UniformMidriseQuantizer)]
    if len(found) != 1:
        raise ValueError(f"edge model '{edge.name}' must hold one UniformMidriseQuantizer, "
                         f"found {len(found)}")
    q = found[0]
    if q.bypass or float(q.step.numpy()) <= 0:
        raise ValueError(f"edge model '{edge.name}': its quantizer is bypassed or not calibrated; "
                         "a deployed edge sends quantised codes")
    return q


class EdgeModule(ExportModule):
    """One BS: ``csi`` float32 [b, T, Nr, Nsc, 2] -> ``payload`` uint8 [b, ceil(D Q / 8)],
    ``gain`` uint8 [b, 4] (big-endian float32)."""

    def __init__(self, name: str, edge: keras.Model, metadata: dict | None = None):
        self.edge, self.quantizer = edge, _quantizer(edge)
        self.csi_shape = tuple(int(v) for v in edge.input.shape[1:])
        z = edge.output["latent_continuous"]
        self.num_codes = int(np.prod(z.shape[1:]))
        info = fronthaul_bits(self.num_codes, self.quantizer.bits, self.csi_shape)
        super().__init__(name, {"role": "edge", "inputs": {"csi": {"shape": [None, *self.csi_shape],
                                                                  "dtype": "float32"}},
                                "outputs": {"payload": f"uint8 [batch, {info['payload_bytes'] - 4}]: "
                                            f"{self.num_codes} codes of {self.quantizer.bits} bits, "
                                            "MSB first", "gain": "uint8 [batch, 4]: float32 "
                                            "big-endian, the CSI's Frobenius norm"},
                                "bits": self.quantizer.bits, "step": float(self.quantizer.step.numpy()),
                                "fronthaul": info, **(metadata or {})})

    def build_archive(self):
        edge, q, shape, n = self.edge, self.quantizer, list(self.csi_shape), self.num_codes
        msg = f"input 'csi' must have shape [batch, {', '.join(map(str, shape))}]"

        def serve(csi):
            checks = [tf.debugging.assert_equal(tf.shape(csi)[1:], tf.constant(shape, tf.int32), msg),
                      tf.debugging.assert_all_finite(csi, "input 'csi' contains NaN or Inf values")]
            csi = after_checks(checks, {"csi": csi})["csi"]
            out = edge(csi, training=False)
            z = tf.reshape(out["latent_continuous"], [-1, n])            # eq. 17's order
            return {"payload": pack_codes(q.encode(z), q.bits), "gain": pack_gain(out["gain"])}
        archive = keras.export.ExportArchive()
        archive.track(edge)
        self.add_serving_endpoint(archive, serve, [tf.TensorSpec([None, *shape], tf.float32, name="csi")])
        return archive


class CloudModule(ExportModule):
    """The CU: ``payload`` uint8 [b, L, ceil(D Q / 8)] and ``gain`` uint8 [b, L, 4] of
    the L BSs (in the trained order) -> ``position`` [b, 3] m."""

    def __init__(self, name: str, cloud: keras.Model, edges: list, outputs=("position",),
                 metadata: dict | None = None):
        self.cloud, self.outputs = cloud, tuple(outputs)
        self.quantizers = [_quantizer(e) for e in edges]
        lat = cloud.input["latents"].shape
        self.num_bs, self.latent_shape = int(lat[1]), tuple(int(v) for v in lat[2:])
        if len(edges) != self.num_bs:
            raise ValueError(f"the cloud takes {self.num_bs} BSs, got {len(edges)} edge models")
        bits = {q.bits for q in self.quantizers}
        if len(bits) != 1:
            raise ValueError(f"every BS must use the same Q, got {sorted(bits)}")
        self.bits = bits.pop()
        self.num_codes = int(np.prod(self.latent_shape))
        self.num_bytes = packed_bytes(self.num_codes, self.bits)
        super().__init__(name, {"role": "cloud", "num_bs": self.num_bs, "bits": self.bits,
                                "steps": [float(q.step.numpy()) for q in self.quantizers],
                                "inputs": {"payload": {"shape": [None, self.num_bs, self.num_bytes],
                                                       "dtype": "uint8"},
                                           "gain": {"shape": [None, self.num_bs, 4], "dtype": "uint8"}},
                                "outputs": {o: OUTPUT_DOCS.get(o, "") for o in self.outputs},
                                **(metadata or {})})

    def build_archive(self):
        cloud, L, nbytes = self.cloud, self.num_bs, self.num_bytes
        steps = tf.constant([float(q.step.numpy()) for q in self.quantizers], tf.float32)
        half = 2 ** (self.bits - 1)
        bits, n, shape, outputs = self.bits, self.num_codes, self.latent_shape, self.outputs

        def serve(payload, gain):
            checked = after_checks([
                tf.debugging.assert_equal(tf.shape(payload)[1:], tf.constant([L, nbytes], tf.int32),
                                          f"input 'payload' must have shape [batch, {L}, {nbytes}] "
                                          f"({L} BSs x {nbytes} bytes)"),
                tf.debugging.assert_equal(tf.shape(gain)[1:], tf.constant([L, 4], tf.int32),
                                          f"input 'gain' must have shape [batch, {L}, 4]")],
                {"payload": payload, "gain": gain})
            payload, gain = checked["payload"], checked["gain"]
            codes = unpack_codes(payload, bits, n)                                   # [b, L, D]
            z = (tf.cast(codes, tf.float32) - half + 0.5) * steps[None, :, None]
            latents = tf.reshape(z, tf.concat([tf.shape(codes)[:2], shape], 0))
            out = cloud({"latents": latents, "gains": unpack_gain(gain)}, training=False)
            return {k: out[k] for k in outputs}
        archive = keras.export.ExportArchive()
        archive.track(cloud)
        self.add_serving_endpoint(archive, serve, [
            tf.TensorSpec([None, L, nbytes], tf.uint8, name="payload"),
            tf.TensorSpec([None, L, 4], tf.uint8, name="gain")])
        return archive
