"""Supervised training on the labelled split (seed 000 stage 1; seed 002's DCNN baseline)."""
from __future__ import annotations

from tfloc.data.bundle import split_dataset
from tfloc.losses import UNCERTAINTY_LOSSES, build_loss
from tfloc.methods.registry import METHODS
from tfloc.methods.task import Task, TrainResult, position_trainer, require
from tfloc.models import build_model


@METHODS.register("supervised")
class SupervisedTask(Task):
    """One model, coordinates only, trained on the labelled training split with
    ``training.loss``; fresh TA and noise every epoch, fixed validation draws."""

    def check(self, spec):
        require(spec.links == 1, f"method '{self.cfg.method.type}' trains on one link per sample; "
                f"this dataset has {spec.links} BSs per sample (a multi-BS method is needed)")

    def build_inputs(self, data):
        return {"train": data.pipeline.feature_dataset(data.splits.train, training=True),
                "val": split_dataset(data, "val")}

    @property
    def uncertain(self) -> bool:
        """Trained with a likelihood loss: the model also serves ``position_std``."""
        return self.cfg.training.loss.type in UNCERTAINTY_LOSSES

    @property
    def outputs(self):
        return ("position", "position_std") if self.uncertain else ("position",)

    @property
    def evaluators(self):
        sectors = ("per_sector",) if self.cfg.num_model_sectors else ()
        return (("position", *sectors, "per_condition", "knn", "mean") + (("calibration",) if self.uncertain else ())
                + ("bound",))

    def build_models(self, spec):
        return {"inference": build_model(self.cfg.model, spec, position_std=self.uncertain)}

    def train(self, models, inputs, data, run):
        trainer = position_trainer(models, models["inference"],
                                   build_loss(self.cfg.training.loss, data.spec))
        facts = self.history_facts(self.fit(trainer, inputs["train"], inputs["val"], run))
        return TrainResult(facts, rows=facts["epochs"] * self.rows_per_epoch(data))

    def rows_per_epoch(self, data) -> int:
        """Rows of one training epoch (the labelled split)."""
        return len(data.splits.train)

