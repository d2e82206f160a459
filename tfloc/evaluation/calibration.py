"""The calibration evaluator of a model that serves a Gaussian (``position_std``)."""
from __future__ import annotations

import numpy as np

from scipy.stats import chi2

from tfloc.evaluation.base import EvalContext, EvalResult, pyplot, register_evaluator
from tfloc.losses import gaussian_crps


def _mahalanobis2(e, outputs):
    """Squared Mahalanobis distance of errors e [n, D] under the served Gaussian."""
    if "position_scale_tril" in outputs:           # full covariance: |L^-1 e|^2
        L = np.asarray(outputs["position_scale_tril"], np.float64)
        return np.sum(np.linalg.solve(L, e[..., None])[..., 0] ** 2, axis=-1)
    std = np.asarray(outputs["position_std"], np.float64)
    return np.sum((e / std) ** 2, axis=-1)


def _figure_reliability(levels, observed, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.plot(levels, observed, "o-", label="model")
    ax.set_xlabel("probability of the Gaussian's region")
    ax.set_ylabel("share of test positions inside")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _figure_sharpness(sigma, error, title):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.4, 3.8))
    a1.hist(sigma, bins=40, color="tab:blue", alpha=0.8)
    a1.set_xlabel("predicted sigma (RMS over axes) [m]")
    a1.set_ylabel("test positions")
    a1.set_title("sharpness", fontsize=9)
    a2.loglog(np.maximum(sigma, 1e-3), np.maximum(error, 1e-3), ".", ms=2, alpha=0.5)
    lo, hi = max(min(sigma.min(), error.min()), 1e-3), max(sigma.max(), error.max())
    a2.plot([lo, hi], [lo, hi], "k--", lw=1, label="error = sigma")
    a2.set_xlabel("predicted sigma [m]")
    a2.set_ylabel("error [m]")
    a2.set_title("error against predicted sigma", fontsize=9)
    a2.legend(loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@register_evaluator("calibration", outputs=("position", "position_std"),
                    hint="train it with a likelihood loss such as gaussian_nll")
def calibration(ctx: EvalContext) -> EvalResult:
    """Share of test errors inside the model's 1/2/3-sigma regions against the Gaussian's own,
    the mean CRPS of the predicted Gaussian per axis (seed 001 eq. 9), a reliability
    diagram and a sharpness figure.

    The squared Mahalanobis distance of a D-dimensional Gaussian's error is
    chi-square with D degrees of freedom, so the k-sigma region holds
    ``chi2.cdf(k^2, D)`` of the mass (2D: 39 / 86 / 99 %). The reliability diagram
    does the same for the regions of probability 5 %, 10 %, ..., 95 %. With a full
    covariance (``position_scale_tril``) the regions are its ellipses.
    """
    if "position_std" not in ctx.outputs:
        raise ValueError("evaluator 'calibration' needs a model that outputs 'position_std'")
    e = np.asarray(ctx.outputs["position"], np.float64) - np.asarray(ctx.y["position"], np.float64)
    std = np.asarray(ctx.outputs["position_std"], np.float64)
    r2 = _mahalanobis2(e, ctx.outputs)
    D = e.shape[-1]
    out = {f"within_{k}sigma": {"observed": float((r2 <= k * k).mean()),
                                 "expected": float(chi2.cdf(k * k, D))} for k in (1, 2, 3)}
    sigma = np.sqrt((std ** 2).sum(-1))
    out["mean_std_m"] = float(sigma.mean())
    out["median_std_m"] = float(np.median(sigma))
    err = np.sqrt((e ** 2).sum(-1))
    out["corr_error_std"] = float(np.corrcoef(err, sigma)[0, 1]) if len(err) > 1 else 0.0
    crps = gaussian_crps(ctx.y["position"], ctx.outputs["position"], std).numpy()
    out["crps_m"] = float(crps.mean())                 # per axis, averaged (seed 001 eq. 9)
    levels = np.round(np.arange(0.05, 0.96, 0.05), 2)
    observed = np.array([(r2 <= chi2.ppf(p, D)).mean() for p in levels])
    out["reliability"] = {"levels": levels.tolist(), "observed": observed.round(4).tolist()}
    out["reliability_gap"] = float(np.abs(observed - levels).mean())
    figures = {"reliability.png": _figure_reliability(levels, observed, f"{ctx.model_name}: "
                                                      f"reliability (n={len(err)})"),
               "sharpness.png": _figure_sharpness(sigma, err, f"{ctx.model_name}: predicted sigma")}
    return EvalResult(report={"calibration": out}, figures=figures)
