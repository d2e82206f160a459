"""The position error bound of every traced link of a site, batched (TF forward-mode autodiff).

Each link's noiseless CSI is the pipeline's (:func:`tfloc.data.csi.paths_to_csi` of the
``data.max_paths`` strongest paths)

    H[u, p, m, k] = sum_l  g_l c_l[u, p] exp(j 2 pi d_m . k_l / lambda) exp(-j 2 pi f_k (tau_l + delta))

over UE antennas u, BS polarisations p and element positions d_m (Sionna's synthetic array,
rotated into the panel's orientation), subcarriers f_k, a clock offset delta (the timing-advance
error) and complex path gains g_l (nuisance, 1 at the traced values). ``c_l`` is the traced
per-antenna coefficient with the array phase taken out: the antenna pattern and polarisation,
known. Each path's delay tau_l and departure direction k_l are functions of the UE position p:

* ``mode="mirror"``: every specular path through the mirror image of p in the planes it
  reflects off, from the UE side back to the BS (planes through the traced interaction points,
  normal to the bisector of the incoming and outgoing rays): tau = |image - BS| / c, k = the
  unit vector to the image. Multipath carries position information, as map-aware bounds assume.
  Paths with other interactions (diffuse, refraction) are free nuisance.
* ``mode="nuisance"``: only the LOS path follows p; every other path's delay, azimuth and
  elevation are free nuisance (the conservative bound).

The Fisher information of theta = [position (dims), Re g, Im g, (delta), (free path
parameters)] is J = 2 / sigma^2 Re{D^H D} with D = dH / dtheta by forward-mode autodiff (one
Jacobian-vector product per parameter, all in one batched pass), sigma^2 = mean |H|^2 / SNR as the pipeline
adds noise, times ``num_slots`` looks; the clock offset has a Gaussian prior of the TA error's
variance (uniform in +-ta_max: ta_max^2 / 3), or is unknown, or known. The equivalent FIM of the
position (Schur complement) adds over the links of a sample (multi-BS sites); PEB =
sqrt(trace(EFIM^-1)), inf where the position is not identifiable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.data.csi import subcarrier_frequencies
from tfloc.physics.array import direction, planar_array_positions, rotation_matrix
from tfloc.physics.fisher import SPEED_OF_LIGHT, BoundError, peb_from_efim, position_efim, unit_vector
from tfloc.sim.paths import sample_groups
from tfloc.sim.tracer import site_panels

MODES = ("mirror", "nuisance")
CLOCKS = ("prior", "unknown", "known")
SPECULAR = 1          # Sionna's InteractionType.SPECULAR
MAX_ROWS = 4096       # links x parameters per forward-mode pass (memory: ~ rows x CSI size x 24 B)


@dataclass
class BoundSetup:
    """What the bound needs of a site and its data config.

    Parameters
    ----------
    frequencies : [K] baseband subcarrier frequencies [Hz] (the kept ones)
    wavelength : carrier wavelength [m]
    elements : [num_panels, M, 3] element positions [m] of each panel, global frame
    bs_positions : [num_panels, 3]
    num_pol : BS polarisations per element position
    snr_db : the SNR of the pipeline's noise
    ta_max_s : the TA error is uniform in +-ta_max_s
    dims : 2 or 3 (the labels)
    max_paths : strongest paths kept per link (``data.max_paths``)
    num_slots : independent looks per sample (``data.num_slots``)
    mode, clock : see the module doc
    """
    frequencies: np.ndarray
    wavelength: float
    elements: np.ndarray
    bs_positions: np.ndarray
    num_pol: int = 1
    snr_db: float = 20.0
    ta_max_s: float = 5e-9
    dims: int = 2
    max_paths: int = 32
    num_slots: int = 1
    mode: str = "mirror"
    clock: str = "prior"

    def __post_init__(self):
        if self.mode not in MODES:
            raise BoundError(f"bound mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.clock not in CLOCKS:
            raise BoundError(f"clock {self.clock!r}: expected one of {', '.join(CLOCKS)}")
        if not np.isfinite(self.snr_db):
            raise BoundError(f"SNR {self.snr_db} dB: not a number")
        if self.dims not in (2, 3):
            raise BoundError(f"dims {self.dims}: expected 2 or 3")

    @property
    def has_clock(self) -> bool:
        """The clock offset is a parameter (unknown, or with a prior of nonzero width)."""
        return self.clock == "unknown" or (self.clock == "prior" and self.ta_max_s > 0)

    @classmethod
    def from_config(cls, sim, data, **overrides) -> "BoundSetup":
        """From a SimulationConfig and a DataConfig: the site's panels and BS array, the
        data's subcarriers, SNR (the middle of ``snr_db`` in dB), TA error, labels."""
        arr = sim.bs_array
        wavelength = SPEED_OF_LIGHT / sim.frequency_hz
        local = planar_array_positions(arr.num_rows, arr.num_cols, arr.vertical_spacing,
                                       arr.horizontal_spacing) * wavelength
        panels = site_panels(sim)[1]
        rots = [rotation_matrix(np.radians(p["azimuth_deg"]), np.radians(p["downtilt_deg"]), 0.0)
                for p in panels]
        freqs = subcarrier_frequencies(data.num_subcarriers, data.subcarrier_spacing_hz).numpy()
        kw = dict(frequencies=freqs[::data.subcarrier_stride].astype(np.float64),
                  wavelength=wavelength, elements=np.stack([local @ r.T for r in rots]),
                  bs_positions=np.array([p["position"] for p in panels], np.float64),
                  num_pol=arr.num_polarizations, snr_db=float(np.mean(data.snr_db)),
                  ta_max_s=data.ta_max_ns * 1e-9, dims=data.position_dims,
                  max_paths=max(data.max_paths_range) if data.max_paths_range else data.max_paths,
                  num_slots=data.num_slots)
        kw.update(overrides)
        return cls(**kw)


