"""What a run's data is: traced paths, the CSI pipeline over them, the splits and the spec,
loaded from the config's ``simulation`` and ``data`` sections (the Task's default
``load_data``), and the fixed-draw views of a split that evaluation and recipes share."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from tfloc.data.environments import Environment
from tfloc.data.measured import measured_data
from tfloc.data.pipeline import CSIPipeline, Splits, dataset_to_numpy, make_splits
from tfloc.data.spec import DataSpec
import tfloc.sim
from tfloc.sim.paths import PathSet

log = logging.getLogger("tfloc")

#: the impairment draws (``split_seed_offset`` of :meth:`CSIPipeline.feature_dataset`) each
#: named stream uses: fixed per split, so every process and pass sees the same noise and TA
SPLIT_SEED_OFFSETS = {"train": 1, "val": 2, "test": 3, "unlabelled": 4,
                      "calibration": 4,   # ECC's quantizer calibration (training rows)
                      "target": 5,        # domain adaptation's unlabelled target stream
                      "trajectory": 5}    # the moving UE of evaluation.trajectory


@dataclass
class DataBundle:
    """What the runner hands a task and the evaluation.

    Parameters
    ----------
    paths : the traced links the samples come from
    pipeline : CSI synthesis, impairments and features over ``paths``
    splits : row indices of each split
    spec : the data's spec, with the training targets' statistics
    info : facts for the report's ``simulation`` section (cache entry, hit, ...)
    environments : methods that train on several environments (seed 001): each one's
        paths, splits and pipeline; the bundle's own fields are the target's
    """
    paths: PathSet
    pipeline: CSIPipeline
    splits: Splits
    spec: DataSpec
    info: dict = field(default_factory=dict)
    environments: dict[str, Environment] = field(default_factory=dict)


def csi_pipeline(cfg, paths: PathSet) -> CSIPipeline:
    """The configured CSI pipeline (synthesis, impairments, features) over ``paths``
    (``cfg``: an experiment config; its ``data``, ``simulation`` and ``runtime.seed``)."""
    return CSIPipeline(paths, cfg.data, seed=cfg.runtime.seed,
                       array_shape=cfg.simulation.bs_array.shape,
                       frequency_hz=cfg.simulation.frequency_hz)


def load_data(cfg, progress: bool = True) -> DataBundle:
    """Traced paths (from the cache when possible), the CSI pipeline, the splits and the spec
    of an experiment config's own site; or the measured CSI of ``data.measured_file``."""
    if cfg.data.measured_file:
        paths, pipe, splits, info = measured_data(cfg, cfg.runtime.seed)
        log.info("measured CSI: %s (%d samples; splits from the %s)", cfg.data.measured_file,
                 paths.num_ue, info["split_from"])
        spec = DataSpec.from_config(cfg).with_targets(paths.positions[splits.train])
        return DataBundle(paths, pipe, splits, spec, info)
    # looked up at call time: tfloc.sim.load_or_trace is the simulation floor's entry point
    paths, cache, hit = tfloc.sim.load_or_trace(cfg.simulation, cfg.runtime.cache_dir, progress=progress)
    log.info("%s paths: %s (%d links, %d with no path)", "cached" if hit else "traced",
             cache, paths.num_ue, int((paths.num_paths == 0).sum()))
    splits = make_splits(paths, cfg.data, seed=cfg.runtime.seed)
    train_rows = splits.train if splits.train.ndim == 1 else splits.train[:, 0]
    spec = DataSpec.from_config(cfg).with_targets(paths.positions[train_rows])
    return DataBundle(paths, csi_pipeline(cfg, paths), splits, spec, {"cache_dir": cache, "cache_hit": hit})


def split_dataset(data: DataBundle, split: str, rows=None, positions=None):
    """The evaluation-mode feature dataset of a split with the split's fixed impairment draws
    (the same in every process and pass); ``rows`` (default: the split's own) and
    ``positions`` (labels to use instead of the true ones, e.g. pseudo-labels)."""
    rows = getattr(data.splits, split) if rows is None else rows
    return data.pipeline.feature_dataset(rows, training=False, split_seed_offset=SPLIT_SEED_OFFSETS[split],
                                         positions=positions)


def fixed_set(data: DataBundle, split: str, rows=None, positions=None):
    """(x, y) NumPy features and labels of :func:`split_dataset`."""
    return dataset_to_numpy(split_dataset(data, split, rows, positions))


def serving_examples(data: DataBundle, n: int = 32) -> dict:
    """Raw serving inputs (``csi`` and ``sector`` / ``bs_positions``) of the first ``n`` test
    samples, with the test split's impairments: the exports' warm-up requests."""
    x, _ = next(iter(data.pipeline.csi_dataset(data.splits.test[:n], training=False, batch_size=n,
                                                split_seed_offset=SPLIT_SEED_OFFSETS["test"])))
    return {k: np.asarray(v) for k, v in x.items()}
