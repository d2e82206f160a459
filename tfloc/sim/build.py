"""Resumable, shardable dataset builds: plan -> chunks -> merged path cache.

A build of a simulation config lives beside its cache entry,
``<cache>/paths-<scene>-<key>.build/``:

- ``plan.npz``: the UE positions, sectors and chunk bounds, written once, so
  every process and every restart traces the same chunks;
- ``chunks/chunk-NNNNN/``: one traced chunk each, written atomically (temp dir,
  rename), so an interrupted build loses at most the chunk in flight and never
  leaves a half-written one.

``--shard I/N`` traces the chunks ``c`` with ``c % N == I``. ``merge`` joins all
chunks in plan order into ``<cache>/paths-<scene>-<key>/``, the entry
``train.py`` reads; the result is the same whether the chunks were traced by
one process, resumed, or sharded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import zipfile

import numpy as np

from tfloc.sim.config import SimulationConfig
from tfloc.sim.paths import CacheError, PathSet
from tfloc.utils import FileLock, atomic_write_json

log = logging.getLogger(__name__)

#: bump when the traced content changes, so old caches are not reused
TRACER_VERSION = 3   # 3: each path's interaction points and types stored


def cache_key(cfg: SimulationConfig) -> str:
    """Hash of everything that changes the traced paths."""
    import sionna.rt
    payload = {"sim": dataclasses.asdict(cfg), "tracer_version": TRACER_VERSION,
               "sionna_rt": getattr(sionna.rt, "__version__", "?")}
    if cfg.scene == "campus":  # the generated geometry is part of what was traced
        from tfloc.sim.campus import CAMPUS_VERSION
        payload["campus_version"] = CAMPUS_VERSION
    payload["sim"].pop("receivers_per_batch")  # batching does not change the paths
    if not cfg.cars.start_s:    # keys of before the option existed stay valid at its default
        payload["sim"]["cars"].pop("start_s")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def entry_dir(cfg: SimulationConfig, cache_dir: str) -> str:
    name = os.path.basename(cfg.scene).replace(".xml", "")
    return os.path.join(cache_dir, f"paths-{name}-{cache_key(cfg)}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    from tfloc.config import ConfigError
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


class DatasetBuild:
    """One simulation config's build directory and its chunks.

    Parameters
    ----------
    cfg : SimulationConfig
    cache_dir : str
    """

    def __init__(self, cfg: SimulationConfig, cache_dir: str):
        self.cfg = cfg
        self.final_dir = entry_dir(cfg, cache_dir)
        self.build_dir = self.final_dir + ".build"
        self._tracer = None

    @property
    def tracer(self):
        if self._tracer is None:
            from tfloc.sim.tracer import SiteTracer
            self._tracer = SiteTracer(self.cfg)
        return self._tracer

    # -- plan ---------------------------------------------------------------- #
    def plan(self) -> dict:
        """Loads the build's plan, making it (atomically) on first use."""
        path = os.path.join(self.build_dir, "plan.npz")
        if not os.path.isfile(path):
            from tfloc.sim.tracer import plan_site
            plan = plan_site(self.cfg, self.tracer)
            os.makedirs(self.build_dir, exist_ok=True)
            tmp = os.path.join(self.build_dir, f".tmp-plan-{os.getpid()}.npz")
            np.savez(tmp, **plan)
            os.replace(tmp, path)  # shards racing here write identical plans
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise CacheError(f"{path}: corrupt build plan ({e}); delete {self.build_dir}") from None

    def chunk_dir(self, c: int) -> str:
        return os.path.join(self.build_dir, "chunks", f"chunk-{c:05d}")

    def missing_chunks(self, plan: dict) -> list[int]:
        return [c for c in range(len(plan["chunks"])) if not os.path.isdir(self.chunk_dir(c))]

    # -- trace ---------------------------------------------------------------- #
    def build(self, shard: tuple[int, int] = (0, 1), progress: bool = True) -> int:
        """Traces this shard's chunks that are not on disk yet; returns how many."""
        from tqdm.auto import tqdm
        plan = self.plan()
        i, n = shard
        todo = [c for c in self.missing_chunks(plan) if c % n == i]
        from tfloc.sim.tracer import trace_chunk
        chunks = plan["chunks"]
        total = int(sum(chunks[c][2] - chunks[c][1] for c in todo))
        desc = f"ray tracing {self.cfg.scene}" + (f" (shard {i}/{n})" if n > 1 else "")
        with tqdm(total=total, unit="rx", desc=desc, disable=not progress,
                  dynamic_ncols=True) as bar:
            for c in todo:
                trace_chunk(self.tracer, plan, c).save(self.chunk_dir(c))
                bar.update(int(chunks[c][2] - chunks[c][1]))
        return len(todo)

    # -- merge ---------------------------------------------------------------- #
    def merge(self) -> PathSet:
        """Joins all chunks into the cache entry and removes the build directory."""
        from tfloc.sim.tracer import car_meta, site_meta
        plan = self.plan()
        missing = self.missing_chunks(plan)
        if missing:
            raise CacheError(f"{self.build_dir}: {len(missing)} of {len(plan['chunks'])} chunks "
                             f"not traced yet (first: chunk-{missing[0]:05d}); run build for every shard")
        parts = [PathSet.load(self.chunk_dir(c)) for c in range(len(plan["chunks"]))]
        ps = PathSet.concatenate(parts)
        expected = np.concatenate([np.arange(s, e) for _, s, e in plan["chunks"]])
        links = np.repeat(expected, ps.num_ue // max(len(expected), 1))
        if len(links) != ps.num_ue or not np.array_equal(ps.ue_id, links) or \
                not np.array_equal(ps.positions, plan["positions"][links]):
            raise CacheError(f"{self.build_dir}: chunks do not match the plan; delete it and rebuild")
        ps.meta = site_meta(self.cfg, ps, plan, sum(p.meta["trace_s"] for p in parts))
        ps.meta.update(car_meta(self.tracer) if self.cfg.cars.num_realizations else {})
        ps.save(self.final_dir)
        atomic_write_json(os.path.join(self.final_dir, "simulation.json"), dataclasses.asdict(self.cfg))
        shutil.rmtree(self.build_dir, ignore_errors=True)
        return ps


def load_or_trace(cfg: SimulationConfig, cache_dir: str, progress: bool = True) -> tuple[PathSet, str, bool]:
    """Returns (paths, cache directory, whether it was a cache hit).

    A miss builds through :class:`DatasetBuild`, so an interrupted run resumes.
    """
    b = DatasetBuild(cfg, cache_dir)
    if not os.path.isdir(b.final_dir):
        with entry_lock(b.final_dir):     # one process builds an entry; the others wait for it
            if not os.path.isdir(b.final_dir):
                b.build(progress=progress)
                return b.merge(), b.final_dir, False
    log.info("reusing traced paths from %s", b.final_dir)
    return PathSet.load(b.final_dir), b.final_dir, True


@contextlib.contextmanager
def entry_lock(final_dir: str):
    """Holds ``<entry>.lock`` while this process builds the cache entry ``final_dir``; when
    another process holds it, says so and waits (then the caller finds the entry built)."""
    lock = FileLock(final_dir + ".lock")
    if not lock.acquire():
        log.info("waiting for %s, which is building %s", lock.holder(), final_dir)
        lock.acquire(blocking=True)
    try:
        yield lock
    finally:
        lock.release()
