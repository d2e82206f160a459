"""Label-scarce positioning with an unlabelled pool (seed 000 section III-A and Table II):
``consistency`` (the paper's framework), and its baselines ``mean_teacher``, ``fixmatch``
and ``fixmatch_distance``.

Every method starts like ``supervised``: stage 1 trains the configured model on the
labelled split (``training.*``, early stopping on the labelled validation split). The
baselines then train on labelled and unlabelled batches together from that model, so
the four methods differ only in how they use the unlabelled CSI.

- ``consistency``: stage 2 labels the unlabelled pool twice, by two interpolators of
  the labelled anchors in the model's feature space (:data:`INTERPOLATORS`); a copy of
  the model is fine-tuned on each pseudo-labelled set (models A and B); an unlabelled
  UE is kept when A and B place it within ``radius_m`` of each other, labelled by the
  mean of the two. Stage 3 fine-tunes the model on the labels and the kept
  pseudo-labels. ``iterations`` repeats stages 2-3, the kept UEs joining the anchors.
- ``mean_teacher`` (Tarvainen and Valpola 2017): the served model is an exponential
  moving average of the trained one; the student's position on a strongly impaired
  view of an unlabelled UE is pulled to the teacher's on a weakly impaired view.
- ``fixmatch`` (Sohn et al. 2020), regression form: the model's own position on the
  weak view is the target of its position on the strong view. A position has no
  class confidence, so plain ``fixmatch`` keeps every target (the paper: "confidence
  thresholding proves ineffective"); ``fixmatch_distance`` keeps a target only where
  the weak and strong positions agree within ``distance_m`` (the paper's distance
  threshold).

Views are physical impairments of the same channel (:class:`tfloc.data.config.AugmentConfig`:
SNR, timing advance, blanked subcarriers, dropped antenna ports), never image flips.

In simulation the unlabelled UEs' true positions are known; they are used only for
diagnostics (the true error of the pseudo-labels kept, logged per iteration or per
epoch), never in a loss.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import List

import keras
import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError, param
from tfloc.data.bundle import fixed_set
from tfloc.data.config import AugmentConfig
from tfloc.losses import build_loss
from tfloc.methods.registry import METHODS
from tfloc.methods.supervised import SupervisedTask
from tfloc.methods.task import TaskTrainer, TrainResult, position_error_m, position_trainer, require
from tfloc.metrics import error_summary
from tfloc.models import build_model
from tfloc.registry import Registry

log = logging.getLogger("tfloc")

#: pseudo-labellers: ``fit_predict(anchor_features, anchor_positions, query_features,
#: options, rng) -> positions`` of the queries
INTERPOLATORS: Registry = Registry("interpolator")


@INTERPOLATORS.register("idw")
def idw(anchors, positions, queries, opts, rng):
    """Inverse-distance weighting of the ``neighbors`` nearest anchors in feature space:
    local, no fitted parameters, never leaves the anchors' convex hull."""
    from sklearn.neighbors import KNeighborsRegressor
    k = min(opts.neighbors, len(anchors))
    return KNeighborsRegressor(n_neighbors=k, weights="distance").fit(anchors, positions).predict(queries)


@INTERPOLATORS.register("knn_mean")
def knn_mean(anchors, positions, queries, opts, rng):
    """Unweighted mean of the ``neighbors`` nearest anchors in feature space."""
    from sklearn.neighbors import KNeighborsRegressor
    k = min(opts.neighbors, len(anchors))
    return KNeighborsRegressor(n_neighbors=k).fit(anchors, positions).predict(queries)


