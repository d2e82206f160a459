"""Evaluators of seed 004's sequences: the error after each accumulated subcarrier, and a
moving UE traced through the site (:func:`trajectory_set`)."""
from __future__ import annotations

import dataclasses

import numpy as np

from tfloc.data.bundle import SPLIT_SEED_OFFSETS, csi_pipeline
from tfloc.data.pipeline import dataset_to_numpy
from tfloc.evaluation.base import EvalContext, EvalResult, pyplot, register_evaluator
from tfloc.metrics import error_summary, position_errors_m
from tfloc.sim.paths import sample_groups
from tfloc.sim.trajectory import load_or_trace_trajectory, spiral


def trajectory_set(cfg, predict) -> dict:
    """The moving UE of ``evaluation.trajectory`` traced through the site (cached), its CSI
    made as an evaluation split's (fixed noise draws), and ``predict``'s outputs on it (model
    inputs -> outputs), in time order:
    {"x", "y", "outputs", "time" (snapshot index), "config" (the spiral), "n_indoor", "n_no_path"}."""
    t = cfg.evaluation.trajectory
    paths = load_or_trace_trajectory(cfg.simulation, spiral(t), cfg.runtime.cache_dir)
    groups = sample_groups(paths)
    when = np.asarray(paths.meta["source"])[paths.ue_id[groups[:, 0]]]
    live = (paths.num_paths[groups] > 0).any(axis=1)
    order = np.argsort(when)
    order = order[live[order]]
    rows = groups[order] if groups.shape[1] > 1 else groups[order, 0]
    x, y = dataset_to_numpy(csi_pipeline(cfg, paths).feature_dataset(
        rows, training=False, split_seed_offset=SPLIT_SEED_OFFSETS["trajectory"]))
    return {"x": x, "y": y, "outputs": predict(x), "time": when[order],
            "config": dataclasses.asdict(t), "n_indoor": int(paths.meta["n_indoor_excluded"]),
            "n_no_path": int((~live).sum())}


def _figure_accumulation(mean, p90, title):
    plt = pyplot()
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


@register_evaluator("accumulation", outputs=("position_sequence",))
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


def _figure_trajectory(true, est, err, bs, title):
    """3D view of the true path and the estimates (coloured by error), top view with the
    BSs, and the error along the way."""
    plt = pyplot()
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


@register_evaluator("trajectory", outputs=("position",), run=("trajectory", "site"))
def trajectory(ctx: EvalContext) -> EvalResult:
    """Seed 004's moving UE: the spiral of ``evaluation.trajectory`` traced through the
    site, positioned snapshot by snapshot (each on its own); error summary and a 3D
    picture with the error along the way."""
    if ctx.config is None or ctx.predict is None:
        raise ValueError("evaluator 'trajectory' needs the runner's traced trajectory "
                         "(run it through train.py or evaluate.py)")
    tr = trajectory_set(ctx.config, ctx.predict)
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
