"""Summaries and top-view maps of a traced PathSet (``python -m tfloc.sim inspect``)."""
from __future__ import annotations

import os

import numpy as np

from tfloc.sim.paths import PathSet


def describe(ps: PathSet) -> str:
    """Counts a person checks first: UEs, paths per UE, LOS and no-path shares, per sector."""
    n = ps.num_paths
    has = n > 0
    lines = [
        f"scene: {ps.meta.get('scene', '?')}",
        f"UEs traced: {ps.num_ue} (grid {ps.meta.get('n_grid', '?')}, "
        f"{ps.meta.get('n_indoor_excluded', '?')} indoor excluded)",
        f"no path: {int((~has).sum())} ({100 * (~has).mean():.1f} %)",
        f"LOS: {int(ps.los.sum())} ({100 * ps.los[has].mean():.1f} % of UEs with paths)"
        if has.any() else "LOS: 0",
        f"paths per UE: mean {n.mean():.2f}, median {np.median(n):.0f}, max {n.max(initial=0)}",
        "per sector: " + ", ".join(
            f"{s}: {int((ps.sector == s).sum())} UEs ({100 * ps.los[ps.sector == s].mean():.0f} % LOS)"
            for s in np.unique(ps.sector)),
    ]
    if "trace_s" in ps.meta:
        lines.append(f"tracing: {ps.meta['trace_s']} s ({ps.meta.get('receivers_per_s', '?')} receivers/s)")
    return "\n".join(lines)


def write_maps(ps: PathSet, out_dir: str) -> list[str]:
    """Writes ``coverage.png``: UEs by propagation condition and by sector (top view)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    xy = ps.positions[:, :2]
    has = ps.num_paths > 0
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), dpi=110, sharex=True, sharey=True)
    ax = axes[0]
    for mask, label, color in ((has & ps.los, "LOS", "tab:green"), (has & ~ps.los, "NLOS", "tab:orange"),
                               (~has, "no path", "0.6")):
        ax.scatter(xy[mask, 0], xy[mask, 1], s=2, c=color, label=f"{label} ({int(mask.sum())})")
    ax.set_title("propagation condition")
    ax.legend(markerscale=5, fontsize=8, loc="upper right")
    ax = axes[1]
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=2, c=ps.sector, cmap="tab10", vmin=0, vmax=9)
    ax.set_title("serving sector")
    handles = [plt.Line2D([], [], ls="", marker="o", color=sc.cmap(sc.norm(s)), label=f"sector {s}")
               for s in np.unique(ps.sector)]
    ax.legend(handles=handles, fontsize=8, loc="upper right")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlabel("x [m]")
    axes[0].set_ylabel("y [m]")
    fig.suptitle(f"{ps.meta.get('scene', '')}: {ps.num_ue} UEs")
    fig.tight_layout()
    path = os.path.join(out_dir, "coverage.png")
    tmp = os.path.join(out_dir, ".tmp-coverage.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return [path]
