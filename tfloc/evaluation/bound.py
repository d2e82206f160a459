"""The model's error against the physical limit: the position error bound of each test
sample (:mod:`tfloc.physics.bound`)."""
from __future__ import annotations

import numpy as np

from tfloc.data.bundle import DataBundle
from tfloc.evaluation.base import EvalContext, EvalResult, model_errors, pyplot, register_evaluator
from tfloc.physics.bound import BoundError, BoundSetup, sample_pebs, summarize
from tfloc.sim.paths import CONDITIONS


def _figure_bound(err, peb, los, mode, title):
    plt = pyplot()
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


def split_bound(cfg, data: DataBundle, split: str, mode: str = "mirror") -> np.ndarray:
    """The position error bound [n] of each sample of a split, under the run's simulation and
    data settings (:func:`tfloc.physics.bound.sample_pebs`; inf: unbounded)."""
    rows = np.asarray(getattr(data.splits, split))
    setup = BoundSetup.from_config(cfg.simulation, cfg.data, mode=mode)
    return sample_pebs(data.paths, setup, rows.reshape(len(rows), -1), progress=False)


def _bound(ctx: EvalContext, mode: str) -> EvalResult:
    if ctx.config is None or ctx.data is None:
        raise ValueError("evaluator 'bound' needs the run's traced paths (not available here)")
    err = model_errors(ctx)
    cond = np.asarray(ctx.y["condition"]).reshape(len(err), -1)
    los = (cond == CONDITIONS.index("LOS")).any(1)
    try:
        peb = np.asarray(split_bound(ctx.config, ctx.data, "test", mode), np.float64)
    except BoundError as e:        # e.g. a cache traced before interaction geometry was stored
        return EvalResult(report={"bound": {mode: {"unavailable": str(e)}}})
    ratio = np.where(np.isfinite(peb), err / peb, np.nan)      # an unbounded sample has no ratio
    out = {"peb_m": summarize(peb, los), "error_over_peb": summarize(ratio, los)}
    fig = _figure_bound(err, peb, los, mode, f"{ctx.model_name}: test error against the position error bound")
    return EvalResult(report={"bound": {mode: out}}, figures={f"bound_{mode}.png": fig})


@register_evaluator("bound", run=("geometry",))
def bound(ctx: EvalContext) -> EvalResult:
    """The model's error against the physical limit: per test sample the ratio of its error to
    its position error bound (Cramér-Rao, :mod:`tfloc.physics.bound`; specular paths follow the
    UE through mirror images), summarised (median, p90, LOS and NLOS apart), with a CDF figure.
    Unbounded samples have no ratio (left out, counted in ``peb_m``)."""
    return _bound(ctx, "mirror")


@register_evaluator("bound_nuisance", run=("geometry",))
def bound_nuisance(ctx: EvalContext) -> EvalResult:
    """As ``bound``, against the conservative bound (only the LOS path follows the UE; NLOS
    samples are unbounded)."""
    return _bound(ctx, "nuisance")