@INTERPOLATORS.register("kriging")
def kriging(anchors, positions, queries, opts, rng):
    """Gaussian-process regression (kriging) from features to position: global, a
    smooth fit whose length scales (one per principal feature axis) and noise level
    are learnt by maximum marginal likelihood; it extrapolates where IDW cannot. The
    features are reduced to ``kriging_dims`` principal components and at most
    ``kriging_anchors`` anchors are used (a GP fit costs O(n^3))."""
    import warnings
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    if len(anchors) > opts.kriging_anchors:
        pick = rng.choice(len(anchors), opts.kriging_anchors, replace=False)
        anchors, positions = anchors[pick], positions[pick]
    dims = min(opts.kriging_dims, anchors.shape[1], len(anchors))
    pca = PCA(n_components=dims, random_state=0).fit(anchors)
    a, q = pca.transform(anchors), pca.transform(queries)
    scale = a.std(axis=0) + 1e-6
    kernel = ConstantKernel(1.0) * RBF(length_scale=np.ones(dims)) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=0)
    with warnings.catch_warnings():   # an axis whose length scale runs to its bound is one
        warnings.simplefilter("ignore", ConvergenceWarning)   # the fit found irrelevant
        return gp.fit(a / scale, positions).predict(q / scale)


# --------------------------------------------------------------------------- #
# options                                                                      #
# --------------------------------------------------------------------------- #
@dataclass
class Stage1Options:
    init_from: str = param("", doc="a finished run directory of the same model and data: its "
                           "model is stage 1 (no supervised pre-training here); empty: train it")


@dataclass
class ConsistencyOptions(Stage1Options):
    interpolators: List[str] = param(factory=lambda: ["idw", "kriging"],
                                doc="the two pseudo-labellers of stage 2 (INTERPOLATORS)")
    neighbors: int = param(8, min=1, doc="anchors per query (idw, knn_mean)")
    kriging_dims: int = param(16, min=1, doc="principal feature axes the GP sees")
    kriging_anchors: int = param(1500, min=10, doc="most anchors a GP is fitted on")
    radius_m: float = param(3.0, doc="keep an unlabelled UE when models A and B agree within r")
    iterations: int = param(2, min=1, doc="K: rounds of stages 2-3")
    finetune_epochs: int = param(30, min=1, doc="at most this many epochs of each fine-tuning "
                                 "(models A, B, stage 3), ended by early stopping")
    finetune_patience: int = param(3, min=1, doc="epochs without a better validation error that "
                                   "end a fine-tuning")
    finetune_lr_factor: float = param(0.1, min=0.0, max=1.0,
                                      doc="fine-tuning learning rate / training.learning_rate")
    finetune_batch_size: int = param(32, min=1)

    def validate(self):
        if not self.radius_m > 0:
            raise ConfigError(f"radius_m: must be > 0 m, got {self.radius_m!r}")
        if len(self.interpolators) != 2 or len(set(self.interpolators)) != 2:
            raise ConfigError(f"interpolators: expected two different names, got {self.interpolators!r}")
        for name in self.interpolators:
            if name not in INTERPOLATORS:
                raise ConfigError(f"interpolators: unknown '{name}' (registered: "
                                  f"{', '.join(INTERPOLATORS.names())})")


def _weak():
    return AugmentConfig(snr_db=[20.0, 20.0], ta_max_ns=5.0)


def _strong():
    return AugmentConfig(snr_db=[0.0, 10.0], ta_max_ns=20.0, subcarrier_mask_fraction=0.25,
                         antenna_dropout=0.1)


@dataclass
class UnlabelledOptions(Stage1Options):
    """Joint training on labelled and unlabelled batches (mean_teacher, fixmatch)."""
    semi_epochs: int = param(60, min=1, doc="at most this many epochs after stage 1, each one "
                             "pass over the labels (early stopping after the ramp-up)")
    semi_patience: int = param(5, min=1, doc="epochs without a better validation error that end "
                               "the semi-supervised stage (counted once the ramp-up is over)")
    unlabelled_ratio: int = param(2, min=1, doc="mu: unlabelled batch = mu x data.batch_size")
    unlabelled_weight: float = param(1.0, min=0.0, doc="weight of the consistency term")
    rampup_epochs: int = param(5, min=0, doc="the weight ramps up as exp(-5 (1 - t)^2)")
    semi_lr_factor: float = param(0.1, min=0.0, max=1.0, doc="learning rate / training.learning_rate "
                                  "(stage 1 ends near a tenth of it after its plateau decays)")
    weak: AugmentConfig = param(factory=_weak, doc="the weak view (teacher / pseudo-label side)")
    strong: AugmentConfig = param(factory=_strong, doc="the strong view (trained side)")


