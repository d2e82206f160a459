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

:func:`refine_links` minimises it over p (and delta) by Levenberg-Marquardt steps with the
Jacobian by forward-mode autodiff, batched over links, for paths traced once per start;
:func:`refine` re-traces the twin where a step has moved the estimate beyond the region
where the traced path set holds, runs several starts per sample and keeps a refined
position only where its cost is below the start's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

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
    """
    position: np.ndarray
    start_cost: np.ndarray
    cost: np.ndarray
    clock_ns: np.ndarray
    kept_start: np.ndarray
    fit: np.ndarray | None = None
    traces: int = 0


def _basis(pos, clock_s, fixed):
    """Unit-gain CSI of every path [B, L, N] (complex128) at UE positions ``pos`` [B, 3] and
    clock offsets ``clock_s`` [B], for the traced paths in ``fixed`` (see ``_batch_inputs``)."""
    tau, k = mirror_paths(pos, fixed["bs"], fixed["points"], fixed["normals"], fixed["reflect"])
    tau = tau + clock_s[:, None]
    arr_phase = 2 * np.pi / fixed["wavelength"] * tf.einsum("bmx,blx->blm", fixed["elements"], k)
    steer = tf.exp(tf.complex(tf.zeros_like(arr_phase), arr_phase))                     # [B, L, M]
    spatial = fixed["shape"][..., None] * steer[:, :, None, None, :]                     # [B, L, U, q, M]
    phase = -2 * np.pi * tau[..., None] * fixed["frequencies"]                           # [B, L, K]
    freq = tf.exp(tf.complex(tf.zeros_like(phase), phase))
    basis = spatial[..., None] * freq[:, :, None, None, None, :]                         # [B, L, U, q, M, K]
    return tf.reshape(basis, tf.concat([tf.shape(basis)[:2], [-1]], 0))


def _gains(basis, y, ridge):
    """Least-squares complex gains [B, L] of ``y`` [B, N] on the paths' ``basis`` [B, L, N]."""
    gram = tf.einsum("bln,bmn->blm", tf.math.conj(basis), basis)
    scale = tf.math.real(tf.linalg.trace(gram)) / tf.cast(tf.shape(gram)[-1], tf.float64) + 1e-300
    eye = tf.eye(tf.shape(gram)[-1], dtype=tf.complex128)
    load = tf.cast(ridge * scale, tf.complex128)[:, None, None] * eye     # keeps unused paths solvable
    rhs = tf.einsum("bln,bn->bl", tf.math.conj(basis), y)
    return tf.linalg.solve(gram + load, rhs[..., None])[..., 0]


def _cost(x, y, fixed, dims, noise_var, clock_var, ridge):
    """(cost [B], gains [B, L]) at variables ``x`` [B, dims + 1] (position, clock in ns)."""
    pos = tf.concat([x[:, :dims], fixed["pos0"][:, dims:]], 1)
    basis = _basis(pos, x[:, dims] * NS, fixed)
    g = _gains(basis, y, ridge)
    r = y - tf.einsum("bl,bln->bn", g, basis)
    cost = tf.reduce_sum(tf.abs(r) ** 2, 1) / noise_var + (x[:, dims] * NS) ** 2 / clock_var
    return cost, g


