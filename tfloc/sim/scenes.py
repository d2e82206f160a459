"""Scene registry: a config names a scene, this module loads it into Sionna RT."""
from __future__ import annotations

import os

from tfloc.registry import Registry

#: name -> zero-argument callable returning the path of a Mitsuba XML scene
SCENES: Registry = Registry("scene")


@SCENES.register("etoile")
def _etoile() -> str:
    import sionna.rt
    return sionna.rt.scene.etoile


@SCENES.register("empty")
def _empty() -> None:
    """No geometry at all: free space (used by the physics checks)."""
    return None


def scene_file(name: str) -> str | None:
    """Resolves a registered scene name or an XML path to a file path (None: empty)."""
    if name in SCENES:
        return SCENES.get(name)()
    if name.endswith(".xml") and os.path.isfile(name):
        return name
    if name.endswith(".xml"):
        raise KeyError(f"scene file '{name}' does not exist")
    raise KeyError(f"unknown scene '{name}'; registered: {', '.join(SCENES.names())}"
                   " (or give the path of a Mitsuba .xml file)")


def check_scene_name(name: str):
    """Raises KeyError with a helpful message if ``name`` cannot be loaded."""
    if name in SCENES:
        return
    scene_file(name)


def load_scene(name: str):
    """Loads a scene by registered name or XML path (``sionna.rt.load_scene``)."""
    import sionna.rt
    path = scene_file(name)
    if path is None:
        return sionna.rt.load_scene()
    return sionna.rt.load_scene(path, merge_shapes=True)
