"""Refining a position estimate by maximum likelihood against the ray-traced twin of the site.

The observed CSI of a link is modelled as the pipeline models it (:mod:`tfloc.physics.bound`):

    H(p, g, delta)[u, q, m, k] = sum_l  g_l c_l[u, q] exp(j 2 pi d_m . k_l(p) / lambda)
                                         exp(-j 2 pi f_k (tau_l(p) + delta))

with the paths the twin traces near the position: each specular path's delay tau_l(p) and
departure direction k_l(p) follow the UE position p through its mirror images in the planes
it reflects off (traced interaction points; :func:`tfloc.physics.bound.mirror_paths`), the
per-antenna coefficient c_l (pattern, polarisation) is the traced one, the complex gains g
are nuisance solved in closed form (least squares for given p and delta: variable
projection) and the clock offset delta (the timing-advance error) has the pipeline's prior
(uniform in +-ta_max: a Gaussian of variance ta_max^2 / 3). With complex noise of variance
sigma^2 per entry the negative log-likelihood is, up to constants,

    cost(p, delta) = |y - H(p, g*(p, delta), delta)|^2 / sigma^2 + delta^2 / (ta_max^2 / 3),

plus, where costs of different traced path sets are compared (starts, re-traces, the
start itself), ln(2N) per path (N observed complex values): the Bayesian information
criterion's price of each path's free gain, without which a candidate where the twin
traces more paths would win by fitting more.

:func:`refine_links` minimises it over p (and each link's delta) by Levenberg-Marquardt
steps, batched over links, for paths traced once per start: a path's CSI is a Kronecker
product of an antenna and a subcarrier vector, so the gains' least squares, the gradient and
the Gauss-Newton Hessian (projected off the paths' span: variable projection) are computed
from products of short vectors, never the N-long basis; the delays' and directions'
derivatives in p come from forward-mode autodiff through the mirror images. The L links (or
looks) of a sample share p and are solved jointly (a Schur complement per link's clock).
:func:`refine` re-traces the twin where a step has moved the estimate beyond the region
where the traced path set holds, runs several starts per sample and keeps a refined
position only where its cost is below the start's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfloc.physics.bound import BoundSetup, SPECULAR, _batch_inputs, _bucket, mirror_paths
from tfloc.physics.fisher import BoundError

#: refinement variables per link: position (dims) and the clock offset [ns]
NS = 1e-9


@dataclass
class Refined:
    """What :func:`refine_links` / :func:`refine` found per sample.

    position : [n, dims] refined (or kept) estimates
    start_cost, cost : [n] the negative log-likelihood at the start and at ``position``
    clock_ns : [n] the clock offset at ``position``
    fit : [n] the residual's power over the noise's at ``position`` (|r|^2 / (sigma^2 N)): about
        1 where the twin explains the CSI down to the noise, far above where it does not
    kept_start : [n] bool: the start was kept (no twin path, or no better likelihood)
    traces : twin traces run (re-traces included)
    seconds : where the time went: {"trace": s, "fit": s} (:func:`refine`)
    outside : [n] bool: the start lay outside the scene (kept; :func:`refine` with bounds)
    """
    position: np.ndarray
    start_cost: np.ndarray
    cost: np.ndarray
    clock_ns: np.ndarray
    kept_start: np.ndarray
    fit: np.ndarray | None = None
    traces: int = 0
    seconds: dict | None = None
    outside: np.ndarray | None = None


def _factors(x, fixed, dims):
    """Each path's unit-gain CSI is a Kronecker product s_l (x) f_l of a spatial factor (UE
    antennas, polarisations, BS elements) and a frequency factor (subcarriers). Returns, at
    variables ``x`` [B, V] (position, clock offset in ns; V = dims + 1), s [B, L, A], f [B, L, K],
    their derivatives ds [B, V, L, A], df [B, V, L, K], the delays' dtau [B, V, L] [s] and the
    frequencies as used (offsets from the band centre) [K]: the delays' and directions'
    derivatives by forward-mode autodiff through the mirror images (small tensors), the rest in
    closed form (d s = s * j 2 pi / lambda d_m . dk, d f = f * (-j 2 pi f_k d tau))."""
    b = tf.shape(x)[0]
    pos = tf.concat([x[:, :dims], fixed["pos0"][:, dims:]], 1)
    geometry = [fixed[k] for k in ("bs", "points", "normals", "reflect")]
    tiled = [tf.tile(t, tf.concat([[dims], tf.ones([tf.rank(t) - 1], tf.int32)], 0)) for t in geometry]
    rep = tf.tile(pos, [dims, 1])
    tangent = tf.repeat(tf.eye(3, dtype=tf.float64)[:dims], b, axis=0)
    with tf.autodiff.ForwardAccumulator(rep, tangent) as acc:
        tau_rep, k_rep = mirror_paths(rep, *tiled)
    num_paths = tf.shape(tau_rep)[1]
    tau = tau_rep[:b] + x[:, dims, None] * NS
    k = k_rep[:b]
    dtau = tf.transpose(tf.reshape(acc.jvp(tau_rep), [dims, b, num_paths]), [1, 0, 2])         # [B, dims, L]
    dtau = tf.concat([dtau, tf.fill([b, 1, num_paths], tf.constant(NS, tf.float64))], 1)     # the clock
    dk = tf.transpose(tf.reshape(acc.jvp(k_rep), [dims, b, num_paths, 3]), [1, 0, 2, 3])
    dk = tf.concat([dk, tf.zeros([b, 1, num_paths, 3], tf.float64)], 1)                      # [B, V, L, 3]
    # a phase common to a path's entries is its gain's: the cost (gains re-solved) does not see
    # it, so delays act at the frequencies' offsets from the band centre and directions at the
    # elements' offsets from the panel centre (the carrier's 2 pi f_c tau would otherwise
    # dominate the derivatives and the projection would cancel it in floating point)
    freqs = fixed["frequencies"] - tf.reduce_mean(fixed["frequencies"])
    elements = fixed["elements"] - tf.reduce_mean(fixed["elements"], 1, keepdims=True)
    wave = 2 * np.pi / fixed["wavelength"]
    arr_phase = wave * tf.einsum("bmx,blx->blm", elements, k)
    steer = tf.exp(tf.complex(tf.zeros_like(arr_phase), arr_phase))                        # [B, L, M]
    s = fixed["shape"][..., None] * steer[:, :, None, None, :]                              # [B, L, U, q, M]
    d_arr = wave * tf.einsum("bmx,bvlx->bvlm", elements, dk)                       # [B, V, L, M]
    ds = s[:, None] * tf.complex(tf.zeros_like(d_arr), d_arr)[:, :, :, None, None, :]
    s = tf.reshape(s, [b, num_paths, -1])
    ds = tf.reshape(ds, [b, dims + 1, num_paths, -1])
    phase = -2 * np.pi * tau[..., None] * freqs                                            # [B, L, K]
    f = tf.exp(tf.complex(tf.zeros_like(phase), phase))
    d_phase = -2 * np.pi * dtau[..., None] * freqs                                         # [B, V, L, K]
    df = f[:, None] * tf.complex(tf.zeros_like(d_phase), d_phase)
    return s, f, ds, df, dtau, freqs


def _inner(u, v, pattern):
    """Inner products <u, v> (u conjugated) by an einsum ``pattern``."""
    return tf.einsum(pattern, tf.math.conj(u), v)


def _projection(s, f, y, ridge):
    """The gains' least squares on the Kronecker basis, never formed: the Gram matrix is
    <s_l, s_m> <f_l, f_m> and <b_l, y> = s_l^H Y conj(f_l) (``y`` [B, A, K]). Returns
    (gains [B, L], residual power [B], Gram terms for the Jacobian)."""
    gs, gf = _inner(s, s, "bla,bma->blm"), _inner(f, f, "blk,bmk->blm")
    gram = gs * gf
    scale = tf.math.real(tf.linalg.trace(gram)) / tf.cast(tf.shape(gram)[-1], tf.float64) + 1e-300
    eye = tf.eye(tf.shape(gram)[-1], dtype=tf.complex128)
    loaded = gram + tf.cast(ridge * scale, tf.complex128)[:, None, None] * eye   # keeps unused paths solvable
    yf = tf.einsum("bak,blk->bla", y, tf.math.conj(f))                                      # Y conj(f_l)
    rhs = tf.reduce_sum(tf.math.conj(s) * yf, -1)                                            # <b_l, y>
    chol = tf.linalg.cholesky(loaded)                                                       # Hermitian, > 0
    g = tf.linalg.cholesky_solve(chol, rhs[..., None])[..., 0]
    fitted = tf.einsum("bl,blm,bm->b", tf.math.conj(g), gram, g)
    power = tf.reduce_sum(tf.abs(y) ** 2, [1, 2]) - 2.0 * tf.math.real(tf.reduce_sum(tf.math.conj(g) * rhs, 1)) \
        + tf.math.real(fitted)
    return g, tf.maximum(power, 0.0), (gs, gf, chol, yf)


def _cost(x, y, fixed, dims, noise_var, clock_var, ridge):
    """cost [B] at variables ``x`` [B, dims + 1] (position, clock in ns), the gains at their
    least squares (variable projection); ``y`` [B, A, K]."""
    s, f = _factors(x, fixed, dims)[:2]
    _, power, _ = _projection(s, f, y, ridge)
    return power / noise_var + (x[:, dims] * NS) ** 2 / clock_var


def _normal_equations(x, y, fixed, dims, noise_var, clock_var, ridge):
    """(cost [B], gradient [B, V], Gauss-Newton Hessian [B, V, V]) of :func:`_cost`, the gains
    at their optimum (variable projection; the Hessian from the Jacobian projected off the
    paths' span, Kaufman's form). With h = sum_l g_l s_l (x) f_l, the derivative in variable i
    is d_i h = sum_l g_l (ds_il (x) f_l + s_l (x) df_il), and every inner product of Kronecker
    products factors: <u (x) v, w (x) z> = <u, w> <v, z>, so no vector of the CSI's length
    is formed beyond y."""
    v = dims + 1
    s, f, ds, df, dtau, freqs = _factors(x, fixed, dims)
    dtau = tf.complex(dtau, tf.zeros_like(dtau))
    g, power, (gs, gf, chol, yf) = _projection(s, f, y, ridge)
    gc = tf.math.conj(g)
    g_ds_s = _inner(ds, s, "bila,bma->bilm")            # <ds_il, s_m>
    g_df_f = _inner(df, f, "bilk,bmk->bilm")            # <df_il, f_m>
    # <d_i h, b_m> and <d_i h, y>
    p = tf.einsum("bl,bilm->bim", gc, g_ds_s * gf[:, None] + gs[:, None] * g_df_f)
    # Y conj(df_il) = dtau_il Y conj(f_l (-j 2 pi f)): one product with Y for every variable
    slope = tf.complex(tf.zeros_like(freqs), 2 * np.pi * freqs)
    y_df = dtau[..., None] * tf.einsum("bak,blk->bla", y, tf.math.conj(f) * slope)[:, None]
    dy = tf.einsum("bl,bil->bi", gc, tf.reduce_sum(tf.math.conj(ds) * yf[:, None], -1)
                   + tf.reduce_sum(tf.math.conj(s)[:, None] * y_df, -1))
    dr = dy - tf.einsum("bim,bm->bi", p, g)                                                 # <d_i h, r>
    # <d_i h, d_j h>
    g_ds_ds = _inner(ds, ds, "bila,bjma->biljm")
    g_df_df = _inner(df, df, "bilk,bjmk->biljm")
    cross = (g_ds_ds * gf[:, None, :, None, :] + gs[:, None, :, None, :] * g_df_df
             + g_ds_s[:, :, :, None, :] * tf.math.conj(tf.transpose(g_df_f, [0, 3, 1, 2]))[:, None]
             + tf.math.conj(tf.transpose(g_ds_s, [0, 3, 1, 2]))[:, None] * g_df_f[:, :, :, None, :])
    dd = tf.einsum("bl,biljm,bm->bij", gc, cross, g)
    proj = tf.einsum("bim,bmj->bij", p, tf.linalg.cholesky_solve(chol, tf.math.conj(tf.transpose(p, [0, 2, 1]))))
    c = tf.one_hot(dims, v, dtype=tf.float64)                                                # the clock
    cost = power / noise_var + (x[:, dims] * NS) ** 2 / clock_var
    grad = -2.0 * tf.math.real(dr) / noise_var[:, None] + 2.0 * (x[:, dims] * NS ** 2 / clock_var)[:, None] * c
    hess = 2.0 * tf.math.real(dd - proj) / noise_var[:, None, None] \
        + (2.0 * NS ** 2 / clock_var) * c[:, None] * c[None, :]
    return cost, grad, hess


_GRAPHS: dict = {}
#: fixed tensors common to the batch (not one row per link)
_SHARED = ("frequencies", "wavelength")


def _graphs(dims: int, depth: int):
    """The cost and normal-equation graphs of ``dims``-D positions and paths of up to ``depth``
    interactions (a static size: the mirror images unroll over it)."""
    if (dims, depth) not in _GRAPHS:
        _GRAPHS[dims, depth] = (
            tf.function(lambda x, y, f, nv, cv, rd: _cost(x, y, f, dims, nv, cv, rd), reduce_retracing=True),
            tf.function(lambda x, y, f, nv, cv, rd: _normal_equations(x, y, f, dims, nv, cv, rd),
                        reduce_retracing=True))
    return _GRAPHS[dims, depth]


def noise_variance(y: np.ndarray, snr_db: float) -> np.ndarray:
    """sigma^2 per complex entry of each observation ``y`` [n, ...] as the pipeline adds noise:
    the mean CSI power over the SNR (the observation's own power stands for the clean one's)."""
    power = np.mean(np.abs(y.reshape(len(y), -1)) ** 2, axis=1)
    return power / (10 ** (snr_db / 10) + 1.0)


class _Links:
    """The fixed inputs of links ``rows`` of a traced twin, in batches of similar path counts
    (one graph per padded path count), and their evaluation at variables x [n, dims + 1]."""

    def __init__(self, y, twin, rows, setup, live, heard, batch_size, ridge):
        self.dims, self.n = setup.dims, len(rows)
        clock_var = (setup.ta_max_s ** 2 / 3.0) if setup.ta_max_s > 0 else 1e-18   # "known": pinned at 0
        self.clock_var = clock_var
        self.consts = (tf.constant(clock_var, tf.float64), tf.constant(ridge, tf.float64))
        flat = y.reshape(len(y), -1, y.shape[-1]).astype(np.complex128)          # [n, A, K]
        self.size = flat.shape[1] * flat.shape[2]                                  # N complex values
        # a link the twin has no (specular) path for is explained by nothing: |y|^2 / sigma^2; a
        # link that observed nothing (``heard`` false: its BS did not hear the UE) carries no
        # information here
        self.sigma2 = np.where(heard, noise_variance(y, setup.snr_db), 1.0).astype(np.float64)
        self.empty_cost = np.where(heard, np.sum(np.abs(flat) ** 2, (1, 2)) / self.sigma2, 0.0)
        counts = np.minimum(twin.num_paths[rows], setup.max_paths)
        order = live[np.argsort(counts[live], kind="stable")]
        self.batches = []
        for i in range(0, len(order), batch_size):
            sel = order[i:i + batch_size]
            _, fixed, _, _ = _batch_inputs(twin, rows[sel], setup, _bucket(int(counts[sel].max()), setup.max_paths),
                                           with_free=False)
            self.batches.append((sel, {k: tf.constant(v) for k, v in fixed.items()},
                                 tf.constant(flat[sel]), tf.constant(self.sigma2[sel])))
        depth = self.batches[0][1]["points"].shape[2] if self.batches else 0
        self.cost_fn, self.normal_fn = _graphs(self.dims, depth)

    def _each(self, x, links, fn):
        """Runs ``fn(batch_x, y, fixed, sigma2)`` on the batches' rows among ``links`` (bool [n])."""
        for sel, fixed, yb, nv in self.batches:
            pick = np.flatnonzero(links[sel])
            if not len(pick):
                continue
            if len(pick) < len(sel):
                idx = tf.constant(pick)
                fixed = {k: (v if k in _SHARED else tf.gather(v, idx)) for k, v in fixed.items()}
                yb, nv = tf.gather(yb, idx), tf.gather(nv, idx)
            yield sel[pick], fn(tf.constant(x[sel[pick]]), yb, fixed, nv)

    def cost(self, x, links):
        out = np.array(self.empty_cost)
        for rows, c in self._each(x, links, lambda *a: self.cost_fn(*a, *self.consts)):
            out[rows] = c.numpy()
        return out

    def normal(self, x, links):
        v = self.dims + 1
        grad, hess = np.zeros((self.n, v)), np.zeros((self.n, v, v))
        hess[:, self.dims, self.dims] = 2.0 * NS ** 2 / self.clock_var   # a link without paths: its clock's prior
        for rows, (_, g, h) in self._each(x, links, lambda *a: self.normal_fn(*a, *self.consts)):
            grad[rows], hess[rows] = g.numpy(), h.numpy()
        return grad, hess