@dataclass
class MeanTeacherOptions(UnlabelledOptions):
    ema_decay: float = param(0.99, min=0.0, max=1.0, doc="teacher = EMA of the student's weights")


@dataclass
class FixMatchOptions(UnlabelledOptions):
    distance_m: float = param(0.0, min=0.0, doc="keep a pseudo-label when weak and strong agree "
                              "within this distance; 0: keep every one")


@dataclass
class FixMatchDistanceOptions(FixMatchOptions):
    distance_m: float = param(3.0, min=0.0, doc="keep a pseudo-label when weak and strong "
                              "positions agree within this distance [m]")

    def validate(self):
        if not self.distance_m > 0:
            raise ConfigError(f"distance_m: must be > 0 m for fixmatch_distance, got {self.distance_m!r} "
                              "(method fixmatch keeps every pseudo-label)")


# --------------------------------------------------------------------------- #
# shared                                                                       #
# --------------------------------------------------------------------------- #
class _SemiSupervised(SupervisedTask):
    """Stage 1 (supervised pre-training) and the unlabelled pool, for every method here."""

    def check(self, spec):
        super().check(spec)
        name = self.cfg.method.type
        require_unlabelled_pool(self.cfg)
        require(not self.uncertain, f"method '{name}' trains a position head only; "
                f"training.loss '{self.cfg.training.loss.type}' needs a sigma head")
        init = self.options.init_from
        require(not init or os.path.isfile(os.path.join(init, "model.keras")),
                f"method.{name}.init_from: {init!r} is not a finished run (no model.keras in it)")

    def build_inputs(self, data):
        require(len(data.splits.unlabelled) > 0, f"method '{self.cfg.method.type}': the unlabelled "
                "pool is empty (every UE with paths is labelled, validation or test)")
        return super().build_inputs(data)

    def pretrain(self, models, inputs, data, run) -> dict:
        """Stage 1: supervised on the labels (``training.*``), or ``init_from``'s model."""
        t0 = time.time()
        net = models["inference"]
        if self.options.init_from:
            return {"stage1": {"init_from": self._load_stage1(net), "seconds": round(time.time() - t0, 1)}}
        trainer = position_trainer({"inference": net}, net, build_loss(self.cfg.training.loss, data.spec))
        facts = self.history_facts(self.fit(trainer, inputs["train"], inputs["val"], run, tag="stage1"))
        return {"stage1": {**facts, "seconds": round(time.time() - t0, 1)}}

    def _load_stage1(self, net) -> str:
        path = os.path.join(self.options.init_from, "model.keras")
        src = keras.models.load_model(path)
        shapes = [w.shape for w in src.weights], [w.shape for w in net.weights]
        if shapes[0] != shapes[1]:
            raise ConfigError(f"method.{self.cfg.method.type}.init_from: {path} holds '{src.name}', "
                              f"not the configured {net.name} (weights differ in shape)")
        a, b = (m.get_layer("position").get_config() for m in (src, net))
        if not np.allclose([a["offset"], a["scale"]], [b["offset"], b["scale"]], rtol=1e-4):
            raise ConfigError(f"method.{self.cfg.method.type}.init_from: {path} was trained on other "
                              "labels (their mean and spread differ: another site, split or seed)")
        net.set_weights(src.get_weights())
        log.info("stage 1: weights of %s", path)
        return path

    def clone(self, net, spec, name):
        """A new model of the configured architecture with ``net``'s weights."""
        copy = build_model(self.cfg.model, spec, name=name)
        copy.set_weights(net.get_weights())
        return copy


