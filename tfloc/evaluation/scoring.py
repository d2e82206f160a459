"""Scoring a trained run on its test split: the configured evaluators over one
:class:`EvalContext`, the report's facts about the data, and the written report."""
from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
from tensorflow.python.framework import config as tf_config

from tfloc.data.bundle import DataBundle
from tfloc.evaluation.base import EvalContext, needs_of, run_evaluators
from tfloc.evaluation.report import write_report
from tfloc.sim.paths import CONDITIONS
from tfloc.utils import machine_info

log = logging.getLogger("tfloc")

#: evaluator needs (tfloc.evaluation.base.NEEDS) that measured data cannot meet: the
#: traced paths' geometry (the bound), a trajectory traced through the site, multi-BS CSI
MEASURED_LACKS = ("geometry", "trajectory", "multi_bs_csi")


def evaluate(cfg, run_dir: str, task, models: dict, data: DataBundle, extra: dict | None = None,
             previous: dict | None = None, reference: DataBundle | None = None,
             names: list | None = None) -> dict:
    """Scores the inference model on the test split with the configured evaluators (default:
    the task's), builds the report, then writes it (report.json, cdf.png, figures,
    TensorBoard). ``extra``: entries the caller adds (training timings, the method's section);
    ``previous``: the run's earlier report, whose entries this scoring does not make are kept
    (a re-score keeps what training wrote); ``reference``: the data the model trained on when
    ``data`` is another dataset (the baselines fit on it); ``names``: the evaluators to run
    (default: the config's, else the task's)."""
    t0 = time.time()
    s = data.splits
    ctx = EvalContext.from_run(cfg, task, models, data, reference)
    names = names or cfg.evaluation.evaluators or list(task.evaluators)
    unavailable = {}
    if data.info.get("measured"):       # no traced site behind the samples
        unavailable = {n: f"needs {', '.join(sorted(set(needs_of(n).run) & set(MEASURED_LACKS)))}, "
                          "which measured data does not have"
                       for n in names if set(needs_of(n).run) & set(MEASURED_LACKS)}
        names = [n for n in names if n not in unavailable]
        for n, why in unavailable.items():
            log.info("evaluator %s unavailable: %s", n, why)
    result = run_evaluators(names, ctx)
    meta = data.paths.meta
    has_path = data.paths.num_paths > 0
    net = models["inference"]
    report = {
        **result.report,
        "n_test": int(len(s.test)), "n_train_labelled": int(len((reference or data).splits.train)),
        # which links were tested, in errors.npz's order: runs with the same value can be
        # compared link by link (a paired comparison of two methods)
        "test_links_sha256": hashlib.sha256(np.asarray(s.test, np.int64).tobytes()).hexdigest()[:16],
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
        "op_determinism": bool(tf_config.is_op_determinism_enabled()),
        "machine": machine_info(),
        "evaluation_s": round(time.time() - t0, 2),
    }
    if unavailable:
        report["unavailable"] = unavailable
    report.update(extra or {})
    for k, v in (previous or {}).items():
        report.setdefault(k, v)
    write_report(run_dir, report, result.curves, result.figures,
                 title=f"{cfg.name}: test error CDF (n={len(s.test)})")
    m = report.get("model", {})
    if "mean_m" in m:
        log.info("test: %s mean %.2f m (p90 %.2f m)", net.name, m["mean_m"], m["p90_m"])
    return report


def conditions_per_split(paths, splits) -> dict:
    """Links per propagation condition in each split (multi-BS: every link of a sample)."""
    out = {}
    for name in ("train", "val", "test", "unlabelled"):
        codes = paths.condition[np.asarray(getattr(splits, name)).reshape(-1)]
        out[name] = {c: int((codes == k).sum()) for k, c in enumerate(CONDITIONS) if (codes == k).any()}
    return out
