"""Simulation: Sionna RT scenes, ray tracing, compact path caches."""
from tfloc.sim.paths import CacheError, PathSet
from tfloc.sim.scenes import SCENES, load_scene, scene_file
from tfloc.sim.site import is_indoor, sector_of, ue_grid
from tfloc.sim.tracer import SiteTracer, plan_site, trace_site
from tfloc.sim.build import DatasetBuild, cache_key, entry_dir, load_or_trace

__all__ = ["CacheError", "PathSet", "SCENES", "load_scene", "scene_file", "is_indoor",
           "sector_of", "ue_grid", "SiteTracer", "plan_site", "trace_site", "DatasetBuild",
           "cache_key", "entry_dir", "load_or_trace"]
