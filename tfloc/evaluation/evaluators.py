"""Evaluators, chosen by name (``evaluation.evaluators``), each a small function of the test outputs.

An evaluator takes an :class:`EvalContext` and returns an :class:`EvalResult`:
report entries (merged into ``report.json``), error curves (drawn in the CDF
plot) and figures (written as PNG). Adding one never touches the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tfloc.metrics import error_summary, position_errors_m
from tfloc.registry import Registry
from tfloc.sim.paths import CONDITIONS

EVALUATORS: Registry = Registry("evaluator")


@dataclass
class EvalContext:
    """Test data and the model's outputs on it (NumPy), plus what baselines need.

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
        and orientations, ``array``: the BS array); the task's ``site_info``, called only
        by the evaluators that need it
    trajectory : () -> a moving UE traced through the site and the model's outputs on it
        (see :func:`tfloc.methods.runner.trajectory_set`), called only by ``trajectory``
    bound : mode -> the position error bound [n] of each test sample (inf: unbounded; see
        :mod:`tfloc.physics.bound`), called only by ``bound``
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
    trajectory: Callable | None = None
    bound: Callable | None = None


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


def _model_errors(ctx):
    return position_errors_m(ctx.outputs["position"], ctx.y["position"])


@EVALUATORS.register("position")
def position(ctx: EvalContext) -> EvalResult:
    """Point errors in 2D or 3D: mean, 50/67/80/90 % percentiles, RMSE (sqrt of the mean
    squared distance; seed 002's RMSE)."""
    err = _model_errors(ctx)
    dims = int(np.asarray(ctx.y["position"]).shape[-1])
    return EvalResult(report={"model": {**error_summary(err), "dims": dims}},
                      curves={ctx.model_name: err})


@EVALUATORS.register("per_sector")
def per_sector(ctx: EvalContext) -> EvalResult:
    """Point errors per serving sector of the test UEs (the model's ``sector`` input)."""
    if "sector" not in ctx.x:
        return EvalResult()
    err, sec = _model_errors(ctx), np.asarray(ctx.x["sector"])
    return EvalResult(report={"model": {"per_sector": {
        str(int(k)): {**error_summary(err[sec == k]), "n": int((sec == k).sum())} for k in np.unique(sec)}}})


@EVALUATORS.register("axis_errors")
def axis_errors(ctx: EvalContext) -> EvalResult:
    """Seed 003's metrics per axis and averaged over the axes (eq. 4-11): MAE, NMAE (MAE /
    the axis's range), RMSE, NRMSE (RMSE / the range). The range is that of the test
    labels. RMSE is sqrt(mean squared error): eq. 8-9 print the 1/n outside the root,
    which the paper's own Table I (RMSE > MAE) does not follow."""
    from tfloc.metrics import axis_error_metrics
    return EvalResult(report={"axis_errors": axis_error_metrics(ctx.outputs["position"], ctx.y["position"])})


@EVALUATORS.register("ensemble")
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


@EVALUATORS.register("per_condition")
def per_condition(ctx: EvalContext) -> EvalResult:
    """Point errors per propagation condition of the test links (the PathSet's labels)."""
    err = _model_errors(ctx)
    codes = np.asarray(ctx.y["condition"])
    if codes.ndim > 1:  # multi-BS samples: count a sample as LOS if any BS sees it
        codes = np.where((codes == 0).any(axis=1), 0, codes.min(axis=1))
    out = {CONDITIONS[c]: {**error_summary(err[codes == c]), "n": int((codes == c).sum())}
           for c in np.unique(codes)}
    return EvalResult(report={"model": {"per_condition": out}})


def _figure_confusion(matrix, names, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(names), 1.2 + 1.1 * len(names)), dpi=120)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]}\n{100 * share[i, j]:.0f} %", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@EVALUATORS.register("condition")
def condition(ctx: EvalContext) -> EvalResult:
    """Propagation-condition accuracy, per-class recall and the confusion matrix (PNG)."""
    if "condition_probs" not in ctx.outputs or not ctx.class_names:
        raise ValueError("evaluator 'condition' needs a model with a condition head "
                         "(output 'condition_probs')")
    true = np.asarray(ctx.to_class(ctx.y["condition"]))
    pred = np.argmax(ctx.outputs["condition_probs"], axis=-1)
    C = len(ctx.class_names)
    matrix = np.zeros((C, C), np.int64)
    np.add.at(matrix, (true, pred), 1)
    recall = {n: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None)
              for i, n in enumerate(ctx.class_names)}
    acc = float((true == pred).mean())
    report = {"condition": {"accuracy": acc, "classes": list(ctx.class_names),
                            "recall": recall, "confusion": matrix.tolist(),
                            "support": {n: int(matrix[i].sum()) for i, n in enumerate(ctx.class_names)}}}
    fig = _figure_confusion(matrix, ctx.class_names,
                            f"{ctx.model_name}: condition accuracy {100 * acc:.1f} % (n={len(true)})")
    return EvalResult(report=report, figures={"confusion.png": fig})


