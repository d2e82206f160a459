"""Named environments for multi-environment training and transfer (seed 001).

An environment is a PathSet with its own splits and CSI pipeline: one scene, or
one view of a site (a sector, a BS). Methods train on several source
environments at once, each sample tagged with its environment index (for
per-environment heads ``g_env``), and transfer to an unseen target.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.data.config import DataConfig
from tfloc.data.pipeline import CSIPipeline, Splits, make_splits
from tfloc.sim.paths import PathSet


@dataclass
class Environment:
    """One environment: its paths, its splits and its CSI pipeline."""
    name: str
    paths: PathSet
    splits: Splits
    pipeline: CSIPipeline


def make_environments(paths_by_name: dict, cfg: DataConfig, seed: int,
                      array_shape=(1, 1, 1)) -> dict:
    """Environments from named PathSets; each gets its own seeded splits.

    ``paths_by_name`` can come from :func:`split_by_sector` (views of one site)
    or from separately traced configs (different scenes or sites).
    """
    if not paths_by_name:
        raise ValueError("no environments given")
    envs = {}
    for i, (name, ps) in enumerate(sorted(paths_by_name.items())):
        envs[name] = Environment(name, ps, make_splits(ps, cfg, seed + i),
                                 CSIPipeline(ps, cfg, seed + i, array_shape))
    return envs


def split_by_sector(paths: PathSet, prefix: str = "sector") -> dict:
    """One site's sectors as separate environments: ``{"sector0": PathSet, ...}``."""
    return {f"{prefix}{s}": paths.select(np.flatnonzero(paths.sector == s))
            for s in np.unique(paths.sector)}


def multi_environment_dataset(envs: dict, names: list, split: str = "train", *,
                              training: bool, weights=None, seed: int = 0) -> tf.data.Dataset:
    """Features of several environments in one stream, each sample tagged.

    Output elements: ({"features": [B, H, W, C], "environment": [B] int32}, labels) with
    the labels of :meth:`CSIPipeline.csi_dataset`,
    where ``environment`` indexes ``names``. Training streams sample the
    environments at random (``weights``, default by size) and end when any
    source is exhausted; evaluation streams concatenate them in order.
    """
    unknown = [n for n in names if n not in envs]
    if unknown:
        raise KeyError(f"unknown environment(s) {unknown}; have {sorted(envs)}")
    parts = []
    for i, name in enumerate(names):
        env = envs[name]
        ds = env.pipeline.feature_dataset(getattr(env.splits, split), training=training)
        ds = ds.unbatch().map(lambda x, y, i=i: ({"features": x["features"],
                                                  "environment": tf.constant(i, tf.int32)}, y))
        parts.append(ds)
    batch = envs[names[0]].pipeline.cfg.batch_size
    if training:
        if weights is None:
            sizes = np.array([len(getattr(envs[n].splits, split)) for n in names], float)
            weights = sizes / sizes.sum()
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=list(weights), seed=seed,
                                                  stop_on_empty_dataset=True)
    else:
        ds = parts[0]
        for p in parts[1:]:
            ds = ds.concatenate(p)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)
