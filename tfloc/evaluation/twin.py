"""The ``twin_refine`` evaluator: the network's test estimates refined by maximum likelihood
against the ray-traced twin of the site (:mod:`tfloc.physics.twin`), errors before and after.

The twin is the run's own site as configured, or a wrong one (``evaluation.twin``: no
vehicles, materials scaled, the BS moved), traced with the dataset's solver settings at the
candidates; each sample is traced from its own panel and, with vehicles, in its own traffic.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from tfloc.data.bundle import SPLIT_SEED_OFFSETS
from tfloc.evaluation.base import EvalContext, EvalResult, pyplot, register_evaluator
from tfloc.metrics import error_summary, position_errors_m
from tfloc.physics.bound import BoundSetup, sample_pebs
from tfloc.physics.twin import refine
from tfloc.sim.config import BaseStationConfig
from tfloc.sim.paths import CONDITIONS, PathSet
from tfloc.sim.tracer import SiteTracer, site_panels


def twin_simulation(sim, twin):
    """The twin's SimulationConfig: the site's, with the BS moved by ``twin.bs_offset_m``."""
    out = copy.deepcopy(sim)
    off = np.asarray(twin.bs_offset_m, float)
    if not off.any():
        return out
    sectored, panels = site_panels(sim)
    if sectored:
        out.bs_position_m = list(np.asarray(sim.bs_position_m, float) + off)
    else:
        out.base_stations = [BaseStationConfig(position_m=list(np.asarray(p["position"], float) + off),
                                               azimuth_deg=p["azimuth_deg"], downtilt_deg=p["downtilt_deg"])
                             for p in panels]
    return out


def twin_site_tracer(sim, twin) -> SiteTracer:
    """The twin's ray tracer: the site of ``sim`` (see :func:`twin_simulation`) with every
    material's permittivity and conductivity times ``twin.material_scale``."""
    tracer = SiteTracer(sim)
    if twin.material_scale != 1.0:
        for m in tracer.scene.radio_materials.values():      # a permittivity stays >= 1 (vacuum)
            eps = float(np.asarray(m.relative_permittivity).reshape(-1)[0])
            m.relative_permittivity = max(eps * twin.material_scale, 1.0)
            m.conductivity = m.conductivity * twin.material_scale
    return tracer


def twin_tracer(sim, twin, dims: int, height_m: float, sectors, realizations, tracer=None):
    """trace(positions [m, dims], samples [m]) -> PathSet of the twin at the positions, each from
    its sample's panel (``sectors``) and, with vehicles, in its traffic (``realizations``);
    ``trace.bounds`` [2, 3] is the scene's bounding box. ``tracer``: a
    :func:`twin_site_tracer` to reuse."""
    tracer = tracer or twin_site_tracer(sim, twin)
    has_cars = sim.cars.num_realizations > 0
    box = tracer.scene.mi_scene.bbox()
    bounds = np.array([[float(box.min[i]) for i in range(3)], [float(box.max[i]) for i in range(3)]])

    def trace(xy, samples):
        pos = np.zeros((len(xy), 3))
        pos[:, :dims] = xy
        if dims == 2:
            pos[:, 2] = height_m
        keys = np.stack([sectors[samples], realizations[samples] if (has_cars and twin.vehicles)
                         else np.full(len(samples), -1)], 1)
        parts, order = [], []
        for key in np.unique(keys, axis=0):
            i = np.flatnonzero((keys == key).all(1))
            real = None if (has_cars and key[1] < 0) else int(max(key[1], 0))
            parts.append(tracer.trace_pathset(pos[i], sector=int(key[0]), realization=real))
            order.append(i)
        return PathSet.concatenate(parts).select(np.argsort(np.concatenate(order)))
    trace.bounds = bounds           # the scene's lowest and highest corner [2, 3]
    return trace


