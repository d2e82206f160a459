"""Scoring a finished run's model on another dataset (``evaluate.py --run-dir RUN --data ...``).

The other dataset is a data config (a ``configs/data`` file or any experiment file: its
``simulation`` and ``data`` sections, resolved as that file alone would be, then ``--set``),
the run's own data with ``--set`` changes, or a measured-CSI file
(:mod:`tfloc.data.measured`). The model and the baselines keep what they learnt from the
run's own training data: kNN and the training mean are fitted on the run's training and
validation splits, the model is the run's. The report goes to its own directory (default
``RUN/eval/<name>/``) and says what differs from the training data; the run's own report is
never touched.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import re

import numpy as np

from tfloc.config import ConfigError, dump_yaml, parse_override, to_dict, validate_tree
from tfloc.data.spec import DataSpec
from tfloc.evaluation import evaluate, needs_of
from tfloc.run.experiment import apply_overrides, load_config
from tfloc.run.runner import (check_writable, load_run_config, load_run_models, make_task,
                              run_lock_path)
from tfloc.utils import FileLock

log = logging.getLogger("tfloc")

#: the config sections that describe a dataset (all ``--data`` may change)
DATA_SECTIONS = ("simulation", "data")
#: evaluator needs that belong to the run's own site, not to another dataset
RUN_ONLY_NEEDS = ("trajectory",)


def other_data_config(cfg, data: str | None, overrides=()) -> object:
    """The run's config ``cfg`` with the dataset of ``data`` (a YAML file: its simulation and
    data sections, as that file alone resolves them; a measured-CSI file: the run's data
    reading it) or, without ``data``, its own dataset; then the ``--set`` ``overrides``, which
    may touch the data sections and ``evaluation.*`` only."""
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key.split(".")[0] not in DATA_SECTIONS + ("evaluation",):
            raise ConfigError(f"--set {text}: only {', '.join(s + '.*' for s in DATA_SECTIONS)} (the data "
                              "a run is scored on) and evaluation.* (how) may change")
    other = copy.deepcopy(cfg)
    evaluation = [t for t in overrides if t.split("=", 1)[0].strip().startswith("evaluation.")]
    overrides = [t for t in overrides if t not in evaluation]

    def apply(texts):
        try:
            apply_overrides(other, {".".join(keys): value for keys, value in map(parse_override, texts)})
        except ConfigError as e:
            raise ConfigError(f"--set: {e}") from None
    apply(evaluation)
    if data is not None and not is_measured_file(data):
        fresh = load_config(data, overrides)
        for section in DATA_SECTIONS:
            setattr(other, section, getattr(fresh, section))
        validate_tree(other)
    else:
        if data is not None:
            other.data.measured_file = os.path.abspath(data)
            if DataSpec.from_config(cfg).num_sectors:
                raise ConfigError(f"{data}: the model takes the serving sector, which measured data "
                                  "does not give; train with data.use_sector: false to score on it")
        apply(overrides)
    other.validate()
    return other


def is_measured_file(path: str) -> bool:
    """Whether ``--data`` names a measured-CSI file rather than a YAML config."""
    return os.path.splitext(path)[1].lower() in (".npz", ".h5", ".hdf5")


def is_data_override(text: str) -> bool:
    """Whether a ``--set`` changes the data (not only how it is evaluated)."""
    return text.split("=", 1)[0].strip().split(".")[0] in DATA_SECTIONS


def data_differences(cfg, other) -> dict:
    """``{dotted key: [training value, this value]}`` of every data setting that differs."""
    out = {}

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                walk(a.get(k), b.get(k), f"{where}.{k}")
        elif a != b:
            out[where] = [a, b]
    for section in DATA_SECTIONS:
        walk(to_dict(getattr(cfg, section)), to_dict(getattr(other, section)), section)
    return out


def check_same_inputs(train: DataSpec, other: DataSpec, what: str) -> None:
    """ConfigError (one line) when the model trained on ``train`` cannot take ``other``."""
    if other.position_dims != train.position_dims:
        raise ConfigError(f"{what}: {other.position_dims}D labels for a {train.position_dims}D model")
    if other.site != train.site or other.links != train.links:
        raise ConfigError(f"{what}: a {other.site} site with {other.links} link(s) per sample; the "
                          f"model was trained on a {train.site} site with {train.links}")
    if other.array_shape != train.array_shape:
        raise ConfigError(f"{what}: another BS array ({'x'.join(map(str, other.array_shape))} "
                          f"against the model's {'x'.join(map(str, train.array_shape))})")
    if other.csi_shape != train.csi_shape or other.model_inputs != train.model_inputs:
        raise ConfigError(f"{what}: another CSI shape ({list(other.csi_shape)} per link, features "
                          f"{list(other.feature_shape)}); the model takes {list(train.csi_shape)}, "
                          f"features {list(train.feature_shape)}")


def eval_name(data: str | None, overrides=(), split: str = "test") -> str:
    """The default directory name under ``RUN/eval``: the data file's stem (``own`` without
    one), each ``--set`` as ``<last key>-<value>``, and ``all`` when every sample is scored;
    long names end in a hash of the whole."""
    parts = [os.path.splitext(os.path.basename(data))[0] if data else "own"]
    parts += [f"{o.split('=', 1)[0].strip().split('.')[-1]}-{o.split('=', 1)[-1].strip()}" for o in overrides]
    parts += ["all"] if split == "all" else []
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-")
    if len(name) > 80:
        name = f"{name[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def all_rows(data):
    """``data`` scored on every sample with a path (its splits merged into the test split)."""
    s = data.splits
    rows = np.concatenate([np.asarray(r) for r in (s.train, s.val, s.test, s.unlabelled) if len(r)])
    rows = rows[np.argsort(rows if rows.ndim == 1 else rows[:, 0], kind="stable")]
    empty = rows[:0]
    return dataclasses.replace(data, splits=dataclasses.replace(s, test=rows, train=empty, val=empty,
                                                                unlabelled=empty))


def evaluate_on_data(run_dir: str, data: str | None = None, overrides=(), out_dir: str | None = None,
                     split: str = "test") -> tuple[dict, str]:
    """Scores the run in ``run_dir`` on another dataset; returns (report, directory)."""
    if data is None and not overrides:
        raise ConfigError("--data or --set: give the data to score on (without them, "
                          "evaluate.py --run-dir re-scores the run's own test split)")
    if split not in ("test", "all"):
        raise ConfigError(f"--split {split}: test or all")
    cfg = load_run_config(run_dir)
    what = data or "--set"
    other = other_data_config(cfg, data, overrides)
    check_same_inputs(DataSpec.from_config(cfg), DataSpec.from_config(other), what)
    differs = data_differences(cfg, other)
    out = out_dir or os.path.join(run_dir, "eval", eval_name(data, overrides, split))
    check_writable(out)
    models = load_run_models(run_dir)
    task = make_task(cfg)
    wanted = other.evaluation.evaluators or list(task.evaluators)
    names = [n for n in wanted if not set(needs_of(n).run) & set(RUN_ONLY_NEEDS)]
    skipped = sorted(set(wanted) - set(names))
    log.info("the run's own data (the model's and the baselines' training data) ...")
    reference = task.load_data()
    other_task = make_task(other)
    if other_task.class_names != task.class_names:
        raise ConfigError(f"{what}: condition classes {list(other_task.class_names)}; the model "
                          f"predicts {list(task.class_names)}")
    log.info("the data to score on (%s) ...", what)
    scored = other_task.load_data()
    if split == "all":
        scored = all_rows(scored)
    os.makedirs(out, exist_ok=True)
    lock = FileLock(run_lock_path(out))
    if not lock.acquire():
        raise ConfigError(f"{out} is being written by {lock.holder()}")
    try:
        dump_yaml(other, os.path.join(out, "config.yaml"))
        extra = {"scored_on": {
            "run": os.path.abspath(run_dir), "data": data, "set": list(overrides), "split": split,
            "differs_from_training": differs, "evaluators_skipped": skipped,
            "note": "the model and the baselines (kNN, training mean) were fitted on the run's "
                    "own training and validation splits"}}
        report = evaluate(other, out, other_task, models, scored, extra=extra, reference=reference,
                          names=names)
    finally:
        lock.release()
    if not differs:
        log.warning("the data scored on is the run's own (no data setting differs)")
    return report, out