def _joint_step(grad, hess, lam, groups, num_groups, dims):
    """Levenberg-Marquardt steps of a shared position per group and a clock per link: the
    links' normal equations add in the position; each link's clock is eliminated by its Schur
    complement. ``grad`` [n, V], ``hess`` [n, V, V], ``lam`` [num_groups]; returns the position
    step [num_groups, dims] and the clock steps [n]."""
    eye = np.eye(dims)
    hpp = np.zeros((num_groups, dims, dims))
    gp = np.zeros((num_groups, dims))
    np.add.at(hpp, groups, hess[:, :dims, :dims])
    np.add.at(gp, groups, grad[:, :dims])
    hpp = hpp + lam[:, None, None] * (np.diagonal(hpp, axis1=1, axis2=2)[:, :, None] * eye + 1e-12 * eye)
    hcc = hess[:, dims, dims] * (1.0 + lam[groups]) + 1e-30
    hpc, gc = hess[:, :dims, dims], grad[:, dims]
    schur, rhs = hpp.copy(), gp.copy()
    np.add.at(schur, groups, -hpc[:, :, None] * hpc[:, None, :] / hcc[:, None, None])
    np.add.at(rhs, groups, -hpc * (gc / hcc)[:, None])
    step_p = -np.linalg.solve(schur, rhs[..., None])[..., 0]
    step_c = -(gc + np.einsum("nd,nd->n", hpc, step_p[groups])) / hcc
    return step_p, step_c


