"""Hyperparameter search with keras-tuner over any method's config (``train.py --tune``).

A ``tuning:`` section declares the search space over config keys and the tuner::

    tuning:
      tuner: bayesian          # random | bayesian | hyperband
      max_trials: 6
      epochs: 25               # training.epochs of each trial (hyperband: the most a trial gets)
      space:
        - {key: training.learning_rate, min: 1.0e-4, max: 1.0e-2, log: true}
        - {key: model.resnet.width, values: [16, 32, 48]}
        - {key: data.batch_size, min: 16, max: 64, step: 16}

A key's type decides the hyperparameter: a float key with ``min``/``max`` is
``hp.Float`` (``log: true`` samples on a log scale), an int key ``hp.Int`` (``step``),
any key with ``values`` ``hp.Choice``. Each trial is the method's whole training with
the trial's values set, scored by the **validation** mean position error of its
inference model (the test set is never touched). The search lives in one directory
(default ``<runtime.runs_dir>/<name>-tune``): keras-tuner's state (an interrupted search
resumes when the same command runs again), one run directory per trial, TensorBoard's
HParams dashboard (``tensorboard --logdir <search>/tensorboard``) and ``best.yaml``, a
ready-to-run config of the best trial.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time

import keras_tuner as kt
import numpy as np
import tensorflow as tf
import yaml
from tensorboard.plugins.hparams import api as hparams

from tfloc.config import ConfigError, dump_yaml, parse_override
from tfloc.data.bundle import fixed_set
from tfloc.methods.task import TrainingRun
from tfloc.run.config import SearchParam
from tfloc.run.experiment import apply_overrides
from tfloc.run.runner import CONFIG_FILE, check_run_dir, make_task, prepare
from tfloc.utils import atomic_write_text, set_seed

log = logging.getLogger("tfloc")

OBJECTIVE = "val_mean_error_m"


def _lookup(cfg, key: str):
    """The current value at a dotted config key (ConfigError if there is none)."""
    obj = cfg
    for part in key.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"tuning.space: unknown config key '{key}'") from None
    if dataclasses.is_dataclass(obj):   # a one-of (model, method) is a value: its type name
        raise ConfigError(f"tuning.space: '{key}' is a section, not a value")
    return obj


def check_space(cfg) -> list[tuple[SearchParam, type]]:
    """Every dimension checked against the config (before any tracing): the key exists,
    a range fits its type, every choice is a value the key accepts."""
    space = cfg.tuning.space
    if not space:
        raise ConfigError("tuning.space: empty; declare at least one key to search "
                          "(e.g. - {key: training.learning_rate, min: 1.0e-4, max: 1.0e-2, log: true})")
    out, seen = [], set()
    for i, p in enumerate(space):
        where = f"tuning.space[{i}]"
        if not p.key:
            raise ConfigError(f"{where}.key: missing")
        if p.key in seen:
            raise ConfigError(f"{where}.key: '{p.key}' appears twice")
        seen.add(p.key)
        if p.key.split(".")[0] in ("tuning", "runtime", "evaluation", "export"):
            raise ConfigError(f"{where}.key: '{p.key}' is not a training choice")
        current = _lookup(cfg, p.key)
        ranged = not (np.isnan(p.min) and np.isnan(p.max))
        if p.values and ranged:
            raise ConfigError(f"{where}: give values or min/max, not both")
        if p.values:
            for v in p.values:
                try:
                    apply_overrides(copy.deepcopy(cfg), {p.key: v})
                except ConfigError as e:
                    raise ConfigError(f"{where}.values: {v!r}: {e}") from None
            out.append((p, object))
            continue
        if not ranged or np.isnan(p.min) or np.isnan(p.max):
            raise ConfigError(f"{where}: needs values, or both min and max")
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise ConfigError(f"{where}: '{p.key}' is not a number ({current!r}); give values")
        if not p.min < p.max:
            raise ConfigError(f"{where}: min {p.min} must be below max {p.max}")
        if p.log and p.min <= 0:
            raise ConfigError(f"{where}: a log scale needs min > 0")
        kind = int if isinstance(current, int) else float
        if kind is int and (p.min != int(p.min) or p.max != int(p.max)):
            raise ConfigError(f"{where}: '{p.key}' is an integer key; min and max must be integers")
        for v in (p.min, p.max):
            try:
                apply_overrides(copy.deepcopy(cfg), {p.key: kind(v)})
            except ConfigError as e:
                raise ConfigError(f"{where}: {kind(v)!r}: {e}") from None
        out.append((p, kind))
    return out


def _declare(hp, p: SearchParam, kind):
    if kind is object:
        return hp.Choice(p.key, [v if isinstance(v, (int, float, bool, str)) else json.dumps(v)
                                 for v in p.values])
    sampling = "log" if p.log else "linear"
    if kind is int:
        return hp.Int(p.key, int(p.min), int(p.max), step=int(p.step) or 1, sampling=sampling)
    return hp.Float(p.key, p.min, p.max, step=p.step or None, sampling=sampling)


def _value(p: SearchParam, v):
    if p.values and isinstance(v, str) and not any(isinstance(x, str) for x in p.values):
        return json.loads(v)   # lists / mappings travel as JSON text through keras-tuner
    return v


def search_dir(cfg, given: str | None) -> str:
    return given or os.path.join(cfg.runtime.runs_dir, f"{cfg.name}-tune")


def tune(cfg, directory: str, config_path: str | None, overrides=()) -> dict:
    """Runs (or resumes) the search; returns the summary (also ``summary.json``)."""
    t = cfg.tuning
    dims = check_space(cfg)
    make_task(cfg)   # the method's own checks, before anything is traced
    check_run_dir(cfg, directory)    # a search of another config is not resumed here
    trials_dir = os.path.join(directory, "trials")
    tb_dir = os.path.join(directory, "tensorboard")
    os.makedirs(trials_dir, exist_ok=True)
    dump_yaml(cfg, os.path.join(directory, CONFIG_FILE))
    with tf.summary.create_file_writer(tb_dir).as_default():
        hparams.hparams_config(hparams=[hparams.HParam(p.key) for p, _ in dims],
                               metrics=[hparams.Metric(OBJECTIVE, display_name="validation mean error [m]")])
    objective = kt.Objective(OBJECTIVE, "min")
    hp0 = kt.HyperParameters()
    for p, kind in dims:
        _declare(hp0, p, kind)
    common = dict(objective=objective, hyperparameters=hp0, seed=t.seed,
                  tune_new_entries=False, allow_new_entries=False)
    if t.tuner == "hyperband":
        oracle = kt.oracles.HyperbandOracle(max_epochs=t.epochs or cfg.training.epochs, **common)
    elif t.tuner == "random":
        oracle = kt.oracles.RandomSearchOracle(max_trials=t.max_trials, **common)
    else:
        oracle = kt.oracles.BayesianOptimizationOracle(max_trials=t.max_trials, **common)

    def trial_config(hp_values: dict):
        values = {p.key: _value(p, hp_values[p.key]) for p, _ in dims}
        c = copy.deepcopy(cfg)
        for k, v in values.items():
            apply_overrides(c, {k: v})
        epochs = hp_values.get("tuner/epochs") or t.epochs
        if epochs:
            apply_overrides(c, {"training.epochs": int(epochs)})
        c.export.enabled = False
        return c, values

    class ConfigTuner(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            c, values = trial_config(trial.hyperparameters.values)
            t0 = time.time()
            log.info("trial %s: %s", trial.trial_id, values)
            score = validation_error(c, os.path.join(trials_dir, trial.trial_id))
            with tf.summary.create_file_writer(os.path.join(tb_dir, trial.trial_id)).as_default():
                hparams.hparams({k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                                 for k, v in values.items()}, trial_id=trial.trial_id)
                tf.summary.scalar(OBJECTIVE, score, step=1)
            log.info("trial %s: validation mean error %.3f m (%.0f s)", trial.trial_id, score,
                     time.time() - t0)
            return {OBJECTIVE: score}

    tuner = ConfigTuner(oracle, directory=directory, project_name="keras_tuner", overwrite=False)
    tuner.search()
    best = tuner.oracle.get_best_trials(1)[0]
    _, best_values = trial_config(best.hyperparameters.values)
    trials = []
    for tr in tuner.oracle.trials.values():
        if tr.score is not None:
            trials.append({"trial": tr.trial_id, "val_mean_error_m": float(tr.score),
                           "values": {p.key: _value(p, tr.hyperparameters.values[p.key]) for p, _ in dims}})
    trials.sort(key=lambda r: r["val_mean_error_m"])
    best_yaml = write_best_yaml(directory, config_path, overrides, best_values)
    summary = {"tuner": t.tuner, "objective": OBJECTIVE + " (validation set)", "trials": trials,
               "best": {"trial": best.trial_id, "val_mean_error_m": float(best.score),
                        "values": best_values}, "best_config": best_yaml}
    atomic_write_text(os.path.join(directory, "summary.json"), json.dumps(summary, indent=2))
    return summary


def write_best_yaml(directory: str, config_path: str | None, overrides, values: dict) -> str:
    """``best.yaml``: the searched config (as ``base``), the command's ``--set`` overrides
    and the best trial's values; ``python train.py --config <search>/best.yaml`` trains it."""
    tree: dict = {}
    for text in overrides:
        keys, value = parse_override(text)
        _set(tree, keys, value)
    for k, v in values.items():
        _set(tree, k.split("."), v)
    doc = {"base": os.path.abspath(config_path)} if config_path else {}
    doc.update(tree)
    path = os.path.join(directory, "best.yaml")
    atomic_write_text(path, "# the best trial of the search in this directory (validation mean error)\n"
                      + yaml.safe_dump(doc, sort_keys=False))
    return path


def _set(tree: dict, keys: list, value):
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def validation_error(cfg, run_dir: str) -> float:
    """Trains the method of ``cfg`` in ``run_dir`` and returns the validation mean position
    error [m] of its inference model (no test set, no export)."""
    set_seed(cfg.runtime.seed)
    task, data = prepare(cfg, progress=False)
    inputs = task.build_inputs(data)
    os.makedirs(run_dir, exist_ok=True)
    dump_yaml(cfg, os.path.join(run_dir, "config.yaml"))
    models = task.make_models(data.spec)
    task.train(models, inputs, data, TrainingRun(run_dir))
    x, y = fixed_set(data, "val")
    pos = task.evaluation_outputs(models, x)["position"]
    return float(np.mean(np.linalg.norm(pos - y["position"], axis=-1)))
