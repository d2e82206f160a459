"""One comparison of several runs: a Markdown table and an overlaid CDF (evaluate.py --compare)."""
from __future__ import annotations

import json
import os

import numpy as np

from tfloc.metrics import cdf_figure


def load_run(run_dir: str) -> tuple[dict, dict]:
    """(report, {curve name: per-sample test errors}) of a finished run."""
    rep = os.path.join(run_dir, "report.json")
    if not os.path.isfile(rep):
        raise FileNotFoundError(f"{run_dir}: no report.json (not a finished run)")
    with open(rep) as fh:
        report = json.load(fh)
    err = os.path.join(run_dir, "errors.npz")
    curves = {}
    if os.path.isfile(err):
        with np.load(err) as z:
            curves = {k: z[k] for k in z.files}
    return report, curves


def _row(label, s, acc=None, n=None, extra=""):
    cells = [label] + [f"{s[k]:.2f}" if s else "-" for k in
                       ("mean_m", "p50_m", "p67_m", "p80_m", "p90_m", "rmse_m")]
    cells += [f"{100 * acc:.1f} %" if acc is not None else "-", str(n) if n is not None else "-"]
    return "| " + " | ".join(cells) + (f" | {extra} |" if extra else " |")


def comparison_table(runs: list, labels: list | None = None, *, position: list | None = None,
                     notes: list | None = None) -> str:
    """Markdown: one row per run (errors in metres, condition accuracy), then the kNN
    baseline of the first run. ``position[i]`` False shows '-' for a run whose
    coordinate head was not trained; ``notes[i]`` adds a last column."""
    labels = labels or [os.path.basename(os.path.normpath(r)) for r in runs]
    notes_col = notes is not None
    head = "| run | mean | p50 | p67 | p80 | p90 | RMSE | condition accuracy | n test |"
    head += " note |" if notes_col else ""
    sep = "|---" * (9 + notes_col) + "|"
    rows = [head, sep]
    first = None
    for i, (run, label) in enumerate(zip(runs, labels)):
        rep, _ = load_run(run)
        first = first or rep
        acc = rep.get("condition", {}).get("accuracy")
        s = rep["model"] if (position is None or position[i]) else None
        rows.append(_row(label, s, acc, rep["n_test"], (notes[i] or "-") if notes_col else ""))
    if first and "knn" in first.get("baselines", {}):
        k = first["baselines"]["knn"]
        rows.append(_row(f"kNN (k={k['k']}, {k['weights']})", k, None, first["n_test"],
                         "-" if notes_col else ""))
    return "\n".join(rows)


def comparison_figure(runs: list, labels: list | None = None, title: str = "test error CDF"):
    """Overlaid CDFs of every run's model (and the first run's kNN)."""
    labels = labels or [os.path.basename(os.path.normpath(r)) for r in runs]
    curves = {}
    for i, (run, label) in enumerate(zip(runs, labels)):
        rep, c = load_run(run)
        model = rep.get("model_name")
        if model in c:
            curves[label] = c[model]
        if i == 0:
            curves.update({k: v for k, v in c.items() if k.startswith("kNN")})
    return cdf_figure(curves, title=title)


def write_comparison(runs: list, out_md: str, labels: list | None = None, title: str = "") -> str:
    """Writes ``out_md`` (table) and ``<out_md stem>_cdf.png``; returns the Markdown."""
    import matplotlib.pyplot as plt
    from tfloc.utils import atomic_write_text
    png = os.path.splitext(out_md)[0] + "_cdf.png"
    fig = comparison_figure(runs, labels, title or "test error CDF")
    fig.savefig(png)
    plt.close(fig)
    text = (f"# {title or 'Comparison'}\n\n" + comparison_table(runs, labels)
            + f"\n\nErrors in metres on each run's test split.\n\n![CDF]({os.path.basename(png)})\n")
    atomic_write_text(out_md, text)
    return text