def require_unlabelled_pool(cfg):
    """ConfigError unless the data config leaves UEs unlabelled (before tracing)."""
    d, name = cfg.data, cfg.method.type
    if d.split_by == "random":
        rest = 1.0 - d.labelled_fraction - d.val_fraction - d.test_fraction
        require(rest > 1e-6, f"method '{name}' needs an unlabelled pool: data.labelled_fraction + "
                f"val_fraction + test_fraction = {1 - rest:g} leaves none")
    else:
        require(len(d.realization_splits) == 4 and d.realization_splits[3] > 0,
                f"method '{name}' needs an unlabelled pool: give data.realization_splits a 4th "
                "entry (unlabelled realizations)")


def _summary(err) -> dict:
    """The count and :func:`tfloc.metrics.error_summary` of errors (none: the count alone)."""
    err = np.asarray(err, np.float64)
    return {"n": int(err.size), **(error_summary(err) if err.size else {})}


# --------------------------------------------------------------------------- #
# consistency                                                                  #
# --------------------------------------------------------------------------- #
@METHODS.register("consistency", config=ConsistencyOptions)
class ConsistencyTask(_SemiSupervised):
    """Seed 000's semi-supervised framework with consistency (Fig. 2, stages 1-3, iterated)."""

    def train(self, models, inputs, data, run):
        o, net, spec = self.options, models["inference"], data.spec
        facts = self.pretrain(models, inputs, data, run)
        s = data.splits
        rng = np.random.default_rng(self.cfg.runtime.seed)
        dims = self.cfg.data.position_dims
        x_lab, y_lab = fixed_set(data, "train")
        x_unl, y_unl = fixed_set(data, "unlabelled")   # y_unl: diagnostics only
        true_unl = y_unl["position"]
        kept_idx, kept_pos = np.zeros(0, np.int64), np.zeros((0, dims), np.float32)
        rounds, rows = [], 0
        writer = tf.summary.create_file_writer(os.path.join(run.directory, "tensorboard", "pseudo_labels"))
        lr = self.cfg.training.learning_rate * o.finetune_lr_factor
        for k in range(1, o.iterations + 1):
            t0 = time.time()
            # stage 2a: two pseudo-labelled sets by two interpolators in feature space
            f_lab, f_unl = self._features(net, x_lab, spec), self._features(net, x_unl, spec)
            anchors = np.concatenate([f_lab, f_unl[kept_idx]])
            anchor_pos = np.concatenate([y_lab["position"], kept_pos])
            mu, sd = anchors.mean(0), anchors.std(0) + 1e-6
            pseudo = {n: INTERPOLATORS.get(n)((anchors - mu) / sd, anchor_pos, (f_unl - mu) / sd, o, rng)
                      .astype(np.float32) for n in o.interpolators}
            # stage 2b: fine-tune model A and model B, one on each set
            preds, fine = {}, {}
            for tag, n in zip("AB", o.interpolators):
                m = self.clone(net, spec, f"model_{tag}")
                h = self._finetune(m, np.concatenate([s.train, s.unlabelled]),
                                   np.concatenate([y_lab["position"], pseudo[n]]),
                                   inputs["val"], data, run, f"iter{k}-model{tag}", lr)
                fine[tag] = h
                rows += h["epochs"] * (len(s.train) + len(s.unlabelled))
                preds[tag] = m.predict(x_unl, batch_size=256, verbose=0)["position"]
            # stage 2c: keep where A and B agree within r; the label is their mean
            gap = np.linalg.norm(preds["A"] - preds["B"], axis=-1)
            kept_idx = np.flatnonzero(gap < o.radius_m)
            kept_pos = (0.5 * (preds["A"] + preds["B"]))[kept_idx].astype(np.float32)
            err = np.linalg.norm(kept_pos - true_unl[kept_idx], axis=-1)
            rejected = np.setdiff1d(np.arange(len(gap)), kept_idx)
            rej_err = np.linalg.norm(0.5 * (preds["A"] + preds["B"])[rejected] - true_unl[rejected], axis=-1)
            # stage 3: fine-tune the model on the labels and the kept pseudo-labels
            h3 = self._finetune(net, np.concatenate([s.train, s.unlabelled[kept_idx]]),
                                np.concatenate([y_lab["position"], kept_pos]),
                                inputs["val"], data, run, f"iter{k}-stage3", lr)
            rows += h3["epochs"] * (len(s.train) + len(kept_idx))
            r = {"iteration": k, "anchors": int(len(anchors)),
                 "pseudo_error": {n: _summary(np.linalg.norm(pseudo[n] - true_unl, axis=-1))
                                  for n in o.interpolators},
                 "model_val_mean_m": {t: round(fine[t]["best_val_mean_error_m"], 3) for t in "AB"},
                 "kept": int(len(kept_idx)), "kept_fraction": round(len(kept_idx) / len(gap), 4),
                 "kept_error": _summary(err), "rejected_error": _summary(rej_err),
                 "val_mean_m": round(h3["best_val_mean_error_m"], 3),
                 "seconds": round(time.time() - t0, 1)}
            rounds.append(r)
            log.info("consistency iteration %d: kept %d of %d unlabelled UEs (%.1f %%), their true "
                     "error mean %.2f m (rejected: %.2f m); validation %.2f m", k, r["kept"], len(gap),
                     100 * r["kept_fraction"], r["kept_error"].get("mean_m", float("nan")),
                     r["rejected_error"].get("mean_m", float("nan")), r["val_mean_m"])
            with writer.as_default():
                tf.summary.scalar("kept", r["kept"], step=k)
                tf.summary.scalar("kept_true_error_mean_m", r["kept_error"].get("mean_m", 0.0), step=k)
                for n in o.interpolators:
                    tf.summary.scalar(f"pseudo_{n}_true_error_mean_m", r["pseudo_error"][n]["mean_m"], step=k)
                tf.summary.scalar("val_mean_error_m", r["val_mean_m"], step=k)
        writer.close()
        return TrainResult(
            {**facts, "iterations": len(rounds), "final_val_mean_error_m": rounds[-1]["val_mean_m"]},
            rows=rows, seconds=sum(r["seconds"] for r in rounds),   # stage 1 is supervised training
            report={"semi_supervised": {
                "method": "consistency", "interpolators": list(o.interpolators), "radius_m": o.radius_m,
                "n_unlabelled": int(len(s.unlabelled)), "iterations": rounds, **facts}})

    @staticmethod
    def _features(net, x, spec):
        """The model's shared features, with the serving sector (when fed) as a far-apart
        one-hot block so neighbours are found within a sector."""
        f = np.asarray(net.predict(x, batch_size=256, verbose=0)["embedding"], np.float64)
        if "sector" in x and spec.num_sectors:
            f = (f - f.mean(0)) / (f.std(0) + 1e-6)
            onehot = np.eye(spec.num_sectors)[np.asarray(x["sector"])] * 1e3
            f = np.concatenate([f, onehot], axis=1)
        return f

    def _finetune(self, net, rows, positions, val, data, run, tag, lr) -> dict:
        ds = data.pipeline.feature_dataset(rows, training=True, positions=positions,
                                           batch_size=self.options.finetune_batch_size)
        trainer = position_trainer({"inference": net}, net, build_loss(self.cfg.training.loss, data.spec))
        return self.history_facts(self.fit(trainer, ds, val, run, tag=tag, learning_rate=lr,
                                           epochs=self.options.finetune_epochs,
                                           patience=self.options.finetune_patience))


