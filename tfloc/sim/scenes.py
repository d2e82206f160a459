"""Scene registry: a config names a scene, this module loads it into Sionna RT.

A registered scene is a callable ``(seed) -> path`` of a Mitsuba XML file
(``seed`` matters only to procedural scenes). Scenes that come with their own
BS sites list them in :data:`SCENE_SITES`.
"""
from __future__ import annotations

import copy
import os
import tempfile
import xml.etree.ElementTree as ET

from tfloc.config import ConfigError
from tfloc.registry import Registry

#: name -> callable(seed) returning the path of a Mitsuba XML scene (None: empty)
SCENES: Registry = Registry("scene")
#: name -> callable(seed) returning the scene's BS sites
#: ([{"position": [x, y, z], "azimuth_deg": a, "downtilt_deg": t}, ...])
SCENE_SITES: dict = {}


@SCENES.register("etoile")
def _etoile(seed: int = 0) -> str:
    import sionna.rt
    return sionna.rt.scene.etoile


@SCENES.register("empty")
def _empty(seed: int = 0) -> None:
    """No geometry at all: free space (used by the physics checks)."""
    return None


@SCENES.register("campus")
def _campus(seed: int = 4) -> str:
    """Ours, procedural (tfloc.sim.campus); generated on first use."""
    from tfloc.sim.campus import generate_campus
    return generate_campus(seed)


def _campus_sites(seed: int = 4) -> list[dict]:
    from tfloc.sim.campus import load_sites
    return load_sites(seed)


SCENE_SITES["campus"] = _campus_sites


@SCENES.register("street-canyon")
def _street_canyon(seed: int = 0) -> str:
    """Sionna's ``simple_street_canyon_with_cars`` (8 movable cars, four lanes here)."""
    import sionna.rt
    return sionna.rt.scene.simple_street_canyon_with_cars


# A lamp-post small cell on the facade of the middle south building, 5 m up,
# facing the street: low enough that passing cars shadow the far sidewalk.
SCENE_SITES["street-canyon"] = lambda seed=0: [
    {"position": [0.0, -8.0, 5.0], "azimuth_deg": 90.0, "downtilt_deg": 10.0}]


def scene_file(name: str, seed: int = 0) -> str | None:
    """Resolves a registered scene name or an XML path to a file path (None: empty)."""
    if name in SCENES:
        return SCENES.get(name)(seed)
    if name.endswith(".xml") and os.path.isfile(name):
        return name
    if name.endswith(".xml"):
        raise KeyError(f"scene file '{name}' does not exist")
    raise KeyError(f"unknown scene '{name}'; registered: {', '.join(SCENES.names())}"
                   " (or give the path of a Mitsuba .xml file)")


def check_scene_name(name: str):
    """Raises KeyError with a helpful message if ``name`` cannot be loaded: an unknown name,
    a missing file, or an XML file that is not well formed or not a Mitsuba ``<scene>``."""
    if name in SCENES:
        return
    path = scene_file(name)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise KeyError(f"scene file '{path}' is not well-formed XML ({e})") from None
    if root.tag != "scene":
        raise KeyError(f"scene file '{path}' is not a Mitsuba scene (its root element is "
                       f"<{root.tag}>, expected <scene>)")


def check_scene_config(sim_cfg):
    """ConfigError naming ``simulation.scene`` if the configured scene cannot be loaded."""
    try:
        check_scene_name(sim_cfg.scene)
    except KeyError as e:
        raise ConfigError(f"simulation.scene: {e.args[0]}") from None


def with_movable_copies(path: str, movable_regex: str, total: int, out_dir: str) -> str:
    """A copy of scene XML ``path`` holding ``total`` movable shapes (ids matching
    ``movable_regex``): the existing ones, then copies of them in turn named
    ``<first id>_vNN``; mesh file names become absolute. Returns the new file's path.
    """
    import re
    tree = ET.parse(path)
    root = tree.getroot()
    base = os.path.dirname(os.path.abspath(path))
    for s in root.iter("string"):
        if s.get("name") == "filename" and not os.path.isabs(s.get("value")):
            s.set("value", os.path.join(base, s.get("value")))
    movable = [e for e in root.findall("shape") if re.search(movable_regex, e.get("id", ""))]
    if not movable:
        raise KeyError(f"scene '{path}' has no shape matching '{movable_regex}' to copy")
    for k in range(len(movable), total):
        e = copy.deepcopy(movable[k % len(movable)])
        new_id = f"{movable[0].get('id')}_v{k:02d}"
        e.set("id", new_id)
        e.set("name", new_id)
        root.append(e)
    out = os.path.join(out_dir, os.path.basename(path))
    tree.write(out)
    return out


def load_scene(name: str, seed: int = 0, movable_regex: str | None = None, num_movable: int = 0):
    """Loads a scene by registered name or XML path (``sionna.rt.load_scene``).

    Objects matching ``movable_regex`` stay separate (so they can be moved);
    all others are merged per material, which makes tracing faster. With
    ``num_movable`` more than the scene has, its movable shapes are duplicated
    (:func:`with_movable_copies`) so that many can be placed.
    """
    import sionna.rt
    path = scene_file(name, seed)
    if path is None:
        return sionna.rt.load_scene()
    try:
        if num_movable and movable_regex:
            with tempfile.TemporaryDirectory() as tmp:
                return sionna.rt.load_scene(with_movable_copies(path, movable_regex, num_movable, tmp),
                                            merge_shapes=True, merge_shapes_exclude_regex=movable_regex)
        return sionna.rt.load_scene(path, merge_shapes=True, merge_shapes_exclude_regex=movable_regex)
    except (RuntimeError, ValueError, ET.ParseError) as e:   # Mitsuba's parser: a mesh it cannot find, ...
        if name in SCENES:
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"simulation.scene: '{path}' cannot be loaded by Mitsuba ({first})") from None
