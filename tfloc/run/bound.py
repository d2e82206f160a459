"""The bound tool: the position error bound of every sample of a cache entry, with its map
(``python -m tfloc.sim bound DIR``; the bound itself is :mod:`tfloc.physics.bound`)."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from tfloc.physics.bound import BoundError, BoundSetup, sample_pebs, summarize
from tfloc.run.experiment import from_dict
from tfloc.sim.paths import PathSet, sample_groups
from tfloc.utils import atomic_write_json


def bound_cache_entry(directory: str, data, sim=None, out_dir: str | None = None,
                      progress: bool = True, batch_size: int = 32, **setup_overrides) -> dict:
    """The PEB of every sample of a cache entry: writes ``bound.npz`` (per sample: ``peb``,
    ``rows``, ``position``, ``los``), ``bound.json`` (settings, summary, time) and
    ``bound.png`` (map + CDF) into ``out_dir`` (default: the entry) and returns the summary.
    ``sim``: the entry's SimulationConfig (default: its ``simulation.json``); ``data``: the
    DataConfig whose subcarriers, SNR and TA the bound follows."""
    ps = PathSet.load(directory)
    if sim is None:
        path = os.path.join(directory, "simulation.json")
        if not os.path.isfile(path):
            raise BoundError(f"{directory}: no simulation.json; pass the config it was built from (--config)")
        with open(path) as fh:
            sim = from_dict({"simulation": json.load(fh)}).simulation
    setup = BoundSetup.from_config(sim, data, **setup_overrides)
    t0 = time.time()
    groups = sample_groups(ps)
    peb = sample_pebs(ps, setup, groups, batch_size=batch_size, progress=progress)
    seconds = time.time() - t0
    los = ps.los[groups].any(1)
    has = ~np.isnan(peb)
    out_dir = out_dir or directory
    os.makedirs(out_dir, exist_ok=True)
    summary = {"mode": setup.mode, "clock": setup.clock, "snr_db": setup.snr_db,
               "bandwidth_hz": float(np.ptp(setup.frequencies) + np.diff(setup.frequencies[:2])[0]),
               "subcarriers": int(len(setup.frequencies)), "ta_max_ns": setup.ta_max_s * 1e9,
               "bs_antennas": int(setup.elements.shape[1] * setup.num_pol), "dims": setup.dims,
               "samples_with_paths": int(has.sum()), "seconds": round(seconds, 1),
               "peb_m": summarize(peb[has], los[has])}
    tmp = os.path.join(out_dir, ".tmp-bound.npz")
    np.savez(tmp, peb=peb, rows=groups, position=ps.positions[groups[:, 0]], los=los)
    os.replace(tmp, os.path.join(out_dir, "bound.npz"))
    atomic_write_json(os.path.join(out_dir, "bound.json"), summary)
    title = (f"{ps.meta.get('scene', '')}: position error bound ({setup.mode}), "
             f"{summary['bandwidth_hz'] / 1e6:.0f} MHz, {setup.snr_db:g} dB, "
             f"{summary['bs_antennas']} BS antennas")
    summary["map"] = write_bound_map(ps.positions[groups[:, 0]][has], peb[has], los[has], out_dir, title,
                                     bs_positions=np.unique(setup.bs_positions, axis=0))
    return summary


def write_bound_map(positions, peb, los, out_dir: str, title: str, name: str = "bound.png",
                    bs_positions=()) -> str:
    """Writes a top view of the position error bound [m] of each UE (``positions`` [n, >=2],
    ``peb`` [n]: log colour scale, unbounded ones grey, no path left out) beside its CDF for
    LOS and NLOS UEs. Returns the PNG's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after choosing the headless backend
    from matplotlib.colors import LogNorm
    os.makedirs(out_dir, exist_ok=True)
    xy, peb, los = np.asarray(positions)[:, :2], np.asarray(peb, float), np.asarray(los, bool)
    fin, unb = np.isfinite(peb), np.isinf(peb)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), dpi=110, gridspec_kw={"width_ratios": [1.25, 1]})
    ax = axes[0]
    ax.scatter(xy[unb, 0], xy[unb, 1], s=4, c="0.75", label=f"unbounded ({int(unb.sum())})")
    if fin.any():
        lo, hi = np.percentile(peb[fin], [1, 99])
        sc = ax.scatter(xy[fin, 0], xy[fin, 1], s=4, c=peb[fin], cmap="viridis_r",
                        norm=LogNorm(vmin=max(lo, 1e-6), vmax=max(hi, lo * 1.01, 1e-6)))
        fig.colorbar(sc, ax=ax, label="position error bound [m]")
    bs = np.asarray(bs_positions, float).reshape(-1, 3)
    if len(bs):
        ax.scatter(bs[:, 0], bs[:, 1], marker="^", s=80, c="k", zorder=5, label="BS")
    if unb.any() or len(bs):
        ax.legend(markerscale=1.5, fontsize=8, loc="upper right")
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title("PEB per UE")
    ax = axes[1]
    for mask, label, color in ((los, "LOS", "tab:green"), (~los, "NLOS", "tab:orange")):
        v = np.sort(peb[mask & ~np.isnan(peb)])
        if len(v):
            shown = v[np.isfinite(v)]
            ax.step(shown, np.arange(1, len(shown) + 1) / len(v), where="post", color=color,
                    label=f"{label}: median {np.median(v):.3g} m (n={len(v)})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("position error bound [m]")
    ax.set_ylabel("CDF")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("CDF (unbounded UEs never reach it)")
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    tmp = os.path.join(out_dir, ".tmp-" + name)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
