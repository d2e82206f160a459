"""Training recipes (tasks), chosen by registered name (``method``), and run orchestration."""
from tfloc.methods.registry import METHODS, MethodConfig
from tfloc.methods.task import Task, TaskTrainer, TrainingConfig
from tfloc.methods import (autoencoder, ecc, ensemble, sector, semantic, semisupervised,
                           supervised, transfer)  # noqa: F401  (register the recipes)
from tfloc.methods.runner import evaluate_run, train_and_evaluate

__all__ = ["METHODS", "MethodConfig", "Task", "TaskTrainer", "TrainingConfig", "evaluate_run",
           "train_and_evaluate"]