def refine_links(y: np.ndarray, twin, setup: BoundSetup, rows=None, groups=None, iterations: int = 20,
                 batch_size: int = 16, ridge: float = 1e-9, on_step=None) -> Refined:
    """Levenberg-Marquardt refinement of positions against the twin's paths, one position per
    sample from its links' observed CSI jointly (each link with its own gains and clock).

    ``y`` [n, U, Q*M, K] complex: the observed CSI of n links (the pipeline's layout, one
    snapshot); ``twin`` a PathSet with interaction geometry whose rows ``rows`` (default
    0..n-1) are the twin traced at each link's start position (``twin.positions[rows]``) from
    the BS panel ``twin.sector[rows]``; ``groups`` [n] the sample of each link (default: each
    link its own sample; a sample's links share one start). Returns one row per sample. A
    sample none of whose links has a twin path keeps its start. ``on_step()`` is called after
    each Levenberg-Marquardt iteration (progress)."""
    y = np.asarray(y)
    n = len(y)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    groups = np.arange(n) if groups is None else np.asarray(groups, np.int64)
    if not twin.has_geometry:
        raise BoundError("the twin's paths have no interaction geometry (a cache traced before it "
                         "was stored): re-trace it")
    if not np.iscomplexobj(y) or y.ndim != 4:
        raise BoundError(f"observed CSI: expected complex [n, U, antennas, subcarriers], got "
                         f"{y.dtype} {list(y.shape)}")
    if y.shape[-1] != len(setup.frequencies):
        raise BoundError(f"observed CSI has {y.shape[-1]} subcarriers, the setup {len(setup.frequencies)}")
    if not np.isfinite(y).all():
        raise BoundError("observed CSI holds NaN or Inf")
    if len(groups) != n or len(rows) != n:
        raise BoundError(f"{n} observed links but {len(rows)} twin rows and {len(groups)} group labels")
    dims = setup.dims
    num_groups = int(groups.max()) + 1 if n else 0
    start = np.zeros((num_groups, dims))
    start[groups] = twin.positions[rows, :dims]
    out = Refined(position=start.copy(), start_cost=np.full(num_groups, np.inf), cost=np.full(num_groups, np.inf),
                  clock_ns=np.zeros(num_groups), kept_start=np.ones(num_groups, bool), fit=np.full(num_groups, np.inf))
    counts = np.minimum(twin.num_paths[rows], setup.max_paths)
    specular_only = np.array([np.all(np.isin(twin.interactions[twin.offsets[r]:twin.offsets[r + 1]], (0, SPECULAR)))
                              for r in rows], bool)
    heard = np.any(y.reshape(n, -1) != 0, axis=1)           # a link whose BS observed nothing: left out
    modelled = (counts > 0) & specular_only & heard
    live_group = np.zeros(num_groups, bool)
    live_group[groups[modelled]] = True
    links = _Links(y, twin, rows, setup, np.flatnonzero(modelled & live_group[groups]), heard, batch_size, ridge)
    per_group = np.bincount(groups, minlength=num_groups)

    def total(c):
        return np.bincount(groups, weights=c, minlength=num_groups)
    x = np.concatenate([start[groups], np.zeros((n, 1))], 1)
    cost = total(links.cost(x, modelled))
    first = cost.copy()
    lam = np.full(num_groups, 1e-3)
    act = live_group.copy()                  # samples still moving: the iterations run on them only
    for _ in range(iterations):
        on = act[groups] & modelled
        grad, hess = links.normal(x, on)
        step_p, step_c = _joint_step(grad, hess, lam, groups, num_groups, dims)
        trial = x.copy()
        trial[:, :dims] += step_p[groups]
        trial[:, dims] += step_c
        trial_link = links.cost(trial, on)
        new = np.where(act, total(np.where(on, trial_link, links.empty_cost)), np.inf)
        better = act & np.isfinite(new) & (new < cost)
        x[better[groups]], cost[better] = trial[better[groups]], new[better]
        lam = np.where(better, lam / 3.0, np.where(act, lam * 4.0, lam))
        act &= (np.abs(step_p).max(1) >= 1e-4) & (lam <= 1e8)
        if on_step is not None:
            on_step()
        if not act.any():
            break
    link_cost = links.cost(x, modelled)
    prior = (x[:, dims] * NS) ** 2 / links.clock_var
    # costs of different traces compare across path sets: each path's complex gain is two
    # free parameters, so more paths fit any CSI better; the Bayesian information
    # criterion's price, ln(observations) per gain, makes them comparable
    penalty = total(np.where(modelled, counts, 0) * np.log(2.0 * links.size))
    live = live_group
    out.fit[live] = (total(link_cost - np.where(modelled, prior, 0.0)) / (np.maximum(total(heard), 1) * links.size))[live]
    out.start_cost[live], out.cost[live] = (first + penalty)[live], (total(link_cost) + penalty)[live]
    out.position[live] = x[_first_rows(groups, num_groups)[live], :dims]
    clock = np.zeros(num_groups)
    np.add.at(clock, groups, x[:, dims])
    out.clock_ns[live] = (clock / np.maximum(per_group, 1))[live]         # a sample's mean clock offset
    out.kept_start[live] = ~(out.cost[live] < out.start_cost[live])
    out.position[out.kept_start] = start[out.kept_start]
    return out


