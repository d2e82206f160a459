"""Training recipes (tasks), chosen by registered name (``method``), and run orchestration."""
from tfloc.methods.registry import METHODS
from tfloc.methods import supervised  # noqa: F401  (registers "supervised")
from tfloc.methods.runner import evaluate_run, train_and_evaluate

__all__ = ["METHODS", "evaluate_run", "train_and_evaluate"]
