"""Evaluation config section (owned by ``tfloc.evaluation``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from tfloc.config import param
from tfloc.sim.config import TrajectoryConfig


@dataclass
class EvaluationConfig:
    evaluators: List[str] = param(factory=list, doc="registered evaluators to run on the test "
                                  "split; empty: the method's defaults")
    knn_neighbors: List[int] = param(factory=lambda: [1, 2, 3, 4, 5, 7, 10, 15, 20], min=1)
    trajectory: TrajectoryConfig = param(factory=TrajectoryConfig, doc="the moving UE of the "
                                         "'trajectory' evaluator (traced once, then cached)")
