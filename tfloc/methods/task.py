"""The Task contract every training recipe implements, and the trainer they share.

The runner (:mod:`tfloc.run.runner`) only calls these hooks, in this order; what one hook
hands the next travels in its return value (or the :class:`DataBundle`), never on ``self``:

1. ``check(spec)`` -- before anything is traced: refuse a dataset the method
   cannot use (ConfigError naming the key). Returns nothing.
2. ``load_data(progress)`` -> :class:`DataBundle` -- the traced data (default: the
   config's own site, :func:`tfloc.data.bundle.load_data`).
3. ``build_inputs(data)`` -> dict of tf.data pipelines (``train``, ``val``, ...).
4. ``build_models(spec)`` -> dict of Keras models; ``inference`` is the one that
   is evaluated and served (others: e.g. ``teacher``, ``edge``, ``cloud``).
5. ``train(models, inputs, data, run)`` -> :class:`TrainResult`: training facts, the
   method's report section and the rows it trained on.
6. ``export_modules(models, spec)`` -> the SavedModels the method serves.

Models return dicts of named outputs (``position``, ``condition_probs``, ...);
losses are callables of (labels, outputs); evaluators are chosen in the config
(``evaluation.evaluators``, default :attr:`Task.evaluators`) and declare what they need
of :attr:`Task.evaluated_outputs`.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError, param
from tfloc.data.bundle import DataBundle, load_data
from tfloc.data.spec import DataSpec
from tfloc.export.saved_model import ServingModule
from tfloc.losses import LossConfig
from tfloc.methods.callbacks import (EarlyStopping, FinishedStage, ModelCheckpoint, RecordedHistory,
                                    ReduceLROnPlateau, ResumableBackup, best_epoch, damaged, load_state,
                                    verify_state_file)
from tfloc.sim.tracer import site_panels
from tfloc.utils import atomic_write_json, dtype_policy

log = logging.getLogger("tfloc")

#: class names of the propagation-condition task, by number of classes, and the
#: PathSet condition code (LOS, NLOS-static, NLOS-car) each class collects
CONDITION_CLASSES = {3: (("LOS", "NLOS-static", "NLOS-car"), (0, 1, 2)),
                     2: (("LOS", "NLOS"), (0, 1, 1))}


@dataclass
class TrainingConfig:
    """Optimisation settings shared by every method."""
    epochs: int = param(80, min=1)
    learning_rate: float = param(1e-3, min=0.0)
    loss: LossConfig = param(factory=LossConfig, doc="registered position loss (supervised)")
    early_stopping_patience: int = param(20, min=1)
    reduce_lr_patience: int = param(8, min=1)
    jit_compile: bool = param(False, doc="compile the training step with XLA (on CPU several "
                              "times slower than oneDNN's kernels for these CNNs: docs/performance.md)")
    precision: str = param("float32", choices=["float32", "mixed_bfloat16"],
                           doc="the models' compute precision (variables and outputs stay float32); "
                           "mixed_bfloat16 needs bfloat16 hardware (AVX512-BF16 / AMX or a GPU)")


@dataclass
class TrainingRun:
    """Where a task's fits write, handed to ``train`` by the runner.

    Parameters
    ----------
    directory : the run directory (checkpoints, backups, TensorBoard)
    restore_root : multi-worker runs' other workers: the chief's run directory, resumed from
    resumed : filled by :meth:`Task.fit`: stage -> "restored" (finished in an earlier run) or
        the epoch it went on after; the runner reports it
    convergence : filled by :meth:`Task.fit`: stage -> its epochs, epoch cap, best epoch and
        ``converged`` (False when the best epoch is the last one run: validation was still
        improving); the runner reports it
    earlier_s : training seconds of this run's earlier processes (a killed run resumed), up
        to the last epoch they finished: read from ``checkpoints/training_time.json``, which
        :meth:`save_clock` rewrites after every epoch, by :meth:`start_clock`; None where no
        earlier process recorded its time
    """
    directory: str
    restore_root: str | None = None
    resumed: dict = field(default_factory=dict)
    convergence: dict = field(default_factory=dict)
    earlier_s: float | None = None
    started: float = field(default_factory=time.time)

    @property
    def clock_path(self) -> str:
        return os.path.join(self.directory, "checkpoints", "training_time.json")

    def start_clock(self) -> None:
        """Training starts now; the time earlier processes of this run trained is added."""
        try:
            with open(self.clock_path) as fh:
                self.earlier_s = float(json.load(fh)["training_s"])
        except FileNotFoundError:
            self.earlier_s = None
        except (ValueError, KeyError, TypeError):
            log.warning("%s cannot be read: this run's training time counts only from now",
                        self.clock_path)
            self.earlier_s = None
        self.started = time.time()

    @property
    def training_s(self) -> float:
        """Seconds this run has trained, over every process that worked on it."""
        return (self.earlier_s or 0.0) + time.time() - self.started

    def save_clock(self) -> None:
        """Records :attr:`training_s` (after each finished epoch, where a resume goes on)."""
        os.makedirs(os.path.dirname(self.clock_path), exist_ok=True)
        atomic_write_json(self.clock_path, {"training_s": round(self.training_s, 1)})


@dataclass
class TrainResult:
    """What ``train`` returns for the report (the runner adds ``rows``, ``seconds`` and their
    ratio to ``timings_s`` as ``training_rows``, ``training_rows_s``, ``training_rows_per_s``).

    Parameters
    ----------
    facts : training facts (epochs, best epoch, stage facts), under ``timings_s``
    rows : rows through a training step, summed over epochs and stages (labelled,
        unlabelled, pseudo-labelled and rotated copies counted once each per epoch)
    report : the method's own top-level report entries (e.g. ``{"ensemble": {...}}``)
    seconds : the time those ``rows`` took (None: the whole of ``train``); a stage
        loaded from elsewhere (``init_from``) is left out of both
    """
    facts: dict
    rows: int
    report: dict = field(default_factory=dict)
    seconds: float | None = None


class Task(abc.ABC):
    """A training recipe (the Model Garden's task). Subclasses register with
    ``@METHODS.register(name, config=OptionsDataclass)``.

    Class attributes
    ----------------
    outputs : names of the inference model's outputs that are served
    evaluators : evaluator names run when ``evaluation.evaluators`` is empty
    """
    outputs: tuple = ("position",)
    evaluators: tuple = ("position", "per_condition", "knn", "mean")

    def __init__(self, cfg):
        self.cfg = cfg
        self.options = cfg.method.options

    # -- hooks ---------------------------------------------------------------- #
    def check(self, spec: DataSpec) -> None:
        """Raise ConfigError if the method cannot use data of this spec (before tracing).
        May rely on: the config only. Returns nothing."""

    def load_data(self, progress: bool = True) -> DataBundle:
        """The traced data (default: the config's ``simulation`` and ``data`` sections, see
        :func:`tfloc.data.bundle.load_data`); methods that train on several
        environments override it and return their target's bundle with every environment
        in ``DataBundle.environments``. May rely on: ``check`` has passed."""
        return load_data(self.cfg, progress)

    @abc.abstractmethod
    def build_inputs(self, data: DataBundle) -> dict:
        """Named tf.data pipelines (e.g. ``train``, ``val``) of ``data``."""

    def make_models(self, spec: DataSpec) -> dict:
        """:meth:`build_models` in the configured ``training.precision`` (what the runner
        calls; layers a recipe builds inside ``train`` compute in float32)."""
        with dtype_policy(self.cfg.training.precision):
            return self.build_models(spec)

    @abc.abstractmethod
    def build_models(self, spec: DataSpec) -> dict:
        """Named Keras models; ``inference`` maps model inputs to the output dict. May rely
        on: ``spec`` carries the training targets' statistics."""

    @abc.abstractmethod
    def train(self, models: dict, inputs: dict, data: DataBundle, run: TrainingRun) -> TrainResult:
        """Trains ``models`` (from ``build_models``; a method may replace ``inference``) on
        ``inputs`` (from ``build_inputs(data)``); fits write under ``run`` (use :meth:`fit`).
        Returns the facts, report entries and trained rows (:class:`TrainResult`)."""

    def export_modules(self, models: dict, spec: DataSpec) -> list:
        """SavedModels to write under ``export/<name>/<version>`` (default: one serving module)."""
        return [ServingModule(self.cfg.export.model_name, models["inference"], spec,
                              outputs=self.outputs,
                              metadata={"condition_classes": list(self.class_names)})]

    def site_info(self) -> dict:
        """What model-based evaluators need of the site: ``panels`` (each BS's position,
        azimuth and downtilt) and ``array`` (the BS array's rows, columns, spacings)."""
        sim = self.cfg.simulation
        return {"panels": site_panels(sim)[1], "array": dataclasses.asdict(sim.bs_array)}

    # -- shared helpers ------------------------------------------------------- #
    @property
    def class_names(self) -> tuple:
        """Condition classes the model predicts (empty: no condition head)."""
        return ()

    def condition_classes(self, codes):
        """PathSet condition codes [..] -> class indices of :attr:`class_names` (tf int32)."""
        table = tf.constant(CONDITION_CLASSES[len(self.class_names)][1] + (0,), tf.int32)
        return tf.gather(table, tf.cast(codes, tf.int32))

    @property
    def evaluated_outputs(self) -> tuple:
        """Names of the outputs :meth:`evaluation_outputs` gives (what evaluators may ask
        for, checked before tracing); default: the served :attr:`outputs`."""
        return tuple(self.outputs)

    def evaluation_outputs(self, models: dict, x: dict) -> dict:
        """Test-time outputs (NumPy) of the inference model on model inputs ``x``."""
        out = models["inference"].predict(x, batch_size=256, verbose=0)
        return {k: np.asarray(v) for k, v in out.items() if k != "embedding"}

    @staticmethod
    def history_facts(history, monitor: str = "val_mean_error_m") -> dict:
        """Epochs run, the best epoch by ``monitor`` (under the fit's ``min_improvement``)
        and every validation metric there."""
        h = history.history
        rule = getattr(history, "min_improvement", 0.0)
        best = best_epoch(h[monitor], rule)
        return {"epochs": len(h["loss"]), "best_epoch": best + 1, "monitor": monitor,
                **({"min_improvement": rule} if rule else {}),
                **{f"best_{k}": float(v[best]) for k, v in h.items() if k.startswith("val_")}}

    def fit(self, trainer: "TaskTrainer", train_ds, val_ds, run: TrainingRun, *,
            epochs: int | None = None, monitor: str = "val_mean_error_m", tag: str = "",
            schedule=None, learning_rate: float | None = None, callbacks=(),
            patience: int | None = None, start_from_epoch: int = 0, min_improvement: float = 0.0):
        """Keras fit with the house callbacks: TensorBoard (every loss term), best
        checkpoint, and a schedule: by default early stopping (best weights
        restored) and LR decay on plateau; ``patience`` replaces
        ``training.early_stopping_patience`` for this stage (the plateau patience is at
        most half of it) and early stopping waits ``start_from_epoch`` epochs (e.g. a
        ramp-up) before it counts; with ``min_improvement`` > 0 an epoch is better only
        when it lowers the best so far by that share of it (early stopping, the best
        checkpoint, the LR plateau and the reported best epoch all use this rule, so a
        slow creep ends the stage); ``schedule`` replaces those two by the
        given callbacks (e.g. :class:`tfloc.methods.callbacks.GradualUnfreezing`);
        ``learning_rate`` overrides ``training.learning_rate`` (fine-tuning stages) and
        ``callbacks`` are added (e.g. an EMA teacher's update).

        Every fit survives a kill: ``backup/<tag>`` holds the last finished epoch
        (Keras BackupAndRestore: weights, optimizer, epoch) and a re-run in the same
        run directory goes on from there; a fit that ran to its end leaves its weights
        and history in ``checkpoints/done-<tag>.*`` and a re-run restores them instead
        of training, so multi-stage methods resume at the first unfinished stage. On a
        resumed fit the schedule's counters (patience, plateau) start again; the best
        weights of the whole fit are restored at its end. Resumed and restored stages are
        recorded in ``run.resumed``."""
        t = self.cfg.training
        run_dir = run.directory
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate or t.learning_rate),
                        jit_compile=t.jit_compile)
        stage = tag or "train"
        sub = f"-{tag}" if tag else ""
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        os.makedirs(ckpt_dir, exist_ok=True)
        # a multi-worker run's other workers write a scratch directory and resume from the
        # chief's (``restore_root``: the run directory, on storage every worker sees)
        root = run.restore_root
        done = FinishedStage(os.path.join(ckpt_dir, f"done-{stage}"),
                             root and os.path.join(root, "checkpoints", f"done-{stage}"))
        cap = epochs or t.epochs
        if done.exists:
            record = done.restore(trainer)
            run.resumed[stage] = "restored"
            log.info("stage %s: finished in an earlier run (%d epochs), weights restored",
                     stage, len(record["history"].get("loss", [])))
            run.convergence[stage] = convergence(record["history"], monitor, cap, stage,
                                                 min_improvement)
            return RecordedHistory(record["history"], min_improvement)
        backup = ResumableBackup(os.path.join(run_dir, "backup", stage),
                                 root and os.path.join(root, "backup", stage))
        ckpt = os.path.join(ckpt_dir, f"best{sub}.npz")
        seen = [v[monitor] for v in backup.prior.values() if monitor in v]
        if backup.start_epoch and not root and (os.path.exists(ckpt) or np.isfinite(seen).any()):
            # the best epoch before the interruption lives only in the best checkpoint: read it
            # now, not after the remaining epochs; without it the stage starts again
            try:
                verify_state_file(ckpt)
            except Exception as e:
                log.warning("stage %s: the best checkpoint %s cannot be read (%s); training the "
                            "stage again from its start", stage, ckpt, type(e).__name__)
                shutil.rmtree(backup.backup_dir, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(ckpt)
                backup = ResumableBackup(backup.backup_dir)
        prior = [v[monitor] for _, v in sorted(backup.prior.items()) if monitor in v]
        prior_best = prior[best_epoch(prior, min_improvement)] if prior else None   # under the rule
        if backup.start_epoch:
            log.info("stage %s: resuming after epoch %d (best %s so far %.4g)", stage,
                     backup.start_epoch, monitor, prior_best if prior_best is not None else np.nan)
        callbacks = [
            backup, *callbacks,
            keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: run.save_clock()),
            keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tensorboard", tag),
                                        write_graph=False, update_freq="epoch"),
            ModelCheckpoint(ckpt, monitor=monitor, mode="min", initial_value_threshold=prior_best,
                            min_improvement=min_improvement),
        ]
        stop_patience = patience or t.early_stopping_patience
        plateau_patience = t.reduce_lr_patience if patience is None else \
            min(t.reduce_lr_patience, max(1, patience // 2))
        callbacks += list(schedule) if schedule is not None else [
            EarlyStopping(monitor=monitor, mode="min", patience=stop_patience,
                          restore_best_weights=True, start_from_epoch=start_from_epoch,
                          min_improvement=min_improvement),
            ReduceLROnPlateau(monitor=monitor, mode="min", factor=0.5, patience=plateau_patience,
                              min_lr=1e-5, min_improvement=min_improvement),
        ]
        verbose = self.cfg.runtime.verbose
        if verbose == 1 and not sys.stdout.isatty():
            verbose = 2  # one line per epoch in logs and CI instead of a redrawn bar
        trainer.fit(train_ds, validation_data=val_ds, epochs=cap,
                    callbacks=callbacks, verbose=verbose, shuffle=False)  # tf.data shuffles
        history = backup.history
        # early stopping restores the best epoch it saw; an earlier one (before a kill, or
        # before ``start_from_epoch``) is only in the best checkpoint, which holds the best of all
        seen_from = backup.start_epoch if backup.start_epoch and prior_best is not None else 0
        if schedule is None:
            seen_from = max(seen_from, start_from_epoch)
        if seen_from and best_epoch(history[monitor], min_improvement) < seen_from:
            if root:
                ckpt = os.path.join(root, "checkpoints", os.path.basename(ckpt))
            try:   # the best epoch came before what early stopping saw: the checkpoint's weights
                load_state(trainer, ckpt)
            except Exception as e:
                raise damaged(ckpt, e, "delete it and train this stage from its start") from None
        done.save(trainer, history, {"resumed_at_epoch": backup.start_epoch})
        try:   # backup/ goes once no stage holds a backup
            os.rmdir(os.path.join(run_dir, "backup"))
        except OSError:
            pass
        if backup.start_epoch:
            run.resumed[stage] = backup.start_epoch
        run.convergence[stage] = convergence(history, monitor, cap, stage, min_improvement)
        return RecordedHistory(history, min_improvement)


def convergence(history: dict, monitor: str, cap: int, stage: str = "train",
                min_improvement: float = 0.0) -> dict:
    """A fit's epochs, cap and best epoch by ``monitor`` (:func:`best_epoch` under the fit's
    ``min_improvement``); ``converged`` is False (and a warning says so) when the best epoch
    is the last one run: the validation error was still falling when the fit stopped, so
    the model has not been measured yet."""
    values = history.get(monitor) or []
    run = len(values)
    best = best_epoch(values, min_improvement) + 1 if run and not np.all(np.isnan(values)) else run
    out = {"epochs": run, "epoch_cap": int(cap), "best_epoch": best, "monitor": monitor,
           "converged": bool(run and best < run)}
    if not out["converged"]:
        log.warning("stage %s: not converged: the best %s came at the last epoch run (%d of at "
                    "most %d); raise the stage's epoch cap (training.epochs, or the method's option "
                    "for this stage)", stage, monitor, run, cap)
    return out


class TaskTrainer(keras.Model):
    """Trains named models by a loss function of a batch, inside Keras' fit loop.

    Any recipe (supervised, multi-task, domain adaptation, ...) gets Keras'
    callbacks, progress and TensorBoard by giving:

    - ``loss_fn(batch) -> {"loss": scalar, <term>: scalar, ...}`` computed with
      ``training=True``; every term in ``terms`` is logged per epoch;
    - ``val_fn(x, y) -> {<metric>: [b] per-sample values}`` on labelled
      validation batches (logged with the ``val_`` prefix).

    Parameters
    ----------
    models : dict of keras.Model (their weights, and those of ``extra``, are trained)
    extra : dict of keras.layers.Layer with trainable weights the loss uses
    """

    def __init__(self, models: dict, loss_fn, terms, val_fn, val_metrics, extra=None, **kwargs):
        super().__init__(**kwargs)
        self.nets = dict(models)
        self.extra = dict(extra or {})
        self.loss_fn, self.val_fn = loss_fn, val_fn
        shared = sorted(set(terms) & set(val_metrics))
        if shared:   # Keras reads an epoch's logs by metric name: one would hide the other
            raise ValueError(f"TaskTrainer: {', '.join(shared)} names both a training term and a "
                             "validation metric; give the training term another name (e.g. *_loss)")
        self.term_trackers = [keras.metrics.Mean(name=n) for n in terms]
        self.val_trackers = [keras.metrics.Mean(name=n) for n in val_metrics]
        for layer in self.extra.values():
            if not layer.built:
                layer.build(None)
        self.built = True  # the trained models are built; the trainer itself is never called
        # Keras 3.15 reduces a multi-worker step's outputs with a mean over axis 0, which
        # fails on scalars (tensorflow/tensorflow#72388): there they leave a step as [1]
        self._per_worker = isinstance(tf.distribute.get_strategy(),
                                      tf.distribute.MultiWorkerMirroredStrategy)

    @property
    def metrics(self):
        return self.term_trackers + self.val_trackers

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the optimizer (in the strategy's scope) before ``fit`` traces the step.
        Keras would reduce a first batch across replicas to build compiled losses and
        metrics; a TaskTrainer has none (its models are built), and
        MultiWorkerMirroredStrategy cannot reduce a nested batch (keras 3.15). Without a
        strategy Keras leaves the optimizer to the step's first trace, whose slot variables
        make tf.function trace the whole step a second time."""
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def call(self, x, training=False):
        return self.nets["inference"](x, training=training)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms = self.loss_fn(data)
            # tf.distribute sums the replicas' gradients: each replica's mean loss counts
            # 1/num_replicas, so a step equals one on the whole global batch
            loss = terms["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        for t in self.term_trackers:
            t.update_state(terms[t.name])
        return self._results(self.term_trackers)

    def _results(self, trackers) -> dict:
        if self._per_worker:
            return {t.name: tf.reshape(t.result(), [1]) for t in trackers}
        return {t.name: t.result() for t in trackers}

    def test_step(self, data):
        x, y = data
        values = self.val_fn(x, y)
        for t in self.val_trackers:
            t.update_state(values[t.name])
        return self._results(self.val_trackers)


def position_trainer(models: dict, net, loss, val_fn=None, val_metrics=("mean_error_m",)) -> TaskTrainer:
    """A TaskTrainer of the position ``loss`` (a registered loss's callable) of ``net``'s
    outputs (the plain supervised recipe), validated by ``val_fn(y, outputs) -> {metric: [b]}``
    over ``val_metrics`` (default: the mean position error)."""
    val_fn = val_fn or (lambda y, out: {"mean_error_m": position_error_m(y, out)})

    def loss_fn(batch):
        x, y = batch
        value = tf.reduce_mean(loss(y, net(x, training=True)))
        return {"loss": value, "position_loss": value}
    return TaskTrainer(models, loss_fn, ["loss", "position_loss"],
                       lambda x, y: val_fn(y, net(x, training=False)), list(val_metrics))


def position_error_m(labels, outputs):
    """Per-sample Euclidean error [m] (tf), [b]."""
    return tf.norm(tf.cast(outputs["position"], tf.float32) - tf.cast(labels["position"], tf.float32),
                   axis=-1)


def require(condition: bool, message: str):
    """ConfigError(message) unless ``condition`` (for Task.check)."""
    if not condition:
        raise ConfigError(message)