# -- geometry (TF, differentiable in the UE position) --------------------------------------- #
def reflection_planes(bs, vertices, interactions, ue):
    """Planes of each path's specular reflections (NumPy, float64).

    Input: bs [n, 3], vertices [n, L, D, 3] (from the BS side), interactions [n, L, D], ue [n, 3].
    Output: points [n, L, D, 3] and unit normals [n, L, D, 3] (the bisector of the incoming
    and outgoing rays at each interaction point), and reflect [n, L, D] bool.
    """
    v = np.asarray(vertices, np.float64)
    refl = np.asarray(interactions) == SPECULAR
    n, L, D = refl.shape
    # the points along each path: BS, v_1 .. v_k, then the UE at index k + 1
    k = (np.asarray(interactions) != 0).sum(-1)                                   # [n, L]
    pts = np.concatenate([np.broadcast_to(bs[:, None, None], (n, L, 1, 3)), v,
                          np.zeros((n, L, 1, 3))], axis=2)                        # [n, L, D + 2, 3]
    idx = np.arange(D + 2)[None, None, :, None]
    pts = np.where(idx == (k + 1)[..., None, None], ue[:, None, None, :], pts)
    unit = lambda w: w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    d_in = unit(pts[:, :, 1:D + 1] - pts[:, :, :D])
    d_out = unit(pts[:, :, 2:D + 2] - pts[:, :, 1:D + 1])
    normals = unit(d_in - d_out)
    return v, np.where(refl[..., None], normals, 0.0), refl


def mirror_paths(p, bs, points, normals, reflect):
    """(tau [n, L], unit departure directions [n, L, 3]) of specular paths from the BS at
    ``bs`` [n, 3] to UEs at ``p`` [n, 3] via the mirror images of ``p`` in the planes
    (``points``, ``normals`` [n, L, D, 3], ``reflect`` [n, L, D] bool; see
    :func:`reflection_planes`), last reflection first. A LOS path has no reflection."""
    img = tf.broadcast_to(p[:, None, :], tf.concat([tf.shape(points)[:2], [3]], 0))
    for j in reversed(range(points.shape[2])):
        q, nrm = points[:, :, j], normals[:, :, j]
        moved = img - 2.0 * tf.reduce_sum((img - q) * nrm, -1, keepdims=True) * nrm
        img = tf.where(reflect[:, :, j, None], moved, img)
    w = img - bs[:, None, :]
    dist = tf.norm(w, axis=-1)
    return dist / SPEED_OF_LIGHT, w / dist[..., None]


def _layout(dims: int, num_paths: int, with_clock: bool, with_free: bool) -> dict:
    """Slices of theta: position, gain real / imaginary parts, clock, free tau / az / el."""
    L, at, out = num_paths, dims, {"position": slice(0, dims)}
    for name, size in (("gain_re", L), ("gain_im", L), ("clock", int(with_clock)),
                       ("tau", L * with_free), ("az", L * with_free), ("el", L * with_free)):
        out[name] = slice(at, at + size)
        at += size
    out["size"] = at
    return out


