"""Supervised training on the labelled split (seed 000, stage 1 / single model)."""
from __future__ import annotations

import os
import sys

import keras
import numpy as np

from tfloc.config import ExperimentConfig
from tfloc.losses import build_loss
from tfloc.methods.registry import METHODS
from tfloc.metrics import MeanDistanceError
from tfloc.models import build_model


@METHODS.register("supervised")
class SupervisedTask:
    """Task object in the Model Garden sense: inputs, model, losses, metrics, training.

    Parameters
    ----------
    cfg : ExperimentConfig
    """

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    def build_inputs(self, pipeline, splits) -> dict:
        """Training set (fresh noise each epoch) and fixed-noise validation set."""
        return {"train": pipeline.feature_dataset(splits.train, training=True),
                "val": pipeline.feature_dataset(splits.val, training=False, split_seed_offset=2)}

    def build_model(self, input_shape, train_positions: np.ndarray) -> keras.Model:
        # Standardise targets inside the model: the net predicts ~N(0, 1) coordinates.
        offset = train_positions.mean(axis=0)
        scale = train_positions.std(axis=0) + 1e-6
        return build_model(self.cfg.model, input_shape, output_dim=2, target_offset=offset,
                           target_scale=scale, num_sectors=self.cfg.num_model_sectors)

    def build_losses(self):
        return build_loss(self.cfg.training.loss)

    def build_metrics(self):
        return [MeanDistanceError()]

    def train(self, model: keras.Model, inputs: dict, run_dir: str):
        t = self.cfg.training
        model.compile(optimizer=keras.optimizers.Adam(t.learning_rate),
                      loss=self.build_losses(), metrics=self.build_metrics())
        monitor = "val_mean_error_m"
        callbacks = [
            keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tensorboard"),
                                        write_graph=False, update_freq="epoch"),
            keras.callbacks.ModelCheckpoint(os.path.join(run_dir, "checkpoints", "best.weights.h5"),
                                            monitor=monitor, mode="min", save_best_only=True,
                                            save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=t.early_stopping_patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="min", factor=0.5,
                                              patience=t.reduce_lr_patience, min_lr=1e-5),
        ]
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        verbose = self.cfg.runtime.verbose
        if verbose == 1 and not sys.stdout.isatty():
            verbose = 2  # one line per epoch in logs and CI instead of a redrawn bar
        return model.fit(inputs["train"], validation_data=inputs["val"], epochs=t.epochs,
                         callbacks=callbacks, verbose=verbose,
                         shuffle=False)  # tf.data shuffles
