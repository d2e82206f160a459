"""End-to-end runs: check -> trace (cached) -> data -> task hooks -> evaluate -> export.

The runner knows no method: it calls the :class:`tfloc.methods.task.Task` hooks.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from tfloc.methods.registry import METHODS

log = logging.getLogger("tfloc")

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"


def make_task(cfg):
    """The configured task, after the checks that need no tracing (scene name, method vs data)."""
    from tfloc.data.spec import DataSpec
    from tfloc.sim.scenes import check_scene_config
    check_scene_config(cfg.simulation)
    task = METHODS.get(cfg.method.type)(cfg)
    task.check(DataSpec.from_config(cfg))
    needs_std = {"calibration"} & set(cfg.evaluation.evaluators)
    if needs_std and "position_std" not in task.outputs:
        from tfloc.config import ConfigError
        raise ConfigError(f"evaluation.evaluators: 'calibration' needs a model with a sigma head "
                          f"(position_std); method '{cfg.method.type}' as configured has none "
                          "(train it with a likelihood loss such as gaussian_nll)")
    return task


def load_data(cfg, progress: bool = True):
    """Traced paths (from the cache when possible), the CSI pipeline, the splits and the spec."""
    from tfloc.data import make_splits
    from tfloc.data.spec import DataSpec
    from tfloc.methods.task import DataBundle
    from tfloc.sim import load_or_trace
    paths, cache, hit = load_or_trace(cfg.simulation, cfg.runtime.cache_dir, progress=progress)
    log.info("%s paths: %s (%d links, %d with no path)", "cached" if hit else "traced",
             cache, paths.num_ue, int((paths.num_paths == 0).sum()))
    pipeline = csi_pipeline(cfg, paths)
    splits = make_splits(paths, cfg.data, seed=cfg.runtime.seed)
    train_rows = splits.train if splits.train.ndim == 1 else splits.train[:, 0]
    spec = DataSpec.from_config(cfg).with_targets(paths.positions[train_rows])
    return DataBundle(paths, pipeline, splits, spec, {"cache_dir": cache, "cache_hit": hit})


def csi_pipeline(cfg, paths):
    """The configured CSI pipeline (synthesis, impairments, features) over ``paths``."""
    from tfloc.data import CSIPipeline
    return CSIPipeline(paths, cfg.data, seed=cfg.runtime.seed,
                       array_shape=cfg.simulation.bs_array.shape,
                       frequency_hz=cfg.simulation.frequency_hz)


def prepare(cfg, progress: bool = True):
    """(task, data): every check first, then tracing or the cache."""
    task = make_task(cfg)
    data = task.load_data(progress)
    task.spec = data.spec
    return task, data


def train_and_evaluate(cfg, run_dir: str) -> dict:
    """The whole experiment of one config; returns the report (also in run_dir).

    Under ``runtime.distribution: multi_worker`` every worker runs this; the chief writes
    ``run_dir``, the others a temporary directory removed at the end
    (:mod:`tfloc.methods.distribute`)."""
    import shutil
    import tempfile
    from tfloc.methods.distribute import make_strategy
    strategy, worker = make_strategy(cfg.runtime)   # before any other TF op
    if worker.num_workers > 1:
        log.info("worker %d of %d (%s)%s", worker.index, worker.num_workers, worker.task_type,
                 ": writes the run directory" if worker.is_chief else ": writes nothing kept")
    if worker.is_chief:
        return _train_and_evaluate(cfg, run_dir, strategy, worker)
    # one scratch directory per (run, worker): a killed worker's is cleared on its re-run
    import hashlib
    key = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    scratch = os.path.join(tempfile.gettempdir(), f"tfloc-worker{worker.index}-{key}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        return _train_and_evaluate(cfg, scratch, strategy, worker, restore_root=run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_and_evaluate(cfg, run_dir: str, strategy, worker, restore_root: str | None = None) -> dict:
    from tfloc.config import dump_yaml
    from tfloc.utils import set_seed
    set_seed(cfg.runtime.seed)
    if cfg.runtime.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    resuming = check_run_dir(cfg, run_dir)
    timings = {}
    t0 = time.time()
    task, data = prepare(cfg)
    task.restore_root = restore_root
    timings["simulation_s"] = time.time() - t0
    inputs = task.build_inputs(data)
    # The run directory appears only once the data is ready: a mistake found
    # while tracing, splitting or building the inputs leaves no run behind.
    os.makedirs(run_dir, exist_ok=True)
    dump_yaml(cfg, os.path.join(run_dir, CONFIG_FILE))
    if cfg.runtime.distribution != "none":
        timings["distribution"] = {"strategy": cfg.runtime.distribution, "workers": worker.num_workers,
                                   "replicas": int(strategy.num_replicas_in_sync)}
    with strategy.scope():   # every variable (models, trainer metrics, optimizer) mirrored
        return _train_in_scope(cfg, run_dir, task, data, inputs, resuming, timings)


def _train_in_scope(cfg, run_dir, task, data, inputs, resuming, timings) -> dict:
    models = task.build_models(data.spec)
    net = models["inference"]
    log.info("method %s, model %s: %d parameters, inputs %s; %d labelled training samples",
             cfg.method.type, net.name, net.count_params(),
             {k: v[0] for k, v in data.spec.model_inputs.items()}, len(data.splits.train))
    _log_config_text(cfg, run_dir)
    t1 = time.time()
    facts = task.train(models, inputs, run_dir)
    timings["training_s"] = time.time() - t1
    timings.update(facts)
    save_models(run_dir, models)
    extra = {"timings_s": timings}
    if resuming:  # stage -> the epoch it went on after, or 'restored'
        extra["resumed"] = {"stages": task.resumed}
    report = evaluate(cfg, run_dir, task, models, data, extra=extra)
    if cfg.export.enabled:
        t2 = time.time()
        examples = serving_examples(data)
        for module in task.export_modules(models, data.spec):
            path = module.write(os.path.join(run_dir, "export", module.name, str(cfg.export.version)),
                                examples)
            log.info("exported SavedModel %s (%.1f s)", path, time.time() - t2)
    return report


#: each evaluation split's fixed impairment draws (``split_seed_offset`` of the pipeline)
SPLIT_SEED_OFFSETS = {"train": 1, "val": 2, "test": 3}


def fixed_set(data, split: str):
    """(x, y) NumPy features and labels of a split, with the split's fixed noise and TA
    draws (the same in every process and pass)."""
    from tfloc.data import dataset_to_numpy
    return dataset_to_numpy(data.pipeline.feature_dataset(
        getattr(data.splits, split), training=False, split_seed_offset=SPLIT_SEED_OFFSETS[split]))


def split_bound(cfg, data, split: str, mode: str = "mirror"):
    """The position error bound [n] of each sample of a split, under the run's simulation and
    data settings (:func:`tfloc.physics.bound.sample_pebs`)."""
    from tfloc.physics.bound import BoundSetup, sample_pebs
    rows = np.asarray(getattr(data.splits, split))
    setup = BoundSetup.from_config(cfg.simulation, cfg.data, mode=mode)
    return sample_pebs(data.paths, setup, rows.reshape(len(rows), -1), progress=False)


def serving_examples(data, n: int = 32) -> dict:
    """Raw serving inputs (``csi`` and ``sector`` / ``bs_positions``) of the first ``n`` test
    UEs, with the test split's impairments: the exports' warm-up requests."""
    x, _ = next(iter(data.pipeline.csi_dataset(data.splits.test[:n], training=False, batch_size=n,
                                                split_seed_offset=SPLIT_SEED_OFFSETS["test"])))
    return {k: np.asarray(v) for k, v in x.items()}


def check_run_dir(cfg, run_dir: str) -> bool:
    """True when ``run_dir`` holds an earlier run of this same config (it resumes);
    ConfigError when it holds another config's (nothing is written)."""
    import yaml
    from tfloc.config import ConfigError, to_dict
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
        os.replace(tmp, final)


