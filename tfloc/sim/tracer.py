"""Ray tracing a site with Sionna RT (Dr.Jit side) into a compact PathSet."""
from __future__ import annotations

import time

import numpy as np

from tfloc.sim.config import ArrayConfig, SimulationConfig, UEGridConfig
from tfloc.sim.paths import CONDITIONS, LOS, NLOS_CAR, NLOS_STATIC, NO_PATH, PathSet
from tfloc.sim.site import is_indoor, sector_of, ue_grid


def _planar_array(cfg: ArrayConfig):
    from sionna.rt import PlanarArray
    return PlanarArray(num_rows=cfg.num_rows, num_cols=cfg.num_cols,
                       vertical_spacing=cfg.vertical_spacing,
                       horizontal_spacing=cfg.horizontal_spacing,
                       pattern=cfg.pattern, polarization=cfg.polarization)




def site_panels(cfg: SimulationConfig) -> tuple[bool, list[dict]]:
    """(sectored, panels) of the configured site.

    Sectored (etoile): one BS position, one panel per sector; each UE is traced
    against the panel of its own sector. Otherwise (``base_stations`` or the
    scene's own sites): every UE is traced against every panel.
    Each panel is ``{"position": [x, y, z], "azimuth_deg": a, "downtilt_deg": t}``.
    """
    from tfloc.sim.scenes import SCENE_SITES
    if cfg.base_stations:
        return False, [{"position": list(b.position_m), "azimuth_deg": b.azimuth_deg,
                        "downtilt_deg": b.downtilt_deg} for b in cfg.base_stations]
    if cfg.scene in SCENE_SITES:
        return False, SCENE_SITES[cfg.scene](cfg.scene_seed)
    return True, [{"position": list(cfg.bs_position_m), "azimuth_deg": a,
                   "downtilt_deg": cfg.bs_downtilt_deg} for a in cfg.sector_azimuths_deg]


def _orientation(panel: dict) -> list[float]:
    return [float(np.radians(panel["azimuth_deg"])), float(np.radians(panel["downtilt_deg"])), 0.0]


