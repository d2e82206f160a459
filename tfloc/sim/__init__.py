"""Simulation: Sionna RT scenes, ray tracing, compact path caches."""
from tfloc.sim.paths import CacheError, PathSet
from tfloc.sim.scenes import SCENES, load_scene, scene_file
from tfloc.sim.site import is_indoor, sector_of, ue_grid
from tfloc.sim.tracer import SiteTracer, cache_key, load_or_trace, trace_site

__all__ = ["CacheError", "PathSet", "SCENES", "load_scene", "scene_file", "is_indoor",
           "sector_of", "ue_grid", "SiteTracer", "cache_key", "load_or_trace", "trace_site"]
