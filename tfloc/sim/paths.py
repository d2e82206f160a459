"""Compact storage of traced paths: ragged per-UE path lists, not CSI tensors."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from tfloc.utils import atomic_dir


#: propagation condition codes stored per link (seed 002's labels)
CONDITIONS = ("LOS", "NLOS-static", "NLOS-car", "no path")
LOS, NLOS_STATIC, NLOS_CAR, NO_PATH = range(4)


class CacheError(RuntimeError):
    """A cache entry is missing, corrupt or truncated."""


@dataclass
class PathSet:
    """Paths of every UE of a site, stored as ragged arrays.

    UE ``i`` owns paths ``offsets[i]:offsets[i+1]``. UEs with no path are kept
    (``num_paths == 0``) so they can be counted; the data pipeline drops them.

    Parameters
    ----------
    positions : [num_ue, 3], float32
    sector : [num_ue], int8
    los : [num_ue], bool -- a line-of-sight path exists
    offsets : [num_ue + 1], int64
    a : [num_paths_total, num_ue_ant, num_bs_ant], complex64
        Path coefficients per antenna pair (synthetic-array phases included).
    tau : [num_paths_total], float32 -- delays [s]
    theta_t, phi_t, theta_r, phi_r : [num_paths_total], float32 -- angles [rad]
    ue_id : [num_ue], int32 -- the UE position a row belongs to; a multi-BS site
        has one row per (UE, BS), so rows sharing ``ue_id`` and ``realization``
        form one sample (default: one row per UE)
    realization : [num_ue], int16 -- moving-object realization (default 0)
    vertices : [num_paths_total, max_depth, 3], float32, or None -- each path's
        interaction points (Sionna's ``Paths.vertices``), from the BS side; rows past a
        path's last interaction are zero. None in caches traced before it was stored.
    interactions : [num_paths_total, max_depth], uint8, or None -- Sionna's
        ``InteractionType`` per interaction (0 none, 1 specular reflection)
    condition : [num_ue], int8 -- :data:`CONDITIONS` code: 0 LOS,
        1 NLOS by static objects, 2 NLOS by cars, 3 no path (default from ``los``)
    meta : dict -- counts and provenance (indoor UEs excluded, timings, ...)
    """
    positions: np.ndarray
    sector: np.ndarray
    los: np.ndarray
    offsets: np.ndarray
    a: np.ndarray
    tau: np.ndarray
    theta_t: np.ndarray
    phi_t: np.ndarray
    theta_r: np.ndarray
    phi_r: np.ndarray
    ue_id: np.ndarray | None = None
    realization: np.ndarray | None = None
    condition: np.ndarray | None = None
    vertices: np.ndarray | None = None
    interactions: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    _ARRAYS = ("positions", "sector", "los", "offsets", "a", "tau",
               "theta_t", "phi_t", "theta_r", "phi_r", "ue_id", "realization", "condition")
    _GEOMETRY = ("vertices", "interactions")        # optional: older caches lack them
    _PER_UE = ("positions", "sector", "los", "ue_id", "realization", "condition")
    _PER_PATH = ("a", "tau", "theta_t", "phi_t", "theta_r", "phi_r")

    def __post_init__(self):
        n = self.num_ue
        if self.ue_id is None:
            self.ue_id = np.arange(n, dtype=np.int32)
        if self.realization is None:
            self.realization = np.zeros(n, np.int16)
        if self.condition is None:
            self.condition = np.where(np.diff(self.offsets) == 0, NO_PATH,
                                      np.where(self.los, LOS, NLOS_STATIC)).astype(np.int8)

    @property
    def num_ue(self) -> int:
        return int(self.positions.shape[0])

    @property
    def has_geometry(self) -> bool:
        """Whether each path's interaction points and types are stored."""
        return self.vertices is not None and self.interactions is not None

    def _geometry(self, index=None) -> dict:
        if not self.has_geometry:
            return {}
        return {k: getattr(self, k) if index is None else getattr(self, k)[index] for k in self._GEOMETRY}

    @property
    def num_paths(self) -> np.ndarray:
        return np.diff(self.offsets).astype(np.int32)

    @staticmethod
    def concatenate(parts: list["PathSet"], meta: dict | None = None) -> "PathSet":
        counts = np.concatenate([p.num_paths for p in parts])
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cat = {k: np.concatenate([getattr(p, k) for p in parts])
               for k in PathSet._ARRAYS if k != "offsets"}
        if parts and all(p.has_geometry for p in parts):
            cat.update({k: np.concatenate([getattr(p, k) for p in parts]) for k in PathSet._GEOMETRY})
        return PathSet(offsets=offsets, meta=meta or {}, **cat)

    def select(self, index: np.ndarray) -> "PathSet":
        """The PathSet of the UEs ``index`` (in that order)."""
        index = np.asarray(index)
        starts, ends = self.offsets[index], self.offsets[index + 1]
        path_idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]
                                  or [np.zeros(0, np.int64)]).astype(np.int64)
        counts = ends - starts
        per_path = {k: getattr(self, k)[path_idx] for k in self._PER_PATH}
        per_ue = {k: getattr(self, k)[index] for k in self._PER_UE}
        return PathSet(offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                       meta=dict(self.meta), **per_ue, **per_path, **self._geometry(path_idx))

    def strongest(self, i: int, max_paths: int) -> np.ndarray:
        """Path rows of UE ``i``'s ``max_paths`` strongest paths, strongest first (the
        paths the data pipeline synthesises CSI from)."""
        s, e = self.offsets[i], self.offsets[i + 1]
        power = np.sum(np.abs(self.a[s:e]) ** 2, axis=(1, 2))
        return s + np.argsort(-power, kind="stable")[:max_paths]

    def padded(self, max_paths: int):
        """Dense per-UE arrays keeping each UE's ``max_paths`` strongest paths.

        Output
        ------
        a : [num_ue, max_paths, num_ue_ant, num_bs_ant], complex64 (zero padded)
        tau : [num_ue, max_paths], float32 (zero padded)
        """
        n = self.num_ue
        n_ue_ant, n_bs_ant = self.a.shape[1:]
        a = np.zeros((n, max_paths, n_ue_ant, n_bs_ant), np.complex64)
        tau = np.zeros((n, max_paths), np.float32)
        for i in range(n):
            keep = self.strongest(i, max_paths)
            a[i, :len(keep)] = self.a[keep]
            tau[i, :len(keep)] = self.tau[keep]
        return a, tau

    # -- persistence ------------------------------------------------------- #
    def save(self, directory: str):
        """Writes ``paths.npz`` + ``meta.json`` atomically (temp dir, then rename)."""
        with atomic_dir(directory) as tmp:
            np.savez(os.path.join(tmp, "paths.npz"),
                     **{k: getattr(self, k) for k in self._ARRAYS}, **self._geometry())
            with open(os.path.join(tmp, "meta.json"), "w") as fh:
                json.dump(self.meta, fh, indent=2)

    @staticmethod
    def load(directory: str) -> "PathSet":
        npz = os.path.join(directory, "paths.npz")
        meta_file = os.path.join(directory, "meta.json")
        if not os.path.isfile(npz) or not os.path.isfile(meta_file):
            raise CacheError(f"{directory}: not a path cache (paths.npz/meta.json missing)")
        try:
            with np.load(npz) as z:
                arrays = {k: z[k] for k in PathSet._ARRAYS}
                arrays.update({k: z[k] for k in PathSet._GEOMETRY if k in z.files})
            with open(meta_file) as fh:
                meta = json.load(fh)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
            raise CacheError(f"{npz}: corrupt or truncated path cache ({e}); delete it to re-trace") from None
        if not isinstance(meta, dict):
            raise CacheError(f"{meta_file}: expected a mapping, got a {type(meta).__name__}; delete "
                             f"{directory} to re-trace")
        n, off = len(arrays["positions"]), arrays["offsets"]
        wrong = [f"{k} has {len(arrays[k])} rows" for k in PathSet._PER_UE if len(arrays[k]) != n]
        if off.ndim != 1 or off.size != n + 1 or off[0] != 0 or np.any(np.diff(off) < 0):
            wrong.append("the path offsets are not one increasing entry per UE and one more")
        else:
            wrong += [f"{k} has {len(arrays[k])} rows" for k in PathSet._PER_PATH if len(arrays[k]) != off[-1]]
        if wrong:
            raise CacheError(f"{npz}: inconsistent path cache ({n} UEs, {off[-1] if off.size else 0} paths: "
                             f"{'; '.join(wrong[:3])}); delete it to re-trace")
        ps = PathSet(meta=meta, **arrays)
        if ps.has_geometry and (ps.vertices.shape[0] != ps.a.shape[0]
                                or ps.interactions.shape != ps.vertices.shape[:2]):
            raise CacheError(f"{npz}: interaction geometry does not match the paths; delete it to re-trace")
        if not (np.isfinite(ps.a.view(np.float32)).all() and np.isfinite(ps.tau).all()):
            raise CacheError(f"{npz}: path gains or delays contain NaN/Inf; delete it to re-trace")
        return ps


def sample_groups(paths: PathSet) -> np.ndarray:
    """[num_samples, L] rows of each sample: one UE position (and realization) seen by L BSs.

    A PathSet stores the L links of a sample as consecutive rows (tfloc.sim.tracer);
    a sectored or single-BS site has L = 1.
    """
    n = paths.num_ue
    if n == 0:
        return np.zeros((0, 1), np.int64)
    key = paths.ue_id.astype(np.int64) * 65536 + paths.realization
    L = int(np.argmax(key != key[0])) if np.any(key != key[0]) else n
    groups = np.arange(n).reshape(-1, L) if n % L == 0 else None
    if groups is None or np.any(key[groups] != key[groups[:, :1]]):
        raise ValueError("PathSet rows are not grouped by (ue_id, realization) in equal runs")
    return groups