def _channel(theta, lay, fixed, dims):
    """Real-stacked noiseless CSI [B, 2 N] of a batch of links at parameters theta [B, P]."""
    pos = tf.concat([theta[:, lay["position"]], fixed["pos0"][:, dims:]], 1)
    tau, k = mirror_paths(pos, fixed["bs"], fixed["points"], fixed["normals"], fixed["reflect"])
    if lay["tau"].stop > lay["tau"].start:           # free paths: their own delay and direction
        geo = fixed["geo"]
        tau = tf.where(geo, tau, theta[:, lay["tau"]])
        k = tf.where(geo[..., None], k, unit_vector(theta[:, lay["az"]], theta[:, lay["el"]]))
    if lay["clock"].stop > lay["clock"].start:
        tau = tau + theta[:, lay["clock"]]
    gain = tf.complex(theta[:, lay["gain_re"]], theta[:, lay["gain_im"]])                  # [B, L]
    arr_phase = 2 * np.pi / fixed["wavelength"] * tf.einsum("bmx,blx->blm", fixed["elements"], k)
    steer = tf.exp(tf.complex(tf.zeros_like(arr_phase), arr_phase))                         # [B, L, M]
    spatial = (gain[:, :, None, None, None] * fixed["shape"][..., None]
               * steer[:, :, None, None, :])                                                 # [B, L, U, pol, M]
    phase = -2 * np.pi * tau[..., None] * fixed["frequencies"]                               # [B, L, K]
    freq = tf.exp(tf.complex(tf.zeros_like(phase), phase))
    h = tf.einsum("blupm,blk->bupmk", spatial, freq)
    h = tf.reshape(h, [tf.shape(h)[0], -1])
    return tf.concat([tf.math.real(h), tf.math.imag(h)], 1)