def _normal_equations(x, y, fixed, dims, noise_var, clock_var, ridge):
    """(cost [B], gradient [B, V], Gauss-Newton Hessian [B, V, V]) of :func:`_cost`, the gains
    held at their optimum (variable projection); the Jacobian by forward-mode autodiff (the
    batch repeated once per variable with that variable's tangent)."""
    v = dims + 1
    b = tf.shape(x)[0]
    cost, g = _cost(x, y, fixed, dims, noise_var, clock_var, ridge)
    rep = tf.tile(x, [v, 1])
    tangent = tf.repeat(tf.eye(v, dtype=tf.float64), b, axis=0)
    fixed_rep = {k: (tf.tile(t, tf.concat([[v], tf.ones([tf.rank(t) - 1], tf.int32)], 0))
                     if t.shape.rank else t) for k, t in fixed.items() if k != "frequencies"}
    fixed_rep["frequencies"] = fixed["frequencies"]
    g_rep = tf.tile(g, [v, 1])
    with tf.autodiff.ForwardAccumulator(rep, tangent) as acc:
        pos = tf.concat([rep[:, :dims], fixed_rep["pos0"][:, dims:]], 1)
        h = tf.einsum("bl,bln->bn", g_rep, _basis(pos, rep[:, dims] * NS, fixed_rep))
        h = tf.concat([tf.math.real(h), tf.math.imag(h)], 1)
    jac = tf.transpose(tf.reshape(acc.jvp(h), [v, b, -1]), [1, 2, 0])                      # [B, 2N, V]
    h0 = h[:b]
    r = tf.concat([tf.math.real(y), tf.math.imag(y)], 1) - h0                               # [B, 2N]
    c = tf.one_hot(dims, v, dtype=tf.float64)                                                # the clock
    grad = -2.0 * tf.einsum("bnv,bn->bv", jac, r) / noise_var[:, None] \
        + 2.0 * (x[:, dims] * NS ** 2 / clock_var)[:, None] * c
    hess = 2.0 * tf.einsum("bnv,bnw->bvw", jac, jac) / noise_var[:, None, None] \
        + (2.0 * NS ** 2 / clock_var) * c[:, None] * c[None, :]
    return cost, grad, hess


_GRAPHS: dict = {}


def _graphs(dims: int):
    if dims not in _GRAPHS:
        _GRAPHS[dims] = (
            tf.function(lambda x, y, f, nv, cv, rd: _cost(x, y, f, dims, nv, cv, rd)[0], reduce_retracing=True),
            tf.function(lambda x, y, f, nv, cv, rd: _normal_equations(x, y, f, dims, nv, cv, rd),
                        reduce_retracing=True))
    return _GRAPHS[dims]


def noise_variance(y: np.ndarray, snr_db: float) -> np.ndarray:
    """sigma^2 per complex entry of each observation ``y`` [n, ...] as the pipeline adds noise:
    the mean CSI power over the SNR (the observation's own power stands for the clean one's)."""
    power = np.mean(np.abs(y.reshape(len(y), -1)) ** 2, axis=1)
    return power / (10 ** (snr_db / 10) + 1.0)


