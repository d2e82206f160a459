"""Array geometry as Sionna RT defines it (NumPy): an array's elements sit in its local y-z
plane (boresight: local +x), numbered column by column from the top; a device's orientation
(yaw, pitch, roll) rotates local to global coordinates by R = Rz(yaw) Ry(pitch) Rx(roll); a
plane wave along the global unit direction k reaches element r with phase exp(j 2 pi r.k / lambda).
Shared by the position error bound (:mod:`tfloc.physics.bound`) and the MUSIC baseline."""
from __future__ import annotations

import numpy as np


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Sionna RT's R = Rz(yaw) Ry(pitch) Rx(roll) (radians), local -> global."""
    ca, sa, cb, sb, cg, sg = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                              np.cos(roll), np.sin(roll))
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cg, -sg], [0, sg, cg]])
    return rz @ ry @ rx


def planar_array_positions(num_rows: int, num_cols: int, vertical_spacing: float = 0.5,
                           horizontal_spacing: float = 0.5) -> np.ndarray:
    """Element positions [num_rows * num_cols, 3] in wavelengths, local frame, centred,
    numbered column by column from the top (Sionna's PlanarArray order)."""
    out = []
    for c in range(num_cols):
        for r in range(num_rows):
            out.append([0.0, (c - (num_cols - 1) / 2) * horizontal_spacing,
                        ((num_rows - 1) / 2 - r) * vertical_spacing])
    return np.asarray(out)


def direction(azimuth, zenith) -> np.ndarray:
    """Unit vectors [..., 3] of azimuth (from +x towards +y) and zenith (from +z) angles."""
    az, ze = np.asarray(azimuth, float), np.asarray(zenith, float)
    return np.stack([np.sin(ze) * np.cos(az), np.sin(ze) * np.sin(az), np.cos(ze)], -1)


def steering(positions_wl: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Array response [..., N] of elements at ``positions_wl`` [N, 3] (wavelengths) to
    plane waves from unit directions ``k`` [..., 3] (same frame)."""
    return np.exp(2j * np.pi * (k @ positions_wl.T))
