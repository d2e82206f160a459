"""Ray tracing a site with Sionna RT (Dr.Jit side) into a compact PathSet."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import numpy as np

from tfloc.config import ArrayConfig, SimulationConfig
from tfloc.sim.paths import PathSet
from tfloc.sim.site import is_indoor, sector_of, ue_grid

log = logging.getLogger(__name__)

#: bump when the traced content changes, so old caches are not reused
TRACER_VERSION = 1


def _planar_array(cfg: ArrayConfig):
    from sionna.rt import PlanarArray
    return PlanarArray(num_rows=cfg.num_rows, num_cols=cfg.num_cols,
                       vertical_spacing=cfg.vertical_spacing,
                       horizontal_spacing=cfg.horizontal_spacing,
                       pattern=cfg.pattern, polarization=cfg.polarization)


class SiteTracer:
    """Traces UE positions against the BS of one site.

    The BS is one transmitter whose orientation is switched per sector (all
    sectors share the position, so each UE is traced once, against the panel of
    its own sector). Receivers are traced ``receivers_per_batch`` at a time.

    Parameters
    ----------
    cfg : SimulationConfig
    """

    def __init__(self, cfg: SimulationConfig):
        from sionna.rt import PathSolver, Transmitter
        from tfloc.sim.scenes import load_scene
        self.cfg = cfg
        self.scene = load_scene(cfg.scene)
        self.scene.frequency = cfg.frequency_hz
        self.scene.tx_array = _planar_array(cfg.bs_array)
        self.scene.rx_array = _planar_array(cfg.ue_array)
        self.tx = Transmitter(name="bs", position=[float(v) for v in cfg.bs_position_m],
                              orientation=[0.0, 0.0, 0.0])
        self.scene.add(self.tx)
        self.solver = PathSolver()
        self._receivers = []

    def set_sector(self, azimuth_deg: float):
        self.tx.orientation = [float(np.radians(azimuth_deg)),
                               float(np.radians(self.cfg.bs_downtilt_deg)), 0.0]

    def _set_receivers(self, positions: np.ndarray):
        from sionna.rt import Receiver
        n = positions.shape[0]
        if len(self._receivers) != n:
            for rx in self._receivers:
                self.scene.remove(rx.name)
            self._receivers = []
            for i in range(n):
                rx = Receiver(name=f"ue{i}", position=[float(v) for v in positions[i]])
                self.scene.add(rx)
                self._receivers.append(rx)
        else:
            for rx, p in zip(self._receivers, positions):
                rx.position = [float(v) for v in p]

    def trace(self, positions: np.ndarray) -> dict:
        """Traces one batch of receivers.

        Output
        ------
        dict of per-UE lists: ``a`` [n_i, num_ue_ant, num_bs_ant] complex64,
        ``tau`` [n_i], ``theta_t``/``phi_t``/``theta_r``/``phi_r`` [n_i], and
        ``los`` (bool per UE).
        """
        c = self.cfg
        self._set_receivers(positions)
        paths = self.solver(self.scene, max_depth=c.max_depth,
                            max_num_paths_per_src=c.max_num_paths_per_src,
                            samples_per_src=c.samples_per_src, synthetic_array=True,
                            los=c.los, specular_reflection=c.specular_reflection,
                            diffuse_reflection=False, refraction=False, seed=c.seed)
        a_re, a_im = paths.a
        # [num_rx, num_rx_ant, num_tx=1, num_tx_ant, P] -> [num_rx, P, rx_ant, tx_ant]
        a = (np.array(a_re) + 1j * np.array(a_im)).astype(np.complex64)[:, :, 0]
        a = np.transpose(a, (0, 3, 1, 2))
        valid = np.array(paths.valid)[:, 0]                     # [num_rx, P]
        tau = np.array(paths.tau)[:, 0]
        angles = {k: np.array(getattr(paths, k))[:, 0]
                  for k in ("theta_t", "phi_t", "theta_r", "phi_r")}
        if a.shape[1] and c.max_depth > 0:
            inter = np.array(paths.interactions)[:, :, 0]       # [depth, num_rx, P]
            is_los_path = valid & np.all(inter == 0, axis=0)
        else:
            is_los_path = valid.copy()
        out = {"a": [], "tau": [], "los": [], **{k: [] for k in angles}}
        for i in range(positions.shape[0]):
            v = valid[i]
            out["a"].append(a[i, v])
            out["tau"].append(tau[i, v].astype(np.float32))
            for k in angles:
                out[k].append(angles[k][i, v].astype(np.float32))
            out["los"].append(bool(is_los_path[i].any()))
        return out


def trace_site(cfg: SimulationConfig, progress: bool = True) -> PathSet:
    """Traces the configured UE grid of a site; returns all UEs (no-path ones too)."""
    from tqdm.auto import tqdm
    t0 = time.time()
    tracer = SiteTracer(cfg)
    g = cfg.ue_grid
    grid = ue_grid(g.x_range_m, g.y_range_m, g.spacing_m, g.height_m)
    indoor = is_indoor(tracer.scene.mi_scene, grid) if g.exclude_indoor else np.zeros(len(grid), bool)
    positions = grid[~indoor]
    sectors = sector_of(positions, cfg.bs_position_m, cfg.sector_azimuths_deg)
    t_setup = time.time() - t0

    order = np.argsort(sectors, kind="stable")
    positions, sectors = positions[order], sectors[order]
    parts = {k: [] for k in ("a", "tau", "los", "theta_t", "phi_t", "theta_r", "phi_r")}
    bar = tqdm(total=len(positions), unit="rx", desc=f"ray tracing {cfg.scene}",
               disable=not progress, dynamic_ncols=True)
    t1 = time.time()
    bs = cfg.receivers_per_batch
    for s, az in enumerate(cfg.sector_azimuths_deg):
        idx = np.flatnonzero(sectors == s)
        tracer.set_sector(az)
        for start in range(0, len(idx), bs):
            batch = idx[start:start + bs]
            res = tracer.trace(positions[batch])
            for k in parts:
                parts[k].extend(res[k])
            bar.update(len(batch))
    bar.close()
    t_trace = time.time() - t1

    n_ant_ue, n_ant_bs = cfg.ue_array.num_ant, cfg.bs_array.num_ant
    counts = np.array([len(t) for t in parts["tau"]], np.int64)
    cat = lambda k, empty: np.concatenate(parts[k]) if counts.sum() else empty  # noqa: E731
    ps = PathSet(
        positions=positions.astype(np.float32), sector=sectors,
        los=np.array(parts["los"], bool),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        a=cat("a", np.zeros((0, n_ant_ue, n_ant_bs), np.complex64)),
        tau=cat("tau", np.zeros(0, np.float32)),
        **{k: cat(k, np.zeros(0, np.float32)) for k in ("theta_t", "phi_t", "theta_r", "phi_r")},
    )
    ps.meta = {
        "scene": cfg.scene,
        "n_grid": int(len(grid)),
        "n_indoor_excluded": int(indoor.sum()),
        "n_ue": ps.num_ue,
        "n_no_path": int((counts == 0).sum()),
        "n_los": int(ps.los.sum()),
        "per_sector": [int((sectors == s).sum()) for s in range(len(cfg.sector_azimuths_deg))],
        "mean_paths_per_ue": float(counts.mean()) if len(counts) else 0.0,
        "setup_s": round(t_setup, 2),
        "trace_s": round(t_trace, 2),
        "receivers_per_s": round(len(positions) / max(t_trace, 1e-9), 1),
    }
    return ps


def cache_key(cfg: SimulationConfig) -> str:
    """Hash of everything that changes the traced paths."""
    import sionna.rt
    payload = {"sim": dataclasses.asdict(cfg), "tracer_version": TRACER_VERSION,
               "sionna_rt": getattr(sionna.rt, "__version__", "?")}
    payload["sim"].pop("receivers_per_batch")  # batching does not change the paths
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_or_trace(cfg: SimulationConfig, cache_dir: str, progress: bool = True) -> tuple[PathSet, str, bool]:
    """Returns (paths, cache directory, whether it was a cache hit)."""
    directory = os.path.join(cache_dir, f"paths-{cfg.scene.replace('/', '_')}-{cache_key(cfg)}")
    if os.path.isdir(directory):
        log.info("reusing traced paths from %s", directory)
        return PathSet.load(directory), directory, True
    ps = trace_site(cfg, progress=progress)
    ps.save(directory)
    return ps, directory, False
