"""Seed 000 section III-B: an ensemble of diverse trained models (``ensemble``).

Stage 1: each member (``members``: its own model, width and seed) is trained on the
labels as ``supervised`` trains one model. Stage 2: their positions are combined by
weighted averaging (weights proportional to 1 / each member's validation mean error:
chosen on validation data, never on the test set) and by consensus voting (the members
agreeing within ``radius_m`` with the most-voted member, averaged;
:class:`tfloc.layers.EnsembleCombine`). The served model holds every member and
serves the combination named by ``serve``; the report shows each member and both
combinations (evaluator ``ensemble``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List

import keras
import numpy as np

from tfloc.config import ConfigError, param
from tfloc.layers import EnsembleCombine
from tfloc.losses import build_loss
from tfloc.methods.registry import METHODS
from tfloc.methods.supervised import SupervisedTask
from tfloc.methods.task import TrainResult, position_trainer
from tfloc.models import ModelConfig, build_model
from tfloc.models.heads import model_inputs


@dataclass
class MemberConfig:
    model: ModelConfig = param(factory=ModelConfig, doc="the member's network (model.type and options)")
    seed: int = param(0, min=0, doc="its weight initialisation and batch order")


def _member(kind: str, seed: int, **options) -> MemberConfig:
    m = MemberConfig(model=ModelConfig(kind), seed=seed)
    for k, v in options.items():
        setattr(m.model.options, k, v)
    return m


def _default_members():
    return [_member("resnet", 0, depth=18, width=32), _member("resnet", 1, depth=18, width=24),
            _member("shufflenet_v2", 2)]


@dataclass
class EnsembleOptions:
    members: List[MemberConfig] = param(factory=_default_members, doc="diverse members (>= 2)")
    radius_m: float = param(5.0, doc="consensus: members within this distance agree")
    serve: str = param("consensus", choices=["weighted", "consensus"], doc="the combination served")

    def validate(self):
        if len(self.members) < 2:
            raise ConfigError(f"members: an ensemble needs at least 2 members, got {len(self.members)}")
        if not self.radius_m > 0:
            raise ConfigError(f"radius_m: must be > 0 m, got {self.radius_m!r}")


@METHODS.register("ensemble", config=EnsembleOptions)
class EnsembleTask(SupervisedTask):

    @property
    def evaluators(self):
        return ("position", "ensemble", "per_condition", "knn", "mean", "bound")

    def check(self, spec):
        super().check(spec)
        if self.uncertain:
            raise ConfigError("method 'ensemble' combines positions; training.loss "
                              f"'{self.cfg.training.loss.type}' would need a sigma head")

    def build_models(self, spec):
        models = {}
        for i, m in enumerate(self.options.members):
            keras.utils.set_random_seed(m.seed)
            models[f"member{i}"] = build_model(m.model, spec, name=f"member{i}_{m.model.type}")
        # the served model is assembled in train(), once the weights are known
        models["inference"] = self._assemble(models, spec, [1.0] * len(self.options.members))
        return models

    def _assemble(self, models, spec, weights):
        L = keras.layers
        inputs = model_inputs(spec)
        members = [models[f"member{i}"] for i in range(len(self.options.members))]
        pos = L.Concatenate(axis=1, name="stack")(
            [L.Reshape((1, spec.position_dims), name=f"member{i}_row")(m(inputs)["position"])
             for i, m in enumerate(members)])
        weighted, consensus, size = EnsembleCombine(weights, self.options.radius_m, name="combine")(pos)
        served = consensus if self.options.serve == "consensus" else weighted
        out = {"position": L.Identity(name="position")(served), "member_positions": pos,
               "position_weighted": weighted, "position_consensus": consensus, "consensus_size": size}
        return keras.Model(inputs, out, name=f"ensemble_{self.options.serve}")

    def train(self, models, inputs, data, run):
        t = self.cfg.training
        facts = []
        for i, m in enumerate(self.options.members):
            t0 = time.time()
            net = models[f"member{i}"]
            keras.utils.set_random_seed(m.seed)
            trainer = position_trainer({"inference": net}, net, build_loss(t.loss, data.spec))
            h = self.history_facts(self.fit(trainer, inputs["train"], inputs["val"], run,
                                            tag=f"member{i}"))
            facts.append({"member": i, "model": m.model.type, "name": net.name, "seed": m.seed,
                          "parameters": int(net.count_params()), **h,
                          "seconds": round(time.time() - t0, 1)})
        val = np.array([f["best_val_mean_error_m"] for f in facts])
        weights = (1.0 / val) / (1.0 / val).sum()
        for f, w in zip(facts, weights):
            f["weight"] = round(float(w), 4)
        models["inference"] = self._assemble(models, data.spec, weights.tolist())
        return TrainResult({"members": len(facts), "member_epochs": [f["epochs"] for f in facts]},
                           rows=sum(f["epochs"] for f in facts) * self.rows_per_epoch(data),
                           report={"ensemble": {"members": facts, "radius_m": self.options.radius_m,
                                                "serve": self.options.serve}})

    @property
    def outputs(self):
        return ("position", "position_weighted", "position_consensus")

    @property
    def evaluated_outputs(self):
        return self.outputs + ("member_positions", "consensus_size")
