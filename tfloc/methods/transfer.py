"""Transfer to an unseen environment (seed 001, Foliadis et al.): ``scratch``, ``dtl``, ``meml``.

The model is two parts, f = g_env(phi(H)) (:mod:`tfloc.models.pooling_cnn`).

- ``scratch``: a fresh model trained on the target environment only.
- ``dtl`` (direct transfer): phi and one head trained on one source
  environment, then phi moved to the target with a fresh head.
- ``meml`` (multi-environment meta-learning, eq. 5-6): phi shared over N_B
  source environments, one head g_n each; then phi moved to the target with a
  fresh head.

Target training by ``fine_tune`` (everything trains from the start) or
``gradual_unfreezing`` (the head trains with phi frozen until validation stops
improving, then everything at a lower learning rate). Source and target losses
are registered position losses: ``mse`` (eq. 3), ``gaussian_nll`` (eq. 4, the
model then serves ``position_std``) or ``gaussian_crps`` (eq. 9 as a loss).

Environments are named ``<site config>[/bs<k>|/sector<k>]``
(:func:`tfloc.data.environments.environment_ref`): each names a data config under
``configs/data`` whose ``simulation`` section is traced (cached). The run's own
``data`` section synthesises the CSI of every environment alike; its
``simulation`` section is not used. Every environment is seen through the same
``sub_array`` of its BS array, as seed 001 cuts a 4 x 2 sub-array out of its
target's 8 x 4 URA.

Protocol (seed 001 section III): the target's test set is a fixed
``test_fraction`` of its samples; ``target_fraction`` of the rest is used and
split into ``num_folds`` folds, fold ``fold`` validating and the others training.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from typing import List

import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError, param
from tfloc.data.bundle import DataBundle, split_dataset
from tfloc.data.environments import (Environment, environment_ref, load_environment, measured_environment,
                                     multi_environment_dataset)
from tfloc.data.features import feature_shape
from tfloc.data.measured import MeasuredPipeline
from tfloc.data.pipeline import CSIPipeline, Splits
from tfloc.data.spec import DataSpec
from tfloc.losses import UNCERTAINTY_LOSSES, LossConfig, build_loss, gaussian_crps
from tfloc.methods.callbacks import GradualUnfreezing
from tfloc.methods.registry import METHODS
from tfloc.methods.task import Task, TaskTrainer, TrainResult, position_error_m, position_trainer, require
from tfloc.models.pooling_cnn import build_head, build_phi, compose

TRANSFER_LOSSES = ["mse", "gaussian_nll", "gaussian_crps"]


@dataclass
class TargetOptions:
    """The target environment and how its data is used (every transfer method)."""
    target: str = param("campus_ground/bs5", doc="the unseen environment: <site config>[/bs<k>], or "
                        "a measured-CSI file (.npz / .h5: sim-to-real)")
    sub_array: List[int] = param(factory=lambda: [2, 4], min=1,
                                 doc="[rows, cols]: every environment's BS array is cut to this "
                                 "top-left sub-array, first polarisation (seed 001: 4 x 2 of 8 x 4)")
    target_loss: str = param("gaussian_nll", choices=TRANSFER_LOSSES,
                             doc="mse (eq. 3) or gaussian_nll (eq. 4: serves position_std)")
    target_fraction: float = param(1.0, min=0.01, max=1.0,
                                   doc="share of the target's training pool used (seed 001: 0.2-1.0)")
    test_fraction: float = param(0.2, min=0.01, max=0.9,
                                 doc="the target's fixed test set, the same for every fold and fraction")
    num_folds: int = param(5, min=2, doc="k of the k-fold cross-validation on the target pool")
    fold: int = param(0, min=0, doc="the fold that validates (the others train)")

    def validate(self):
        if len(self.sub_array) != 2:
            raise ConfigError(f"sub_array: expected [rows, cols], got {self.sub_array!r}")
        if self.fold >= self.num_folds:
            raise ConfigError(f"fold: {self.fold} is not one of the {self.num_folds} folds "
                              f"(0..{self.num_folds - 1})")


@dataclass
class TransferOptions(TargetOptions):
    """Sources and the two-stage schedule (``dtl``, ``meml``)."""
    sources: List[str] = param(factory=lambda: [f"campus_ground/bs{k}" for k in range(5)],
                               doc="source environments, one head each")
    source_loss: str = param("gaussian_nll", choices=TRANSFER_LOSSES)
    source_epochs: int = param(150, min=1, doc="at most this many epochs of the source stage "
                               "(early stopping on the sources' validation error)")
    source_val_fraction: float = param(0.1, min=0.01, max=0.5,
                                       doc="share of each source validating the source stage")
    target_training: str = param("gradual_unfreezing", choices=["fine_tune", "gradual_unfreezing"])
    unfreeze_lr_factor: float = param(0.1, min=0.0, max=1.0,
                                      doc="gradual unfreezing: learning rate factor once phi thaws")
    unfreeze_patience: int = param(3, min=1, doc="gradual unfreezing: epochs without a better "
                                   "validation error before phi thaws (then "
                                   "training.early_stopping_patience ends the run)")


@dataclass
class DTLOptions(TransferOptions):
    sources: List[str] = param(factory=lambda: ["campus_ground/bs0"],
                               doc="the one source environment")
    target_training: str = param("fine_tune", choices=["fine_tune", "gradual_unfreezing"])


def target_splits(num_samples: int, opts: TargetOptions, seed: int) -> Splits:
    """Fixed test set, then ``target_fraction`` of the pool in ``num_folds`` folds.

    The pool's order is fixed by ``seed``, so a smaller fraction is a subset of a
    larger one and every fold and fraction is scored on the same test samples.
    """
    perm = np.random.default_rng(seed).permutation(num_samples)
    n_test = max(1, int(round(opts.test_fraction * num_samples)))
    test, pool = perm[:n_test], perm[n_test:]
    used = pool[:int(round(opts.target_fraction * len(pool)))]
    if opts.num_folds > len(used):
        raise ConfigError(f"method num_folds: {opts.num_folds} folds need at least as many "
                          f"samples; the target {opts.target!r} has {len(used)} at "
                          f"target_fraction {opts.target_fraction:g}")
    folds = np.array_split(used, opts.num_folds)
    val = folds[opts.fold]
    train = np.concatenate([f for i, f in enumerate(folds) if i != opts.fold])
    empty = np.zeros(0, np.int64)
    return Splits(train=np.sort(train), val=np.sort(val), test=np.sort(test),
                  unlabelled=np.sort(pool[len(used):]), no_path=empty)


def environment_spec(cfg, sub_array, target_positions=None):
    """The DataSpec of single-link environments seen through a ``sub_array`` (no tracing)."""
    d = cfg.data
    rows, cols = sub_array
    kept = -(-d.num_subcarriers // d.subcarrier_stride)
    csi = (d.num_slots, rows * cols, kept, 2)
    spec = DataSpec(site="single_bs", links=1, csi_shape=csi,
                    feature_shape=tuple(feature_shape(csi, d.num_delay_taps, d.representation,
                                                      (rows, cols, 1))),
                    position_dims=d.position_dims, num_sectors=0, has_car_conditions=False,
                    num_delay_taps=d.num_delay_taps, representation=d.representation,
                    normalization=d.normalization, array_shape=(rows, cols, 1))
    return spec if target_positions is None else spec.with_targets(target_positions)


class _TransferBase(Task):
    """Shared by scratch, dtl and meml: environments, target protocol, target training."""
    pretrained = True          # phi comes from a source stage

    @property
    def uncertain(self) -> bool:
        return self.options.target_loss in UNCERTAINTY_LOSSES

    @property
    def outputs(self):
        if not self.uncertain:
            return ("position",)
        full = self.cfg.model.type == "pooling_cnn" and self.cfg.model.options.covariance == "full"
        return ("position", "position_std") + (("position_scale_tril",) if full else ())

    @property
    def evaluators(self):
        return ("position", "per_condition", "knn", "mean") + (("calibration",) if self.uncertain else ())

    @property
    def source_names(self) -> list:
        return []

    def environment_refs(self) -> dict:
        """{name: EnvironmentRef} of the sources and the target, checked against their site
        configs (no tracing)."""
        return {n: environment_ref(n) for n in self.source_names + [self.options.target]}

    # -- hooks ---------------------------------------------------------------- #
    def check(self, spec):
        o, name = self.options, self.cfg.method.type
        require(self.cfg.model.type == "pooling_cnn",
                f"model.type: method '{name}' moves phi between environments and needs the "
                f"two-part model 'pooling_cnn', not '{self.cfg.model.type}'")
        losses = [o.target_loss] + ([o.source_loss] if self.source_names else [])
        require(all(loss in TRANSFER_LOSSES for loss in losses),
                f"method.{name}: losses must be among {TRANSFER_LOSSES}")
        refs = self.environment_refs()
        require(o.target not in self.source_names,
                f"method.{name}.target: {o.target!r} is also a source; the target must be unseen")
        require(len(set(self.source_names)) == len(self.source_names),
                f"method.{name}.sources: {self.source_names} names an environment twice")
        for ref in refs.values():
            rows, cols, _ = ref.array_shape
            require(o.sub_array[0] <= rows and o.sub_array[1] <= cols,
                    f"method.{name}.sub_array: a {o.sub_array[0]} x {o.sub_array[1]} sub-array does "
                    f"not fit {ref.name!r}'s {rows} x {cols} array")

    def load_data(self, progress: bool = True) -> DataBundle:
        cfg, o = self.cfg, self.options
        data_cfg = replace(cfg.data, use_sector=False)
        seed = cfg.runtime.seed
        shape = (o.sub_array[0], o.sub_array[1], 1)
        envs, counts = {}, {}
        for name, ref in self.environment_refs().items():
            # seeded by the environment's name: its splits and noise draws are the same
            # whichever method, source list or role it has in a run (equal terms)
            i = zlib.crc32(name.encode()) % 100_000
            csi = None
            if ref.kind == "measured":      # a measurement campaign (sim-to-real)
                ps, csi = measured_environment(ref, o.sub_array, data_cfg.num_subcarriers)
            else:
                ps = load_environment(ref, cfg.runtime.cache_dir, o.sub_array, progress)
            n_links = ps.num_ue
            keep = np.flatnonzero(ps.num_paths > 0)      # a link with no path is no sample
            ps = ps.select(keep)
            csi = None if csi is None else csi[keep]
            if ps.num_ue < 2:
                raise ConfigError(f"environment {name!r} has {ps.num_ue} samples with paths")
            if name == o.target:
                splits = target_splits(ps.num_ue, o, seed)
            else:
                perm = np.random.default_rng(seed + 1 + i).permutation(ps.num_ue)
                n_val = max(1, int(round(o.source_val_fraction * ps.num_ue)))
                empty = np.zeros(0, np.int64)
                splits = Splits(train=np.sort(perm[n_val:]), val=np.sort(perm[:n_val]),
                                test=empty, unlabelled=empty, no_path=empty)
            pipe = (CSIPipeline(ps, data_cfg, seed + i, shape, ref.simulation.frequency_hz) if csi is None
                    else MeasuredPipeline(ps, csi, data_cfg, seed + i, shape, cfg.simulation.frequency_hz))
            envs[name] = Environment(name, ps, splits, pipe)
            counts[name] = {"samples": int(ps.num_ue), "no_path": int(n_links - ps.num_ue),
                            "los_share": round(float(ps.los.mean()), 3),
                            **{k: int(len(getattr(splits, k))) for k in ("train", "val", "test")}}
        t = envs[o.target]
        spec = environment_spec(cfg, o.sub_array, t.paths.positions[t.splits.train])
        return DataBundle(t.paths, t.pipeline, t.splits, spec,
                          {"environment": o.target, "environments": counts}, environments=envs)

    def build_inputs(self, data):
        inputs = {"train": data.pipeline.feature_dataset(data.splits.train, training=True),
                  "val": split_dataset(data, "val")}
        if self.source_names and self.phi_weights is None:
            inputs["source_train"] = multi_environment_dataset(
                data.environments, self.source_names, "train", training=True, seed=self.cfg.runtime.seed)
            inputs["source_val"] = multi_environment_dataset(
                data.environments, self.source_names, "val", training=False)
        return inputs

    def build_models(self, spec):
        m = self.cfg.model.options
        phi = build_phi(m, spec)   # named "phi": the inference model's layer that moves
        head = build_head(m, spec, int(phi.output.shape[-1]), position_std=self.uncertain,
                          name="g_target")
        return {"inference": compose(phi, head, spec, name=self.cfg.method.type)}

    #: phi's weights to reuse instead of training a source stage: an input a caller sets
    #: before ``train`` (a study shares one source stage between the target runs that have the
    #: same one, reading the trained phi from ``models["inference"].get_layer("phi")``; see
    #: tfloc.studies.seed001)
    phi_weights = None

    def train(self, models, inputs, data, run):
        o = self.options
        phi = models["inference"].get_layer("phi")
        facts, rows = {}, 0
        if self.source_names and self.phi_weights is not None:
            phi.set_weights(self.phi_weights)
            facts["source"] = {"reused": True}
        elif self.source_names:
            facts["source"] = self.train_sources(phi, inputs, data, run)
            rows += facts["source"]["epochs"] * facts["source"]["samples"]
        facts["target"] = self.train_target(models, inputs, data, run)
        rows += facts["target"]["epochs"] * len(data.splits.train)
        report = {"transfer": {
            "method": self.cfg.method.type, "target": o.target, "sources": self.source_names,
            "sub_array": list(o.sub_array), "target_loss": o.target_loss,
            "target_fraction": o.target_fraction, "fold": o.fold, "num_folds": o.num_folds,
            "environments": data.info["environments"]}}
        return TrainResult(facts, rows=rows, report=report)

    # -- stages --------------------------------------------------------------- #
    def train_sources(self, phi, inputs, data, run) -> dict:
        """phi and one head per source environment, each sample through its own head (eq. 5)."""
        o, m = self.options, self.cfg.model.options
        sigma = o.source_loss in UNCERTAINTY_LOSSES
        z_dim = int(phi.output.shape[-1])
        heads, losses = [], []
        for i, name in enumerate(self.source_names):
            env = data.environments[name]
            spec = data.spec.with_targets(env.paths.positions[env.splits.train])
            heads.append(build_head(m, spec, z_dim, position_std=sigma, name=f"g_source{i}"))
            losses.append(build_loss(LossConfig(o.source_loss), spec))

        def outputs(x, training):
            z = phi(x["features"], training=training)
            return [h(z, training=training) for h in heads]

        def loss_fn(batch):
            x, y = batch
            outs = outputs(x, True)
            per_head = tf.stack([f(y, out) for f, out in zip(losses, outs)], axis=1)   # [b, N_B]
            value = tf.reduce_mean(tf.gather(per_head, x["environment"], batch_dims=1))
            return {"loss": value, "source_loss": value}

        def val_fn(x, y):
            pos = tf.stack([out["position"] for out in outputs(x, False)], axis=1)   # [b, N_B, D]
            own = tf.gather(pos, x["environment"], batch_dims=1)
            return {"mean_error_m": position_error_m(y, {"position": own})}
        trainer = TaskTrainer({"phi": phi, **{h.name: h for h in heads}}, loss_fn,
                              ["loss", "source_loss"], val_fn, ["mean_error_m"])
        t0 = time.time()
        history = self.fit(trainer, inputs["source_train"], inputs["source_val"], run,
                           epochs=o.source_epochs, tag="source")
        n = sum(len(data.environments[s].splits.train) for s in self.source_names)
        facts = self.history_facts(history)
        elapsed = time.time() - t0
        return {**facts, "elapsed_s": round(elapsed, 1), "samples": n,
                "samples_per_s": round(n * facts["epochs"] / elapsed, 1)}

    def train_target(self, models, inputs, data, run) -> dict:
        """The target's model (phi transferred or fresh, a fresh head) on the target's folds."""
        net, o = models["inference"], self.options
        loss = build_loss(LossConfig(o.target_loss), data.spec)
        sigma = self.uncertain

        def val_fn(y, out):
            values = {"mean_error_m": position_error_m(y, out)}
            if sigma:
                values["crps_m"] = tf.reduce_mean(
                    gaussian_crps(y["position"], out["position"], out["position_std"]), axis=-1)
            return values
        metrics = ["mean_error_m"] + (["crps_m"] if sigma else [])
        trainer = position_trainer(models, net, loss, val_fn, metrics)
        schedule = None
        if self.pretrained and getattr(o, "target_training", "fine_tune") == "gradual_unfreezing":
            schedule = [GradualUnfreezing([net.get_layer("phi")], patience=o.unfreeze_patience,
                                          final_patience=self.cfg.training.early_stopping_patience,
                                          lr_factor=o.unfreeze_lr_factor)]
        history = self.fit(trainer, inputs["train"], inputs["val"], run, tag="target",
                           schedule=schedule)
        facts = self.history_facts(history)
        if schedule:
            facts["unfrozen_epoch"] = schedule[0].unfrozen_epoch
        return facts


@METHODS.register("scratch", config=TargetOptions)
class ScratchTask(_TransferBase):
    """The target environment only, from random weights (seed 001's 'Scratch')."""
    pretrained = False


@METHODS.register("dtl", config=DTLOptions)
class DTLTask(_TransferBase):
    """Direct transfer: phi and a head on one source, then phi to the target with a fresh head."""

    @property
    def source_names(self):
        return list(self.options.sources)

    def check(self, spec):
        require(len(self.options.sources) == 1, f"method.dtl.sources: direct transfer trains on "
                f"one source environment, got {len(self.options.sources)}")
        super().check(spec)


@METHODS.register("meml", config=TransferOptions)
class MEMLTask(_TransferBase):
    """Multi-environment meta-learning: phi shared over N_B sources (one head each), then
    moved to the target with a fresh head (seed 001 eq. 5-6, Fig. 1-2)."""

    @property
    def source_names(self):
        return list(self.options.sources)

    def check(self, spec):
        require(len(self.options.sources) >= 2, "method.meml.sources: multi-environment training "
                f"needs at least two source environments, got {len(self.options.sources)} (use dtl)")
        super().check(spec)