# --------------------------------------------------------------------------- #
# mean teacher and fixmatch                                                    #
# --------------------------------------------------------------------------- #
class _RampUp(keras.callbacks.Callback):
    """Sets ``weight`` to exp(-5 (1 - t)^2) x ``full`` with t = epoch / ``epochs`` (Laine and Aila)."""

    def __init__(self, weight: tf.Variable, full: float, epochs: int):
        super().__init__()
        self.weight, self.full, self.epochs = weight, float(full), int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        t = min(1.0, epoch / self.epochs) if self.epochs else 1.0
        self.weight.assign(self.full * float(np.exp(-5.0 * (1.0 - t) ** 2)))


class _EMA(keras.callbacks.Callback):
    """After every batch: teacher <- decay x teacher + (1 - decay) x student (every weight,
    batch-norm statistics included)."""

    def __init__(self, teacher, student, decay: float):
        super().__init__()
        pairs = list(zip(teacher.weights, student.weights))
        d = float(decay)

        @tf.function
        def update():
            for t, s in pairs:
                t.assign(d * t + (1.0 - d) * s)
        self.update = update

    def on_train_batch_end(self, batch, logs=None):
        self.update()


class _JointTask(_SemiSupervised):
    """Labelled and unlabelled batches together, after stage 1.

    Every pass runs in inference mode (``training=False``: batch-norm statistics frozen at
    stage 1's, gradients still flow), as when fine-tuning a converged network. In training
    mode the strong views' statistics pulled the served normalisation away (etoile
    validation 9 m -> 15-17 m); with only the unlabelled passes frozen, batch-norm's scale
    invariance in the labelled (training-mode) pass left the frozen path free to blow up
    (validation error of 10^5 m)."""
    consistency_name = ""

    def unlabelled_dataset(self, data):
        o, d = self.options, self.cfg.data
        ds = data.pipeline.feature_dataset(data.splits.unlabelled, training=True,
                                           batch_size=o.unlabelled_ratio * d.batch_size,
                                           views={"weak": o.weak, "strong": o.strong})
        return ds.repeat()

    def joint_dataset(self, inputs, data):
        return tf.data.Dataset.zip((inputs["train"], self.unlabelled_dataset(data))).prefetch(tf.data.AUTOTUNE)

    @staticmethod
    def view(x, name):
        return {**x, "features": x["features"][name]}

    def train(self, models, inputs, data, run):
        o = self.options
        facts = self.pretrain(models, inputs, data, run)
        weight = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        trainer, callbacks = self.joint_trainer(models, weight, data.spec)
        callbacks = [_RampUp(weight, o.unlabelled_weight, o.rampup_epochs), *callbacks]
        t0 = time.time()
        history = self.fit(trainer, self.joint_dataset(inputs, data), inputs["val"], run, tag="semi",
                           epochs=o.semi_epochs, learning_rate=self.cfg.training.learning_rate *
                           o.semi_lr_factor, callbacks=callbacks, patience=o.semi_patience,
                           start_from_epoch=o.rampup_epochs)
        semi = {**self.history_facts(history), "seconds": round(time.time() - t0, 1)}
        h = history.history
        semi["per_epoch"] = {k: [round(float(v), 4) for v in h[k]] for k in
                             ("pseudo_kept", "pseudo_true_error_m", "consistency_loss") if k in h}
        n_lab = len(data.splits.train)
        return TrainResult(
            {**facts, "semi_epochs": semi["epochs"], "semi_best_epoch": semi["best_epoch"]},
            rows=semi["epochs"] * n_lab * (1 + o.unlabelled_ratio), seconds=semi["seconds"],
            report={"semi_supervised": {"method": self.cfg.method.type,
                                        "n_unlabelled": int(len(data.splits.unlabelled)),
                                        **facts, "semi": semi}})

    @staticmethod
    def scaled_sq(a, b, spec):
        """Squared distance per sample in units of the labels' spread."""
        s = tf.constant(spec.target_std, tf.float32)
        return tf.reduce_sum(tf.square((a - b) / s), axis=-1)


