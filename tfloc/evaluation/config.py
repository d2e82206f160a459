"""Evaluation config section (owned by ``tfloc.evaluation``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from tfloc.config import param
from tfloc.sim.config import TrajectoryConfig


@dataclass
class TwinConfig:
    """The ``twin_refine`` evaluator: refinement of the network's test estimates by maximum
    likelihood against the ray-traced twin (:mod:`tfloc.physics.twin`), and the twin's errors."""
    max_samples: int = param(200, min=1, doc="test samples refined (a fixed random subset)")
    starts: int = param(5, min=1, doc="starts per sample: the estimate, and the rest on a circle "
                        "of the estimate's uncertainty (sigma, or the validation median error)")
    rounds: int = param(3, min=1, doc="twin traces per start at most")
    retrace_m: float = param(1.0, min=0.0, doc="re-trace where a refinement moved further")
    prior: bool = param(True, doc="the estimate with its uncertainty as a Gaussian prior when "
                        "choosing among starts and against the estimate (maximum a posteriori); "
                        "false: the likelihood alone")
    max_fit: float = param(2.0, min=0.0, doc="keep a refined position only where the twin "
                           "explains the CSI to within this multiple of the noise power "
                           "(residual / noise; about 1 at the right place); 0: no such check; "
                           "used as given only with choose_max_fit: false")
    choose_max_fit: bool = param(True, doc="choose the fit threshold on validation samples "
                                 "(refined alike; the lowest validation mean error among 1.05, "
                                 "1.1, 1.25, 1.5, 2, 3, no check, and 0: every start kept, not "
                                 "refined)")
    slots: int = param(0, min=0, doc="time slots of a multi-slot sample refined jointly (the first "
                       "ones; 0: all); the bound is then that of as many slots")
    vehicles: bool = param(True, doc="false: the twin has no vehicles (the network never "
                           "knows the traffic)")
    material_scale: float = param(1.0, min=0.01, doc="every material's relative permittivity "
                                  "and conductivity times this (a wrong twin: 0.7, 1.3)")
    bs_offset_m: List[float] = param(factory=lambda: [0.0, 0.0, 0.0], doc="the twin's BS "
                                     "position error [x, y, z]")


@dataclass
class EvaluationConfig:
    evaluators: List[str] = param(factory=list, doc="registered evaluators to run on the test "
                                  "split; empty: the method's defaults")
    knn_neighbors: List[int] = param(factory=lambda: [1, 2, 3, 4, 5, 7, 10, 15, 20], min=1)
    trajectory: TrajectoryConfig = param(factory=TrajectoryConfig, doc="the moving UE of the "
                                         "'trajectory' evaluator (traced once, then cached)")
    twin: TwinConfig = param(factory=TwinConfig, doc="the 'twin_refine' evaluator")
