"""Writing a run's evaluation: report.json, the CDF and other figures, TensorBoard summaries."""
from __future__ import annotations

import io
import os

import numpy as np

from tfloc.metrics import cdf_figure
from tfloc.utils import atomic_write_json


def _save_png(fig, path):
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def write_report(run_dir: str, report: dict, curves: dict, figures: dict, title: str):
    """Writes ``report.json``, ``cdf.png`` (every curve) and each figure; logs them to TensorBoard."""
    import matplotlib.pyplot as plt
    import tensorflow as tf
    atomic_write_json(os.path.join(run_dir, "report.json"), report)
    # per-sample test errors of every curve, for overlaid CDFs across runs (evaluate.py --compare)
    tmp = os.path.join(run_dir, ".tmp-errors.npz")
    np.savez(tmp, **{name: np.asarray(e, np.float32) for name, e in curves.items()})
    os.replace(tmp, os.path.join(run_dir, "errors.npz"))
    figures = {"cdf.png": cdf_figure(curves, title=title), **figures}
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "eval"))
    with writer.as_default():
        for name, fig in figures.items():
            _save_png(fig, os.path.join(run_dir, name))
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plt.close(fig)
            tf.summary.image(f"test/{name[:-4]}", tf.image.decode_png(buf.getvalue(), channels=4)[None],
                             step=0)
        stats = {"model": report.get("model", {}), **report.get("baselines", {})}
        for who, s in stats.items():
            for k in ("mean_m", "p50_m", "p67_m", "p80_m", "p90_m", "rmse_m"):
                if k in s:
                    tf.summary.scalar(f"test/{who}_{k}", s[k], step=0)
        cal = report.get("calibration", {})
        for k in ("crps_m", "mean_std_m", "reliability_gap"):
            if k in cal:
                tf.summary.scalar(f"test/calibration_{k}", cal[k], step=0)
        for k in (1, 2, 3):
            if f"within_{k}sigma" in cal:
                tf.summary.scalar(f"test/within_{k}sigma", cal[f"within_{k}sigma"]["observed"], step=0)
        if "condition" in report:
            tf.summary.scalar("test/condition_accuracy", report["condition"]["accuracy"], step=0)
    writer.close()
