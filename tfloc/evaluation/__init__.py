"""Evaluation: evaluators chosen by name, the kNN baseline, report writing."""
from tfloc.evaluation.config import EvaluationConfig
from tfloc.evaluation.evaluators import EVALUATORS, EvalContext, EvalResult, run_evaluators
from tfloc.evaluation.knn import SectorKNN, fit_knn
from tfloc.evaluation.report import write_report

__all__ = ["EvaluationConfig", "EVALUATORS", "EvalContext", "EvalResult", "run_evaluators",
           "SectorKNN", "fit_knn", "write_report"]