@EVALUATORS.register("knn")
def knn(ctx: EvalContext) -> EvalResult:
    """kNN fingerprinting baseline (scikit-learn) on the same features and labelled UEs;
    k and weighting chosen on validation, per sector when the model is told the sector."""
    from tfloc.evaluation.knn import fit_knn

    def triple(x, y):
        return x["features"], y["position"], x.get("sector")
    reg, info = fit_knn(triple(*ctx.fixed_set("train")), triple(*ctx.fixed_set("val")),
                        ctx.knn_neighbors)
    err = position_errors_m(reg.predict(ctx.x["features"], ctx.x.get("sector")), ctx.y["position"])
    return EvalResult(report={"baselines": {"knn": {**error_summary(err), **info}}},
                      curves={f"kNN (k={info['k']})": err})


def _mahalanobis2(e, outputs):
    """Squared Mahalanobis distance of errors e [n, D] under the served Gaussian."""
    if "position_scale_tril" in outputs:           # full covariance: |L^-1 e|^2
        L = np.asarray(outputs["position_scale_tril"], np.float64)
        return np.sum(np.linalg.solve(L, e[..., None])[..., 0] ** 2, axis=-1)
    std = np.asarray(outputs["position_std"], np.float64)
    return np.sum((e / std) ** 2, axis=-1)


