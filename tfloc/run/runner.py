"""End-to-end runs: check -> trace (cached) -> data -> task hooks -> evaluate -> export.

The runner knows no method and no evaluator: it calls the :class:`tfloc.methods.task.Task`
hooks, checks the evaluators' declared needs, and hands scoring to
:func:`tfloc.evaluation.evaluate`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf
import yaml

from tfloc.config import ConfigError, dump_yaml, parse_override, to_dict
from tfloc.data.bundle import serving_examples
from tfloc.data.spec import DataSpec
from tfloc.evaluation import check_evaluators, evaluate
from tfloc.methods.callbacks import CheckpointError
from tfloc.methods.registry import METHODS
from tfloc.methods.task import TrainingRun
from tfloc.run.distribute import make_strategy
from tfloc.run.experiment import apply_overrides, load_run_config as _load_config_file
from tfloc.sim.scenes import check_scene_config
from tfloc.utils import FileLock, atomic_write_json, code_version, replace_durably, set_seed

log = logging.getLogger("tfloc")

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"


def make_task(cfg):
    """The configured task, after the checks that need no tracing (scene name, method vs
    data, the evaluators' needs against the method's outputs)."""
    check_scene_config(cfg.simulation)
    task = METHODS.get(cfg.method.type)(cfg)
    task.check(DataSpec.from_config(cfg))
    check_evaluators(cfg.evaluation.evaluators or task.evaluators, task.evaluated_outputs, cfg.method.type)
    return task


def prepare(cfg, progress: bool = True):
    """(task, data): every check first, then tracing or the cache."""
    task = make_task(cfg)
    return task, task.load_data(progress)


def train_and_evaluate(cfg, run_dir: str) -> dict:
    """The whole experiment of one config; returns the report (also in run_dir).

    Under ``runtime.distribution: multi_worker`` every worker runs this; the chief writes
    ``run_dir``, the others a temporary directory removed at the end
    (:mod:`tfloc.run.distribute`)."""
    strategy, worker = make_strategy(cfg.runtime)   # before any other TF op
    if worker.num_workers > 1:
        log.info("worker %d of %d (%s)%s", worker.index, worker.num_workers, worker.task_type,
                 ": writes the run directory" if worker.is_chief else ": writes nothing kept")
    if worker.is_chief:
        return _train_and_evaluate(cfg, run_dir, strategy, worker)
    # one scratch directory per (run, worker): a killed worker's is cleared on its re-run
    key = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    scratch = os.path.join(tempfile.gettempdir(), f"tfloc-worker{worker.index}-{key}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        return _train_and_evaluate(cfg, scratch, strategy, worker, restore_root=run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_and_evaluate(cfg, run_dir: str, strategy, worker, restore_root: str | None = None) -> dict:
    set_seed(cfg.runtime.seed)
    if cfg.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    check_writable(run_dir)          # before minutes of tracing, not after
    lock = FileLock(run_lock_path(run_dir))
    if not lock.acquire():
        raise ConfigError(f"run directory {run_dir} is being written by {lock.holder()}; wait for "
                          "that run to end or give another --run-dir")
    try:
        return _train_and_evaluate_locked(cfg, run_dir, strategy, worker, restore_root)
    finally:
        lock.release()


def run_lock_path(run_dir: str) -> str:
    """The lock file a run holds while it writes ``run_dir``: beside it, so that it exists
    before the run directory does (which appears only once the data is ready)."""
    path = os.path.abspath(run_dir)
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


def _train_and_evaluate_locked(cfg, run_dir: str, strategy, worker, restore_root: str | None) -> dict:
    resuming = check_run_dir(cfg, run_dir)
    timings = {}
    t0 = time.time()
    task, data = prepare(cfg)
    timings["simulation_s"] = time.time() - t0
    inputs = task.build_inputs(data)
    # The run directory appears only once the data is ready: a mistake found
    # while tracing, splitting or building the inputs leaves no run behind.
    os.makedirs(run_dir, exist_ok=True)
    dump_yaml(cfg, os.path.join(run_dir, CONFIG_FILE))
    if cfg.runtime.distribution != "none":
        timings["distribution"] = {"strategy": cfg.runtime.distribution, "workers": worker.num_workers,
                                   "replicas": int(strategy.num_replicas_in_sync)}
    run = TrainingRun(run_dir, restore_root=restore_root)
    with strategy.scope():   # every variable (models, trainer metrics, optimizer) mirrored
        return _train_in_scope(cfg, run, task, data, inputs, resuming, timings)


def _train_in_scope(cfg, run, task, data, inputs, resuming, timings) -> dict:
    models = task.make_models(data.spec)
    net = models["inference"]
    log.info("method %s, model %s: %d parameters, inputs %s; %d labelled training samples",
             cfg.method.type, net.name, net.count_params(),
             {k: v[0] for k, v in data.spec.model_inputs.items()}, len(data.splits.train))
    _log_config_text(cfg, run.directory)
    t1 = time.time()
    run.start_clock()
    result = task.train(models, inputs, data, run)
    timings["training_s"] = run.training_s   # with a killed run's earlier processes
    if run.earlier_s is not None:      # resumed: the earlier processes' share
        timings["training_s_earlier"] = run.earlier_s
    timings.update(result.facts)
    seconds = result.seconds if result.seconds is not None else time.time() - t1
    timings.update(training_rows=int(result.rows), training_rows_s=round(float(seconds), 2),
                   training_rows_per_s=round(result.rows / seconds, 2) if seconds else None)
    save_models(run.directory, models)
    extra = {"timings_s": timings, "convergence": run.convergence, **result.report,
             "code_version": code_version(),   # what trained it (a re-score keeps it)
             "finished": False}                # True once the export is written too
    if resuming or run.resumed:  # stage -> the epoch it went on after, or 'restored'
        extra["resumed"] = {"stages": run.resumed}
    report = evaluate(cfg, run.directory, task, models, data, extra=extra)
    if cfg.export.enabled:
        t2 = time.time()
        examples = serving_examples(data)
        for module in task.export_modules(models, data.spec):
            folder = os.path.join(run.directory, "export", module.name)
            remove_orphans(folder)      # what an export killed mid-write left
            path = module.write(os.path.join(folder, str(cfg.export.version)), examples)
            log.info("exported SavedModel %s (%.1f s)", path, time.time() - t2)
    report["finished"] = True
    atomic_write_json(os.path.join(run.directory, "report.json"), report)
    return report


def remove_orphans(folder: str) -> None:
    """Removes the temporary folders (``.tmp-*``) a write killed mid-way left in ``folder``
    (the run directory's lock keeps any other writer out)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def run_finished(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a run that ran to its end: report written and, where the
    config exports, the export too (``finished`` in the report; runs from before it was
    recorded count as finished)."""
    try:
        with open(os.path.join(run_dir, "report.json")) as fh:
            return bool(json.load(fh).get("finished", True))
    except (OSError, ValueError, AttributeError):
        return False


#: the free space a run directory needs at least (checkpoints, TensorBoard, report, export)
MIN_FREE_MB = 100


def check_writable(run_dir: str) -> None:
    """ConfigError (one line) when ``run_dir`` cannot be made or written (a file on its path,
    a read-only or full file system), found by creating a scratch file where it will go."""
    probe = os.path.abspath(run_dir)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"run directory {run_dir}: {probe} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"run directory {run_dir}: cannot write in {probe} ({e.strerror})") from None
    free_mb = shutil.disk_usage(probe).free / 2 ** 20
    if free_mb < MIN_FREE_MB:
        raise ConfigError(f"run directory {run_dir}: {free_mb:.0f} MB free on its file system, a run "
                          f"needs at least {MIN_FREE_MB} MB")


def check_run_dir(cfg, run_dir: str) -> bool:
    """True when ``run_dir`` holds an earlier run of this same config (it resumes);
    ConfigError when it holds another config's (nothing is written)."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return False
    with open(path) as fh:
        old = yaml.safe_load(fh) or {}
    new = yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    for tree in (old, new):
        tree.get("runtime", {}).pop("verbose", None)   # how much it prints is no difference
    diff = _first_difference(old, new)
    if diff:
        raise ConfigError(f"{run_dir}: holds a run of another config ({diff}); re-run it with "
                          "its own config to resume, or choose a new --run-dir")
    log.info("%s: resuming the run of this config found there", run_dir)
    return True


def _first_difference(old, new, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            d = _first_difference(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return ""
    same = old == new or (isinstance(old, float) and isinstance(new, float) and old != old and new != new)
    return "" if same else f"{where}: {old!r} there, {new!r} here"


def save_models(run_dir: str, models: dict):
    """``model.keras`` (inference) and ``models/<name>.keras`` for the others, atomically."""
    for name, model in models.items():
        final = (os.path.join(run_dir, MODEL_FILE) if name == "inference"
                 else os.path.join(run_dir, "models", f"{name}.keras"))
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = os.path.join(os.path.dirname(final), ".tmp-" + os.path.basename(final))
        model.save(tmp)
        replace_durably(tmp, final)


def load_saved_model(path: str):
    """A run's saved Keras model; CheckpointError (one line, naming the file) when the file
    is there but cannot be read (truncated, overwritten, not a Keras archive)."""
    try:
        return keras.models.load_model(path)
    except Exception as e:      # zipfile, h5py, JSON and Keras raise their own kinds
        raise CheckpointError(f"{path}: damaged model file ({type(e).__name__}); re-train the run "
                              "or put back an intact copy") from None


def load_run_config(run_dir: str):
    """The resolved config a run wrote (``<run_dir>/config.yaml``)."""
    return _load_config_file(os.path.join(run_dir, CONFIG_FILE))


def load_run_models(run_dir: str) -> dict:
    """A finished run's saved models: ``inference`` (model.keras) and ``models/*.keras``."""
    model_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{run_dir}: no trained model ({MODEL_FILE} missing)")
    models = {"inference": load_saved_model(model_path)}
    other = os.path.join(run_dir, "models")
    if os.path.isdir(other):
        for f in sorted(os.listdir(other)):
            if f.endswith(".keras"):
                models[f[:-6]] = load_saved_model(os.path.join(other, f))
    return models


def evaluate_run(run_dir: str, overrides=()) -> dict:
    """Re-scores a finished run: same cached paths, same test UEs, same noise draws; what
    training wrote in the report (timings, the method's sections) is kept. ``overrides``:
    ``evaluation.*`` changes (``--set evaluation.evaluators=[position, twin_refine]``)."""
    cfg = load_run_config(run_dir)
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] != "evaluation":
            raise ConfigError(f"--set {text}: re-scoring a run's own data changes evaluation.* only "
                              "(give --data, or data.* / simulation.* keys, to score other data)")
        try:
            apply_overrides(cfg, {".".join(keys): value})
        except ConfigError as e:
            raise ConfigError(f"--set {text}: {e}") from None
    make_task(cfg)          # the evaluators' needs, before tracing
    models = load_run_models(run_dir)       # before tracing: a damaged file is found at once
    task, data = prepare(cfg)
    path = os.path.join(run_dir, "report.json")
    previous = None
    if os.path.isfile(path):
        with open(path) as fh:
            previous = json.load(fh)
    lock = FileLock(run_lock_path(run_dir))
    if not lock.acquire():
        raise ConfigError(f"run directory {run_dir} is being written by {lock.holder()}; "
                          "re-score it when that has ended")
    try:
        return evaluate(cfg, run_dir, task, models, data, previous=previous)
    finally:
        lock.release()


def _log_config_text(cfg, run_dir):
    with tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "config")).as_default():
        text = "```\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False) + "```"
        tf.summary.text("resolved_config", text, step=0)