@METHODS.register("mean_teacher", config=MeanTeacherOptions)
class MeanTeacherTask(_JointTask):
    """Serves the EMA teacher; validation watches the teacher."""

    def build_models(self, spec):
        student = build_model(self.cfg.model, spec, name=f"{self.cfg.model.type}_student")
        return {"inference": build_model(self.cfg.model, spec), "student": student}

    def pretrain(self, models, inputs, data, run):
        student = models["student"]
        facts = super().pretrain({"inference": student}, inputs, data, run)
        models["inference"].set_weights(student.get_weights())
        return facts

    def joint_trainer(self, models, weight, spec):
        teacher, student = models["inference"], models["student"]
        loss = build_loss(self.cfg.training.loss, spec)

        def loss_fn(batch):
            (x, y), (xu, yu) = batch
            sup = tf.reduce_mean(loss(y, student(x, training=False)))          # see _JointTask
            ps = student(self.view(xu, "strong"), training=False)["position"]
            pt = tf.stop_gradient(teacher(self.view(xu, "weak"), training=False)["position"])
            cons = tf.reduce_mean(self.scaled_sq(ps, pt, spec))
            return {"loss": sup + weight * cons, "position_loss": sup, "consistency_loss": cons,
                    "pseudo_kept": tf.constant(1.0),
                    "pseudo_true_error_m": tf.reduce_mean(position_error_m(yu, {"position": pt}))}

        def val_fn(x, y):
            return {"mean_error_m": position_error_m(y, teacher(x, training=False))}
        terms = ["loss", "position_loss", "consistency_loss", "pseudo_kept", "pseudo_true_error_m"]
        trainer = TaskTrainer({"inference": teacher, "student": student}, loss_fn, terms, val_fn,
                              ["mean_error_m"])
        return trainer, [_EMA(teacher, student, self.options.ema_decay)]