def load_run_config(run_dir: str):
    from tfloc.experiment import load_run_config as load
    return load(os.path.join(run_dir, CONFIG_FILE))


def evaluate(cfg, run_dir: str, task, models: dict, data, extra: dict | None = None) -> dict:
    """Scores the inference model on the test split with the configured evaluators,
    builds the report, then writes it (report.json, cdf.png, figures, TensorBoard)."""
    import functools
    from tfloc.evaluation import EvalContext, run_evaluators, write_report

    t0 = time.time()
    s = data.splits
    x_test, y_test = fixed_set(data, "test")
    net = models["inference"]
    ctx = EvalContext(model_name=net.name, x=x_test, y=y_test,
                      outputs=task.evaluation_outputs(models, x_test),
                      class_names=task.class_names,
                      to_class=(lambda c: task.condition_classes(c).numpy()) if task.class_names else None,
                      fixed_set=functools.partial(fixed_set, data), knn_neighbors=tuple(cfg.evaluation.knn_neighbors),
                      site=task.site_info,
                      trajectory=lambda: trajectory_set(cfg, task, models),
                      bound=functools.partial(split_bound, cfg, data, "test"))
    names = cfg.evaluation.evaluators or list(task.evaluators)
    result = run_evaluators(names, ctx)
    meta = data.paths.meta
    has_path = data.paths.num_paths > 0
    report = {
        **result.report,
        "n_test": int(len(s.test)), "n_train_labelled": int(len(s.train)),
        "n_val": int(len(s.val)), "n_unlabelled": int(len(s.unlabelled)),
        "n_no_path_excluded": int(len(s.no_path)),
        "n_indoor_excluded": int(meta.get("n_indoor_excluded", 0)),
        "los_share": float(data.paths.los[has_path].mean()) if has_path.any() else 0.0,
        "per_sector": meta.get("per_sector"),
        "conditions_per_split": conditions_per_split(data.paths, s),
        "simulation": {k: meta.get(k) for k in ("scene", "site", "trace_s", "receivers_per_s",
                                                 "mean_paths_per_ue", "conditions")} | data.info,
        "method": cfg.method.type, "evaluators": names,
        "model_name": net.name, "num_parameters": int(net.count_params()),
        "op_determinism": _op_determinism(),
        "evaluation_s": round(time.time() - t0, 2),
    }
    report.update(getattr(task, "report_extra", {}) or {})
    if extra:
        report.update(extra)
    prev = os.path.join(run_dir, "report.json")
    if "timings_s" not in report and os.path.isfile(prev):
        import json
        with open(prev) as fh:  # keep the training timings when re-scoring
            report["timings_s"] = json.load(fh).get("timings_s")
    write_report(run_dir, report, result.curves, result.figures,
                 title=f"{cfg.name}: test error CDF (n={len(s.test)})")
    m = report.get("model", {})
    if "mean_m" in m:
        log.info("test: %s mean %.2f m (p90 %.2f m)", net.name, m["mean_m"], m["p90_m"])
    return report