def _figure_reliability(levels, observed, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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


@EVALUATORS.register("calibration")
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
    from scipy.stats import chi2
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
    from tfloc.losses import gaussian_crps
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


def _figure_accumulation(mean, p90, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    n = np.arange(1, len(mean) + 1)
    ax.plot(n, mean, "o-", label="mean")
    ax.plot(n, p90, "s--", label="90th percentile")
    ax.set_xlabel("subcarriers accumulated")
    ax.set_ylabel("3D error [m]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


@EVALUATORS.register("accumulation")
def accumulation(ctx: EvalContext) -> EvalResult:
    """Error of the estimate after each accumulated subcarrier (seed 004 eq. 33, the model's
    ``position_sequence``): mean and 90th percentile per step, and their figure."""
    seq = np.asarray(ctx.outputs["position_sequence"])                  # [n, N, dims]
    err = np.linalg.norm(seq - np.asarray(ctx.y["position"])[:, None, :], axis=-1)
    mean, p90 = err.mean(axis=0), np.percentile(err, 90, axis=0)
    return EvalResult(
        report={"accumulation": {"mean_m": [round(float(v), 3) for v in mean],
                                 "p90_m": [round(float(v), 3) for v in p90]}},
        figures={"accumulation.png": _figure_accumulation(
            mean, p90, f"{ctx.model_name}: error against subcarriers accumulated")})


@EVALUATORS.register("music")
def music(ctx: EvalContext) -> EvalResult:
    """Seed 004's model-based baseline: MUSIC angle of arrival at every BS that receives the UE,
    then the 3D point nearest the bearing lines, each weighted by its BS's CSI amplitude
    (:mod:`tfloc.evaluation.music`). Needs multi-BS CSI features (``representation: csi``)
    and the site's panels and array."""
    from tfloc.evaluation.music import music_position
    from tfloc.physics.array import planar_array_positions, rotation_matrix
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


def _figure_trajectory(true, est, err, bs, title):
    """3D view of the true path and the estimates (coloured by error), top view with the
    BSs, and the error along the way."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(14.0, 4.6), dpi=110)
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    ax.plot(*true.T, color="k", lw=1.2, label="true")
    sc = ax.scatter(*est.T, c=err, cmap="viridis", s=7, label="estimated")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.legend(fontsize=7, loc="upper left")
    fig.colorbar(sc, ax=ax, shrink=0.6, pad=0.1, label="3D error [m]")
    top = fig.add_subplot(1, 3, 2)
    top.plot(true[:, 0], true[:, 1], color="k", lw=1.0, label="true")
    top.scatter(est[:, 0], est[:, 1], c=err, cmap="viridis", s=6, label="estimated")
    if len(bs):
        bs = np.asarray(bs, float)
        top.scatter(bs[:, 0], bs[:, 1], marker="^", color="tab:red", s=40, label="BS")
    top.set_aspect("equal", adjustable="datalim")
    top.set_xlabel("x [m]")
    top.set_ylabel("y [m]")
    top.grid(alpha=0.3)
    top.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 3, 3)
    ax2.plot(err, lw=0.9)
    ax2.axhline(err.mean(), color="tab:red", ls="--", lw=0.9, label=f"mean {err.mean():.2f} m")
    ax2.set_xlabel("snapshot (time order)")
    ax2.set_ylabel("3D error [m]")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@EVALUATORS.register("trajectory")
def trajectory(ctx: EvalContext) -> EvalResult:
    """Seed 004's moving UE: the spiral of ``evaluation.trajectory`` traced through the
    site, positioned snapshot by snapshot (each on its own); error summary and a 3D
    picture with the error along the way."""
    if ctx.trajectory is None:
        raise ValueError("evaluator 'trajectory' needs the runner's traced trajectory "
                         "(run it through train.py or evaluate.py)")
    tr = ctx.trajectory()
    est, true = np.asarray(tr["outputs"]["position"]), np.asarray(tr["y"]["position"])
    if true.shape[-1] != 3:
        raise ValueError(f"evaluator 'trajectory' needs 3D positions (data.position_dims: 3), "
                         f"got {true.shape[-1]}D")
    err = position_errors_m(est, true)
    bs = (ctx.site() or {}).get("panels") or []
    fig = _figure_trajectory(true, est, err, [p["position"] for p in bs],
                             f"{ctx.model_name}: a UE on a 3D spiral, {len(err)} snapshots, "
                             f"mean {err.mean():.2f} m")
    return EvalResult(report={"trajectory": {**error_summary(err), "n": int(len(err)),
                                             "snapshots": int(tr["config"]["snapshots"]),
                                             "spiral": tr["config"],
                                             "n_indoor_dropped": tr["n_indoor"],
                                             "n_no_path_dropped": tr["n_no_path"]}},
                      figures={"trajectory.png": fig})


def _figure_bound(err, peb, los, mode, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    bounded = np.isfinite(peb)
    for mask, label, color in ((los, "LOS", "tab:green"), (~los, "NLOS", "tab:orange")):
        r = np.sort(err[mask & bounded] / peb[mask & bounded])
        if len(r):
            axes[0].step(r, np.arange(1, len(r) + 1) / mask.sum(), where="post", color=color,
                         label=f"{label}: median {np.median(r):.3g} (n={int(mask.sum())})")
        for v, ls, what in ((err[mask], "-", "error"), (peb[mask & bounded], "--", "PEB")):
            v = np.sort(v)
            if len(v):
                axes[1].step(v, np.arange(1, len(v) + 1) / mask.sum(), where="post", color=color, ls=ls,
                             label=f"{label} {what}: median {np.median(v):.3g} m")
    axes[0].set_xlabel("model error / position error bound")
    axes[0].set_title(f"distance from the physical limit ({mode} bound)")
    axes[1].set_xlabel("metres")
    axes[1].set_title("model error (solid) and bound (dashed)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _bound(ctx: EvalContext, mode: str) -> EvalResult:
    from tfloc.physics.bound import BoundError, summarize
    if ctx.bound is None:
        raise ValueError("evaluator 'bound' needs the run's traced paths (not available here)")
    err = _model_errors(ctx)
    cond = np.asarray(ctx.y["condition"]).reshape(len(err), -1)
    los = (cond == CONDITIONS.index("LOS")).any(1)
    try:
        peb = np.asarray(ctx.bound(mode), np.float64)
    except BoundError as e:        # e.g. a cache traced before interaction geometry was stored
        return EvalResult(report={"bound": {mode: {"unavailable": str(e)}}})
    ratio = np.where(np.isfinite(peb), err / peb, np.nan)      # an unbounded sample has no ratio
    out = {"peb_m": summarize(peb, los), "error_over_peb": summarize(ratio, los)}
    fig = _figure_bound(err, peb, los, mode, f"{ctx.model_name}: test error against the position error bound")
    return EvalResult(report={"bound": {mode: out}}, figures={f"bound_{mode}.png": fig})


@EVALUATORS.register("bound")
def bound(ctx: EvalContext) -> EvalResult:
    """The model's error against the physical limit: per test sample the ratio of its error to
    its position error bound (Cramér-Rao, :mod:`tfloc.physics.bound`; specular paths follow the
    UE through mirror images), summarised (median, p90, LOS and NLOS apart), with a CDF figure.
    Unbounded samples have no ratio (left out, counted in ``peb_m``)."""
    return _bound(ctx, "mirror")


@EVALUATORS.register("bound_nuisance")
def bound_nuisance(ctx: EvalContext) -> EvalResult:
    """As ``bound``, against the conservative bound (only the LOS path follows the UE; NLOS
    samples are unbounded)."""
    return _bound(ctx, "nuisance")
