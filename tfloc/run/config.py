"""The run floor's own config sections: ``runtime`` (seed, directories, distribution) and
``tuning`` (the keras-tuner search space, :mod:`tfloc.run.tuning`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

from tfloc.config import param


@dataclass
class RuntimeConfig:
    seed: int = param(7, min=0)
    runs_dir: str = param("runs")
    cache_dir: str = param("cache")
    verbose: int = param(1, min=0, max=2)
    distribution: str = param("none", choices=["none", "mirrored", "multi_worker"],
                              doc="tf.distribute strategy (multi_worker: TF_CONFIG, see README)")
    deterministic: bool = param(False, doc="TF op determinism: two runs of a config on one "
                                "machine give the same weights and report (slower, see README)")


@dataclass
class SearchParam:
    """One dimension of the search space: a config key and its range or choices."""
    key: str = param("")
    min: float = param(float("nan"), doc="lower bound (with max)")
    max: float = param(float("nan"), doc="upper bound (with min)")
    step: float = param(0.0, min=0.0, doc="int keys: the step (0: 1)")
    log: bool = param(False, doc="sample on a log scale")
    values: List[Any] = param(factory=list, doc="choices (instead of min/max)")


@dataclass
class TuningConfig:
    tuner: str = param("bayesian", choices=["random", "bayesian", "hyperband"])
    max_trials: int = param(8, min=1, doc="trials (hyperband: its own bracket schedule)")
    epochs: int = param(0, min=0, doc="training.epochs of each trial (0: the config's)")
    seed: int = param(0, min=0, doc="the tuner's own seed")
    space: List[SearchParam] = param(factory=list)
