"""Fisher information of CSI and the position error bound, by automatic differentiation
of the channel model the pipeline synthesises.

The noiseless CSI of one UE at one BS array is (:func:`tfloc.data.csi.paths_to_csi`)

    H[m, k] = sum_l g_l a_m(az_l, el_l) exp(-j 2 pi f_k (tau_l + delta))

over antennas m (element positions d_m, plane-wave response a_m = exp(j 2 pi d_m . u_l / lambda),
u_l the unit vector towards the path's arrival direction at the BS) and subcarriers k,
with complex path gains g_l and a clock offset delta (the timing-advance error). With
circularly-symmetric complex Gaussian noise of variance sigma^2 per entry (the pipeline's
SNR: mean |H|^2 / sigma^2), the Fisher information of real parameters theta is

    J(theta) = 2 / sigma^2 Re{ (dH/dtheta)^H (dH/dtheta) }

(plus the inverse variance of a Gaussian prior where one is given). The position error
bound is PEB = sqrt(trace of the position block of J^-1); a singular J (the position is
not identifiable from this CSI) gives an unbounded PEB (inf), never a number.

Here, for one UE, the LOS path is a function of the UE position through free-space
geometry (:func:`free_space_paths`: delay |p - b| / c and the direction of p - b); other
paths enter as nuisance (free delay, angles and gain: the conservative bound). These are
the reference forms the tests check against closed forms; the traced links of a site,
with specular paths through mirror images, are bounded in batches by
:mod:`tfloc.physics.bound`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError

SPEED_OF_LIGHT = 299_792_458.0


class BoundError(ConfigError):
    """The bound cannot be computed from this input (a one-line error and exit 2 in the CLIs)."""


def upa_element_positions(num_rows: int, num_cols: int, spacing_m: float) -> np.ndarray:
    """[num_rows * num_cols, 3] element positions of a planar array in the y-z plane
    (boresight +x), centred on the origin, rows along z (float64)."""
    r = (np.arange(num_rows) - (num_rows - 1) / 2) * spacing_m
    c = (np.arange(num_cols) - (num_cols - 1) / 2) * spacing_m
    zz, yy = np.meshgrid(r, c, indexing="ij")
    return np.stack([np.zeros(zz.size), yy.ravel(), zz.ravel()], axis=1)


def unit_vector(az, el):
    """Unit vectors [..., 3] of azimuth ``az`` and elevation ``el`` (TF, differentiable)."""
    return tf.stack([tf.cos(el) * tf.cos(az), tf.cos(el) * tf.sin(az), tf.sin(el)], axis=-1)


def csi_model(tau, az, el, gain, frequencies, elements, wavelength, delta=0.0):
    """Noiseless CSI [M, K] complex128 of L paths (tau, az, el [L] float64; gain [L]
    complex128) at an array of element positions ``elements`` [M, 3] over ``frequencies``
    [K] (baseband, Hz), clock offset ``delta`` [s]."""
    f = tf.constant(frequencies, tf.float64)
    d = tf.constant(elements, tf.float64)
    u = unit_vector(az, el)                                                   # [L, 3]
    arr_phase = 2 * np.pi / wavelength * tf.linalg.matmul(d, u, transpose_b=True)     # [M, L]
    arr = tf.exp(tf.complex(tf.zeros_like(arr_phase), arr_phase))
    phase = -2 * np.pi * (tau + delta)[:, None] * f[None, :]                          # [L, K]
    delay = tf.exp(tf.complex(tf.zeros_like(phase), phase))
    return tf.linalg.matmul(arr * gain[None, :], delay)                               # [M, K]


def csi_jacobian(fn, theta):
    """D = d vec(fn(theta)) / d theta [N, P] complex128 (TF autodiff of the real and
    imaginary parts), ``theta`` [P] float64."""
    theta = tf.convert_to_tensor(theta, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(theta)
        h = tf.reshape(fn(theta), [-1])
        re, im = tf.math.real(h), tf.math.imag(h)
    return tf.complex(tape.jacobian(re, theta), tape.jacobian(im, theta))


def fisher_information(fn, theta, noise_var, prior_var=None):
    """J = 2 / noise_var Re{D^H D} with D = :func:`csi_jacobian`, plus diag(1 / prior_var)
    where ``prior_var`` [P] is finite. ``theta`` [P] float64."""
    d = csi_jacobian(fn, theta)
    j = 2.0 / noise_var * tf.math.real(tf.linalg.matmul(d, d, adjoint_a=True))
    if prior_var is not None:
        pv = np.asarray(prior_var, np.float64)
        j = j + tf.linalg.diag(tf.constant(np.where(np.isfinite(pv), 1.0 / pv, 0.0)))
    return j


def free_space_paths(position, bs_position):
    """(tau [1], az [1], el [1]) of the LOS path from ``position`` [3] to the BS at
    ``bs_position`` [3], as seen from the BS (float64 tensors, differentiable in position)."""
    v = position - tf.constant(bs_position, tf.float64)
    dist = tf.norm(v)
    az = tf.math.atan2(v[1], v[0])
    el = tf.math.asin(v[2] / dist)
    return dist[None] / SPEED_OF_LIGHT, az[None], el[None]


def position_fim(position, bs_position, gain, frequencies, elements, wavelength, snr_db,
                 dims: int = 2, clock_prior_std_s: float | None = 0.0, nuisance_paths=None,
                 noise_var: float | None = None):
    """The Fisher information of [position (``dims``), Re g, Im g, (clock offset), (per
    nuisance path: tau, az, el, Re g, Im g)] from the CSI of a UE at ``position`` [3]: its
    LOS path set by the geometry, plus ``nuisance_paths`` ({"tau", "az", "el" [L] float,
    "gain" [L] complex}) whose delays, angles and gains are free parameters (the
    conservative treatment of NLOS paths: they carry no position information, and they
    cost some by overlapping the LOS path). Noise from ``snr_db`` as the pipeline adds it.
    ``clock_prior_std_s``: 0 for a known clock (the offset is not a parameter), None for
    an unknown one, else the std of its Gaussian prior. ``noise_var`` replaces the noise
    variance ``snr_db`` implies (mean |H|^2 of this UE's CSI over the SNR), e.g. to compare
    channels at one noise level. Returns (J [P, P], names)."""
    position = np.asarray(position, np.float64)
    gain = np.asarray(gain, np.complex128).reshape(-1)
    with_clock = clock_prior_std_s != 0.0
    nlos = {k: np.asarray(v).reshape(-1) for k, v in (nuisance_paths or {}).items()}
    n_nlos = len(nlos.get("tau", []))
    names = ["x", "y", "z"][:dims] + ["gain_re", "gain_im"] + (["clock"] if with_clock else [])
    theta0 = [position[:dims], [gain[0].real, gain[0].imag], [0.0] if with_clock else []]
    for i in range(n_nlos):
        names += [f"path{i}_{k}" for k in ("tau", "az", "el", "gain_re", "gain_im")]
        theta0.append([nlos["tau"][i], nlos["az"][i], nlos["el"][i], nlos["gain"][i].real,
                       nlos["gain"][i].imag])
    theta0 = np.concatenate(theta0).astype(np.float64)
    base = dims + 2 + int(with_clock)

    def fn(theta):
        p = tf.concat([theta[:dims], tf.constant(position[dims:], tf.float64)], 0)
        tau, az, el = free_space_paths(p, bs_position)
        g = tf.complex(theta[dims:dims + 1], theta[dims + 1:dims + 2])
        if n_nlos:
            q = tf.reshape(theta[base:], [n_nlos, 5])
            tau = tf.concat([tau, q[:, 0]], 0)
            az = tf.concat([az, q[:, 1]], 0)
            el = tf.concat([el, q[:, 2]], 0)
            g = tf.concat([g, tf.complex(q[:, 3], q[:, 4])], 0)
        delta = theta[dims + 2] if with_clock else 0.0
        return csi_model(tau, az, el, g, frequencies, elements, wavelength, delta)

    if noise_var is None:
        h = fn(tf.constant(theta0))
        noise_var = float(tf.reduce_mean(tf.abs(h) ** 2)) / 10 ** (snr_db / 10)
    prior = None
    if with_clock and clock_prior_std_s is not None:
        prior = np.full(len(names), np.inf)
        prior[dims + 2] = clock_prior_std_s ** 2
    return fisher_information(fn, theta0, noise_var, prior), names


def position_efim(fim, dims: int, rcond: float = 1e-12):
    """The equivalent Fisher information of the position, J_pp - J_pn J_nn^+ J_np, of FIMs
    [..., P, P] whose first ``dims`` parameters are the position: [..., dims, dims]. Computed
    on the equilibrated matrix (units do not matter); a nuisance block that is singular to
    ``rcond`` is pseudo-inverted."""
    j = np.asarray(fim, np.float64)
    if not np.all(np.isfinite(j)):
        raise BoundError("the Fisher information holds NaN or Inf (a NaN SNR, gain or position?)")
    scale = np.sqrt(np.maximum(np.diagonal(j, axis1=-2, axis2=-1), 1e-300))
    jn = j / scale[..., :, None] / scale[..., None, :]
    pp, pn, nn = jn[..., :dims, :dims], jn[..., :dims, dims:], jn[..., dims:, dims:]
    if nn.shape[-1]:
        pp = pp - pn @ np.linalg.pinv(nn, rcond=rcond, hermitian=True) @ np.swapaxes(pn, -1, -2)
    s = scale[..., :dims]
    return pp * s[..., :, None] * s[..., None, :]


def peb_from_efim(efim, rcond: float = 1e-9) -> np.ndarray:
    """sqrt(trace(EFIM^-1)) [...] of position EFIMs [..., dims, dims]: inf where the EFIM is
    singular (to ``rcond``, after equilibration) or has a direction without information."""
    e = np.asarray(efim, np.float64)
    d = np.diagonal(e, axis1=-2, axis2=-1)
    ok = np.all(d > 0, -1)
    scale = np.sqrt(np.where(d > 0, d, 1.0))
    en = e / scale[..., :, None] / scale[..., None, :]
    eye = np.broadcast_to(np.eye(e.shape[-1]), e.shape)
    en = np.where(ok[..., None, None], en, eye)
    w = np.linalg.eigvalsh(en)
    ok &= w[..., 0] > rcond * w[..., -1]
    inv = np.linalg.inv(np.where(ok[..., None, None], en, eye))
    peb = np.sqrt(np.sum(np.diagonal(inv, axis1=-2, axis2=-1) / scale ** 2, -1))
    return np.where(ok, peb, np.inf)


def position_error_bound(fim, dims: int) -> float:
    """sqrt(trace((J^-1)[:dims, :dims])) [m] of one FIM ``J`` [P, P] whose first ``dims``
    parameters are the position: inf when the position is not identifiable."""
    return float(peb_from_efim(position_efim(fim, dims)))