def refine_links(y: np.ndarray, twin, setup: BoundSetup, rows=None, iterations: int = 20,
                 batch_size: int = 16, ridge: float = 1e-9) -> Refined:
    """Levenberg-Marquardt refinement of each link's position against the twin's paths.

    ``y`` [n, U, Q*M, K] complex: the observed CSI (the pipeline's layout, one snapshot);
    ``twin`` a PathSet with interaction geometry whose rows ``rows`` (default 0..n-1) are the
    twin traced at each link's start position (``twin.positions[rows]``) from the BS panel
    ``twin.sector[rows]``. Links without a twin path keep their start."""
    y = np.asarray(y)
    n = len(y)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
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
    dims = setup.dims
    start = twin.positions[rows, :dims].astype(np.float64)
    out = Refined(position=start.copy(), start_cost=np.full(n, np.inf), cost=np.full(n, np.inf),
                  clock_ns=np.zeros(n), kept_start=np.ones(n, bool), fit=np.full(n, np.inf))
    counts = np.minimum(twin.num_paths[rows], setup.max_paths)
    specular_only = np.array([np.all(np.isin(twin.interactions[twin.offsets[r]:twin.offsets[r + 1]], (0, SPECULAR)))
                              for r in rows])
    live = np.flatnonzero((counts > 0) & specular_only)
    clock_var = (setup.ta_max_s ** 2 / 3.0) if setup.ta_max_s > 0 else (1e-18)   # "known": pinned at 0
    cost_fn, normal_fn = _graphs(dims)
    flat = y.reshape(n, -1).astype(np.complex128)
    sigma2 = noise_variance(y, setup.snr_db).astype(np.float64)
    order = live[np.argsort(counts[live], kind="stable")]
    for s in range(0, len(order), batch_size):
        sel = order[s:s + batch_size]
        L = _bucket(int(counts[sel].max()), setup.max_paths)
        pad = np.concatenate([sel, np.repeat(sel[:1], batch_size - len(sel))])    # one graph per L
        _, fixed, _, _ = _batch_inputs(twin, rows[pad], setup, L, with_free=False)
        fixed = {k: tf.constant(v) for k, v in fixed.items()}
        yb, nv = tf.constant(flat[pad]), tf.constant(sigma2[pad])
        cv, rd = tf.constant(clock_var, tf.float64), tf.constant(ridge, tf.float64)
        x = np.concatenate([start[pad], np.zeros((len(pad), 1))], 1)
        cost = cost_fn(tf.constant(x), yb, fixed, nv, cv, rd).numpy()
        first = cost.copy()
        lam = np.full(len(pad), 1e-3)
        for _ in range(iterations):
            _, grad, hess = (t.numpy() for t in normal_fn(tf.constant(x), yb, fixed, nv, cv, rd))
            damp = hess + lam[:, None, None] * (np.diagonal(hess, axis1=1, axis2=2)[:, :, None]
                                                * np.eye(dims + 1) + 1e-12 * np.eye(dims + 1))
            step = -np.linalg.solve(damp, grad[..., None])[..., 0]
            trial = x + step
            new = cost_fn(tf.constant(trial), yb, fixed, nv, cv, rd).numpy()
            better = np.isfinite(new) & (new < cost)
            x[better], cost[better] = trial[better], new[better]
            lam = np.where(better, lam / 3.0, lam * 4.0)
            if np.all(np.abs(step[:, :dims]).max(1) < 1e-4) or np.all(lam > 1e8):
                break
        k = len(sel)
        # costs of different traces compare across path sets: each path's complex gain is two
        # free parameters, so more paths fit any CSI better; the Bayesian information
        # criterion's price, ln(observations) per gain, makes them comparable
        prior_term = (x[:k, dims] * NS) ** 2 / clock_var
        out.fit[sel] = (cost[:k] - prior_term) / flat.shape[1]
        penalty = counts[sel] * np.log(2.0 * flat.shape[1])
        first, cost = first[:k] + penalty, cost[:k] + penalty
        out.start_cost[sel], out.cost[sel] = first, cost
        out.position[sel], out.clock_ns[sel] = x[:k, :dims], x[:k, dims]
        out.kept_start[sel] = ~(cost < first)
    out.position[out.kept_start] = start[out.kept_start]
    return out


def refine(y: np.ndarray, starts: np.ndarray, trace, setup: BoundSetup,
           rounds: int = 3, retrace_m: float = 1.0, prior_sigma_m=None, max_fit: float | None = None,
           **kwargs) -> Refined:
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

    ``y`` [n, U, Q*M, K] complex observed CSI; ``starts`` [n, S, dims] (start 0: the
    network's estimate; others within its uncertainty); ``trace(positions [m, dims], samples
    [m]) -> PathSet`` traces the twin at UE positions (2D: at the site's UE height), one row
    per position, from the panel (and in the traffic) of sample ``samples[i]``.
    """
    starts = np.asarray(starts, np.float64)
    n, S, dims = starts.shape
    ys = np.repeat(y, S, axis=0)
    current = starts.reshape(n * S, dims).copy()
    best, first_cost, traces = None, None, 0
    todo = np.arange(n * S)
    for _ in range(rounds):
        twin = trace(current[todo], todo // S)
        traces += 1
        r = refine_links(ys[todo], twin, setup, **kwargs)
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
                   fit=best.fit[chosen], traces=traces)

