"""Positioning metrics: distance-error statistics (3GPP TR 38.843 style) and CDF plots."""
from __future__ import annotations

import numpy as np

PERCENTILES = (50, 67, 80, 90)


def position_errors_m(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Euclidean errors [m] between [N, D] predictions and labels."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != label shape {true.shape}")
    return np.linalg.norm(pred - true, axis=-1)


def error_summary(errors_m: np.ndarray) -> dict:
    """mean_m, p50_m, p67_m, p80_m, p90_m and rmse_m of distance errors."""
    e = np.asarray(errors_m, np.float64)
    if e.size == 0:
        raise ValueError("no errors to summarise (empty test set)")
    out = {"mean_m": float(e.mean())}
    for p in PERCENTILES:
        out[f"p{p}_m"] = float(np.percentile(e, p))
    out["rmse_m"] = float(np.sqrt(np.mean(e ** 2)))
    return out


def cdf_figure(errors_by_name: dict, title: str = "Positioning error CDF"):
    """A matplotlib figure with one empirical CDF per method, percentiles marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, e in errors_by_name.items():
        e = np.sort(np.asarray(e))
        ax.plot(e, np.arange(1, e.size + 1) / e.size,
                label=f"{name} (mean {e.mean():.2f} m, p90 {np.percentile(e, 90):.2f} m)")
    for p in PERCENTILES:
        ax.axhline(p / 100, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("distance error [m]")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def axis_error_metrics(pred, true) -> dict:
    """Seed 003 eq. 4-11 per axis (``x``, ``y``[, ``z``]) and averaged over them (``average``):
    ``{"mae_m", "nmae", "rmse_m", "nrmse"}``; normalised by each axis's range of ``true``.

    Input: pred, true [n, dims] metres."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    d = pred - true
    span = true.max(axis=0) - true.min(axis=0)
    span = np.where(span > 0, span, np.nan)
    per = {"mae_m": np.abs(d).mean(axis=0), "rmse_m": np.sqrt((d ** 2).mean(axis=0))}
    per["nmae"], per["nrmse"] = per["mae_m"] / span, per["rmse_m"] / span
    out = {axis: {k: round(float(v[i]), 5) for k, v in per.items()}
           for i, axis in enumerate("xyz"[:d.shape[1]])}
    out["average"] = {k: round(float(np.mean(v)), 5) for k, v in per.items()}
    return out


__all__ = ["PERCENTILES", "axis_error_metrics", "position_errors_m", "error_summary", "cdf_figure"]