@METHODS.register("fixmatch", config=FixMatchOptions)
class FixMatchTask(_JointTask):
    """One model: its weak-view position (no gradient) is the target on the strong view."""

    def joint_trainer(self, models, weight, spec):
        net, d = models["inference"], self.options.distance_m
        loss = build_loss(self.cfg.training.loss, spec)

        def loss_fn(batch):
            (x, y), (xu, yu) = batch
            sup = tf.reduce_mean(loss(y, net(x, training=False)))              # see _JointTask
            pw = tf.stop_gradient(net(self.view(xu, "weak"), training=False)["position"])
            ps = net(self.view(xu, "strong"), training=False)["position"]
            if d > 0:
                keep = tf.cast(tf.norm(ps - pw, axis=-1) < d, tf.float32)
            else:
                keep = tf.ones(tf.shape(pw)[:1], tf.float32)
            cons = tf.reduce_mean(keep * self.scaled_sq(ps, pw, spec))   # over all mu*B (FixMatch)
            true_err = position_error_m(yu, {"position": pw})
            kept_err = tf.math.divide_no_nan(tf.reduce_sum(keep * true_err), tf.reduce_sum(keep))
            return {"loss": sup + weight * cons, "position_loss": sup, "consistency_loss": cons,
                    "pseudo_kept": tf.reduce_mean(keep), "pseudo_true_error_m": kept_err}

        def val_fn(x, y):
            return {"mean_error_m": position_error_m(y, net(x, training=False))}
        terms = ["loss", "position_loss", "consistency_loss", "pseudo_kept", "pseudo_true_error_m"]
        return TaskTrainer({"inference": net}, loss_fn, terms, val_fn, ["mean_error_m"]), []


@METHODS.register("fixmatch_distance", config=FixMatchDistanceOptions)
class FixMatchDistanceTask(FixMatchTask):
    """FixMatch with the paper's distance threshold (``distance_m`` > 0)."""
