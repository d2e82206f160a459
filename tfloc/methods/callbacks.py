"""Keras callbacks the methods share."""
from __future__ import annotations

import keras
import numpy as np


class GradualUnfreezing(keras.callbacks.Callback):
    """Train the head first, then everything at a lower learning rate (seed 001, after
    Howard and Ruder's ULMFiT).

    Phase 1: the ``frozen`` parts (e.g. a transferred feature extractor phi) are
    not trainable; the rest trains until ``monitor`` has not improved for
    ``patience`` epochs. Phase 2: the best phase-1 weights are restored, the
    frozen parts become trainable, the learning rate is multiplied by
    ``lr_factor``, and training goes on until ``monitor`` stalls for
    ``final_patience`` epochs (default ``patience``); the best weights of the
    whole run are restored at the end.

    The optimizer is built over every variable before the freeze, so its slots
    exist when the frozen variables join, and the train function is retraced at
    each switch (Keras traces the trainable variable list once per function).

    Attributes after training: ``unfrozen_epoch`` (1-based epoch phase 2 began
    at, None if it never did), ``best_epoch``, ``phase``.
    """

    def __init__(self, frozen, monitor: str = "val_mean_error_m", patience: int = 5,
                 lr_factor: float = 0.1, min_delta: float = 0.0, final_patience: int | None = None):
        super().__init__()
        self.frozen = list(frozen)
        self.monitor, self.patience = monitor, int(patience)
        self.final_patience = int(final_patience if final_patience is not None else patience)
        self.lr_factor, self.min_delta = float(lr_factor), float(min_delta)

    def _set_frozen(self, frozen: bool):
        for part in self.frozen:
            part.trainable = not frozen
        self.model.make_train_function(force=True)

    def on_train_begin(self, logs=None):
        opt = self.model.optimizer
        if not opt.built:
            opt.build(self.model.trainable_variables)
        self._set_frozen(True)
        self.phase, self.wait, self.best = 1, 0, np.inf
        self.best_weights, self.best_epoch, self.unfrozen_epoch = None, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"GradualUnfreezing monitors {self.monitor!r}, not in the logs "
                           f"{sorted(logs or {})}")
        if value < self.best - self.min_delta:
            self.best, self.wait, self.best_epoch = float(value), 0, epoch + 1
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait < (self.patience if self.phase == 1 else self.final_patience):
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if self.phase == 1:
            self.phase, self.wait, self.unfrozen_epoch = 2, 0, epoch + 2
            opt = self.model.optimizer
            opt.learning_rate = float(opt.learning_rate) * self.lr_factor
            self._set_frozen(False)
        else:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
