"""End-to-end runs: trace (cached) -> data -> train -> evaluate -> export."""
from __future__ import annotations

import logging
import os
import time

from tfloc.config import ExperimentConfig, dump_yaml, from_dict
from tfloc.methods.registry import METHODS

log = logging.getLogger("tfloc")

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"


def load_dataset(cfg: ExperimentConfig, progress: bool = True):
    """Traced paths (from the cache when possible), the CSI pipeline and the splits."""
    from tfloc.data import CSIPipeline, make_splits
    from tfloc.sim import load_or_trace
    paths, cache, hit = load_or_trace(cfg.simulation, cfg.runtime.cache_dir, progress=progress)
    log.info("%s paths: %s (%d UEs, %d with no path)", "cached" if hit else "traced",
             cache, paths.num_ue, int((paths.num_paths == 0).sum()))
    pipeline = CSIPipeline(paths, cfg.data, seed=cfg.runtime.seed,
                           array_shape=cfg.simulation.bs_array.shape,
                           frequency_hz=cfg.simulation.frequency_hz)
    splits = make_splits(paths, cfg.data, seed=cfg.runtime.seed)
    return paths, pipeline, splits, {"cache_dir": cache, "cache_hit": hit}


def prepare_data(cfg: ExperimentConfig, progress: bool = True):
    """:func:`load_dataset`, after checking (before any tracing) that the method can use it."""
    from tfloc.config import ConfigError
    from tfloc.sim.tracer import site_panels
    sectored, panels = site_panels(cfg.simulation)
    if cfg.method == "supervised" and ((not sectored and len(panels) > 1)
                                       or cfg.data.position_dims != 2):
        raise ConfigError("method 'supervised' trains on one link per UE and 2D positions; this "
                          "config has a multi-BS site or data.position_dims: 3 (build such "
                          "datasets with python -m tfloc.sim build)")
    return load_dataset(cfg, progress)


def train_and_evaluate(cfg: ExperimentConfig, run_dir: str) -> dict:
    """The whole experiment of one config; returns the report (also in run_dir)."""
    from tfloc.utils import set_seed
    set_seed(cfg.runtime.seed)
    timings = {}
    t0 = time.time()
    paths, pipeline, splits, sim_info = prepare_data(cfg)
    timings["simulation_s"] = time.time() - t0
    # The run directory appears only once the data is ready: a mistake found
    # while tracing or splitting leaves no run behind.
    os.makedirs(run_dir, exist_ok=True)
    dump_yaml(cfg, os.path.join(run_dir, CONFIG_FILE))

    task = METHODS.get(cfg.method)(cfg)
    inputs = task.build_inputs(pipeline, splits)
    input_shape = inputs["train"].element_spec[0]["features"].shape[1:]
    model = task.build_model(input_shape, paths.positions[splits.train, :2])
    log.info("model %s: %d parameters, input %s; %d labelled training UEs",
             model.name, model.count_params(), tuple(input_shape), len(splits.train))
    _log_config_text(cfg, run_dir)
    t1 = time.time()
    history = task.train(model, inputs, run_dir)
    timings["training_s"] = time.time() - t1
    timings["epochs"] = len(history.history["loss"])

    tmp = os.path.join(run_dir, ".tmp-" + MODEL_FILE)
    model.save(tmp)
    os.replace(tmp, os.path.join(run_dir, MODEL_FILE))

    report = evaluate_run(run_dir, model=model, data=(paths, pipeline, splits, sim_info),
                          extra={"timings_s": timings})
    if cfg.export.enabled:
        t2 = time.time()
        path = export_run(run_dir, cfg, model, pipeline)
        log.info("exported SavedModel to %s (%.1f s)", path, time.time() - t2)
    return report


def export_run(run_dir: str, cfg: ExperimentConfig, model, pipeline) -> str:
    from tfloc.export import export_saved_model
    d = cfg.data
    return export_saved_model(model, pipeline.csi_shape, os.path.join(run_dir, "export"),
                              cfg.export.model_name, cfg.export.version,
                              num_delay_taps=d.num_delay_taps, representation=d.representation,
                              normalization=d.normalization, num_sectors=cfg.num_model_sectors,
                              array_shape=pipeline.array_shape)


