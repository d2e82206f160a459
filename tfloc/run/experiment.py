"""The experiment config root: one tree of every section, loaded from YAML.

Sections live beside their owners (``tfloc.sim.config``, ``tfloc.data.config``,
the model, loss and method registries, ``tfloc.evaluation``, ``tfloc.export``);
this module assembles them, applies ``YAML file <- --set`` overrides and runs
the cross-section checks. Name checks that need a component loaded (a scene
file) happen in the runner before any work (:func:`tfloc.run.runner.make_task`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from tfloc.config import ConfigError, merge, param, parse_override, load_yaml_overrides, validate_tree
from tfloc.data.config import DataConfig
from tfloc.evaluation.config import EvaluationConfig
from tfloc.export.config import ExportConfig
from tfloc.methods.registry import MethodConfig
from tfloc.methods.task import TrainingConfig
from tfloc.models.registry import ModelConfig
from tfloc.run.config import RuntimeConfig, TuningConfig
from tfloc.sim.config import SimulationConfig

# importing the packages registers their components (and option dataclasses)
import tfloc.models  # noqa: F401,E402
import tfloc.losses  # noqa: F401,E402
import tfloc.methods  # noqa: F401,E402


@dataclass
class ExperimentConfig:
    name: str = param("experiment")
    method: MethodConfig = param(factory=MethodConfig)
    simulation: SimulationConfig = param(factory=SimulationConfig)
    data: DataConfig = param(factory=DataConfig)
    model: ModelConfig = param(factory=ModelConfig)
    training: TrainingConfig = param(factory=TrainingConfig)
    evaluation: EvaluationConfig = param(factory=EvaluationConfig)
    export: ExportConfig = param(factory=ExportConfig)
    runtime: RuntimeConfig = param(factory=RuntimeConfig)
    tuning: TuningConfig = param(factory=TuningConfig)

    @property
    def num_model_sectors(self) -> int:
        """Sectors the model is told about (0: the model takes CSI alone)."""
        return len(self.simulation.sector_azimuths_deg) if self.data.use_sector else 0

    def validate(self):
        """Checks that span sections."""
        sim, data = self.simulation, self.data
        if data.split_by == "realization" and \
                sum(data.realization_splits) > max(sim.cars.num_realizations, 1):
            raise ConfigError(f"data.realization_splits: {data.realization_splits} needs "
                              f"{sum(data.realization_splits)} realizations, "
                              f"simulation.cars.num_realizations is {sim.cars.num_realizations}")


def _apply(cfg, mapping: dict, source: str):
    try:
        merge(cfg, mapping, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Registered defaults <- YAML file (after its ``base:`` chain) <- ``--set`` overrides.

    Every ConfigError message starts with the file (or ``--set``) it came from.
    """
    cfg = ExperimentConfig()
    if path is not None:
        for source, mapping in load_yaml_overrides(path):
            _apply(cfg, mapping, source)
    for text in overrides:
        keys, value = parse_override(text)
        nested = value
        for k in reversed(keys):
            nested = {k: nested}
        _apply(cfg, nested, f"--set {text}")
    try:
        validate_tree(cfg)
    except ConfigError as e:
        raise ConfigError(f"{os.fspath(path) if path is not None else '--set'}: {e}") from None
    return cfg


def apply_overrides(cfg: ExperimentConfig, values: dict) -> ExperimentConfig:
    """Sets dotted keys (``{"training.learning_rate": 0.01}``) in ``cfg`` and re-checks the
    tree (ConfigError naming the key)."""
    for key, value in values.items():
        nested = value
        for k in reversed(key.split(".")):
            nested = {k: nested}
        merge(cfg, nested, "")
    validate_tree(cfg)
    return cfg


def from_dict(data: dict) -> ExperimentConfig:
    cfg = ExperimentConfig()
    merge(cfg, data, "")
    validate_tree(cfg)
    return cfg


def load_run_config(path: str) -> ExperimentConfig:
    """The resolved config a run wrote (``config.yaml``)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{os.path.dirname(path) or '.'}: not a run directory "
                          f"({os.path.basename(path)} missing)")
    with open(path) as fh:
        try:
            return from_dict(yaml.safe_load(fh))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
