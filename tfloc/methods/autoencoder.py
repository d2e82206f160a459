"""Seed 003 (Dash et al.): self-supervised autoencoder pre-training (``autoencoder``).

With ``pretrain`` (the paper's Models 3 and 4): the model's encoder (``model: ae_mlp`` or
``ae_cnn``, :mod:`tfloc.models.autoencoder`) and a mirrored decoder are trained to
reconstruct the features of the unlabelled UEs (mean squared error; a random
``pretrain_val_fraction`` of the pool validates, as the paper's 8:2 split), then the
encoder with its MLP position head is fine-tuned on the labels (``training.*``;
``freeze_encoder`` keeps the encoder fixed). Without ``pretrain`` (Models 1 and 2's
role): the same network trained on the labels from scratch. The report adds the
per-axis MAE, NMAE, RMSE and NRMSE of seed 003 (evaluator ``axis_errors``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.config import param
from tfloc.data.bundle import split_dataset
from tfloc.methods.registry import METHODS
from tfloc.methods.semisupervised import require_unlabelled_pool
from tfloc.methods.supervised import SupervisedTask
from tfloc.methods.task import TaskTrainer, TrainResult, require
from tfloc.models.autoencoder import build_decoder

AE_MODELS = ("ae_mlp", "ae_cnn")


@dataclass
class AutoencoderOptions:
    pretrain: bool = param(True, doc="reconstruction pre-training on the unlabelled UEs first")
    pretrain_epochs: int = param(200, min=1, doc="at most (early stopping on the held-out share)")
    pretrain_min_improvement: float = param(
        0.01, min=0.0, max=0.5, doc="an epoch improves the reconstruction only when it lowers the best "
        "held-out MSE so far by this share of it: the MSE creeps down for hundreds of epochs after "
        "it has stopped mattering, so without it pre-training runs to its cap")
    pretrain_val_fraction: float = param(0.2, min=0.01, max=0.5, doc="unlabelled share validating it")
    freeze_encoder: bool = param(False, doc="fine-tune the head only")


@METHODS.register("autoencoder", config=AutoencoderOptions)
class AutoencoderTask(SupervisedTask):

    @property
    def evaluators(self):
        return ("position", "axis_errors", "per_condition", "knn", "mean", "bound")

    def check(self, spec):
        super().check(spec)
        require(self.cfg.model.type in AE_MODELS, f"method 'autoencoder' needs model.type "
                f"{' or '.join(AE_MODELS)} (an encoder to pre-train), got '{self.cfg.model.type}'")
        require(not self.uncertain, "method 'autoencoder' trains a position head only; training.loss "
                f"'{self.cfg.training.loss.type}' needs a sigma head")
        if self.options.pretrain:
            require_unlabelled_pool(self.cfg)

    def pretraining_pool(self, data):
        """(training rows, held-out rows) of the unlabelled pool for the reconstruction stage."""
        pool = np.random.default_rng(self.cfg.runtime.seed).permutation(data.splits.unlabelled)
        n_val = max(1, int(round(self.options.pretrain_val_fraction * len(pool))))
        require(len(pool) > n_val, "method 'autoencoder': the unlabelled pool is too small to "
                "hold out a validation share")
        return np.sort(pool[n_val:]), np.sort(pool[:n_val])

    def build_inputs(self, data):
        inputs = super().build_inputs(data)
        if self.options.pretrain:
            train, val = self.pretraining_pool(data)
            inputs["pretrain"] = data.pipeline.feature_dataset(train, training=True)
            inputs["pretrain_val"] = split_dataset(data, "unlabelled", rows=val)
        return inputs

    def train(self, models, inputs, data, run):
        net = models["inference"]
        encoder = net.get_layer("encoder")
        facts, rows, seconds = {}, 0, 0.0
        if self.options.pretrain:
            t0 = time.time()
            decoder = build_decoder(encoder, self.cfg.model.options, data.spec.feature_shape)

            def recon(x, training):
                f = tf.cast(x["features"], tf.float32)
                err = tf.square(decoder(encoder(f, training=training), training=training) - f)
                return tf.reduce_mean(tf.reshape(err, [tf.shape(f)[0], -1]), axis=1)

            def loss_fn(batch):
                value = tf.reduce_mean(recon(batch[0], True))
                return {"loss": value, "reconstruction_loss": value}
            trainer = TaskTrainer({"encoder": encoder, "decoder": decoder}, loss_fn,
                                  ["loss", "reconstruction_loss"],
                                  lambda x, y: {"reconstruction_mse": recon(x, False)},
                                  ["reconstruction_mse"])
            h = self.fit(trainer, inputs["pretrain"], inputs["pretrain_val"], run, tag="pretrain",
                         epochs=self.options.pretrain_epochs, monitor="val_reconstruction_mse",
                         min_improvement=self.options.pretrain_min_improvement)
            facts["pretraining"] = {**self.history_facts(h, "val_reconstruction_mse"),
                                    "seconds": round(time.time() - t0, 1)}
            models["decoder"] = decoder
            rows += facts["pretraining"]["epochs"] * len(self.pretraining_pool(data)[0])
            seconds += facts["pretraining"]["seconds"]
        if self.options.freeze_encoder:
            encoder.trainable = False
        t0 = time.time()
        finetune = super().train(models, inputs, data, run)
        facts["finetune"] = {**finetune.facts, "seconds": round(time.time() - t0, 1)}
        encoder.trainable = True
        return TrainResult(facts["finetune"], rows=rows + finetune.rows,
                           report={"autoencoder": {"model": self.cfg.model.type, **vars(self.options), **facts}},
                           seconds=seconds + facts["finetune"]["seconds"])
