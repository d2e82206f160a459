"""Baseline evaluators on the same test samples: kNN fingerprinting, the training-mean
predictor and MUSIC + least squares."""
from __future__ import annotations

import numpy as np

from tfloc.evaluation.base import EvalContext, EvalResult, register_evaluator
from tfloc.evaluation.knn import fit_knn
from tfloc.evaluation.music import music_position
from tfloc.metrics import error_summary, position_errors_m
from tfloc.physics.array import planar_array_positions, rotation_matrix


@register_evaluator("knn", run=("fixed_sets",))
def knn(ctx: EvalContext) -> EvalResult:
    """kNN fingerprinting baseline (scikit-learn) on the same features and labelled UEs;
    k and weighting chosen on validation, per sector when the model is told the sector."""
    def triple(x, y):
        return x["features"], y["position"], x.get("sector")
    reg, info = fit_knn(triple(*ctx.fixed_set("train")), triple(*ctx.fixed_set("val")),
                        ctx.knn_neighbors)
    err = position_errors_m(reg.predict(ctx.x["features"], ctx.x.get("sector")), ctx.y["position"])
    return EvalResult(report={"baselines": {"knn": {**error_summary(err), **info}}},
                      curves={f"kNN (k={info['k']})": err})


@register_evaluator("mean", run=("fixed_sets",))
def training_mean(ctx: EvalContext) -> EvalResult:
    """The trivial predictor: every test UE at the mean position of the labelled training
    samples. A network that does not beat it has learnt nothing of the CSI."""
    mean = np.mean(np.asarray(ctx.fixed_set("train")[1]["position"], np.float64), axis=0)
    truth = np.asarray(ctx.y["position"])
    err = position_errors_m(np.broadcast_to(mean, truth.shape), truth)
    return EvalResult(report={"baselines": {"mean": error_summary(err)}},
                      curves={"training mean": err})


@register_evaluator("music", outputs=(), run=("multi_bs_csi", "site"))
def music(ctx: EvalContext) -> EvalResult:
    """Seed 004's model-based baseline: MUSIC angle of arrival at every BS that receives the UE,
    then the 3D point nearest the bearing lines, each weighted by its BS's CSI amplitude
    (:mod:`tfloc.evaluation.music`). Needs multi-BS CSI features (``representation: csi``)
    and the site's panels and array."""
    site = ctx.site()
    panels, arr = site.get("panels"), site.get("array")
    x = np.asarray(ctx.x["features"])
    if not panels or not arr or x.ndim != 6:
        raise ValueError("evaluator 'music' needs multi-BS CSI features [n, L, T, Nr, Nsc, 2] and "
                         "the site's panels and array (a multi-BS site with data.representation: csi)")
    rots = np.stack([rotation_matrix(np.radians(p["azimuth_deg"]), np.radians(p["downtilt_deg"]), 0.0)
                     for p in panels])
    bs = np.array([p["position"] for p in panels], float)
    pos_wl = planar_array_positions(arr["num_rows"], arr["num_cols"], arr["vertical_spacing"],
                                    arr["horizontal_spacing"])
    h = np.transpose(x[..., 0] + 1j * x[..., 1], (0, 1, 2, 4, 3))             # [n, L, T, Nsc, Nr]
    est = np.zeros((len(h), 3))
    for i in range(len(h)):
        amp = np.sqrt(np.mean(np.abs(h[i]) ** 2, axis=(1, 2, 3)))              # [L]
        live = np.flatnonzero(amp > 0)
        est[i] = music_position(h[i, live], bs[live], rots[live], pos_wl, weights=amp[live] / amp.max())
    dims = np.asarray(ctx.y["position"]).shape[-1]
    err = position_errors_m(est[:, :dims], ctx.y["position"])
    return EvalResult(report={"baselines": {"music": error_summary(err)}},
                      curves={"MUSIC + LS": err})
