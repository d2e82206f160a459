"""Summaries and top-view maps of a traced PathSet (``python -m tfloc.sim inspect``)."""
from __future__ import annotations

import os

import numpy as np

from tfloc.sim.paths import CONDITIONS, PathSet, sample_groups

#: colours of tfloc.sim.paths.CONDITIONS in the maps
_CONDITION_COLORS = ("tab:green", "tab:orange", "tab:red", "0.6")


def _pct(part, whole) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def describe(ps: PathSet) -> str:
    """Counts a person checks first: UEs, links, paths per link, conditions, per sector or BS."""
    n = ps.num_paths
    has = n > 0
    m = ps.meta
    multi = m.get("site", "sectored") != "sectored"
    lines = [
        f"scene: {m.get('scene', '?')} ({m.get('site', 'sectored')} site)",
        f"UE positions: {m.get('n_ue', ps.num_ue)} (candidates {m.get('n_grid', '?')}, "
        f"{m.get('n_indoor_excluded', '?')} indoor excluded)",
    ]
    if m.get("n_realizations", 1) > 1:
        lines.append(f"realizations: {m['n_realizations']} (cars moved between them)")
    lines += [
        f"links traced (UE x BS x realization): {ps.num_ue}",
        f"no path: {int((~has).sum())} ({_pct((~has).sum(), len(n))})",
        f"LOS: {int(ps.los.sum())} ({_pct(ps.los[has].sum(), has.sum())} of links with paths)",
        "conditions: " + ", ".join(f"{name} {int((ps.condition == k).sum())} "
                                   f"({_pct((ps.condition == k).sum(), len(n))})"
                                   for k, name in enumerate(CONDITIONS)),
        f"paths per link: mean {n.mean():.2f}, median {np.median(n):.0f}, max {n.max(initial=0)}"
        if len(n) else "paths per link: -",
    ]
    label = "BS" if multi else "sector"
    lines.append(f"per {label}: " + ", ".join(
        f"{s}: {int(((ps.sector == s) & has).sum())} of {int((ps.sector == s).sum())} with paths "
        f"({_pct((ps.los & (ps.sector == s)).sum(), ((ps.sector == s) & has).sum())} LOS)"
        for s in np.unique(ps.sector)))
    if multi and ps.num_ue:
        g = sample_groups(ps)
        seen = (n[g] > 0).sum(axis=1)
        lines.append("BSs with paths per UE: " + ", ".join(
            f"{k}: {int((seen == k).sum())}" for k in range(g.shape[1] + 1) if (seen == k).any()))
    if "trace_s" in m:
        lines.append(f"tracing: {m['trace_s']} s ({m.get('receivers_per_s', '?')} receiver positions/s)")
    return "\n".join(lines)


def write_maps(ps: PathSet, out_dir: str, realization: int = 0) -> list[str]:
    """Writes ``coverage.png``: a top view of the UEs of one realization coloured by
    propagation condition, and by serving sector (sectored sites) or by the
    number of BSs in LOS (multi-BS sites, BS sites marked)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    sel = ps.realization == realization
    multi = ps.meta.get("site", "sectored") != "sectored"
    bs = np.asarray(ps.meta.get("bs_positions", []), np.float32).reshape(-1, 3)
    if not multi and len(bs):
        bs = bs[:1]  # the sectors of one site share the position
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), dpi=110, sharex=True, sharey=True)
    ax = axes[0]
    g = None
    if multi and len(bs) > 1:  # a UE's condition towards each BS: show the best one
        g = sample_groups(ps)
        g = g[ps.realization[g[:, 0]] == realization]
        xy, cond = ps.positions[g[:, 0], :2], ps.condition[g].min(axis=1)
        title = "best propagation condition over the BSs"
    else:
        xy, cond = ps.positions[sel, :2], ps.condition[sel]
        title = "propagation condition"
    for k, (name, color) in enumerate(zip(CONDITIONS, _CONDITION_COLORS)):
        mask = cond == k
        if mask.any() or k < 2:
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, c=color, label=f"{name} ({int(mask.sum())})")
    if ps.meta.get("n_realizations", 1) > 1:
        title += f", realization {realization}"
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=8, loc="upper right")
    ax = axes[1]
    if g is not None:
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=4, c=ps.los[g].sum(axis=1),
                        cmap="viridis", vmin=0, vmax=len(bs))
        fig.colorbar(sc, ax=ax, label="BSs in LOS")
        ax.set_title("BSs in line of sight")
    elif multi:  # one BS: how rich each UE's multipath is
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=4, c=ps.num_paths[sel], cmap="viridis")
        fig.colorbar(sc, ax=ax, label="paths")
        ax.set_title("paths per UE")
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=4, c=ps.sector[sel], cmap="tab10", vmin=0, vmax=9)
        ax.set_title("serving sector")
        handles = [plt.Line2D([], [], ls="", marker="o", color=sc.cmap(sc.norm(s)), label=f"sector {s}")
                   for s in np.unique(ps.sector)]
        ax.legend(handles=handles, fontsize=8, loc="upper right")
    cars = ps.meta.get("car_positions", [])
    sizes = ps.meta.get("car_sizes") or [[4.4, 1.8, 1.5]] * max((len(c) for c in cars), default=0)
    for ax in axes:
        if realization < len(cars):  # the vehicles of this realization, darker when taller
            for (x, y, _), (length, width, height) in zip(cars[realization], sizes):
                ax.add_patch(plt.Rectangle((x - length / 2, y - width / 2), length, width, zorder=4,
                                           color=str(round(max(0.0, 0.55 - 0.12 * height), 2))))
        if len(bs):
            ax.scatter(bs[:, 0], bs[:, 1], marker="^", s=80, c="k", zorder=5)
            for k, p in enumerate(bs):
                ax.annotate(f"BS{k}" if len(bs) > 1 else "BS", p[:2], xytext=(4, 4),
                            textcoords="offset points", fontsize=8)
        ax.set_aspect("equal")
        ax.set_xlabel("x [m]")
    axes[0].set_ylabel("y [m]")
    fig.suptitle(f"{ps.meta.get('scene', '')}: {int(len(xy))} UEs")
    fig.tight_layout()
    path = os.path.join(out_dir, "coverage.png")
    tmp = os.path.join(out_dir, ".tmp-coverage.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return [path]