def _first_rows(groups, num_groups):
    """The first link row of each group [num_groups]."""
    first = np.full(num_groups, -1)
    rev = np.arange(len(groups))[::-1]
    first[groups[rev]] = rev
    return first


def refine(y: np.ndarray, starts: np.ndarray, trace, setup: BoundSetup, bounds=None, **kwargs) -> Refined:
    """:func:`_refine` of the samples whose start (the given estimate) lies within ``bounds``
    ([2, dims]: the scene's lowest and highest corner); a sample whose start lies outside
    keeps it (:attr:`Refined.outside`), and its other starts are clipped into the bounds."""
    starts = np.asarray(starts, np.float64)
    if starts.ndim != 3 or not np.isfinite(starts).all():
        raise BoundError(f"starts: expected finite [n, starts, dims], got {list(starts.shape)}"
                         + ("" if starts.ndim != 3 else " holding NaN or Inf"))
    n, _, dims = starts.shape
    if bounds is None:
        return _refine(y, starts, trace, setup, **kwargs)
    low, high = np.asarray(bounds, np.float64)[:, :dims]
    outside = np.any((starts[:, 0] < low) | (starts[:, 0] > high), axis=1)
    inside = np.flatnonzero(~outside)
    clipped = np.clip(starts[inside], low, high)
    clipped[:, 0] = starts[inside, 0]
    out = Refined(position=starts[:, 0].copy(), start_cost=np.full(n, np.inf), cost=np.full(n, np.inf),
                  clock_ns=np.zeros(n), kept_start=np.ones(n, bool), fit=np.full(n, np.inf),
                  seconds={"trace": 0.0, "fit": 0.0}, outside=outside)
    if not len(inside):
        return out
    if kwargs.get("prior_sigma_m") is not None:
        kwargs["prior_sigma_m"] = np.asarray(kwargs["prior_sigma_m"], float)[inside]
    r = _refine(np.asarray(y)[inside], clipped, lambda pos, samples: trace(pos, inside[samples]), setup, **kwargs)
    for f in ("position", "start_cost", "cost", "clock_ns", "kept_start", "fit"):
        getattr(out, f)[inside] = getattr(r, f)
    out.traces, out.seconds = r.traces, r.seconds
    return out


