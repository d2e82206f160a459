"""Dataset builds on Ray: ``python -m tfloc.sim build --config F --executor ray [--address ADDR]``.

The same plan, chunks, resume and merge as ``--shard``
(:class:`tfloc.sim.build.DatasetBuild`): the driver makes the plan, then the chunks
not on disk yet are mapped over Ray actors -- each actor loads the scene once
(its own :class:`DatasetBuild`) and traces chunk after chunk, writing each one
atomically into the build directory -- and the driver merges them. Without
``--address`` a local Ray cluster starts with ``--workers`` actors (default: this
machine's cores); with it, the build joins that cluster, whose nodes must see the
cache directory (shared storage). Ray is an optional extra: ``pip install -e ".[ray]"``.
"""
from __future__ import annotations

import os
import socket
import time

from tfloc.config import ConfigError


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, an optional extra: pip install -e \".[ray]\" "
                          "(or pip install ray)") from None
    return ray


def check_address(address: str | None, timeout_s: float = 5.0):
    """A reachable ``host:port`` (ConfigError naming it otherwise), before Ray tries for minutes."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT of a Ray cluster's head "
                          "(e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ConfigError(f"--address {address}: cannot reach the Ray cluster ({e.strerror or e}); "
                          "is `ray start --head` running there?") from None


class _ChunkTracer:
    """A Ray actor: one scene load, then any number of chunks."""

    def __init__(self, sim_dict: dict, cache_dir: str):
        import logging as _logging
        from tfloc.config import merge
        from tfloc.sim.build import DatasetBuild
        from tfloc.sim.config import SimulationConfig
        _logging.getLogger("tfloc").setLevel(_logging.WARNING)
        cfg = SimulationConfig()
        merge(cfg, sim_dict)
        self.build = DatasetBuild(cfg, cache_dir)
        self.plan = self.build.plan()
        self.build.tracer   # the scene, loaded once per actor

    def trace(self, c: int) -> tuple[int, int, float]:
        from tfloc.sim.tracer import trace_chunk
        t0 = time.time()
        if not os.path.isdir(self.build.chunk_dir(c)):   # another actor of a retried build did it
            trace_chunk(self.build.tracer, self.plan, c).save(self.build.chunk_dir(c))
        s, e = self.plan["chunks"][c][1:]
        return c, int(e - s), time.time() - t0


def build_on_ray(build, address: str | None = None, workers: int | None = None,
                 progress: bool = True) -> int:
    """Traces ``build``'s missing chunks on Ray actors; returns how many were traced."""
    import dataclasses
    from tqdm.auto import tqdm
    check_address(address)
    ray = import_ray()
    plan = build.plan()            # the driver makes the plan: every actor traces the same one
    todo = build.missing_chunks(plan)
    if not todo:
        return 0
    started = not ray.is_initialized()
    if started:
        kwargs = dict(address=address, log_to_driver=False, include_dashboard=False,
                      configure_logging=False)
        if not address:
            kwargs.update(num_cpus=workers or os.cpu_count(), object_store_memory=200 * 2**20)
        ray.init(**kwargs)
    try:
        n = workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        n = min(n, len(todo))
        actor = ray.remote(num_cpus=1)(_ChunkTracer)
        sim = dataclasses.asdict(build.cfg)
        cache_dir = os.path.dirname(os.path.abspath(build.final_dir))
        pool = ray.util.ActorPool([actor.remote(sim, cache_dir) for _ in range(n)])
        chunks = plan["chunks"]
        total = int(sum(chunks[c][2] - chunks[c][1] for c in todo))
        with tqdm(total=total, unit="rx", desc=f"ray tracing {build.cfg.scene} on {n} Ray workers",
                  disable=not progress, dynamic_ncols=True) as bar:
            for _, rx, _ in pool.map_unordered(lambda a, c: a.trace.remote(c), todo):
                bar.update(rx)
        return len(todo)
    finally:
        if started:
            ray.shutdown()
