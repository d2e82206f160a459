"""Point-error evaluators: the model's errors overall, per sector, per axis, per
propagation condition, and of each ensemble member."""
from __future__ import annotations

import numpy as np

from tfloc.evaluation.base import EvalContext, EvalResult, model_errors, register_evaluator
from tfloc.metrics import axis_error_metrics, error_summary, position_errors_m
from tfloc.sim.paths import CONDITIONS


@register_evaluator("position")
def position(ctx: EvalContext) -> EvalResult:
    """Point errors in 2D or 3D: mean, 50/67/80/90 % percentiles, RMSE (sqrt of the mean
    squared distance; seed 002's RMSE)."""
    err = model_errors(ctx)
    dims = int(np.asarray(ctx.y["position"]).shape[-1])
    return EvalResult(report={"model": {**error_summary(err), "dims": dims}},
                      curves={ctx.model_name: err})


@register_evaluator("per_sector")
def per_sector(ctx: EvalContext) -> EvalResult:
    """Point errors per serving sector of the test UEs (the model's ``sector`` input)."""
    if "sector" not in ctx.x:
        return EvalResult()
    err, sec = model_errors(ctx), np.asarray(ctx.x["sector"])
    return EvalResult(report={"model": {"per_sector": {
        str(int(k)): {**error_summary(err[sec == k]), "n": int((sec == k).sum())} for k in np.unique(sec)}}})


@register_evaluator("axis_errors")
def axis_errors(ctx: EvalContext) -> EvalResult:
    """Seed 003's metrics per axis and averaged over the axes (eq. 4-11): MAE, NMAE (MAE /
    the axis's range), RMSE, NRMSE (RMSE / the range). The range is that of the test
    labels. RMSE is sqrt(mean squared error): eq. 8-9 print the 1/n outside the root,
    which the paper's own Table I (RMSE > MAE) does not follow."""
    return EvalResult(report={"axis_errors": axis_error_metrics(ctx.outputs["position"], ctx.y["position"])})


@register_evaluator("ensemble", outputs=("member_positions", "position_weighted",
                                                "position_consensus", "consensus_size"))
def ensemble(ctx: EvalContext) -> EvalResult:
    """Seed 000's ensemble: each member's errors and those of both combinations (the model's
    ``member_positions``, ``position_weighted``, ``position_consensus``), and the share of
    test UEs where at least two members agreed (``consensus_size`` > 1)."""
    y = ctx.y["position"]
    members = np.asarray(ctx.outputs["member_positions"])                # [n, M, dims]
    curves = {f"member {i}": position_errors_m(members[:, i], y) for i in range(members.shape[1])}
    curves["weighted average"] = position_errors_m(ctx.outputs["position_weighted"], y)
    curves["consensus"] = position_errors_m(ctx.outputs["position_consensus"], y)
    size = np.asarray(ctx.outputs["consensus_size"])
    report = {"members": [error_summary(curves[f"member {i}"]) for i in range(members.shape[1])],
              "weighted": error_summary(curves["weighted average"]),
              "consensus": {**error_summary(curves["consensus"]),
                            "agreed_share": round(float((size > 1.5).mean()), 4),
                            "mean_group_size": round(float(size.mean()), 3)}}
    return EvalResult(report={"ensemble_test": report}, curves=curves)


@register_evaluator("per_condition")
def per_condition(ctx: EvalContext) -> EvalResult:
    """Point errors per propagation condition of the test links (the PathSet's labels)."""
    err = model_errors(ctx)
    codes = np.asarray(ctx.y["condition"])
    if codes.ndim > 1:  # multi-BS samples: count a sample as LOS if any BS sees it
        codes = np.where((codes == 0).any(axis=1), 0, codes.min(axis=1))
    out = {CONDITIONS[c]: {**error_summary(err[codes == c]), "n": int((codes == c).sum())}
           for c in np.unique(codes) if c >= 0}          # -1: unknown (measured data without labels)
    return EvalResult(report={"model": {"per_condition": out}})
