"""Model-based baseline of seed 004: MUSIC angle of arrival at each BS, then the
least-squares 3D point closest to the BSs' bearing lines (NumPy / SciPy).

Geometry follows Sionna RT (:mod:`tfloc.physics.array`): an array's elements sit in its local y-z plane
(boresight: local +x), and a device's orientation (yaw, pitch, roll) rotates
local to global coordinates by R = Rz(yaw) Ry(pitch) Rx(roll). A plane wave
arriving from the global unit direction k (pointing from the array towards
the source) reaches element r (metres) with phase exp(j 2 pi r.k / lambda).
A planar array cannot tell the front from the back, so the search keeps the
half-space in front of the array.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from tfloc.physics.array import direction, steering


def noise_subspace(h: np.ndarray, num_sources: int = 1) -> np.ndarray:
    """MUSIC: the eigenvectors [N, N - K] of the spatial covariance beyond the K largest.

    ``h`` [..., N] complex: snapshots (e.g. slots x subcarriers) of the N antennas;
    averaging over subcarriers also decorrelates coherent paths (frequency smoothing).
    """
    v = np.asarray(h).reshape(-1, np.asarray(h).shape[-1])
    cov = v.T @ v.conj() / len(v)
    _, vecs = np.linalg.eigh(cov)                                  # ascending eigenvalues
    return vecs[:, :cov.shape[0] - num_sources]


def music_direction(h: np.ndarray, positions_wl: np.ndarray, rotation: np.ndarray | None = None,
                    num_sources: int = 1, grid_deg: float = 2.0) -> np.ndarray:
    """The global unit direction [3] of the strongest MUSIC peak in front of the array.

    Parameters
    ----------
    h : [..., N] complex snapshots at one BS (N antennas, last axis)
    positions_wl : [N, 3] element positions in wavelengths, local frame
    rotation : [3, 3] local -> global (None: identity)
    grid_deg : coarse search step; the peak is then refined (Nelder-Mead)
    """
    en = noise_subspace(h, num_sources)

    def pseudo_inverse(angles):       # 1 / P_MUSIC, in the local frame
        a = steering(positions_wl, direction(angles[0], angles[1]))
        return float(np.sum(np.abs(a.conj() @ en) ** 2) / positions_wl.shape[0])
    step = np.radians(grid_deg)
    az = np.arange(-np.pi / 2 + step / 2, np.pi / 2, step)        # front half-space: local x > 0
    ze = np.arange(step / 2, np.pi, step)
    A, Z = np.meshgrid(az, ze, indexing="ij")
    a = steering(positions_wl, direction(A, Z))                     # [na, nz, N]
    denom = np.sum(np.abs(a.conj() @ en) ** 2, axis=-1)
    i, j = np.unravel_index(np.argmin(denom), denom.shape)
    best = minimize(pseudo_inverse, [A[i, j], Z[i, j]], method="Nelder-Mead",
                    options={"xatol": 1e-7, "fatol": 1e-14, "maxiter": 2000}).x
    k = direction(best[0], best[1])
    return k if rotation is None else rotation @ k


def triangulate(bs_positions: np.ndarray, directions: np.ndarray, weights=None) -> np.ndarray:
    """Least-squares point [3] closest to the lines s_l + t u_l (u_l unit):
    sum_l w_l (I - u_l u_l^T) p = sum_l w_l (I - u_l u_l^T) s_l."""
    s = np.asarray(bs_positions, float)
    u = np.asarray(directions, float)
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, float)
    proj = np.eye(3)[None] - u[:, :, None] * u[:, None, :]          # [L, 3, 3]
    lhs = np.einsum("l,lij->ij", w, proj)
    rhs = np.einsum("l,lij,lj->i", w, proj, s)
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def music_position(csi: np.ndarray, bs_positions: np.ndarray, rotations: np.ndarray,
                   positions_wl: np.ndarray, weights=None, **kwargs) -> np.ndarray:
    """3D position [3] from one snapshot seen by L BSs.

    ``csi`` [L, ..., N] complex (snapshots with antennas last), ``bs_positions``
    [L, 3] m, ``rotations`` [L, 3, 3] local -> global, ``positions_wl`` [N, 3].
    """
    dirs = np.stack([music_direction(csi[l], positions_wl, rotations[l], **kwargs)
                     for l in range(len(bs_positions))])
    return triangulate(bs_positions, dirs, weights)