def load_run_config(run_dir: str) -> ExperimentConfig:
    import yaml
    from tfloc.config import ConfigError
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir}: not a run directory ({CONFIG_FILE} missing)")
    with open(path) as fh:
        try:
            return from_dict(yaml.safe_load(fh))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def evaluate_run(run_dir: str, model=None, data=None, extra: dict | None = None) -> dict:
    """Scores a run on its test set against the kNN baseline.

    Writes ``report.json`` and ``cdf.png`` into ``run_dir`` and the CDF and
    summary to TensorBoard. Reuses the run's cached paths and seeds, so the test
    set (positions and noise) is the one of the training run.
    """
    import keras
    from tfloc.data import dataset_to_numpy
    from tfloc.methods.knn import fit_knn
    from tfloc.metrics import cdf_figure, error_summary, position_errors_m
    from tfloc.utils import atomic_write_json

    cfg = load_run_config(run_dir)
    if data is None:
        data = prepare_data(cfg)
    paths, pipeline, splits, sim_info = data
    if model is None:
        model_path = os.path.join(run_dir, MODEL_FILE)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"{run_dir}: no trained model ({MODEL_FILE} missing)")
        model = keras.models.load_model(model_path)

    t0 = time.time()
    x_test, y_test = dataset_to_numpy(pipeline.feature_dataset(splits.test, training=False,
                                                               split_seed_offset=3))
    pred = model.predict(x_test, batch_size=256, verbose=0)
    err_model = position_errors_m(pred, y_test)

    def knn_set(x, y):
        return x["features"], y, x.get("sector")
    x_tr, y_tr = dataset_to_numpy(pipeline.feature_dataset(splits.train, training=False,
                                                           split_seed_offset=1))
    x_va, y_va = dataset_to_numpy(pipeline.feature_dataset(splits.val, training=False,
                                                           split_seed_offset=2))
    knn, knn_info = fit_knn(knn_set(x_tr, y_tr), knn_set(x_va, y_va), cfg.evaluation.knn_neighbors)
    err_knn = position_errors_m(knn.predict(x_test["features"], x_test.get("sector")), y_test)

    meta = paths.meta
    test_los = paths.los[splits.test]
    report = {
        "model": {**error_summary(err_model),
                  "los": error_summary(err_model[test_los]) if test_los.any() else None,
                  "nlos": error_summary(err_model[~test_los]) if (~test_los).any() else None},
        "baselines": {"knn": {**error_summary(err_knn), **knn_info}},
        "n_test": int(len(splits.test)),
        "n_train_labelled": int(len(splits.train)),
        "n_val": int(len(splits.val)),
        "n_unlabelled": int(len(splits.unlabelled)),
        "n_no_path_excluded": int(len(splits.no_path)),
        "n_indoor_excluded": int(meta.get("n_indoor_excluded", 0)),
        "los_share": float(paths.los[paths.num_paths > 0].mean()),
        "per_sector": meta.get("per_sector"),
        "simulation": {k: meta.get(k) for k in ("scene", "trace_s", "receivers_per_s",
                                                 "mean_paths_per_ue")} | sim_info,
        "method": cfg.method,
        "model_name": model.name,
        "num_parameters": int(model.count_params()),
        "evaluation_s": round(time.time() - t0, 2),
    }
    if extra:
        report.update(extra)
    prev = os.path.join(run_dir, "report.json")
    if "timings_s" not in report and os.path.isfile(prev):
        import json
        with open(prev) as fh:  # keep the training timings when re-scoring
            report["timings_s"] = json.load(fh).get("timings_s")
    atomic_write_json(prev, report)

    fig = cdf_figure({model.name: err_model, f"kNN (k={knn_info['k']})": err_knn},
                     title=f"{cfg.name}: test error CDF (n={len(err_model)})")
    tmp = os.path.join(run_dir, ".tmp-cdf.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, os.path.join(run_dir, "cdf.png"))
    _log_eval_summaries(run_dir, fig, report)
    log.info("test: model mean %.2f m (p90 %.2f m) | kNN mean %.2f m (p90 %.2f m)",
             report["model"]["mean_m"], report["model"]["p90_m"],
             report["baselines"]["knn"]["mean_m"], report["baselines"]["knn"]["p90_m"])
    return report


def _log_config_text(cfg, run_dir):
    import tensorflow as tf
    import yaml
    from tfloc.config import to_dict
    with tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "config")).as_default():
        text = "```\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False) + "```"
        tf.summary.text("resolved_config", text, step=0)


def _log_eval_summaries(run_dir, fig, report):
    import io

    import matplotlib.pyplot as plt
    import tensorflow as tf
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    image = tf.image.decode_png(buf.getvalue(), channels=4)[None]
    with tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "eval")).as_default():
        tf.summary.image("test_error_cdf", image, step=0)
        for who, stats in (("model", report["model"]), ("knn", report["baselines"]["knn"])):
            for k in ("mean_m", "p50_m", "p67_m", "p80_m", "p90_m", "rmse_m"):
                tf.summary.scalar(f"test/{who}_{k}", stats[k], step=0)

