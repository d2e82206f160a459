"""Keras callbacks the methods share."""
from __future__ import annotations

import json
import os

import keras
import numpy as np

from tfloc.utils import atomic_write_text, replace_durably


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


class CheckpointError(RuntimeError):
    """A training backup or stage checkpoint is corrupt or truncated (a user-facing error)."""


def damaged(path: str, e: Exception, remedy: str) -> CheckpointError:
    return CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}); {remedy}")


def _state(model) -> list:
    """A training state's variables: the model's weights (trainable or not, in creation order,
    which freezing does not change) and its optimizer's (step, learning rate, moments)."""
    opt = model.optimizer
    return [*model.weights, *(opt.variables if opt is not None else [])]


def save_state(model, path: str):
    """Writes ``model``'s training state to ``path`` (NumPy .npz, one array a variable, with
    each variable's path for a reader), atomically: a kill mid-save leaves the previous file.
    Several times faster than Keras' ``.weights.h5`` for a network of a few hundred
    variables, which a per-epoch backup pays every epoch."""
    vs = _state(model)
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(vs)}
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    with open(tmp, "wb") as fh:
        np.savez(fh, paths=np.array([v.path for v in vs]), **arrays)
    replace_durably(tmp, path)


def verify_state_file(path: str) -> int:
    """Reads every array of a :func:`save_state` file (so a truncated or damaged one fails
    here, by zip's checksums); returns how many variables it holds."""
    with np.load(path, allow_pickle=False) as z:
        if "paths" not in z.files:
            raise ValueError("not a training state file (no 'paths' entry)")
        for name in z.files:
            z[name]
        return len(z.files) - 1


def load_state(model, path: str):
    """Assigns the state :func:`save_state` wrote to ``model``'s variables, in order; a file
    that does not hold one array of the right shape per variable is a ``ValueError``."""
    vs = _state(model)
    with np.load(path, allow_pickle=False) as z:
        n = len(z.files) - 1
        if n != len(vs):
            raise ValueError(f"{n} variables, the model has {len(vs)}")
        values = [z[f"v{i}"] for i in range(n)]
    for i, (v, a) in enumerate(zip(vs, values)):
        if tuple(a.shape) != tuple(v.shape):
            raise ValueError(f"variable {i} ({v.path}) has shape {tuple(v.shape)}, the file {a.shape}")
    for v, a in zip(vs, values):
        v.assign(a)


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, with every epoch's logs kept beside the backup so a resumed
    fit's history is whole, atomic writes (a kill mid-save leaves the previous backup), and
    a one-line :class:`CheckpointError` naming the file when a backup cannot be read.

    The order of an epoch's save is logs, weights (model and optimizer: :func:`save_state`),
    then the epoch counter, so a kill at any point resumes at an epoch whose weights and logs
    exist.

    Attributes: ``start_epoch`` (0: a fresh fit), ``prior`` (logs of the epochs before it),
    ``history`` (every epoch's logs after the fit, as ``History.history``).
    """

    def __init__(self, backup_dir: str, restore_dir: str | None = None):
        super().__init__(backup_dir)
        self._logs_path = os.path.join(backup_dir, "epochs.json")
        self._weights_path = os.path.join(backup_dir, "latest.npz")
        # where to resume from: this backup, or (a multi-worker run's other workers) the chief's
        src = restore_dir or backup_dir
        self._restore = {k: os.path.join(src, f) for k, f in
                         (("meta", "training_metadata.json"), ("logs", "epochs.json"),
                          ("weights", "latest.npz"))}
        self.start_epoch, self.prior, self.epochs = 0, {}, {}
        if os.path.exists(self._restore["meta"]):
            self.start_epoch = int(self._read_json(self._restore["meta"], "epoch"))
            if os.path.exists(self._restore["logs"]):
                logs = self._read_json(self._restore["logs"])
                self.prior = {int(e): v for e, v in logs.items() if int(e) < self.start_epoch}
        self.epochs = dict(self.prior)

    def _read_json(self, path, key=None):
        try:
            with open(path) as fh:
                data = json.load(fh)
            return data[key] if key else dict(data)
        except (ValueError, KeyError, TypeError) as e:
            raise damaged(path, e, f"delete {self.backup_dir} to train this stage from its start") from None

    def on_train_begin(self, logs=None):
        if not self.start_epoch:
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            load_state(self.model, self._restore["weights"])
        except Exception as e:  # NumPy raises OSError, ValueError, KeyError or zipfile's by the damage
            raise damaged(self._restore["weights"], e,
                           f"delete {self.backup_dir} to train this stage from its start") from None
        self.model._initial_epoch = self.start_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = {k: float(v) for k, v in (logs or {}).items()}
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        atomic_write_text(self._logs_path, json.dumps({str(e): v for e, v in self.epochs.items()}))
        save_state(self.model, self._weights_path)
        atomic_write_text(self._training_metadata_path, json.dumps({"epoch": self._current_epoch}))

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None
        super().on_train_end(logs)

    @property
    def history(self) -> dict:
        keys = sorted({k for v in self.epochs.values() for k in v})
        order = sorted(self.epochs)
        return {k: [self.epochs[e].get(k, float("nan")) for e in order] for k in keys}


class FinishedStage:
    """A fit that ran to its end: the trained weights (without optimizer state) and the
    history, at ``<prefix>.weights.h5`` and ``<prefix>.json``; a re-run skips the fit and
    restores them, so a multi-stage method resumes at the first stage that did not finish."""

    def __init__(self, prefix: str, restore_prefix: str | None = None):
        self.weights, self.record = prefix + ".weights.h5", prefix + ".json"
        src = restore_prefix or prefix   # a multi-worker run's other workers read the chief's
        self.src_weights, self.src_record = src + ".weights.h5", src + ".json"

    @property
    def exists(self) -> bool:
        return os.path.isfile(self.src_record) and os.path.isfile(self.src_weights)

    def save(self, trainer, history: dict, facts: dict):
        tmp = os.path.join(os.path.dirname(self.weights), ".tmp-" + os.path.basename(self.weights))
        with _without_optimizer(trainer):
            trainer.save_weights(tmp, overwrite=True)
        replace_durably(tmp, self.weights)
        atomic_write_text(self.record, json.dumps({"history": history, **facts}))

    def restore(self, trainer) -> dict:
        """Loads the weights into ``trainer``; returns the record (``history``, facts)."""
        try:
            with open(self.src_record) as fh:
                record = json.load(fh)
            record["history"]
        except (ValueError, KeyError, TypeError) as e:
            raise damaged(self.src_record, e, "delete it to train this stage again") from None
        try:
            with _without_optimizer(trainer):
                trainer.load_weights(self.src_weights)
        except Exception as e:
            raise damaged(self.src_weights, e, "delete it to train this stage again") from None
        return record


class _without_optimizer:
    """Hides a model's optimizer while its weights are saved or loaded (stage results keep
    the weights only: the next stage compiles its own optimizer)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.optimizer, self.model.optimizer = self.model.optimizer, None

    def __exit__(self, *exc):
        self.model.optimizer = self.optimizer