def _refine(y: np.ndarray, starts: np.ndarray, trace, setup: BoundSetup,
            rounds: int = 3, retrace_m: float = 1.0, prior_sigma_m=None, max_fit: float | None = None,
            progress: bool = True, **kwargs) -> Refined:
    """Refines each sample from each of its starts against the twin, re-tracing it where a
    step moved the estimate more than ``retrace_m`` from where it was traced (at most
    ``rounds`` traces), and keeps per sample the best likelihood of all starts when it beats
    the first start's (the given estimate). With ``prior_sigma_m`` [n] the start is also a
    Gaussian prior of that spread: the choice among starts and against the start is then the
    maximum a posteriori one (a far candidate must explain the CSI that much better). With
    ``max_fit`` a refined position is kept only where the twin explains the observed CSI to
    within that multiple of the noise power (:attr:`Refined.fit`): where no traced path set
    does (a start far from the truth, a wrong twin), the likelihood's optimum is as wrong as
    the start, often more.

    ``y`` [n, U, Q*M, K] complex observed CSI, or [n, L, U, Q*M, K] for samples of L links
    (several BSs, or several looks of a link in a row: refined jointly, each with its own
    gains and clock); ``starts`` [n, S,
    dims] (start 0: the network's estimate; others within its uncertainty); ``trace(positions
    [m, dims], samples [m]) -> PathSet`` traces the twin at UE positions (2D: at the site's UE
    height), L consecutive rows per position (its links), from the panel (and in the traffic)
    of sample ``samples[i]``.
    """
    starts = np.asarray(starts, np.float64)
    n, S, dims = starts.shape
    y = np.asarray(y)
    if y.ndim == 4:
        y = y[:, None]
    num_links = y.shape[1]
    ys = np.repeat(y, S, axis=0)                              # [n S, L, U, Q*M, K]
    current = starts.reshape(n * S, dims).copy()
    best, first_cost, traces = None, None, 0
    todo = np.arange(n * S)
    seconds = {"trace": 0.0, "fit": 0.0}
    iterations = kwargs.get("iterations", 20)
    bar = tqdm(total=rounds * iterations, unit="step", desc=f"twin refinement of {n} samples",
               disable=not progress, leave=False)
    for k in range(rounds):
        bar.set_postfix_str(f"round {k + 1}: tracing {len(todo)} candidates")
        t0 = time.perf_counter()
        twin = trace(current[todo], todo // S)
        t1 = time.perf_counter()
        bar.set_postfix_str(f"round {k + 1}: fitting {len(todo)} candidates")
        traces += 1
        per_position = twin.num_ue // max(len(todo), 1)
        if twin.num_ue != len(todo) * per_position or num_links % max(per_position, 1):
            raise BoundError(f"the twin traced {twin.num_ue} links at {len(todo)} positions; the observed "
                             f"samples have {num_links} links (or looks) each")
        # a link's looks (time slots) are consecutive observations of one traced link
        r = refine_links(ys[todo].reshape(-1, *y.shape[2:]), twin, setup,
                         rows=np.repeat(np.arange(twin.num_ue), num_links // per_position),
                         groups=np.repeat(np.arange(len(todo)), num_links), on_step=lambda: bar.update(), **kwargs)
        bar.update((k + 1) * iterations - bar.n)
        seconds["trace"] += t1 - t0
        seconds["fit"] += time.perf_counter() - t1
        if best is None:
            best, first_cost = r, r.start_cost.copy()
        else:
            better = r.cost < best.cost[todo]
            for f in ("position", "cost", "clock_ns", "fit"):
                getattr(best, f)[todo[better]] = getattr(r, f)[better]
        moved = np.linalg.norm(r.position - current[todo], axis=1) > retrace_m
        current[todo] = r.position
        todo = todo[moved & ~r.kept_start]
        if not len(todo):
            break
    bar.close()
    if prior_sigma_m is not None:   # the start as a Gaussian prior: a maximum a posteriori choice
        moved = np.sum((best.position.reshape(n, S, dims) - starts[:, :1]) ** 2, -1)
        best.cost = best.cost + (moved / (2.0 * np.asarray(prior_sigma_m, float)[:, None] ** 2)).reshape(-1)
    cost = best.cost.reshape(n, S)
    pick = np.argmin(np.where(np.isfinite(cost), cost, np.inf), axis=1)
    chosen = np.arange(n) * S + pick
    start0 = np.arange(n) * S
    keep = ~(best.cost[chosen] < first_cost[start0])
    if max_fit is not None:         # the twin must explain the CSI down to about the noise
        keep |= ~(best.fit[chosen] <= max_fit)
    position = np.where(keep[:, None], starts[:, 0], best.position[chosen])
    return Refined(position=position, start_cost=first_cost[start0],
                   cost=np.where(keep, first_cost[start0], best.cost[chosen]),
                   clock_ns=np.where(keep, 0.0, best.clock_ns[chosen]), kept_start=keep,
                   fit=best.fit[chosen], traces=traces, seconds=seconds)

