"""Ray tracing a site with Sionna RT (Dr.Jit side) into a compact PathSet."""
from __future__ import annotations

import time

import numpy as np

from tfloc.config import ArrayConfig, SimulationConfig
from tfloc.sim.paths import PathSet
from tfloc.sim.site import is_indoor, sector_of, ue_grid


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
        power = np.sum(np.abs(a) ** 2, axis=(2, 3))                 # [num_rx, P]
        for i in range(positions.shape[0]):
            v = np.flatnonzero(valid[i])
            # Dr.Jit collects paths in a thread-dependent order: store them by
            # delay (ties by power) so every build of a config is identical.
            v = v[np.lexsort((-power[i, v], tau[i, v]))]
            out["a"].append(a[i, v])
            out["tau"].append(tau[i, v].astype(np.float32))
            for k in angles:
                out[k].append(angles[k][i, v].astype(np.float32))
            out["los"].append(bool(is_los_path[i].any()))
        return out

    def trace_pathset(self, positions: np.ndarray, sector: int) -> PathSet:
        """Traces UEs of one sector; returns them as a PathSet (meta holds the time)."""
        self.set_sector(self.cfg.sector_azimuths_deg[sector])
        t0 = time.time()
        res = self.trace(positions)
        counts = np.array([len(t) for t in res["tau"]], np.int64)
        n_ue_ant, n_bs_ant = self.cfg.ue_array.num_ant, self.cfg.bs_array.num_ant

        def cat(k, shape):
            return np.concatenate(res[k]) if counts.sum() else np.zeros(shape, np.float32)
        return PathSet(
            positions=positions.astype(np.float32),
            sector=np.full(len(positions), sector, np.int8),
            los=np.array(res["los"], bool),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            a=cat("a", (0, n_ue_ant, n_bs_ant)).astype(np.complex64),
            tau=cat("tau", (0,)),
            **{k: cat(k, (0,)) for k in ("theta_t", "phi_t", "theta_r", "phi_r")},
            meta={"trace_s": time.time() - t0},
        )


def plan_site(cfg: SimulationConfig, tracer: SiteTracer) -> dict:
    """The UEs to trace, sorted by sector, and their split into chunks.

    Output: dict with ``positions`` [n, 3], ``sectors`` [n], ``bounds`` [num_chunks, 2]
    (start, end; each chunk lies in one sector and holds at most
    ``receivers_per_batch`` UEs), ``n_grid`` and ``n_indoor``.
    """
    g = cfg.ue_grid
    grid = ue_grid(g.x_range_m, g.y_range_m, g.spacing_m, g.height_m)
    indoor = is_indoor(tracer.scene.mi_scene, grid) if g.exclude_indoor else np.zeros(len(grid), bool)
    positions = grid[~indoor]
    sectors = sector_of(positions, cfg.bs_position_m, cfg.sector_azimuths_deg)
    order = np.argsort(sectors, kind="stable")
    positions, sectors = positions[order], sectors[order]
    bounds = []
    for s in range(len(cfg.sector_azimuths_deg)):
        idx = np.flatnonzero(sectors == s)
        for start in range(0, len(idx), cfg.receivers_per_batch):
            chunk = idx[start:start + cfg.receivers_per_batch]
            bounds.append((int(chunk[0]), int(chunk[-1]) + 1))
    return {"positions": positions, "sectors": sectors,
            "bounds": np.array(bounds, np.int64).reshape(-1, 2),
            "n_grid": int(len(grid)), "n_indoor": int(indoor.sum())}


def site_meta(cfg: SimulationConfig, ps: PathSet, plan: dict, trace_s: float) -> dict:
    """Counts and timings stored beside the paths and copied into reports."""
    counts = ps.num_paths
    return {
        "scene": cfg.scene,
        "n_grid": int(plan["n_grid"]),
        "n_indoor_excluded": int(plan["n_indoor"]),
        "n_ue": ps.num_ue,
        "n_no_path": int((counts == 0).sum()),
        "n_los": int(ps.los.sum()),
        "per_sector": [int((ps.sector == s).sum()) for s in range(len(cfg.sector_azimuths_deg))],
        "mean_paths_per_ue": float(counts.mean()) if len(counts) else 0.0,
        "trace_s": round(trace_s, 2),
        "receivers_per_s": round(ps.num_ue / max(trace_s, 1e-9), 1),
    }


def trace_site(cfg: SimulationConfig, progress: bool = True) -> PathSet:
    """Traces the configured UE grid of a site in memory (no cache; see tfloc.sim.build)."""
    from tqdm.auto import tqdm
    tracer = SiteTracer(cfg)
    plan = plan_site(cfg, tracer)
    parts = []
    with tqdm(total=len(plan["positions"]), unit="rx", desc=f"ray tracing {cfg.scene}",
              disable=not progress, dynamic_ncols=True) as bar:
        for start, end in plan["bounds"]:
            parts.append(tracer.trace_pathset(plan["positions"][start:end],
                                              int(plan["sectors"][start])))
            bar.update(end - start)
    ps = PathSet.concatenate(parts)
    ps.meta = site_meta(cfg, ps, plan, sum(p.meta["trace_s"] for p in parts))
    return ps