class RecordedHistory:
    """A ``keras.callbacks.History`` stand-in for a fit whose history was recorded;
    ``min_improvement`` is the fit's rule for a better epoch (:func:`best_epoch`)."""

    def __init__(self, history: dict, min_improvement: float = 0.0):
        self.history = history
        self.min_improvement = float(min_improvement)


def improves(value, reference, min_improvement: float = 0.0) -> bool:
    """Whether ``value`` is better (lower) than ``reference``: by more than
    ``min_improvement`` x |reference| when that is positive (a relative threshold, which
    suits a monitor whose scale is not known in advance, e.g. a reconstruction MSE)."""
    if reference is None:       # nothing to beat yet (Keras' convention)
        return True
    value, reference = float(value), float(reference)
    if not np.isfinite(reference):
        return value < reference
    return value < reference - float(min_improvement) * abs(reference)


def best_epoch(values, min_improvement: float = 0.0) -> int:
    """0-based index of the best epoch of a minimised monitor under :func:`improves`: an
    epoch is the new best only when it improves on the best so far (by the relative
    ``min_improvement``); with 0 that is the (first) minimum. NaN epochs never count."""
    best, index = np.inf, 0
    for i, v in enumerate(values):
        if improves(v, best, min_improvement):
            best, index = float(v), i
    return index


def with_min_improvement(callback_cls):
    """``callback_cls`` (a Keras monitor callback in "min" mode: EarlyStopping,
    ModelCheckpoint, ReduceLROnPlateau) whose improvements follow :func:`improves` with
    the ``min_improvement`` keyword, so stopping, the checkpoint, the LR schedule and
    :func:`best_epoch` agree on which epoch is best. With 0 the class is unchanged."""

    class Relative(callback_cls):
        def __init__(self, *args, min_improvement: float = 0.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.min_improvement = float(min_improvement)

        def _is_improvement(self, monitor_value, reference_value):
            if not self.min_improvement:
                return super()._is_improvement(monitor_value, reference_value)
            return improves(monitor_value, reference_value, self.min_improvement)

    Relative.__name__ = Relative.__qualname__ = f"Relative{callback_cls.__name__}"
    return Relative


class BestStateCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint with ``save_best_only``, writing the training state of each
    better epoch to ``path`` with :func:`save_state`; read it back with :func:`load_state`."""

    def __init__(self, path: str, **kwargs):
        super().__init__(path + ".weights.h5", save_weights_only=True, save_best_only=True,
                         **kwargs)   # Keras checks its own suffix; the file written is ``path``
        self.filepath = path

    def _save_model(self, epoch, batch, logs):
        if self._should_save_model(epoch, batch, logs, self.filepath):
            save_state(self.model, self.filepath)


EarlyStopping = with_min_improvement(keras.callbacks.EarlyStopping)
ModelCheckpoint = with_min_improvement(BestStateCheckpoint)
ReduceLROnPlateau = with_min_improvement(keras.callbacks.ReduceLROnPlateau)
