"""Evaluation: evaluators chosen by name (each family a module that registers its own),
the kNN baseline, scoring a run and writing its report."""
from tfloc.evaluation.base import (EVALUATORS, NEEDS, EvalContext, EvalResult, Needs, check_evaluators,
                                   needs_of, register_evaluator, run_evaluators)
from tfloc.evaluation.config import EvaluationConfig
from tfloc.evaluation.knn import SectorKNN, fit_knn
from tfloc.evaluation.report import write_report
from tfloc.evaluation.scoring import conditions_per_split, evaluate
# the evaluator families register themselves on import
from tfloc.evaluation import baselines, bound, calibration, conditions, cost, point, trajectory, twin  # noqa: F401,E402

__all__ = ["EvaluationConfig", "EVALUATORS", "NEEDS", "EvalContext", "EvalResult", "Needs",
           "check_evaluators", "conditions_per_split", "evaluate", "needs_of", "register_evaluator",
           "run_evaluators", "SectorKNN", "fit_knn", "write_report"]