def _op_determinism() -> bool:
    """Whether TF ran with op determinism (``runtime.deterministic``), as TF reports it."""
    from tensorflow.python.framework import config
    return bool(config.is_op_determinism_enabled())


def trajectory_set(cfg, task, models) -> dict:
    """The moving UE of ``evaluation.trajectory`` traced through the site (cached), its CSI
    made as an evaluation split's (fixed noise draws), and the model's outputs on it, in
    time order:
    {"x", "y", "outputs", "time" (snapshot index), "config" (the spiral), "n_indoor", "n_no_path"}."""
    import dataclasses
    from tfloc.data import dataset_to_numpy
    from tfloc.data.pipeline import sample_groups
    from tfloc.sim.trajectory import load_or_trace_trajectory, spiral
    t = cfg.evaluation.trajectory
    paths = load_or_trace_trajectory(cfg.simulation, spiral(t), cfg.runtime.cache_dir)
    groups = sample_groups(paths)
    when = np.asarray(paths.meta["source"])[paths.ue_id[groups[:, 0]]]
    live = (paths.num_paths[groups] > 0).any(axis=1)
    order = np.argsort(when)
    order = order[live[order]]
    rows = groups[order] if groups.shape[1] > 1 else groups[order, 0]
    x, y = dataset_to_numpy(csi_pipeline(cfg, paths).feature_dataset(rows, training=False, split_seed_offset=5))
    return {"x": x, "y": y, "outputs": task.evaluation_outputs(models, x), "time": when[order],
            "config": dataclasses.asdict(t), "n_indoor": int(paths.meta["n_indoor_excluded"]),
            "n_no_path": int((~live).sum())}


def conditions_per_split(paths, splits) -> dict:
    """Links per propagation condition in each split (multi-BS: every link of a sample)."""
    from tfloc.sim.paths import CONDITIONS
    out = {}
    for name in ("train", "val", "test", "unlabelled"):
        codes = paths.condition[np.asarray(getattr(splits, name)).reshape(-1)]
        out[name] = {c: int((codes == k).sum()) for k, c in enumerate(CONDITIONS) if (codes == k).any()}
    return out


def evaluate_run(run_dir: str) -> dict:
    """Re-scores a finished run: same cached paths, same test UEs, same noise draws."""
    import keras
    cfg = load_run_config(run_dir)
    model_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{run_dir}: no trained model ({MODEL_FILE} missing)")
    task, data = prepare(cfg)
    models = {"inference": keras.models.load_model(model_path)}
    other = os.path.join(run_dir, "models")
    if os.path.isdir(other):
        for f in sorted(os.listdir(other)):
            if f.endswith(".keras"):
                models[f[:-6]] = keras.models.load_model(os.path.join(other, f))
    return evaluate(cfg, run_dir, task, models, data)


def _log_config_text(cfg, run_dir):
    import tensorflow as tf
    import yaml
    from tfloc.config import to_dict
    with tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "config")).as_default():
        text = "```\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False) + "```"
        tf.summary.text("resolved_config", text, step=0)
