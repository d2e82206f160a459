"""Training recipes (tasks), chosen by registered name (``method``): the Task contract,
its trainer and callbacks, the registry, and the recipes. Running one is
:mod:`tfloc.run`'s job."""
from tfloc.methods.registry import METHODS, MethodConfig
from tfloc.methods.task import Task, TaskTrainer, TrainingConfig, TrainingRun, TrainResult
from tfloc.methods import (autoencoder, ecc, ensemble, sector, semantic, semisupervised,
                           supervised, transfer)  # noqa: F401  (register the recipes)

__all__ = ["METHODS", "MethodConfig", "Task", "TaskTrainer", "TrainingConfig", "TrainingRun",
           "TrainResult"]
