"""The evaluator contract: a registry of small functions of an :class:`EvalContext`, each
declaring at registration what it needs of the run.

An evaluator takes an :class:`EvalContext` and returns an :class:`EvalResult`: report
entries (merged into ``report.json``), error curves (drawn in the CDF plot) and figures
(written as PNG). Adding one is a module with a ``@register_evaluator`` function; the
runner and :func:`tfloc.evaluation.scoring.evaluate` never name it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tfloc.config import ConfigError
from tfloc.data.bundle import DataBundle, fixed_set
from tfloc.metrics import position_errors_m
from tfloc.registry import Registry

EVALUATORS: Registry = Registry("evaluator")

#: what an evaluator may need of the run besides the test outputs, and what provides it
NEEDS = {
    "fixed_sets": "the run's training and validation splits with fixed draws (EvalContext.fixed_set)",
    "site": "the site's BS panels and array (EvalContext.site)",
    "multi_bs_csi": "multi-BS CSI features [n, L, T, Nr, Nsc, 2] (data.representation: csi on a "
                    "multi-BS site) and the site",
    "geometry": "the run's traced paths with their interaction geometry (EvalContext.data)",
    "trajectory": "a UE trajectory traced through the site with Sionna RT (EvalContext.config "
                  "and EvalContext.predict)",
    "model": "the served Keras model itself (EvalContext.model)",
}

#: how a missing model output is named in errors
OUTPUT_NAMES = {"position_std": "a sigma head", "condition_probs": "a condition head",
                "position_sequence": "an accumulated position sequence",
                "member_positions": "ensemble members", "consensus_size": "ensemble members",
                "position_weighted": "ensemble members", "position_consensus": "ensemble members"}


@dataclass(frozen=True)
class Needs:
    """What an evaluator needs: model ``outputs`` (checked against the task's
    ``evaluated_outputs`` before anything is traced) and run facts (keys of :data:`NEEDS`)."""
    outputs: tuple = ("position",)
    run: tuple = ()
    hint: str = ""     # how to get the outputs, appended to the error


def register_evaluator(name: str, outputs=("position",), run=(), hint: str = ""):
    """Decorator: registers ``fn(ctx) -> EvalResult`` as evaluator ``name`` with its needs."""
    unknown = set(run) - set(NEEDS)
    if unknown:
        raise ValueError(f"evaluator '{name}': unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
    return EVALUATORS.register(name, needs=Needs(tuple(outputs), tuple(run), hint))


def needs_of(name: str) -> Needs:
    return EVALUATORS.info(name)["needs"]


def check_evaluators(names, evaluated_outputs, method: str) -> None:
    """ConfigError (one line) for an unknown evaluator or one that needs a model output the
    method does not give (before anything is traced)."""
    for name in names:
        if name not in EVALUATORS:
            raise ConfigError(f"evaluation.evaluators: unknown evaluator '{name}'; registered: "
                              f"{', '.join(EVALUATORS.names())}")
        needs = needs_of(name)
        missing = [o for o in needs.outputs if o not in evaluated_outputs]
        if missing:
            what = OUTPUT_NAMES.get(missing[0], "the outputs")
            raise ConfigError(f"evaluation.evaluators: '{name}' needs a model with {what} "
                              f"({', '.join(missing)}); method '{method}' as configured has none"
                              + (f" ({needs.hint})" if needs.hint else ""))


@dataclass
class EvalContext:
    """The test split, the model's outputs on it (NumPy), and the run behind them.

    Parameters
    ----------
    model_name : str
    x, y : model inputs and labels of the test split ({"position", "condition"})
    outputs : the model's outputs on ``x`` ({"position", "condition_probs", ...})
    class_names : the model's condition classes (empty: none)
    to_class : PathSet condition codes -> class indices (None without classes)
    fixed_set : split name ("train", "val") -> (x, y) with fixed noise draws
    knn_neighbors : candidate k of the kNN baseline
    site : () -> what model-based baselines need of the site (``panels``: the BSs' positions
        and orientations, ``array``: the BS array); called only by the evaluators that need it
    config : the run's experiment config (None outside a run)
    data : the run's :class:`DataBundle` (None outside a run)
    predict : model inputs -> the model's outputs (NumPy), for evaluators that make data of
        their own (e.g. a trajectory)
    model : the served Keras model (None outside a run), for evaluators of the model itself
    """
    model_name: str
    x: dict
    y: dict
    outputs: dict
    class_names: tuple = ()
    to_class: Callable | None = None
    fixed_set: Callable | None = None
    knn_neighbors: tuple = (1, 2, 3, 5, 10)
    site: Callable = dict
    config: Any = None
    data: DataBundle | None = None
    predict: Callable | None = None
    model: Any = None

    @classmethod
    def from_run(cls, cfg, task, models: dict, data: DataBundle,
                 reference: DataBundle | None = None) -> "EvalContext":
        """The context of a run: the test split of ``data`` with the split's fixed draws, the
        task's evaluation outputs of ``models``, and the run's config and data.
        ``reference``: the data the model was trained on when ``data`` is another dataset;
        baselines fit on its training and validation splits, as the model did."""
        x, y = fixed_set(data, "test")
        fitted_on = reference or data

        def predict(inputs):
            return task.evaluation_outputs(models, inputs)
        return cls(model_name=models["inference"].name, x=x, y=y, outputs=predict(x),
                   class_names=task.class_names,
                   to_class=(lambda c: task.condition_classes(c).numpy()) if task.class_names else None,
                   fixed_set=lambda split: fixed_set(fitted_on, split),
                   knn_neighbors=tuple(cfg.evaluation.knn_neighbors), site=task.site_info,
                   config=cfg, data=data, predict=predict, model=models["inference"])


@dataclass
class EvalResult:
    report: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


def _merge(into: dict, new: dict):
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def run_evaluators(names, ctx: EvalContext) -> EvalResult:
    """Runs the named evaluators in order and merges their results."""
    total = EvalResult()
    for name in names:
        res = EVALUATORS.get(name)(ctx)
        _merge(total.report, res.report)
        total.curves.update(res.curves)
        total.figures.update(res.figures)
    return total


def model_errors(ctx: EvalContext) -> np.ndarray:
    """Per test sample Euclidean error [m] of the model's ``position``."""
    return position_errors_m(ctx.outputs["position"], ctx.y["position"])


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (figures are written as PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