def _figure(before, after, peb, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for v, label, ls in ((before, "network", "-"), (after, "network + twin refinement", "-"),
                         (peb[np.isfinite(peb)], "position error bound", "--")):
        v = np.sort(v)
        if len(v):
            ax.step(v, np.arange(1, len(v) + 1) / len(before), where="post", ls=ls,
                    label=f"{label}: median {np.median(v):.3g} m")
    ax.set_xscale("log")
    ax.set_xlabel("error [m]")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _split_csi(data, split: str) -> np.ndarray:
    """The observed CSI [n, (L,) U, antennas, K, 2] of a split: its own impairment draws (those
    the run's features of the split come from)."""
    ds = data.pipeline.csi_dataset(getattr(data.splits, split), training=False,
                                   split_seed_offset=SPLIT_SEED_OFFSETS[split])
    return np.concatenate([x["csi"].numpy() for x, _ in ds])


#: the fit thresholds a run chooses among on validation samples (``evaluation.twin.choose_max_fit``):
#: 0 keeps every start (where refining does not help on validation, it is not done), inf: no check
FIT_GRID = (0.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, float("inf"))


def _starts(est, radius, count: int, dims: int):
    """[n, count, dims]: the estimate, then ``count - 1`` points on a horizontal circle of
    ``radius`` [n] around it."""
    angles = 2 * np.pi * np.arange(max(count - 1, 0)) / max(count - 1, 1)
    ring = np.stack([np.cos(angles), np.sin(angles)], 1)
    if dims == 3:
        ring = np.concatenate([ring, np.zeros((len(ring), 1))], 1)
    return np.concatenate([est[:, None], est[:, None] + radius[:, None, None] * ring[None]], 1)


def choose_max_fit(fit, refined, start, truth) -> tuple[float, dict]:
    """The threshold of :data:`FIT_GRID` whose gate (keep a refined position where its fit is
    at most the threshold, else the start) gives the lowest mean error on these (validation)
    samples, the stricter on a tie (0: keep every start); and each threshold's mean error."""
    scores = {}
    for thr in FIT_GRID:
        pos = np.where((fit <= thr)[:, None], refined, start)
        scores[thr] = float(np.mean(position_errors_m(pos, truth)))
    best = min(FIT_GRID, key=lambda thr: (round(scores[thr], 9), thr))
    return best, {("none" if not np.isfinite(k) else f"{k:g}"): v for k, v in scores.items()}


@register_evaluator("twin_refine", run=("geometry",))
def twin_refine(ctx: EvalContext) -> EvalResult:
    """Refines up to ``evaluation.twin.max_samples`` test estimates against the twin (a
    multi-BS sample from all its links jointly, a sample of several time slots from all of
    them, each slot with its own gains): errors before and after (per condition too),
    error over the bound before and after, the share improved and worsened, seconds per sample
    and where they went, a CDF (twin_refine.png). The fit threshold is chosen on as many
    validation samples, refined alike (``evaluation.twin.choose_max_fit``)."""
    cfg, data, t = ctx.config, ctx.data, ctx.config.evaluation.twin
    dims = cfg.data.position_dims
    used_slots = min(t.slots or cfg.data.num_slots, cfg.data.num_slots)
    sim = twin_simulation(cfg.simulation, t)
    setup = BoundSetup.from_config(sim, cfg.data)
    tracer = twin_site_tracer(sim, t)
    xv, yv = ctx.fixed_set("val")
    val_out = ctx.predict(xv)
    val_est = np.asarray(val_out["position"], np.float64)
    val_truth = np.asarray(yv["position"], np.float64)

    def radius_of(outputs, pick, count):
        if "position_std" in outputs:
            return np.linalg.norm(np.asarray(outputs["position_std"], np.float64)[pick], axis=1), "the served sigma"
        return np.full(count, float(np.median(position_errors_m(val_est, val_truth)))), "the validation median error"

    def run(split, csi, est, radius, pick, max_fit):
        rows = np.asarray(getattr(data.splits, split))       # [n] or, multi-BS, [n, L] (a sample's links)
        first_link = rows.reshape(len(rows), -1)[:, 0][pick]
        y = (csi[pick][..., 0] + 1j * csi[pick][..., 1]).astype(np.complex64)
        slots = cfg.data.num_slots
        if slots > 1:            # [n, (L,) T*U, M, K] slot-major -> [n, L*T', U, M, K]: a link's slots in a row
            y = y.reshape(len(y), -1, slots, y.shape[-3] // slots, *y.shape[-2:])[:, :, :used_slots]
            y = y.reshape(len(y), -1, *y.shape[-3:])
        trace = twin_tracer(sim, t, dims, cfg.simulation.ue_grid.height_m, data.paths.sector[first_link],
                            data.paths.realization[first_link], tracer=tracer)
        return refine(y, _starts(est, radius, t.starts, dims), trace, setup, bounds=trace.bounds, rounds=t.rounds,
                      retrace_m=t.retrace_m, prior_sigma_m=radius if t.prior else None, max_fit=max_fit)

    max_fit, fit_scores = (t.max_fit or None), None
    if t.choose_max_fit:         # on validation samples, refined like the test ones without the check
        vpick = np.sort(np.random.default_rng(cfg.runtime.seed + 1).permutation(len(val_est))[:t.max_samples])
        vradius, _ = radius_of(val_out, vpick, len(vpick))
        rv = run("val", _split_csi(data, "val"), val_est[vpick], vradius, vpick, None)
        chosen, fit_scores = choose_max_fit(rv.fit, rv.position, val_est[vpick], val_truth[vpick])
        max_fit = chosen if np.isfinite(chosen) else None
    rows = np.asarray(data.splits.test)
    n = len(rows)
    pick = np.sort(np.random.default_rng(cfg.runtime.seed).permutation(n)[:t.max_samples])
    csi = _split_csi(data, "test")
    truth = np.asarray(ctx.y["position"], np.float64)[pick]
    est = np.asarray(ctx.outputs["position"], np.float64)[pick]
    radius, source = radius_of(ctx.outputs, pick, len(pick))
    t0 = time.time()
    r = run("test", csi, est, radius, pick, max_fit)
    seconds = time.time() - t0
    before, after = position_errors_m(est, truth), position_errors_m(r.position, truth)
    peb = sample_pebs(data.paths, BoundSetup.from_config(cfg.simulation, cfg.data, num_slots=used_slots),
                      rows[pick].reshape(len(pick), -1), progress=False)
    codes = data.paths.condition[rows[pick]]
    if codes.ndim == 2:         # several links: LOS where any link is, else the first link's condition
        los = CONDITIONS.index("LOS")
        codes = np.where((codes == los).any(1), los, codes[:, 0])
    bounded = np.isfinite(peb) & (peb > 0)

    def ratio(e, mask=True):
        m = bounded & mask
        return float(np.median(e[m] / peb[m])) if m.any() else None
    per_condition = {CONDITIONS[c]: {"n": int((codes == c).sum()),
                                     "before": error_summary(before[codes == c]),
                                     "after": error_summary(after[codes == c]),
                                     "median_error_over_peb": {"before": ratio(before, codes == c),
                                                               "after": ratio(after, codes == c)}}
                     for c in np.unique(codes) if c >= 0}
    change = after - before                 # per sample; its mean's 95 % bootstrap interval
    boot = np.random.default_rng(0).integers(0, len(change), (10000, len(change)))
    low, high = np.percentile(change[boot].mean(axis=1), [2.5, 97.5])
    tol = 1e-3
    report = {"twin_refine": {
        "n": int(len(pick)), "of_test": int(n), "starts": int(t.starts), "start_radius_from": source,
        "slots": int(used_slots), "of_slots": int(cfg.data.num_slots),
        "prior": t.prior, "max_fit": max_fit,                  # None: no check; 0: every start kept
        "max_fit_chosen_on": "validation" if t.choose_max_fit else "config",
        "validation_mean_error_by_max_fit": fit_scores,
        "start_radius_m_median": float(np.median(radius)),
        "twin": {"vehicles": t.vehicles, "material_scale": t.material_scale, "bs_offset_m": list(t.bs_offset_m)},
        "ta_max_ns": cfg.data.ta_max_ns,
        "before": error_summary(before), "after": error_summary(after),
        "mean_change_m": {"mean": float(change.mean()), "low": float(low), "high": float(high)},
        "improved": float(np.mean(after < before - tol)), "worsened": float(np.mean(after > before + tol)),
        "kept_start": float(np.mean(r.kept_start)), "outside_scene": int(np.sum(r.outside)),
        "fit_median": float(np.median(r.fit)) if np.isfinite(r.fit).any() else None,
        "median_error_over_peb": {"before": ratio(before), "after": ratio(after)},
        "per_condition": per_condition, "seconds_per_sample": seconds / len(pick),
        "seconds": {"total": seconds, **r.seconds}, "twin_traces": r.traces}}
    fig = _figure(before, after, peb, f"{cfg.name}: twin refinement of {len(pick)} test samples")
    return EvalResult(report=report, figures={"twin_refine.png": fig})
