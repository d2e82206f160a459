"""Edge-cloud cooperative 3D positioning over a quantized fronthaul (seed 004, An et al.).

The model is :func:`tfloc.models.ecc.build_ecc`: per BS, preprocessing (eq.
7-15), a Res-SegNet encoder and a Q-bit quantizer; at the cloud, channel-masked
attention and frequency evidence accumulation. Training strategies
(``method.ecc.strategy``, seed 004 section IV-D):

- ``local_joint`` (the paper's): Stage I trains one autoencoder per BS on the
  unlabelled CSI with the negative cosine loss (eq. 22, quantizer bypassed);
  the quantizer's step is calibrated on the training latents; Stage II trains
  encoders and cloud end to end through the quantizer's straight-through
  gradient (eq. 35) with the accumulated position loss (eq. 34).
- ``local_split``: Stage I, then Stage II with the encoders frozen.
- ``joint_scratch``: Stage II only, from random encoders.
- ``raw_csi``: the lossless-CSI reference (eta = 100 %): the CU receives each BS's
  CSI and runs the same per-BS feature extractors itself, trained end to end from
  scratch with the quantizers bypassed (no quantization, no stage I).

Protocol: with ``data.fresh_samples_per_epoch`` each epoch draws that many
samples of the training pool anew (seed 004: 3,000 fresh samples per epoch);
validation and test are fixed, disjoint draws.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError, param
from tfloc.data.bundle import split_dataset
from tfloc.export import CloudModule, EdgeModule, ServingModule
from tfloc.layers import UniformMidriseQuantizer, fronthaul_bits
from tfloc.losses import build_loss, negative_cosine_similarity
from tfloc.methods.registry import METHODS
from tfloc.methods.task import Task, TaskTrainer, TrainResult, position_trainer, require
from tfloc.models.ecc import build_decoder, build_ecc

STRATEGIES = ["local_joint", "local_split", "joint_scratch", "raw_csi"]
ECC_LOSSES = ["accumulated_mse", "mse"]


@dataclass
class ECCOptions:
    strategy: str = param("local_joint", choices=STRATEGIES,
                          doc="local_joint (paper), local_split (encoders frozen in stage II), "
                          "joint_scratch (no stage I), raw_csi (no embedding: lossless reference)")
    local_epochs: int = param(10, min=1, doc="stage I epochs at most (autoencoders, eq. 22; "
                              "early stopping on the held-out cosine)")
    local_min_improvement: float = param(
        0.02, min=0.0, max=0.5, doc="a stage-I epoch improves only when it raises the best held-out "
        "cosine similarity so far by this share of it: the cosine keeps creeping up (about 0.001 "
        "per epoch after epoch 30 at the 1,500-candidate pool) and stage II (local_joint) "
        "fine-tunes the encoders anyway, so without it stage I ran to its cap")
    calibration_samples: int = param(2000, min=1, doc="training samples whose latents set each "
                                     "BS's quantizer step")


@METHODS.register("ecc", config=ECCOptions)
class ECCTask(Task):
    """Seed 004's cooperative positioning: L BSs' CSI -> quantized latents -> 3D position."""
    outputs = ("position",)
    evaluated_outputs = ("position", "position_sequence")
    evaluators = ("position", "per_condition", "knn", "mean", "music", "accumulation", "trajectory", "bound")

    @property
    def strategy(self) -> str:
        return self.options.strategy

    @property
    def embedded(self) -> bool:
        return self.strategy != "raw_csi"

    def check(self, spec):
        require(self.cfg.model.type == "ecc", f"model.type: method 'ecc' needs the model 'ecc', "
                f"not '{self.cfg.model.type}'")
        require(spec.site == "multi_bs" and spec.links > 1,
                f"method 'ecc' fuses several BSs; this site has {spec.links} link(s) per sample "
                "(use a multi-BS site such as configs/data/campus.yaml)")
        require(spec.representation == "csi", "data.representation: method 'ecc' takes the CSI "
                f"itself ('csi'; its edge models preprocess it), not '{spec.representation}'")
        require(self.cfg.training.loss.type in ECC_LOSSES,
                f"training.loss: method 'ecc' trains with one of {ECC_LOSSES}, "
                f"not '{self.cfg.training.loss.type}'")

    def build_inputs(self, data):
        p, s, fresh = data.pipeline, data.splits, self.cfg.data.fresh_samples_per_epoch
        if fresh and fresh > len(s.train):
            raise ConfigError(f"data.fresh_samples_per_epoch: {fresh} fresh samples per epoch need "
                              f"a training pool at least as large; the pool has {len(s.train)} "
                              "(trace more UEs: simulation.ue_grid.num_ues)")
        return {"train": p.feature_dataset(s.train, training=True),
                "val": split_dataset(data, "val"),
                "calibration": split_dataset(data, "calibration", rows=s.train[:self.options.calibration_samples])}

    def build_models(self, spec):
        return {"inference": build_ecc(self.cfg.model.options, spec)}

    # -- training ------------------------------------------------------------- #
    def train(self, models, inputs, data, run):
        edges = models["inference"].edges
        facts = {"strategy": self.strategy}
        per_epoch = self.cfg.data.fresh_samples_per_epoch or len(data.splits.train)
        epochs = 0
        if self.strategy in ("local_joint", "local_split"):
            facts["local"] = self.train_local(edges, inputs, data.spec, run)
            epochs += facts["local"]["epochs"]
        if self.embedded:
            facts["quantizer"] = self.calibrate(edges, inputs["calibration"])
        if self.strategy == "local_split":
            self.freeze_encoders(edges)
        facts["joint"] = self.train_joint(models, inputs, data, run)
        return TrainResult(facts, rows=(epochs + facts["joint"]["epochs"]) * per_epoch,
                           report={"fronthaul": self.fronthaul(edges)})

    def fronthaul(self, edges) -> dict:
        """What one BS sends per snapshot (seed 004 eq. 37-39), from the trained edge model:
        its latent codes and their bits against the lossless CSI of its input; the lossless
        reference sends the CSI itself (eta = 1)."""
        csi_shape = [int(v) for v in edges[0].input.shape[1:]]
        if not self.embedded:
            return {"eta": 1.0, "csi_shape": csi_shape, "lossless": True}
        quantizer = next(l for l in edges[0].layers if isinstance(l, UniformMidriseQuantizer))
        codes = int(np.prod(edges[0].output["latent_continuous"].shape[1:]))
        return {**fronthaul_bits(codes, quantizer.bits, csi_shape), "num_codes": codes,
                "bits": int(quantizer.bits), "csi_shape": csi_shape, "lossless": False}

    @staticmethod
    def freeze_encoders(edges):
        """Local + split: stage II trains the cloud only."""
        for e in edges:
            e.get_layer(f"{e.name}_encoder").trainable = False

    def train_local(self, edges, inputs, spec, run) -> dict:
        """Stage I: one autoencoder per BS on unlabelled CSI, negative cosine loss (eq. 22)."""
        t0 = time.time()
        history = self.fit(self.local_trainer(edges, spec), inputs["train"], inputs["val"], run,
                           epochs=self.options.local_epochs, monitor="val_cosine", tag="local",
                           min_improvement=self.options.local_min_improvement)
        return {**self.history_facts(history, "val_cosine"), "elapsed_s": round(time.time() - t0, 1)}

    def local_trainer(self, edges, spec) -> TaskTrainer:
        """Stage I's trainer: the edges with a decoder each, the mean negative cosine over
        the links that carry a signal."""
        m = self.cfg.model.options
        t, nr, nsc, _ = spec.feature_shape
        decoders = [build_decoder(m, (t * nr, nsc, 2), name=f"decoder{l}") for l in range(len(edges))]

        def cosines(x, training):
            """Per link [b, L] and which links carry a signal (a BS without paths sends zeros)."""
            out, live = [], []
            for l, (e, d) in enumerate(zip(edges, decoders)):
                o = e(x["features"][:, l], training=training)
                out.append(negative_cosine_similarity(o["x"], d(o["latent_continuous"], training=training)))
                live.append(tf.cast(o["gain"] > 0, tf.float32))
            return tf.stack(out, axis=1), tf.stack(live, axis=1)

        def loss_fn(batch):
            c, live = cosines(batch[0], True)                    # labels unused (self-supervised)
            value = tf.reduce_sum(c * live) / tf.maximum(tf.reduce_sum(live), 1.0)
            return {"loss": value, "cosine_loss": value}

        def val_fn(x, y):
            c, live = cosines(x, False)
            return {"cosine": tf.reduce_sum(c * live, axis=1) / tf.maximum(tf.reduce_sum(live, axis=1), 1.0)}
        return TaskTrainer({**{e.name: e for e in edges}, **{d.name: d for d in decoders}},
                           loss_fn, ["loss", "cosine_loss"], val_fn, ["cosine"])

    def calibrate(self, edges, dataset) -> dict:
        """Each BS's quantizer step from its training latents (seed 004 Table I); quantizers on."""
        lat = [[] for _ in edges]
        for x, _ in dataset:
            for l, e in enumerate(edges):
                lat[l].append(e(x["features"][:, l], training=False)["latent_continuous"].numpy())
        steps = []
        for l, e in enumerate(edges):
            q = next(layer for layer in e.layers if isinstance(layer, UniformMidriseQuantizer))
            steps.append(q.calibrate(np.concatenate(lat[l])))
            q.set_bypass(False)
        return {"bits": self.cfg.model.options.bits, "steps": [round(s, 6) for s in steps]}

    def train_joint(self, models, inputs, data, run) -> dict:
        """Stage II: positions through the quantizers (straight-through), eq. 34's loss."""
        trainer = position_trainer(models, models["inference"],
                                   build_loss(self.cfg.training.loss, data.spec))
        t0 = time.time()
        history = self.fit(trainer, inputs["train"], inputs["val"], run, tag="joint")
        facts = self.history_facts(history)
        elapsed = time.time() - t0
        per_epoch = self.cfg.data.fresh_samples_per_epoch or len(data.splits.train)
        return {**facts, "elapsed_s": round(elapsed, 1),
                "samples_per_s": round(per_epoch * facts["epochs"] / elapsed, 1)}

    # -- serving -------------------------------------------------------------- #
    def export_modules(self, models, spec):
        name, net = self.cfg.export.model_name, models["inference"]
        mods = [ServingModule(name, net, spec, outputs=("position",),
                              metadata={"strategy": self.strategy})]
        if self.embedded:
            mods += [EdgeModule(f"{name}-edge{l}", e, metadata={"bs": l})
                     for l, e in enumerate(net.edges)]
            mods.append(CloudModule(f"{name}-cloud", net.cloud, net.edges))
        return mods
