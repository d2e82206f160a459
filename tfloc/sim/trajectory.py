"""A moving UE traced through a site: seed 004's 3D spiral, snapshot by snapshot.

    positions = spiral(cfg.evaluation.trajectory)                 # [n, 3] in time order
    paths = load_or_trace_trajectory(cfg.simulation, positions, cache_dir)

The trajectory is traced with the site's own settings (BSs, arrays, depth) and
cached beside the site's paths, keyed by the site and the positions.
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from tfloc.sim.config import SimulationConfig, TrajectoryConfig
from tfloc.sim.paths import PathSet

log = logging.getLogger("tfloc")


def spiral(cfg: TrajectoryConfig) -> np.ndarray:
    """[snapshots, 3] positions (m, float32) along the helix of ``cfg``, in time order."""
    t = np.linspace(0.0, 1.0, cfg.snapshots)
    phi = 2 * np.pi * cfg.turns * t
    z0, z1 = cfg.height_range_m
    return np.stack([cfg.center_m[0] + cfg.radius_m * np.cos(phi),
                     cfg.center_m[1] + cfg.radius_m * np.sin(phi),
                     z0 + (z1 - z0) * t], axis=1).astype(np.float32)


def trajectory_dir(cfg: SimulationConfig, positions: np.ndarray, cache_dir: str) -> str:
    from tfloc.sim.build import entry_dir
    digest = hashlib.sha256(np.ascontiguousarray(positions, np.float32).tobytes()).hexdigest()[:12]
    return f"{entry_dir(cfg, cache_dir)}-trajectory-{digest}"


def load_or_trace_trajectory(cfg: SimulationConfig, positions: np.ndarray, cache_dir: str,
                             progress: bool = True) -> PathSet:
    """The paths of a UE at ``positions`` [n, 3] (time order), from the cache when possible.

    Indoor positions drop as from a UE grid; ``meta["source"]`` gives each traced
    UE's row in ``positions`` (its time; a sectored site lists UEs by sector).
    """
    from tfloc.sim.tracer import trace_site
    path = trajectory_dir(cfg, positions, cache_dir)
    if os.path.isdir(path):
        log.info("reusing the traced trajectory from %s", path)
        return PathSet.load(path)
    ps = trace_site(cfg, progress=progress, candidates=positions)
    ps.save(path)
    log.info("traced a trajectory of %d snapshots (%d indoor dropped) in %.1f s into %s",
             ps.meta["n_ue"], ps.meta["n_indoor_excluded"], ps.meta["trace_s"], path)
    return ps
