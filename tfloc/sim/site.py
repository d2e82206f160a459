"""Site geometry: the UE grid, indoor filtering and sector assignment."""
from __future__ import annotations

import numpy as np


def ue_grid(x_range_m, y_range_m, spacing_m: float, height_m: float) -> np.ndarray:
    """Regular grid of UE positions.

    Output
    ------
    positions : [num_ue, 3], np.float32
        Row-major over y then x, inclusive of both range ends when they fall on the grid.
    """
    xs = np.arange(x_range_m[0], x_range_m[1] + 1e-6, spacing_m)
    ys = np.arange(y_range_m[0], y_range_m[1] + 1e-6, spacing_m)
    xx, yy = np.meshgrid(xs, ys)
    return np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, height_m)], axis=1).astype(np.float32)


def surface_height(mi_scene, xy: np.ndarray, z_top: float = 1000.0) -> np.ndarray:
    """Height of the highest surface above each (x, y), by a downward ray cast.

    Returns 0 where a ray hits nothing. Used to drop UEs inside buildings: a UE is
    indoor when a roof lies above it.
    """
    import mitsuba as mi
    n = xy.shape[0]
    o = mi.Point3f(xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32),
                   np.full(n, z_top, np.float32))
    si = mi_scene.ray_intersect(mi.Ray3f(o, mi.Vector3f(0, 0, -1)))
    t = np.array(si.t, dtype=np.float64)
    return np.where(np.isfinite(t), z_top - t, 0.0)


def is_indoor(mi_scene, positions: np.ndarray, margin_m: float = 0.1) -> np.ndarray:
    """[num_ue] bool: a surface lies above the UE (it is under a roof)."""
    return surface_height(mi_scene, positions[:, :2]) > positions[:, 2] + margin_m


def sector_of(positions: np.ndarray, bs_position, azimuths_deg) -> np.ndarray:
    """Index of the sector whose boresight azimuth is closest to the UE's azimuth.

    With N evenly spaced boresights this splits the plane into N wedges of
    360/N degrees around the BS (three 120-degree sectors for the seed-000 site).
    """
    d = positions[:, :2] - np.asarray(bs_position[:2])[None]
    az = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    diff = (az[:, None] - np.asarray(azimuths_deg)[None] + 180.0) % 360.0 - 180.0
    return np.argmin(np.abs(diff), axis=1).astype(np.int8)


def rotate_into_sector(positions: np.ndarray, bs_position, azimuths_deg, source, target) -> np.ndarray:
    """Seed 000's sector rotation: UEs served by sector ``source`` moved about the BS by
    the angle between the two boresights, ``azimuths[target] - azimuths[source]``, so a
    UE keeps its range, height and bearing relative to its panel's boresight, now in
    sector ``target`` (its angle-delay map, seen by an identical panel, is unchanged).

    Input: positions [n, >= 2] metres, source / target [n] sector indices.
    Output: [n, same] rotated positions (coordinates past x, y unchanged).
    """
    az = np.radians(np.asarray(azimuths_deg, np.float64))
    angle = az[np.asarray(target)] - az[np.asarray(source)]
    c, s = np.cos(angle), np.sin(angle)
    p = np.asarray(positions, np.float64)
    d = p[:, :2] - np.asarray(bs_position[:2], np.float64)[None]
    out = p.copy()
    out[:, 0] = bs_position[0] + c * d[:, 0] - s * d[:, 1]
    out[:, 1] = bs_position[1] + s * d[:, 0] + c * d[:, 1]
    return out.astype(np.asarray(positions).dtype)
