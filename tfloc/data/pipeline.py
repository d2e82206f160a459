"""Splits and tf.data pipelines: cached paths -> impaired CSI -> features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.config import DataConfig
from tfloc.data.csi import (add_awgn, paths_to_csi, subcarrier_frequencies,
                            timing_advance_shift, to_real_imag)
from tfloc.data.features import csi_features
from tfloc.sim.paths import PathSet

@dataclass
class Splits:
    """UE indices (into the PathSet) of each split; UEs with no path are in none."""
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    unlabelled: np.ndarray
    no_path: np.ndarray


def make_splits(paths: PathSet, cfg: DataConfig, seed: int) -> Splits:
    """Random split of the UEs that have paths, fixed by ``seed``.

    As in seed 000, the labelled training set is a uniformly random
    ``labelled_fraction`` of all UEs (so anchors are unevenly spaced); the
    validation and test sets are further random fractions; the rest is unlabelled.
    """
    has_path = paths.num_paths > 0
    candidates = np.flatnonzero(has_path)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(candidates)
    n = len(candidates)
    n_test = int(round(cfg.test_fraction * n))
    n_val = int(round(cfg.val_fraction * n))
    n_train = int(round(cfg.labelled_fraction * n))
    if min(n_test, n_val, n_train) < 1 or n_test + n_val + n_train > n:
        from tfloc.config import ConfigError
        raise ConfigError(f"simulation.ue_grid.spacing_m: only {n} UEs have paths, too few for "
                          "the configured data splits; use a finer grid")
    test, val = perm[:n_test], perm[n_test:n_test + n_val]
    if cfg.fresh_samples_per_epoch:  # seed 004: the whole pool is labelled, drawn per epoch
        n_train = n - n_test - n_val
    train = perm[n_test + n_val:n_test + n_val + n_train]
    unlabelled = perm[n_test + n_val + n_train:]
    return Splits(train=np.sort(train), val=np.sort(val), test=np.sort(test),
                  unlabelled=np.sort(unlabelled), no_path=np.flatnonzero(~has_path))


class CSIPipeline:
    """Builds tf.data datasets of impaired CSI (and features) for a PathSet.

    Parameters
    ----------
    paths : PathSet
    cfg : DataConfig
    seed : int -- fixes the noise of evaluation sets and the shuffling
    array_shape : (rows, cols, polarisations) of the BS array (for ``adp`` features)
    """

    def __init__(self, paths: PathSet, cfg: DataConfig, seed: int, array_shape=(1, 1, 1)):
        self.paths = paths
        self.cfg = cfg
        self.seed = seed
        self.array_shape = tuple(array_shape)
        self.frequencies = subcarrier_frequencies(cfg.num_subcarriers, cfg.subcarrier_spacing_hz)
        self.num_ue_ant = int(paths.a.shape[1])
        self.num_bs_ant = int(paths.a.shape[2])

    @property
    def csi_shape(self):
        """Shape of one CSI sample: [num_ue_ant, num_bs_ant, num_subcarriers, 2]."""
        return (self.num_ue_ant, self.num_bs_ant, self.cfg.num_subcarriers, 2)

    def _clean_csi(self, index: np.ndarray, draw_per_epoch: int = 0) -> tf.data.Dataset:
        """Noise-free CSI per UE, synthesised in the graph.

        Fixed sets are cached in memory (synthesis is deterministic: pay it once).
        With ``draw_per_epoch`` each pass draws that many UEs of ``index`` anew and
        synthesises them from the compact paths, so a large pool never has to fit
        in memory as CSI.
        """
        sub = self.paths.select(index)
        a, tau = sub.padded(min(self.cfg.max_paths, max(1, int(sub.num_paths.max(initial=1)))))
        pos = sub.positions[:, :2].astype(np.float32)
        sector = sub.sector.astype(np.int32)
        freqs = self.frequencies
        ds = tf.data.Dataset.from_tensor_slices((a, tau, sector, pos))
        if draw_per_epoch:
            ds = ds.shuffle(len(index), seed=self.seed, reshuffle_each_iteration=True)
            ds = ds.take(min(draw_per_epoch, len(index)))
        ds = ds.batch(256).map(lambda a_, t_, s_, p_: (paths_to_csi(a_, t_, freqs), s_, p_),
                               num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        return ds if draw_per_epoch else ds.cache()

    def _impair(self, h, seed):
        """TA error and AWGN on a batch of clean CSI; returns real-stacked CSI."""
        c = self.cfg
        b = tf.shape(h)[0]
        s1, s2, s3 = (tf.random.experimental.stateless_fold_in(seed, i) for i in range(3))
        ta = tf.random.stateless_uniform([b], s1, -c.ta_max_ns, c.ta_max_ns) * 1e-9
        snr = tf.random.stateless_uniform([b], s2, c.snr_db[0], c.snr_db[1] + 1e-6)
        h = timing_advance_shift(h, self.frequencies, ta)
        h = add_awgn(h, snr, s3)
        return to_real_imag(h)

    def csi_dataset(self, index: np.ndarray, *, training: bool, batch_size: int | None = None,
                    split_seed_offset: int = 0) -> tf.data.Dataset:
        """({"csi": [B, num_ue_ant, num_bs_ant, num_subcarriers, 2] float32,
        "sector": [B] int32}, position [B, 2] float32).

        Training sets are reshuffled and get fresh TA/noise draws every epoch;
        evaluation sets get the same draws on every pass (same seed).
        """
        bsz = batch_size or self.cfg.batch_size
        fresh = self.cfg.fresh_samples_per_epoch if training else 0
        ds = self._clean_csi(index, draw_per_epoch=fresh)
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
        ds = ds.map(lambda hsp, s: ({"csi": self._impair(hsp[0], s), "sector": hsp[1]}, hsp[2]),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def features(self, csi: tf.Tensor) -> tf.Tensor:
        c = self.cfg
        return csi_features(csi, c.num_delay_taps, c.representation, c.normalization,
                            self.array_shape)

    def feature_dataset(self, index: np.ndarray, *, training: bool,
                        split_seed_offset: int = 0) -> tf.data.Dataset:
        """({"features": [B, H, W, C][, "sector": [B]]}, position [B, 2]) (see csi_features).

        ``sector`` is included when ``DataConfig.use_sector`` is set.
        """
        ds = self.csi_dataset(index, training=training, split_seed_offset=split_seed_offset)

        def to_features(x, y):
            out = {"features": self.features(x["csi"])}
            if self.cfg.use_sector:
                out["sector"] = x["sector"]
            return out, y
        return ds.map(to_features,
                      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def dataset_to_numpy(ds: tf.data.Dataset):
    """Materialises a finite (x, y) dataset: x a dict of NumPy arrays, y an array."""
    xs, ys = [], []
    for x, y in ds:
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append(y.numpy())
    return {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}, np.concatenate(ys)