class SiteTracer:
    """Traces UE positions against the BS panels of a site.

    Sectored sites have one transmitter whose orientation is switched per
    sector (each UE is traced once, against its own sector's panel). Multi-BS
    sites have one transmitter per panel, all traced together. With
    ``cars.num_realizations`` the scene's cars are moved to realization ``r``'s
    traffic before tracing. Receivers are traced ``receivers_per_batch`` at a time.

    Parameters
    ----------
    cfg : SimulationConfig
    """

    def __init__(self, cfg: SimulationConfig):
        import re
        from sionna.rt import PathSolver, Transmitter
        from tfloc.sim.scenes import load_scene
        self.cfg = cfg
        self.has_cars = cfg.cars.num_realizations > 0
        self.fleet = cfg.cars.vehicle_types if self.has_cars else []
        self.scene = load_scene(cfg.scene, cfg.scene_seed,
                                movable_regex=cfg.cars.name_regex if self.has_cars else None,
                                num_movable=len(self.fleet))
        self.scene.frequency = cfg.frequency_hz
        self.scene.tx_array = _planar_array(cfg.bs_array)
        self.scene.rx_array = _planar_array(cfg.ue_array)
        self.sectored, self.panels = site_panels(cfg)
        placed = self.panels[:1] if self.sectored else self.panels
        self.txs = []
        for k, p in enumerate(placed):
            tx = Transmitter(name=f"bs{k}", position=[float(v) for v in p["position"]],
                             orientation=_orientation(p))
            self.scene.add(tx)
            self.txs.append(tx)
        self.cars = []
        if self.has_cars:
            self.cars = [o for name, o in sorted(self.scene.objects.items())
                         if re.search(cfg.cars.name_regex, name)]
            if not self.cars:
                from tfloc.config import ConfigError
                raise ConfigError(f"simulation.cars: no object of scene '{cfg.scene}' matches "
                                 f"name_regex '{cfg.cars.name_regex}'")
            if self.fleet:
                self.cars = self.cars[:len(self.fleet)]
            self._car_home = [np.array(o.position).reshape(-1)[:3].astype(np.float64) for o in self.cars]
            params = self.scene.mi_scene_params
            self._car_vertices = [np.array(params[self._vertex_key(o)], np.float64).reshape(-1, 3)
                                  for o in self.cars]
            if self.fleet:
                self._car_vertices = [scale_vehicle(v, h, t) for v, h, t in
                                      zip(self._car_vertices, self._car_home, self.fleet)]
        self.solver = PathSolver()
        self._receivers = []

    @property
    def num_links(self) -> int:
        """Links per UE: 1 for a sectored site, one per panel otherwise."""
        return len(self.txs)

    def set_sector(self, sector: int):
        if self.sectored:
            self.txs[0].orientation = _orientation(self.panels[sector])

    # -- cars ----------------------------------------------------------------- #
    def car_positions(self, realization: int) -> np.ndarray:
        """[num_cars, 3] positions of realization ``realization``.

        Car ``i`` drives in lane ``i % num_lanes`` at that lane's speed; the cars
        of a lane start evenly spaced over ``cars.x_range_m`` (lanes staggered)
        and wrap around it.
        """
        c = self.cfg.cars
        lo, hi = c.x_range_m
        n_lanes = len(c.lanes_y_m)
        per_lane = -(-len(self.cars) // n_lanes)
        t = c.start_s + realization * c.interval_s
        out = []
        for i, home in enumerate(self._car_home):
            lane, k = i % n_lanes, i // n_lanes
            x0 = lo + (hi - lo) * (k + (lane + 0.5) / n_lanes) / per_lane
            x = lo + (x0 + c.speeds_mps[lane] * t - lo) % (hi - lo)
            out.append([x, c.lanes_y_m[lane], home[2]])
        return np.array(out)

    @staticmethod
    def _vertex_key(obj) -> str:
        return obj.mi_mesh.id() + ".vertex_positions"

    def set_realization(self, realization: int | None):
        """Moves the cars to a realization's traffic (None: parks them underground).

        Vertices are placed from the scene file's copy, not moved from where
        they are: Sionna's ``position`` setter translates the current float32
        vertices, so positions would drift with the order of the moves and a
        sharded build would differ from a single one.
        """
        if not self.has_cars:
            return
        import mitsuba as mi
        pos = (np.array([h + [0.0, 0.0, -100.0] for h in self._car_home]) if realization is None
               else self.car_positions(realization))
        params = self.scene.mi_scene_params
        for car, verts, home, p in zip(self.cars, self._car_vertices, self._car_home, pos):
            params[self._vertex_key(car)] = mi.Float((verts + (p - home)).astype(np.float32).ravel())
        params.update()
        self.scene.scene_geometry_updated()

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

    def trace(self, positions: np.ndarray, los_only: bool = False) -> dict:
        """Traces one batch of receivers against every placed transmitter.

        Output
        ------
        dict of lists over links, UE-major (link ``i * num_links + j`` is UE
        ``i`` and transmitter ``j``): ``a`` [n, num_ue_ant, num_bs_ant]
        complex64, ``tau`` [n], ``theta_t``/``phi_t``/``theta_r``/``phi_r`` [n],
        ``vertices`` [n, max_depth, 3] and ``interactions`` [n, max_depth] (each path's
        interaction points and types, from the BS side), and ``los`` (bool per link).
        """
        c = self.cfg
        self._set_receivers(positions)
        depth = 0 if los_only else c.max_depth
        paths = self.solver(self.scene, max_depth=depth,
                            max_num_paths_per_src=c.max_num_paths_per_src,
                            samples_per_src=c.samples_per_src, synthetic_array=True,
                            los=c.los or los_only, specular_reflection=c.specular_reflection,
                            diffuse_reflection=False, refraction=False, seed=c.seed)
        a_re, a_im = paths.a
        # [num_rx, num_rx_ant, num_tx, num_tx_ant, P] -> [num_rx, num_tx, P, rx_ant, tx_ant]
        a = (np.array(a_re) + 1j * np.array(a_im)).astype(np.complex64)
        a = np.transpose(a, (0, 2, 4, 1, 3))
        valid = np.array(paths.valid)                            # [num_rx, num_tx, P]
        tau = np.array(paths.tau)
        angles = {k: np.array(getattr(paths, k)) for k in ("theta_t", "phi_t", "theta_r", "phi_r")}
        if a.shape[2] and depth > 0:
            inter = np.array(paths.interactions)                 # [depth, num_rx, num_tx, P]
            is_los_path = valid & np.all(inter == 0, axis=0)
            # [num_rx, num_tx, P, depth, 3] and [num_rx, num_tx, P, depth]: from the BS side
            verts = np.moveaxis(np.array(paths.vertices), 0, 3)
            inter = np.moveaxis(inter, 0, 3)
        else:
            is_los_path = valid.copy()
            verts = np.zeros(valid.shape + (depth, 3), np.float32)
            inter = np.zeros(valid.shape + (depth,), np.uint8)
        out = {"a": [], "tau": [], "los": [], "vertices": [], "interactions": [], **{k: [] for k in angles}}
        power = np.sum(np.abs(a) ** 2, axis=(3, 4))             # [num_rx, num_tx, P]
        for i in range(positions.shape[0]):
            for j in range(self.num_links):
                v = np.flatnonzero(valid[i, j])
                # Dr.Jit collects paths in a thread-dependent order: store them by
                # delay (ties by power) so every build of a config is identical.
                v = v[np.lexsort((-power[i, j, v], tau[i, j, v]))]
                out["a"].append(a[i, j, v])
                out["tau"].append(tau[i, j, v].astype(np.float32))
                out["vertices"].append(verts[i, j, v].astype(np.float32))
                out["interactions"].append(inter[i, j, v].astype(np.uint8))
                for k in angles:
                    out[k].append(angles[k][i, j, v].astype(np.float32))
                out["los"].append(bool(is_los_path[i, j].any()))
        return out

    def static_los(self, positions: np.ndarray) -> np.ndarray:
        """[n, num_links] bool: a LOS path exists with the cars removed (one LOS-only trace)."""
        self.set_realization(None)
        out = []
        for s in range(0, len(positions), self.cfg.receivers_per_batch):
            out += self.trace(positions[s:s + self.cfg.receivers_per_batch], los_only=True)["los"]
        return np.array(out, bool).reshape(len(positions), self.num_links)

    def trace_pathset(self, positions: np.ndarray, sector: int = 0, *, realization: int | None = 0,
                      ue_id: np.ndarray | None = None, static_los: np.ndarray | None = None) -> PathSet:
        """Traces a chunk of UEs (of one sector, for sectored sites) into a PathSet.

        ``ue_id`` [n] numbers the UEs (default 0..n-1); ``static_los`` [n, num_links]
        (from :meth:`static_los`) tells NLOS-by-car from NLOS-by-buildings.
        ``meta`` holds the tracing time.
        """
        self.set_sector(sector)
        self.set_realization(realization)
        t0 = time.time()
        res = self.trace(positions)
        counts = np.array([len(t) for t in res["tau"]], np.int64)
        n_ue_ant, n_bs_ant = self.cfg.ue_array.num_ant, self.cfg.bs_array.num_ant
        L, n = self.num_links, len(positions)
        ue_id = np.arange(n) if ue_id is None else np.asarray(ue_id)
        los = np.array(res["los"], bool)
        los_without_cars = (static_los.reshape(-1) if static_los is not None
                            else np.zeros(n * L, bool))
        condition = np.where(counts == 0, NO_PATH, np.where(
            los, LOS, np.where(los_without_cars, NLOS_CAR, NLOS_STATIC))).astype(np.int8)

        def cat(k, shape):
            return np.concatenate(res[k]) if counts.sum() else np.zeros(shape, np.float32)
        return PathSet(
            positions=np.repeat(positions.astype(np.float32), L, axis=0),
            sector=(np.full(n * L, sector, np.int8) if self.sectored
                    else np.tile(np.arange(L, dtype=np.int8), n)),
            los=los,
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            a=cat("a", (0, n_ue_ant, n_bs_ant)).astype(np.complex64),
            tau=cat("tau", (0,)),
            **{k: cat(k, (0,)) for k in ("theta_t", "phi_t", "theta_r", "phi_r")},
            vertices=cat("vertices", (0, self.cfg.max_depth, 3)).astype(np.float32),
            interactions=cat("interactions", (0, self.cfg.max_depth)).astype(np.uint8),
            ue_id=np.repeat(ue_id.astype(np.int32), L),
            realization=np.full(n * L, -1 if realization is None else realization, np.int16),
            condition=condition,
            meta={"trace_s": time.time() - t0},
        )


def vehicle_size(vertices: np.ndarray) -> np.ndarray:
    """[length, width, height] of a vehicle mesh (length: the longer horizontal side)."""
    ext = vertices.max(axis=0) - vertices.min(axis=0)
    return np.array([max(ext[0], ext[1]), min(ext[0], ext[1]), ext[2]])


def scale_vehicle(vertices: np.ndarray, home: np.ndarray, vtype) -> np.ndarray:
    """A car mesh's vertices [n, 3] scaled to ``vtype``'s length, width and height (0: keep),
    about the point under ``home`` on the mesh's floor, so it stays on the road where it was."""
    size = vehicle_size(vertices)
    want = np.array([vtype.length_m, vtype.width_m, vtype.height_m])
    s = np.where(want > 0, want / size, 1.0)
    ext = vertices.max(axis=0) - vertices.min(axis=0)
    sx, sy = (s[0], s[1]) if ext[0] >= ext[1] else (s[1], s[0])
    anchor = np.array([home[0], home[1], vertices[:, 2].min()])
    return (vertices - anchor) * np.array([sx, sy, s[2]]) + anchor


def ue_positions(g: UEGridConfig) -> np.ndarray:
    """Candidate UE positions [n, 3] of the config (before indoor ones drop)."""
    if g.sampling == "uniform":
        rng = np.random.default_rng(g.seed)
        pos = np.stack([rng.uniform(*g.x_range_m, g.num_ues), rng.uniform(*g.y_range_m, g.num_ues),
                        np.full(g.num_ues, g.height_m)], axis=1).astype(np.float32)
    else:
        pos = ue_grid(g.x_range_m, g.y_range_m, g.spacing_m, g.height_m)
    if g.regions_m:
        x, y = pos[:, 0], pos[:, 1]
        keep = np.zeros(len(pos), bool)
        for x0, x1, y0, y1 in g.regions_m:
            keep |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        pos = pos[keep]
    if g.height_range_m:
        rng = np.random.default_rng([g.seed, 1])
        # A UE exactly on the ground plane would sit inside it: lift it to 0.1 m.
        pos[:, 2] = np.maximum(rng.uniform(*g.height_range_m, len(pos)), 0.1)
    return pos


def plan_site(cfg: SimulationConfig, tracer: SiteTracer, candidates: np.ndarray | None = None) -> dict:
    """The UEs to trace and their split into chunks.

    ``candidates`` [n, 3]: positions to trace instead of the config's UE grid (a
    trajectory); indoor ones drop as from the grid.

    Output: dict with ``positions`` [n, 3] (sorted by sector on sectored sites),
    ``source`` [n] (each one's row in the candidates), ``sectors`` [n],
    ``chunks`` [num_chunks, 3] (realization, start, end; a chunk lies in one
    sector and holds at most ``receivers_per_batch`` UEs), ``static_los``
    [n, num_links] (with cars only), ``n_grid`` and ``n_indoor``.
    """
    g = cfg.ue_grid
    grid = ue_positions(g) if candidates is None else np.asarray(candidates, np.float32).reshape(-1, 3)
    indoor = is_indoor(tracer.scene.mi_scene, grid) if g.exclude_indoor else np.zeros(len(grid), bool)
    positions, source = grid[~indoor], np.flatnonzero(~indoor)
    if tracer.sectored:
        sectors = sector_of(positions, cfg.bs_position_m, cfg.sector_azimuths_deg)
    else:
        sectors = np.zeros(len(positions), np.int8)
    order = np.argsort(sectors, kind="stable")
    positions, sectors, source = positions[order], sectors[order], source[order]
    bounds = []
    for s in np.unique(sectors):
        idx = np.flatnonzero(sectors == s)
        for start in range(0, len(idx), cfg.receivers_per_batch):
            chunk = idx[start:start + cfg.receivers_per_batch]
            bounds.append((int(chunk[0]), int(chunk[-1]) + 1))
    realizations = range(max(cfg.cars.num_realizations, 1))
    chunks = [(r, s, e) for r in realizations for s, e in bounds]
    plan = {"positions": positions, "source": source, "sectors": sectors,
            "chunks": np.array(chunks, np.int64).reshape(-1, 3),
            "n_grid": int(len(grid)), "n_indoor": int(indoor.sum())}
    if tracer.has_cars:
        plan["static_los"] = tracer.static_los(positions)
    return plan


def trace_chunk(tracer: SiteTracer, plan: dict, c: int) -> PathSet:
    """Traces chunk ``c`` of a plan."""
    r, start, end = (int(v) for v in plan["chunks"][c])
    return tracer.trace_pathset(plan["positions"][start:end], int(plan["sectors"][start]),
                                realization=r, ue_id=np.arange(start, end),
                                static_los=plan["static_los"][start:end] if "static_los" in plan else None)


def site_meta(cfg: SimulationConfig, ps: PathSet, plan: dict, trace_s: float) -> dict:
    """Counts and timings stored beside the paths and copied into reports.

    A link is one (UE, panel, realization) row of the PathSet; ``receivers_per_s``
    counts traced receiver positions (UE x realization) per second of tracing.
    """
    counts = ps.num_paths
    sectored, panels = site_panels(cfg)
    n_real = max(cfg.cars.num_realizations, 1)
    n_rx = len(plan["positions"]) * n_real
    return {
        "scene": cfg.scene,
        "site": "sectored" if sectored else ("multi_bs" if len(panels) > 1 else "single_bs"),
        "n_grid": int(plan["n_grid"]),
        "n_indoor_excluded": int(plan["n_indoor"]),
        "n_ue": int(len(plan["positions"])),
        "n_realizations": n_real,
        "n_links": ps.num_ue,
        "n_no_path": int((counts == 0).sum()),
        "n_los": int(ps.los.sum()),
        "conditions": {name: int((ps.condition == k).sum()) for k, name in enumerate(CONDITIONS)},
        "per_sector" if sectored else "per_bs": [int((ps.sector == s).sum()) for s in range(len(panels))],
        "bs_positions": [[float(v) for v in p["position"]] for p in panels],
        "mean_paths_per_ue": float(counts.mean()) if len(counts) else 0.0,
        "trace_s": round(trace_s, 2),
        "receivers_per_s": round(n_rx / max(trace_s, 1e-9), 1),
    }


def car_meta(tracer: SiteTracer) -> dict:
    """Where the cars stood in each realization (for maps): {"car_positions": [[[x, y, z], ...], ...]}."""
    if not tracer.has_cars:
        return {}
    return {"car_positions": [np.round(tracer.car_positions(r), 3).tolist()
                              for r in range(tracer.cfg.cars.num_realizations)],
            "car_sizes": [np.round(vehicle_size(v), 3).tolist() for v in tracer._car_vertices],
            "car_types": [t.name for t in tracer.fleet] or ["car"] * len(tracer.cars)}


def trace_site(cfg: SimulationConfig, progress: bool = True, candidates: np.ndarray | None = None) -> PathSet:
    """Traces the configured UEs of a site in memory (no cache; see tfloc.sim.build).

    ``candidates`` [n, 3]: these positions instead of the UE grid (see :func:`plan_site`);
    the PathSet's ``meta["source"]`` then gives each traced UE's row in them.
    """
    from tqdm.auto import tqdm
    tracer = SiteTracer(cfg)
    plan = plan_site(cfg, tracer, candidates)
    parts = []
    chunks = plan["chunks"]
    with tqdm(total=int((chunks[:, 2] - chunks[:, 1]).sum()), unit="rx",
              desc=f"ray tracing {cfg.scene}", disable=not progress, dynamic_ncols=True) as bar:
        for c, (_, start, end) in enumerate(chunks):
            parts.append(trace_chunk(tracer, plan, c))
            bar.update(int(end - start))
    ps = PathSet.concatenate(parts)
    ps.meta = site_meta(cfg, ps, plan, sum(p.meta["trace_s"] for p in parts))
    ps.meta.update(car_meta(tracer))
    if candidates is not None:
        ps.meta["source"] = plan["source"].tolist()
    return ps
