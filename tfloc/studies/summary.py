"""A finished run's compact, committed record: what a results page is regenerated from.

A run directory (checkpoints, errors, TensorBoard) stays out of git; its summary, a
few kilobytes of JSON, goes in beside the page (``docs/results/<study>/runs/``), so a
page can be rebuilt (``--pages-only``) on any clone without training again.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import numpy as np
import yaml
from scipy import stats

from tfloc.studies.common import run_experiments
from tfloc.utils import atomic_write_text

#: the error quantiles a summary keeps per predictor (enough to redraw a CDF)
QUANTILES = np.linspace(0.0, 1.0, 101)
#: a report's scalar error entries kept per predictor
_SCALARS = ("mean_m", "rmse_m", "p50_m", "p67_m", "p80_m", "p90_m")


def code_version(repo: str = ".") -> str:
    """``git describe --always --dirty`` of ``repo`` ("unknown" outside a checkout)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=repo, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summarize_run(run: str, label: str, config: str, sets, version: str) -> dict:
    """The summary of the finished run in ``run`` (its report.json, config.yaml, errors.npz):
    the config and its hash, seed, the code ``version`` that trained it (taken when the
    study started: :func:`code_version`), the test errors of the model and each baseline
    (scalars and 101 quantiles), the model's per propagation condition, the bound ratio,
    convergence and timings."""
    with open(os.path.join(run, "report.json")) as fh:
        rep = json.load(fh)
    with open(os.path.join(run, "config.yaml")) as fh:
        text = fh.read()
    cfg = yaml.safe_load(text)
    errors = np.load(os.path.join(run, "errors.npz"))
    names = list(errors.files)
    scalars = {"model": {k: rep["model"][k] for k in _SCALARS if k in rep["model"]},
               **{name: {k: b[k] for k in _SCALARS if k in b}
                  for name, b in rep.get("baselines", {}).items()}}
    per_condition = {c: {"n": v.get("n"), **{k: v[k] for k in _SCALARS if k in v}}
                     for c, v in (rep["model"].get("per_condition") or {}).items()}
    ratio = rep.get("bound", {}).get("mirror", {}).get("error_over_peb", {})
    t = rep.get("timings_s", {})
    return {
        "label": label, "config": config, "sets": list(sets),
        "config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
        "seed": cfg.get("runtime", {}).get("seed"), "code_version": version,
        "date": time.strftime("%Y-%m-%d"),
        "n_train_labelled": rep["n_train_labelled"], "n_val": rep["n_val"], "n_test": rep["n_test"],
        "errors": scalars, "dims": rep["model"].get("dims"),
        "per_condition": per_condition,   # the model's test errors per propagation condition
        # errors.npz's curves (the model's first, then the baselines'), for CDFs
        "model_curve": names[0],
        "error_quantiles": {name: np.quantile(errors[name], QUANTILES).round(4).tolist() for name in names},
        "error_over_bound_median": ratio.get("median"),
        "convergence": rep.get("convergence", {}),
        "timings_s": {k: round(t[k], 1) for k in ("simulation_s", "training_s") if k in t},
    }


def write_summary(path: str, summary: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=1) + "\n")


def load_summaries(folder: str) -> dict:
    """{file stem: summary} of every ``*.json`` in ``folder`` (empty when it does not exist)."""
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as fh:
                out[name[:-5]] = json.load(fh)
    return out


def mean_interval(values, confidence: float = 0.95) -> tuple:
    """(mean, low, high): the mean of ``values`` (e.g. one metric over seeds) and its
    Student-t interval with n - 1 degrees of freedom (infinite for a single value)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("mean_interval needs at least one value")
    m = float(v.mean())
    if v.size == 1:
        return m, -np.inf, np.inf
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return m, m - half, m + half


def add_study_arguments(ap, name: str) -> None:
    """The options every summary-backed study shares: ``--set``, ``--root`` (runs/<name>),
    ``--out`` (docs/results/<name>.md), ``--repo`` and ``--pages-only``."""
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every run")
    ap.add_argument("--root", default=f"runs/{name}")
    ap.add_argument("--out", default=f"docs/results/{name}.md")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--pages-only", action="store_true", help="regenerate the page from the summaries")


def run_storing_summaries(experiments, folder: str, args, after=None) -> None:
    """Runs those of ``experiments`` without a summary in ``folder`` (each its own train.py
    process under ``args.root``, with ``args.sets``) and stores each run's summary there as
    it finishes, then calls ``after()`` (e.g. to regenerate the page), so an interrupted
    study resumes where it stopped and its finished runs can be committed as it goes."""
    stored = load_summaries(folder)
    todo = [e for e in experiments if e.key not in stored]
    version = code_version(args.repo)    # the code the runs train with (a -dirty one too)

    def store(e, run, sets):
        write_summary(os.path.join(folder, e.key + ".json"),
                      summarize_run(run, e.label, e.config, sets, version))
        if after is not None:
            after()
    run_experiments(todo, args.root, args.sets, repo=args.repo, on_done=store)
