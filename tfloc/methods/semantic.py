"""Semantic localization with domain adaptation (seed 002, Chu et al.) and its DA baselines.

One recipe, four registered names that differ only in their defaults:

========  ===========================  ==================  ======================
method    supervised part              condition classes   alignment (target CSI)
========  ===========================  ==================  ======================
``tl``    L_CR                         none                MMD (or CORAL)
``rda``   L_CR                         none                adversarial (GRL)
``mda``   l1 L_CR + l2 L_PCP (eq. 7)   3                   local + global SKL
``hda``   joint NLL, learnt sigmas     3                   local + global SKL
========  ===========================  ==================  ======================

The source domain is the labelled training realizations; the target domain is
unlabelled CSI of other realizations: the test realizations (the paper's
transductive setting, ``target: test``) or a disjoint unlabelled block
(``target: unlabelled``, needs a 4th entry in ``data.realization_splits``).
Target labels are dropped before the data reaches the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from tfloc.config import ConfigError, param
from tfloc.data.bundle import SPLIT_SEED_OFFSETS, split_dataset
from tfloc.layers import GradientReversal
from tfloc.losses import (HomoscedasticWeighting, coral, focal_cross_entropy, global_alignment,
                          lambda_ramp, local_alignment, mmd, standardized_squared_error, weight_l2)
from tfloc.methods.registry import METHODS
from tfloc.methods.task import CONDITION_CLASSES, Task, TaskTrainer, TrainResult, position_error_m, require
from tfloc.models import build_model


@dataclass
class SemanticOptions:
    """Options of the semantic / domain-adaptation recipe (seed 002 eq. 7-17)."""
    num_conditions: int = param(3, choices=[0, 2, 3], doc="condition classes: 3 = LOS, "
                                "NLOS-static, NLOS-car; 2 = LOS, NLOS; 0 = coordinates only")
    # chosen on validation between the paper's 0.7 / 0.3 (Table II) and 0.3 / 0.7 (text)
    coordinate_weight: float = param(0.3, min=0.0, doc="lambda_1 (fixed weighting)")
    condition_weight: float = param(0.7, min=0.0, doc="lambda_2 (fixed weighting)")
    weighting: str = param("fixed", choices=["fixed", "uncertainty"],
                           doc="uncertainty: learnt sigma_1, sigma_2 (HDA, eq. 15-16)")
    focal_gamma: float = param(2.0, min=0.0, doc="focusing parameter of eq. 9 and 12 (0: CE)")
    alignment: str = param("skl", choices=["none", "skl", "mmd", "coral", "adversarial"],
                           doc="skl: local + global SKL (eq. 10-13); mmd/coral: TL baseline; "
                           "adversarial: RDA baseline")
    alignment_weight: float = param(1.0, min=0.0, doc="largest lambda_3")
    ramp: bool = param(True, doc="lambda_3 = weight * (2 / (1 + exp(-10 kappa)) - 1), kappa 0 -> 1")
    ramp_epochs: int = param(40, min=1, doc="kappa's 0 -> 1 takes this many epochs (then "
                             "lambda_3 stays at its largest; independent of training.epochs, "
                             "the cap early stopping works under)")
    weight_decay: float = param(1e-4, min=0.0, doc="lambda_4 of L_WR = 1/2 ||Theta||^2 (the paper's "
                                "weight decay; its lambda_4 search ends at 0.05)")
    target: str = param("test", choices=["test", "unlabelled"],
                        doc="target-domain CSI: the test realizations (transductive, as the "
                        "paper) or the unlabelled block of data.realization_splits")
    domain_units: int = param(128, min=1, doc="hidden units of the RDA domain classifier")

    def validate(self):
        if self.weighting == "uncertainty" and not self.num_conditions:
            raise ConfigError("weighting: 'uncertainty' balances two tasks; num_conditions is 0")
        if self.weighting == "fixed" and self.coordinate_weight == 0 and self.condition_weight == 0:
            raise ConfigError("coordinate_weight and condition_weight are both 0: nothing to learn")
        if self.condition_weight > 0 and self.weighting == "fixed" and not self.num_conditions:
            raise ConfigError("condition_weight > 0 needs num_conditions 2 or 3")


@dataclass
class TLOptions(SemanticOptions):
    num_conditions: int = param(0, choices=[0, 2, 3])
    coordinate_weight: float = param(1.0, min=0.0)
    condition_weight: float = param(0.0, min=0.0)
    alignment: str = param("mmd", choices=["none", "skl", "mmd", "coral", "adversarial"])


@dataclass
class RDAOptions(TLOptions):
    alignment: str = param("adversarial", choices=["none", "skl", "mmd", "coral", "adversarial"])


@dataclass
class HDAOptions(SemanticOptions):
    weighting: str = param("uncertainty", choices=["fixed", "uncertainty"])


class SemanticTask(Task):
    """Multi-task (coordinates + propagation condition) domain adaptation."""

    @property
    def class_names(self):
        n = self.options.num_conditions
        return CONDITION_CLASSES[n][0] if n else ()

    @property
    def outputs(self):
        return ("position", "condition_probs") if self.class_names else ("position",)

    @property
    def evaluators(self):
        return ("position", "per_condition") + (("condition",) if self.class_names else ()) + ("knn", "mean", "bound")

    def check(self, spec):
        o, name = self.options, self.cfg.method.type
        require(spec.links == 1, f"method.{name}: trains on one link per sample; this dataset has "
                f"{spec.links} BSs per sample")
        require(o.num_conditions != 3 or spec.has_car_conditions,
                f"method.{name}.num_conditions: 3 classes need NLOS-by-car labels, and this scene "
                "has no moving cars (simulation.cars.num_realizations: 0); use 2 (LOS/NLOS)")
        d = self.cfg.data
        if o.alignment != "none" and o.target == "unlabelled":
            require(d.split_by != "realization" or len(d.realization_splits) == 4,
                    f"method.{name}.target: 'unlabelled' needs an unlabelled block: "
                    "data.realization_splits: [train, val, test, unlabelled]")

    # -- data ----------------------------------------------------------------- #
    def target_rows(self, data):
        """The target domain's rows: the test split (transductive) or the unlabelled block."""
        return data.splits.test if self.options.target == "test" else data.splits.unlabelled

    def build_inputs(self, data):
        p, s, o, name = data.pipeline, data.splits, self.options, self.cfg.method.type
        target = self.target_rows(data)
        require(len(s.train) > 0, f"method.{name}: the source (labelled training) split is empty")
        require(len(s.val) > 0, f"method.{name}: the validation split is empty")
        source = p.feature_dataset(s.train, training=True)
        val = split_dataset(data, "val")
        if o.alignment == "none":
            return {"train": source.map(lambda x, y: {"source": (x, y)}), "val": val}
        require(len(target) > 0, f"method.{name}.target: the target split ('{o.target}') is empty")
        unlabelled = p.feature_dataset(target, training=True,
                                       split_seed_offset=SPLIT_SEED_OFFSETS["target"]).map(
            lambda x, y: x)  # target labels never reach the trainer
        train = tf.data.Dataset.zip((source, unlabelled.repeat())).map(
            lambda src, xt: {"source": src, "target": xt})
        return {"train": train, "val": val}

    # -- models --------------------------------------------------------------- #
    def build_models(self, spec):
        o = self.options
        net = build_model(self.cfg.model, spec, num_conditions=o.num_conditions)
        models = {"inference": net}
        if o.alignment == "adversarial":
            L = keras.layers
            e = keras.Input(shape=net.output["embedding"].shape[1:], name="embedding")
            h = GradientReversal(name="gradient_reversal")(e)
            for i in range(2):
                h = L.Dense(o.domain_units, activation="relu", name=f"domain_dense{i + 1}")(h)
            # float32 logits under mixed precision, like every served output
            logit = L.Dense(1, name="domain_logit", dtype="float32")(h)
            models["domain_classifier"] = keras.Model(e, logit, name="domain_classifier")
        return models

    # -- training ------------------------------------------------------------- #
    def _terms(self):
        o = self.options
        names = ["loss", "position_loss"]
        if o.num_conditions:
            names.append("condition_loss")
        if o.alignment != "none":
            names += ["alignment_loss", "lambda3"]
        names.append("weight_l2")
        if o.weighting == "uncertainty":
            names += ["sigma1", "sigma2"]
        return names

    def train(self, models, inputs, data, run):
        o = self.options
        net = models["inference"]
        spec = data.spec
        mean = tf.constant(spec.target_mean, tf.float32)
        std = tf.constant(spec.target_std, tf.float32)
        kernels = [v for v in net.trainable_weights if v.path.endswith("kernel")]
        extra = {"uncertainty": HomoscedasticWeighting(o.focal_gamma, name="uncertainty")} \
            if o.weighting == "uncertainty" else {}
        disc = models.get("domain_classifier")
        steps = int(inputs["train"].cardinality()) * o.ramp_epochs
        trainer = None

        def loss_fn(batch):
            xs, ys = batch["source"]
            out_s = net(xs, training=True)
            pos_sq = standardized_squared_error(ys["position"], out_s["position"], spec.target_std)
            terms = {"position_loss": tf.reduce_mean(pos_sq)}
            if o.num_conditions:
                cls = self.condition_classes(ys["condition"])
                terms["condition_loss"] = tf.reduce_mean(
                    focal_cross_entropy(cls, out_s["condition_logits"], o.focal_gamma))
            if o.weighting == "uncertainty":
                hw = extra["uncertainty"]
                sup = tf.reduce_mean(hw([(ys["position"] - mean) / std, (out_s["position"] - mean) / std,
                                         cls, out_s["condition_logits"]]))
                terms["sigma1"], terms["sigma2"] = hw.sigmas
            else:
                sup = o.coordinate_weight * terms["position_loss"]
                if o.num_conditions:
                    sup += o.condition_weight * terms["condition_loss"]
            loss = sup
            if o.alignment != "none":
                out_t = net(batch["target"], training=True)
                align = self._alignment(out_s, out_t, mean, std, disc)
                progress = tf.minimum(tf.cast(trainer.optimizer.iterations, tf.float32) / steps, 1.0)
                lam3 = o.alignment_weight * (lambda_ramp(progress) if o.ramp else 1.0)
                terms["alignment_loss"], terms["lambda3"] = align, lam3
                loss += lam3 * align
            terms["weight_l2"] = weight_l2(kernels)
            terms["loss"] = loss + o.weight_decay * terms["weight_l2"]
            return terms

        val_names = ["mean_error_m"] + (["condition_error"] if o.num_conditions else [])

        def val_fn(x, y):
            out = net(x, training=False)
            vals = {"mean_error_m": position_error_m(y, out)}
            if o.num_conditions:
                pred = tf.argmax(out["condition_probs"], axis=-1, output_type=tf.int32)
                vals["condition_error"] = tf.cast(pred != self.condition_classes(y["condition"]),
                                                  tf.float32)
            return vals
        trainer = TaskTrainer(models, loss_fn, self._terms(), val_fn, val_names, extra=extra)
        # a condition-only ablation (lambda_1 = 0) has no position to select on
        coords_learnt = o.weighting == "uncertainty" or o.coordinate_weight > 0
        monitor = "val_mean_error_m" if coords_learnt else "val_condition_error"
        history = self.fit(trainer, inputs["train"], inputs["val"], run, monitor=monitor)
        facts = self.history_facts(history, monitor)
        report = {
            "source": "labelled training realizations", "n_source": int(len(data.splits.train)),
            "target": ("test realizations, labels unused (transductive)" if o.target == "test"
                       else "disjoint unlabelled block"),
            "n_target": int(len(self.target_rows(data))) if o.alignment != "none" else 0,
            "alignment": o.alignment}
        if extra:
            s1, s2 = extra["uncertainty"].sigmas
            facts.update(sigma1=float(s1), sigma2=float(s2))
            report.update(sigma1=float(s1), sigma2=float(s2))
        return TrainResult(facts, rows=facts["epochs"] * len(data.splits.train),
                           report={"domain_adaptation": report})

    def _alignment(self, out_s, out_t, mean, std, disc):
        o = self.options
        es, et = (tf.cast(out["embedding"], tf.float32) for out in (out_s, out_t))
        if o.alignment == "mmd":
            return mmd(es, et)
        if o.alignment == "coral":
            return coral(es, et)
        if o.alignment == "adversarial":
            logits = tf.concat([disc(es, training=True), disc(et, training=True)], 0)[:, 0]
            domain = tf.concat([tf.ones(tf.shape(es)[:1]), tf.zeros(tf.shape(et)[:1])], 0)
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(domain, logits))
        align = local_alignment(es, et)
        if o.num_conditions:
            # zeta enters the map through a sigmoid of the standardised coordinates:
            # Phi must be non-negative to be normalised into a distribution (eq. 11-12)
            zs = tf.sigmoid((out_s["position"] - mean) / std)
            zt = tf.sigmoid((out_t["position"] - mean) / std)
            align += global_alignment(out_s["condition_probs"], zs, out_t["condition_probs"], zt,
                                      o.focal_gamma)
        return align


@METHODS.register("tl", config=TLOptions)
class TLTask(SemanticTask):
    """Seed 002's TL baseline: coordinates only, source and target features aligned by MMD."""


@METHODS.register("rda", config=RDAOptions)
class RDATask(SemanticTask):
    """Seed 002's RDA baseline: coordinates only, adversarial alignment through a gradient
    reversal layer and a domain classifier."""


@METHODS.register("mda", config=SemanticOptions)
class MDATask(SemanticTask):
    """Seed 002's MDA: coordinates and condition with fixed weights, semantic (SKL) alignment."""


@METHODS.register("hda", config=HDAOptions)
class HDATask(SemanticTask):
    """Seed 002's HDA: MDA with the two tasks balanced by learnt uncertainties (eq. 15-16)."""
