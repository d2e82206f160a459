"""Splits and tf.data pipelines: cached paths -> impaired CSI -> features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError
from tfloc.data.config import AugmentConfig, DataConfig
from tfloc.data.csi import (add_awgn, paths_to_csi, slot_variation, subcarrier_frequencies,
                            timing_advance_shift, to_real_imag)
from tfloc.data.features import csi_features
from tfloc.sim.paths import PathSet, sample_groups

@dataclass
class Splits:
    """Row indices (into the PathSet) of each split; samples with no path are in none.

    On multi-BS sites each entry is a row of ``[n, L]`` indices, one per BS
    (see :func:`sample_groups`); otherwise a flat ``[n]`` array.
    """
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    unlabelled: np.ndarray
    no_path: np.ndarray


def make_splits(paths: PathSet, cfg: DataConfig, seed: int) -> Splits:
    """Splits the samples that have paths, fixed by ``seed``.

    ``split_by: random`` (seed 000): the labelled training set is a uniformly
    random ``labelled_fraction`` of all samples (so anchors are unevenly
    spaced); validation and test are further random fractions; the rest is
    unlabelled. ``split_by: realization`` (seed 002): train, validation and test
    are the first, next and last blocks of realizations (``realization_splits``);
    a 4th entry makes the realizations after validation an unlabelled block.
    """
    groups = sample_groups(paths)
    has_path = (paths.num_paths[groups] > 0).any(axis=1)
    candidates = np.flatnonzero(has_path)

    def rows(i):
        i = np.sort(i)
        return groups[i] if groups.shape[1] > 1 else groups[i, 0]
    if cfg.split_by == "realization":
        real = paths.realization[groups[:, 0]]
        n_tr, n_va, n_te = cfg.realization_splits[:3]
        n_un = cfg.realization_splits[3] if len(cfg.realization_splits) > 3 else 0
        last = int(real.max(initial=0)) + 1
        blocks = [(0, n_tr), (n_tr, n_tr + n_va), (last - n_te, last),
                  (n_tr + n_va, n_tr + n_va + n_un)]
        train, val, test, unlabelled = (
            candidates[(real[candidates] >= lo) & (real[candidates] < hi)] for lo, hi in blocks)
        return Splits(train=rows(train), val=rows(val), test=rows(test),
                      unlabelled=rows(unlabelled), no_path=rows(np.flatnonzero(~has_path)))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(candidates)
    n = len(candidates)
    n_test = int(round(cfg.test_fraction * n))
    n_val = int(round(cfg.val_fraction * n))
    n_train = int(round(cfg.labelled_fraction * n))
    if min(n_test, n_val, n_train) < 1 or n_test + n_val + n_train > n:
        raise ConfigError(f"simulation.ue_grid.spacing_m: only {n} UEs have paths, too few for "
                          "the configured data splits; use a finer grid")
    test, val = perm[:n_test], perm[n_test:n_test + n_val]
    if cfg.fresh_samples_per_epoch:  # seed 004: the whole pool is labelled, drawn per epoch
        n_train = n - n_test - n_val
    train = perm[n_test + n_val:n_test + n_val + n_train]
    unlabelled = perm[n_test + n_val + n_train:]
    return Splits(train=rows(train), val=rows(val), test=rows(test),
                  unlabelled=rows(unlabelled), no_path=rows(np.flatnonzero(~has_path)))


class CSIPipeline:
    """Builds tf.data datasets of impaired CSI (and features) for a PathSet.

    Parameters
    ----------
    paths : PathSet
    cfg : DataConfig
    seed : int -- fixes the noise of evaluation sets and the shuffling
    array_shape : (rows, cols, polarisations) of the BS array (for ``adp`` features)
    """

    def __init__(self, paths: PathSet, cfg: DataConfig, seed: int, array_shape=(1, 1, 1),
                 frequency_hz: float = 3.5e9):
        self.paths = paths
        self.cfg = cfg
        self.seed = seed
        self.array_shape = tuple(array_shape)
        self.frequencies = subcarrier_frequencies(cfg.num_subcarriers,
                                                  cfg.subcarrier_spacing_hz)[::cfg.subcarrier_stride]
        self.num_ue_ant = int(paths.a.shape[1])
        self.num_bs_ant = int(paths.a.shape[2])
        self.max_doppler_hz = cfg.ue_speed_mps * frequency_hz / 299_792_458.0
        self.bs_positions = np.asarray(paths.meta.get("bs_positions", [[0.0, 0.0, 0.0]]), np.float32)

    @property
    def num_subcarriers(self) -> int:
        """Subcarriers kept (``num_subcarriers / subcarrier_stride``)."""
        return int(self.frequencies.shape[0])

    @property
    def csi_shape(self):
        """Shape of one link's CSI: [num_slots * num_ue_ant, num_bs_ant, subcarriers kept, 2]
        (slot-major over the first axis); multi-BS samples have L of them."""
        return (self.cfg.num_slots * self.num_ue_ant, self.num_bs_ant, self.num_subcarriers, 2)

    def _padded(self, sub: PathSet):
        """Dense paths of ``sub``; with ``max_paths_range`` each realization keeps
        its own random number of strongest paths (seed 002)."""
        c = self.cfg
        most = max(c.max_paths_range) if c.max_paths_range else c.max_paths
        a, tau = sub.padded(min(most, max(1, int(sub.num_paths.max(initial=1)))))
        if c.max_paths_range:
            lo, hi = c.max_paths_range
            keep = np.array([np.random.default_rng([self.seed, int(r)]).integers(lo, hi + 1)
                             for r in range(int(sub.realization.max(initial=0)) + 1)])
            mask = np.arange(a.shape[1])[None] < keep[sub.realization][:, None]
            a, tau = a * mask[:, :, None, None], tau * mask
        return a, tau

    def _synthesize(self, a, tau, seed):
        """Paths [b, (L,) P, ue, bs] -> clean CSI [b, (L,) T*ue, bs, sc] (slot-major)."""
        c = self.cfg
        lead = tf.shape(a)[:-3]
        a = tf.reshape(a, tf.concat([[-1], tf.shape(a)[-3:]], 0))
        tau = tf.reshape(tau, [-1, tf.shape(tau)[-1]])
        if c.num_slots > 1:
            a_t = slot_variation(a, c.num_slots, self.max_doppler_hz, c.slot_duration_s, seed)
            a_t = tf.reshape(a_t, tf.concat([[-1], tf.shape(a)[1:]], 0))   # [b*T, P, ue, bs]
            tau = tf.repeat(tau, c.num_slots, axis=0)
            h = paths_to_csi(a_t, tau, self.frequencies)
        else:
            h = paths_to_csi(a, tau, self.frequencies)
        return tf.reshape(h, tf.concat([lead, [c.num_slots * self.num_ue_ant, self.num_bs_ant,
                                               self.num_subcarriers]], 0))

    def _clean_csi(self, index: np.ndarray, draw_per_epoch: int = 0,
                   positions: np.ndarray | None = None,
                   sectors: np.ndarray | None = None) -> tf.data.Dataset:
        """Noise-free CSI per sample, synthesised in the graph.

        ``index`` is [n] rows, or [n, L] rows of multi-BS samples. Fixed sets
        are cached in memory (synthesis, slot variation included, is
        deterministic: pay it once). With ``draw_per_epoch`` each pass draws
        that many samples of ``index`` anew, with new slot variation, and
        synthesises them from the compact paths, so a large pool never has to
        fit in memory as CSI. ``positions`` [n, dims] replaces the position labels
        (pseudo-labels of unlabelled samples, rotated copies) and ``sectors`` [n] the
        serving sectors (sector rotation), of single-link rows.
        """
        index = np.asarray(index)
        n = index.shape[0]
        sub = self.paths.select(index.reshape(-1))
        a, tau = self._padded(sub)
        dims = self.cfg.position_dims
        pos = sub.positions[:, :dims].astype(np.float32)
        side = sub.sector.astype(np.int32)
        if positions is not None:
            if index.ndim != 1 or np.shape(positions) != (n, dims):
                raise ValueError(f"positions: expected [{n}, {dims}] labels for single-link rows, "
                                 f"got {np.shape(positions)}")
            pos = np.asarray(positions, np.float32)
        if sectors is not None:
            if index.ndim != 1 or np.shape(sectors) != (n,):
                raise ValueError(f"sectors: expected [{n}] sector indices, got {np.shape(sectors)}")
            side = np.asarray(sectors, np.int32)
        cond = sub.condition.astype(np.int32)
        if index.ndim == 2:  # [n * L] -> [n, L]: a sample is seen by L BSs
            L = index.shape[1]
            a, tau = a.reshape((n, L) + a.shape[1:]), tau.reshape(n, L, -1)
            pos = pos[::L]
            cond = cond.reshape(n, L)
            side = np.broadcast_to(self.bs_positions[None], (n,) + self.bs_positions.shape).copy()
        ds = tf.data.Dataset.from_tensor_slices((a, tau, side, {"position": pos, "condition": cond}))
        if draw_per_epoch:
            ds = ds.shuffle(n, seed=self.seed, reshuffle_each_iteration=True)
            ds = ds.take(min(draw_per_epoch, n))
            seeds = tf.data.Dataset.random(seed=self.seed + 1, rerandomize_each_iteration=True).batch(2)
        else:
            seeds = tf.data.Dataset.counter().map(
                lambda i: tf.stack([tf.constant(self.seed + 1, tf.int64), i]))
        ds = tf.data.Dataset.zip((ds.batch(256), seeds))
        ds = ds.map(lambda x, sd: (self._synthesize(x[0], x[1], sd), x[2], x[3]),
                    num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        return ds if draw_per_epoch else ds.cache()

    def _impair(self, h, seed, aug: AugmentConfig | None = None):
        """TA error and AWGN, drawn per link, on a batch of clean CSI; returns real-stacked CSI.

        ``aug`` (default: the data config's own TA and SNR) may also blank a share of
        the subcarriers and drop BS antenna ports, drawn per link."""
        c = aug or self.cfg
        shape = tf.shape(h)
        h = tf.reshape(h, tf.concat([[-1], shape[-3:]], 0))
        b = tf.shape(h)[0]
        s1, s2, s3, s4, s5 = (tf.random.experimental.stateless_fold_in(seed, i) for i in range(5))
        ta = tf.random.stateless_uniform([b], s1, -c.ta_max_ns, c.ta_max_ns) * 1e-9
        snr = tf.random.stateless_uniform([b], s2, c.snr_db[0], c.snr_db[1] + 1e-6)
        h = timing_advance_shift(h, self.frequencies, ta)
        h = add_awgn(h, snr, s3)
        if aug is not None and aug.subcarrier_mask_fraction > 0:   # [b, 1, 1, sc]
            keep = tf.random.stateless_uniform([b, 1, 1, tf.shape(h)[-1]], s4) >= aug.subcarrier_mask_fraction
            h = h * tf.cast(keep, h.dtype)
        if aug is not None and aug.antenna_dropout > 0:            # [b, 1, bs, 1]
            keep = tf.random.stateless_uniform([b, 1, tf.shape(h)[-2], 1], s5) >= aug.antenna_dropout
            h = h * tf.cast(keep, h.dtype)
        return to_real_imag(tf.reshape(h, shape))

    def csi_dataset(self, index: np.ndarray, *, training: bool, batch_size: int | None = None,
                    split_seed_offset: int = 0, positions: np.ndarray | None = None,
                    sectors: np.ndarray | None = None, views: dict | None = None) -> tf.data.Dataset:
        """({"csi": [B, (L,) T*num_ue_ant, num_bs_ant, subcarriers, 2] float32,
        "sector": [B] int32 or, multi-BS, "bs_positions": [B, L, 3]},
        {"position": [B, dims] float32, "condition": [B (, L)] int32}).

        ``condition`` is the PathSet's propagation-condition code per link
        (:data:`tfloc.sim.paths.CONDITIONS`).

        Training sets are reshuffled and get fresh TA/noise draws every epoch;
        evaluation sets get the same draws on every pass (same seed). ``positions``
        and ``sectors`` replace the labels and serving sectors (see :meth:`_clean_csi`). ``views``
        ({name: AugmentConfig}) makes ``csi`` a dict of that many independently
        impaired copies of each sample (consistency training).
        """
        bsz = batch_size or self.cfg.batch_size
        fresh = self.cfg.fresh_samples_per_epoch if training else 0
        ds = self._clean_csi(index, draw_per_epoch=fresh, positions=positions, sectors=sectors)
        if training and not fresh:  # fresh draws arrive shuffled already
            ds = ds.shuffle(len(index), seed=self.seed, reshuffle_each_iteration=True)
        ds = ds.batch(bsz)
        base = self.seed * 1000 + split_seed_offset
        if training:  # new draws every epoch (reproducible under the seeded global RNG)
            seeds = tf.data.Dataset.random(seed=base, rerandomize_each_iteration=True).batch(2)
        else:  # stateless [base, batch index]: the same draws in every process and pass
            seeds = tf.data.Dataset.counter().map(
                lambda i: tf.stack([tf.constant(base, tf.int64), i]))
        ds = tf.data.Dataset.zip((ds, seeds))
        side_key = "bs_positions" if np.ndim(index) == 2 else "sector"

        def impair(h, s):
            if not views:
                return self._impair(h, s)
            return {name: self._impair(h, tf.random.experimental.stateless_fold_in(s, 100 + i), aug)
                    for i, (name, aug) in enumerate(views.items())}
        ds = ds.map(lambda hsp, s: ({"csi": impair(hsp[0], s), side_key: hsp[1]}, hsp[2]),
                    num_parallel_calls=tf.data.AUTOTUNE)
        n = min(fresh, len(index)) if fresh else len(index)
        # unbatch() hides the length: state it, so Keras knows the steps per epoch
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // bsz)))
        return ds.prefetch(tf.data.AUTOTUNE)

    def features(self, csi: tf.Tensor) -> tf.Tensor:
        """Features of [B, ...] single-link or [B, L, ...] multi-BS CSI (per link)."""
        c = self.cfg
        return csi_features(csi, c.num_delay_taps, c.representation, c.normalization,
                            self.array_shape)

    def feature_dataset(self, index: np.ndarray, *, training: bool, split_seed_offset: int = 0,
                        batch_size: int | None = None, positions: np.ndarray | None = None,
                        sectors: np.ndarray | None = None,
                        views: dict | None = None) -> tf.data.Dataset:
        """({"features": [B, (L,) H, W, C][, "sector": [B]]}, labels) (see csi_features
        and :meth:`csi_dataset` for the labels, ``positions``, ``sectors`` and ``views``; with
        views, ``features`` is a dict of them).

        ``sector`` is included when ``DataConfig.use_sector`` is set.
        """
        ds = self.csi_dataset(index, training=training, split_seed_offset=split_seed_offset,
                              batch_size=batch_size, positions=positions, sectors=sectors,
                              views=views)

        def to_features(x, y):
            csi = x["csi"]
            out = {"features": ({k: self.features(v) for k, v in csi.items()}
                                if isinstance(csi, dict) else self.features(csi))}
            if "bs_positions" in x:
                out["bs_positions"] = x["bs_positions"]
            elif self.cfg.use_sector:
                out["sector"] = x["sector"]
            return out, y
        return ds.map(to_features,
                      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def dataset_to_numpy(ds: tf.data.Dataset):
    """Materialises a finite (x, y) dataset of dicts: (dict of arrays, dict of arrays)."""
    xs, ys = [], []
    for x, y in ds:
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append({k: v.numpy() for k, v in y.items()})
    if not xs:
        raise ValueError("empty dataset")
    return ({k: np.concatenate([x[k] for x in xs]) for k in xs[0]},
            {k: np.concatenate([y[k] for y in ys]) for k in ys[0]})