def _jacobian_fim(theta, lay, fixed, dims):
    """(D^T D [B, P, P] of the real-stacked CSI, mean |H|^2 [B]), D = dCSI / dtheta by
    forward-mode autodiff: the batch is repeated once per parameter, copy p with the tangent
    e_p, so one Jacobian-vector product gives every column (links do not interact)."""
    size = lay["size"]
    b = tf.shape(theta)[0]
    rep = tf.tile(theta, [size, 1])                                             # [P * B, P]
    tangent = tf.repeat(tf.eye(size, dtype=tf.float64), b, axis=0)             # copy p: e_p
    fixed_rep = {k: (tf.tile(v, tf.concat([[size], tf.ones([tf.rank(v) - 1], tf.int32)], 0))
                     if v.shape.rank else v) for k, v in fixed.items() if k not in ("frequencies",)}
    fixed_rep["frequencies"] = fixed["frequencies"]
    with tf.autodiff.ForwardAccumulator(rep, tangent) as acc:
        h = _channel(rep, lay, fixed_rep, dims)
    d = tf.reshape(acc.jvp(h), [size, b, -1])                                  # [P, B, 2N]
    h0 = h[:b]
    power = tf.reduce_sum(h0 ** 2, 1) / tf.cast(tf.shape(h0)[1] // 2, tf.float64)
    return tf.einsum("pbn,qbn->bpq", d, d), power


_GRAPHS: dict = {}


def _fim_graph(dims: int, num_paths: int, with_clock: bool, with_free: bool):
    """The compiled :func:`_jacobian_fim` of one parameter layout (one trace per layout)."""
    key = (dims, num_paths, with_clock, with_free)
    if key not in _GRAPHS:
        lay = _layout(*key)
        # one trace per input shape (links per batch and interaction depth are fixed per layout)
        _GRAPHS[key] = (lay, tf.function(lambda theta, fixed: _jacobian_fim(theta, lay, fixed, dims)))
    return _GRAPHS[key]


# -- a PathSet's links ---------------------------------------------------------------------- #
def _bucket(n: int, most: int) -> int:
    """Paths a batch is padded to: a multiple of 8 (few distinct graphs), at most ``most``."""
    return max(1, min(most, -(-n // 8) * 8))


def _batch_inputs(ps, rows, setup: BoundSetup, num_paths: int, with_free: bool):
    """theta0 [B, P] and the fixed tensors of links ``rows`` (their strongest paths, padded to
    ``num_paths``), plus the used-parameter mask [B, P]."""
    B, L, dims = len(rows), num_paths, setup.dims
    M = setup.elements.shape[1]
    n_ue_ant = ps.a.shape[1]
    depth = ps.vertices.shape[1] if ps.has_geometry else 0
    panel = ps.sector[rows].astype(np.int64)
    pos0 = ps.positions[rows].astype(np.float64)
    if panel.max(initial=0) >= len(setup.bs_positions):
        raise BoundError(f"links of panel {panel.max()} but the site has {len(setup.bs_positions)} panels: "
                         f"the cache entry and the config disagree")
    bs, elements = setup.bs_positions[panel], setup.elements[panel]
    shape = np.zeros((B, L, n_ue_ant, setup.num_pol), np.complex128)
    verts = np.zeros((B, L, depth, 3))
    inter = np.zeros((B, L, depth), np.int64)
    valid = np.zeros((B, L), bool)
    tau0, az0, el0 = np.zeros((B, L)), np.zeros((B, L)), np.zeros((B, L))
    for b, r in enumerate(rows):
        idx = ps.strongest(int(r), setup.max_paths)
        n = len(idx)
        valid[b, :n] = True
        k = direction(ps.phi_t[idx].astype(np.float64), ps.theta_t[idx].astype(np.float64))   # [n, 3]
        steer = np.exp(2j * np.pi / setup.wavelength * (k @ elements[b].T))                 # [n, M]
        coef = ps.a[idx].astype(np.complex128).reshape(n, n_ue_ant, setup.num_pol, M)
        shape[b, :n] = np.mean(coef / steer[:, None, None, :], -1)
        tau0[b, :n] = ps.tau[idx]
        az0[b, :n] = np.arctan2(k[:, 1], k[:, 0])
        el0[b, :n] = np.arcsin(np.clip(k[:, 2], -1, 1))
        if depth:
            verts[b, :n], inter[b, :n] = ps.vertices[idx], ps.interactions[idx]
    if depth:
        no_inter = np.all(inter == 0, -1)
        geo = valid & (np.all((inter == 0) | (inter == SPECULAR), -1) if setup.mode == "mirror" else no_inter)
    else:   # an older cache: the LOS path is the one as long as the BS-UE distance (to float32)
        dist = np.linalg.norm(pos0 - bs, axis=-1)[:, None]
        geo = valid & (np.abs(tau0 * SPEED_OF_LIGHT - dist) < 1e-5 * dist + 1e-3)
        verts, inter = np.zeros((B, L, 1, 3)), np.zeros((B, L, 1), np.int64)
    points, normals, reflect = reflection_planes(bs, verts, np.where(geo[..., None], inter, 0), pos0)
    lay = _layout(dims, L, setup.has_clock, with_free)
    theta0 = np.zeros((B, lay["size"]))
    theta0[:, lay["position"]] = pos0[:, :dims]
    theta0[:, lay["gain_re"]] = 1.0
    used = np.zeros((B, lay["size"]), bool)
    used[:, lay["position"]] = True
    used[:, lay["gain_re"]] = used[:, lay["gain_im"]] = valid
    used[:, lay["clock"]] = True
    if with_free:
        theta0[:, lay["tau"]], theta0[:, lay["az"]], theta0[:, lay["el"]] = tau0, az0, el0
        for name in ("tau", "az", "el"):
            used[:, lay[name]] = valid & ~geo
    fixed = {"pos0": pos0, "bs": bs, "elements": elements, "shape": shape, "points": points,
             "normals": normals, "reflect": reflect, "geo": geo,
             "frequencies": np.asarray(setup.frequencies, np.float64),
             "wavelength": np.float64(setup.wavelength)}
    return theta0, fixed, used, lay


def link_efims(ps, setup: BoundSetup, rows=None, batch_size: int = 32, progress: bool = True):
    """The position EFIM [n, dims, dims] of each link ``rows`` (default: all) of a PathSet
    ``ps``; a link without paths has none (zeros). Batched by path count; TF float64."""
    from tqdm.auto import tqdm
    rows = np.arange(ps.num_ue) if rows is None else np.asarray(rows, np.int64)
    if setup.mode == "mirror" and not ps.has_geometry:
        raise BoundError("this cache entry was traced before interaction geometry was stored: "
                         "delete it and re-trace, or use the conservative mode (nuisance)")
    want = setup.elements.shape[1] * setup.num_pol
    if ps.a.shape[2] != want:
        raise BoundError(f"the paths have {ps.a.shape[2]} BS antennas but the site's array has {want} "
                         f"(a sub-array of it?): the bound models the configured array only")
    dims = setup.dims
    counts = np.minimum(ps.num_paths[rows], setup.max_paths)
    if ps.has_geometry and setup.mode == "mirror":
        with_free = bool(np.any(~np.isin(ps.interactions, (0, SPECULAR))))
    else:
        with_free = setup.mode == "nuisance"
    out = np.zeros((len(rows), dims, dims))
    order = np.argsort(counts, kind="stable")
    informative = counts > 0
    if setup.mode == "nuisance":        # without a LOS path nothing depends on the position
        informative &= ps.los[rows]
    order = order[informative[order]]
    snr = 10 ** (setup.snr_db / 10)
    with tqdm(total=len(order), unit="link", desc=f"position bound ({setup.mode})",
              disable=not progress, dynamic_ncols=True) as bar:
        with_clock = setup.has_clock
        s = 0
        while s < len(order):
            L = _bucket(int(counts[order[min(s + batch_size, len(order)) - 1]]), setup.max_paths)
            size = _layout(dims, L, with_clock, with_free)["size"]
            step = min(batch_size, max(1, MAX_ROWS // size))   # the batch is repeated P times
            sel = order[s:s + step]
            s += len(sel)
            padded = np.concatenate([sel, np.repeat(sel[:1], step - len(sel))])   # one graph per L
            theta0, fixed, used, lay = _batch_inputs(ps, rows[padded], setup, L, with_free)
            _, graph = _fim_graph(dims, L, with_clock, with_free)
            dtd, power = graph(tf.constant(theta0), {k: tf.constant(v) for k, v in fixed.items()})
            dtd, power, used = dtd.numpy()[:len(sel)], power.numpy()[:len(sel)], used[:len(sel)]
            noise_var = power / snr
            fim = 2.0 * setup.num_slots * dtd / noise_var[:, None, None]
            diag = np.arange(lay["size"])
            fim[:, diag, diag] += ~used                      # padding: decoupled unit information
            if setup.clock == "prior" and lay["clock"].stop > lay["clock"].start:
                c = lay["clock"].start
                fim[:, c, c] += 3.0 / setup.ta_max_s ** 2    # uniform +-ta_max: variance ta_max^2 / 3
            out[sel] = position_efim(fim, dims)
            bar.update(len(sel))
    return out


def sample_pebs(ps, setup: BoundSetup, groups=None, **kwargs) -> np.ndarray:
    """PEB [num_samples] of the samples ``groups`` ([n, L] rows of the links of each sample,
    default :func:`tfloc.sim.paths.sample_groups`): the links' EFIMs add; inf where the
    position is not identifiable, nan where a sample has no path."""
    groups = sample_groups(ps) if groups is None else np.asarray(groups).reshape(len(groups), -1)
    efim = link_efims(ps, setup, rows=groups.reshape(-1), **kwargs)
    total = efim.reshape(groups.shape + efim.shape[1:]).sum(1)
    has_path = (ps.num_paths[groups] > 0).any(1)
    return np.where(has_path, peb_from_efim(total), np.nan)


def summarize(values, los) -> dict:
    """Median and p90 of PEBs or error/PEB ratios [n] (inf: unbounded; nan: no path, left out),
    over all samples and LOS / NLOS apart (``los`` [n] bool), with the unbounded count. A
    statistic that falls on an unbounded sample is None (JSON has no infinity);
    ``median_bounded`` is the median of the bounded ones."""
    values, los = np.asarray(values, np.float64), np.asarray(los, bool)

    def num(v):
        return float(v) if np.isfinite(v) else None

    def one(v):
        v = v[~np.isnan(v)]
        fin = v[np.isfinite(v)]
        return {"n": int(len(v)), "n_unbounded": int(np.isinf(v).sum()),
                "median": num(np.median(v)) if len(v) else None,
                "p90": num(np.percentile(v, 90)) if len(v) else None,
                "median_bounded": float(np.median(fin)) if len(fin) else None}
    return {**one(values), "LOS": one(values[los]), "NLOS": one(values[~los])}
