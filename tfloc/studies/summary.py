"""A finished run's compact, committed record: what a results page is regenerated from.

A run directory (checkpoints, errors, TensorBoard) stays out of git; its summary, a
few kilobytes of JSON, goes in beside the page (``docs/results/<study>/runs/``), so a
page can be rebuilt (``--pages-only``) on any clone without training again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import yaml
from scipy import stats

from tfloc.metrics import cdf_figure
from tfloc.run.experiment import load_config
from tfloc.studies.common import run_experiments
from tfloc.utils import atomic_write_text, code_version

#: the error quantiles a summary keeps per predictor (enough to redraw a CDF)
QUANTILES = np.linspace(0.0, 1.0, 101)
#: a report's scalar error entries kept per predictor
_SCALARS = ("mean_m", "rmse_m", "p50_m", "p67_m", "p80_m", "p90_m")


def summarize_run(run: str, label: str, config: str, sets, version: str, keep=()) -> dict:
    """The summary of the finished run in ``run`` (its report.json, config.yaml, errors.npz):
    the config and its hash, seed, the code version that trained it (the report's, which
    the training process records; ``version``, taken when the study started, for a report
    without one), the test errors of the model and each baseline
    (scalars, 101 quantiles and every test link's error, for paired comparisons), the
    model's per propagation condition, the bound ratio, the condition classifier's accuracy,
    the links' conditions per split, the resolved config, convergence and timings; ``keep``
    names further report sections a study's page needs (e.g. "bound"), kept whole."""
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
        "seed": cfg.get("runtime", {}).get("seed"), "code_version": rep.get("code_version", version),
        "date": time.strftime("%Y-%m-%d"),
        "n_train_labelled": rep["n_train_labelled"], "n_val": rep["n_val"], "n_test": rep["n_test"],
        "errors": scalars, "dims": rep["model"].get("dims"),
        "per_condition": per_condition,   # the model's test errors per propagation condition
        "per_sector_errors": {c: {"n": v.get("n"), **{k: v[k] for k in _SCALARS if k in v}}
                              for c, v in (rep["model"].get("per_sector") or {}).items()},
        "num_parameters": rep.get("num_parameters"),
        # errors.npz's curves (the model's first, then the baselines'), for CDFs
        "model_curve": names[0],
        "error_quantiles": {name: np.quantile(errors[name], QUANTILES).round(4).tolist() for name in names},
        # every test link's error (cm), in the order of the links that test_links_sha256 names
        "test_links_sha256": rep.get("test_links_sha256"),
        "link_errors_m": {name: np.round(errors[name].astype(float), 2).tolist() for name in names},
        "error_over_bound_median": ratio.get("median"),
        "condition_accuracy": rep.get("condition", {}).get("accuracy"),
        "axis_errors": rep.get("axis_errors"),
        "conditions_per_split": rep.get("conditions_per_split"),
        "link_conditions": rep.get("simulation", {}).get("conditions"),
        "resolved_config": cfg,           # the run's whole config, as it trained
        "machine": rep.get("machine"),    # what it trained on (cores, CPU, TF version)
        "convergence": rep.get("convergence", {}),
        # stages restored from an earlier finished run, or resumed mid-way (epoch)
        "resumed": (rep.get("resumed") or {}).get("stages", {}),
        "timings_s": {k: round(t[k], 1) for k in ("simulation_s", "training_s", "training_s_earlier")
                      if k in t},
        "sections": {k: rep.get(k) for k in keep},
    }


def training_seconds(summary: dict) -> float | None:
    """A run's training time over all its processes, or None where it is not known: no time
    recorded, or a run killed and resumed mid-stage before runs kept their earlier processes'
    time (``timings_s.training_s_earlier``), whose ``training_s`` counts only its last process."""
    t = summary.get("timings_s", {})
    resumed_mid_stage = any(v != "restored" for v in (summary.get("resumed") or {}).values())
    if "training_s" not in t or (resumed_mid_stage and "training_s_earlier" not in t):
        return None
    return t["training_s"]


def training_minutes(summary: dict) -> float | None:
    """:func:`training_seconds` in minutes (None where not known)."""
    t = training_seconds(summary)
    return None if t is None else t / 60


def write_summary(path: str, summary: dict) -> None:
    """One line per top-level entry: a diff shows which entries a re-run changed, and the
    per-link errors stay a few kilobytes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in summary.items())
    atomic_write_text(path, "{\n" + body + "\n}\n")


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


#: statistics of a vector of per-link errors that paired comparisons can take
STATISTICS = {"mean_m": lambda e, axis=-1: np.mean(e, axis=axis),
              "rmse_m": lambda e, axis=-1: np.sqrt(np.mean(np.square(e), axis=axis))}


def paired_bootstrap(a, b, n_boot: int = 10000, confidence: float = 0.95, seed: int = 0,
                     statistic: str = "mean_m") -> dict:
    """The difference of ``statistic`` (mean or RMSE error) between ``a`` and ``b``, averaged
    over seeds, with a two-level bootstrap interval.

    ``a[k]`` and ``b[k]`` are two predictors' per-link errors of seed k on the same test links
    in the same order (:func:`paired_link_errors`). Each bootstrap draw resamples the seeds
    with replacement and then, within each drawn seed, its links with replacement, so the
    interval carries both the spread between training runs and that between test links.
    Returns ``{"mean", "low", "high", "n_seeds", "n_links"}`` (``low``/``high``: the
    percentile interval)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_bootstrap needs the same number (> 0) of seeds on both sides, "
                         f"got {len(a)} and {len(b)}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: expected one of {', '.join(STATISTICS)}, got {statistic!r}")
    f = STATISTICS[statistic]
    pairs = []
    for k, (x, y) in enumerate(zip(a, b)):
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.shape != y.shape or x.ndim != 1 or not x.size:
            raise ValueError(f"seed {k}: expected two equally long, non-empty vectors of per-link "
                             f"errors, got shapes {x.shape} and {y.shape}")
        pairs.append((x, y))
    rng = np.random.default_rng(seed)

    def draws(x, y):     # the difference on each bootstrap draw of the seed's links
        out = []
        for m in np.diff(np.r_[0:n_boot:1000, n_boot]):
            idx = rng.integers(0, x.size, (m, x.size))
            out.append(f(x[idx]) - f(y[idx]))
        return np.concatenate(out)
    per_seed = np.stack([draws(x, y) for x, y in pairs])
    drawn = rng.integers(0, len(pairs), (n_boot, len(pairs)))          # seeds of each draw
    stat = per_seed[drawn, np.arange(n_boot)[:, None]].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stat, [tail, 100 - tail])
    return {"mean": float(np.mean([f(x) - f(y) for x, y in pairs])), "low": float(low),
            "high": float(high), "n_seeds": len(pairs), "n_links": int(sum(x.size for x, _ in pairs))}


def verdict(interval: dict, claimed_lower: bool = True) -> str:
    """How a paper's claim "a's error is lower than b's" (``claimed_lower``; False: higher)
    fares against the interval of a - b: "reproduced" where the interval excludes zero on the
    claimed side, "reversed" where it excludes zero on the other, else "not separable"."""
    below, above = interval["high"] < 0, interval["low"] > 0
    if below or above:
        return "reproduced" if below == claimed_lower else "reversed"
    return "not separable"


def paired_link_errors(runs_a: list, runs_b: list, curve_a: str | None = None,
                       curve_b: str | None = None) -> tuple:
    """Per-seed per-link errors of two sets of run summaries, paired by seed: ``curve_a`` of
    each run of ``runs_a`` (default: its model) against ``curve_b`` of the run of ``runs_b``
    with the same seed (default: its model; e.g. "kNN (k=1)" of the same runs). Raises when a
    seed is missing on one side, the two runs did not test the same links or a run lacks the
    curve."""
    def curve(run, name):
        name = name or run["model_curve"]
        if name not in run["link_errors_m"]:
            raise ValueError(f"{run['label']} has no per-link errors of {name!r} "
                             f"(it has {', '.join(run['link_errors_m'])})")
        return run["link_errors_m"][name]

    by_seed = {s["seed"]: s for s in runs_b}
    a, b = [], []
    for s in sorted(runs_a, key=lambda r: r["seed"]):
        other = by_seed.get(s["seed"])
        if other is None:
            raise ValueError(f"{s['label']}: no run of seed {s['seed']} to pair it with")
        if not s.get("test_links_sha256") or s["test_links_sha256"] != other.get("test_links_sha256"):
            raise ValueError(f"{s['label']} and {other['label']} did not test the same links "
                             f"({s.get('test_links_sha256')} against {other.get('test_links_sha256')})")
        a.append(curve(s, curve_a))
        b.append(curve(other, curve_b))
    return a, b


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def seeded_experiments(experiments, seeds: int, repo: str = ".") -> list:
    """Each experiment once per seed: seed 0 runs with its config's own ``runtime.seed``, seed
    k > 0 adds k to it (and its ``seed_sets``, formatted with k, to its overrides). Labelled
    "<label> seed k", keyed "<key or slug of the label>-s<k>"; runs share stages only within
    a seed (``share_key`` gets the seed's suffix too)."""
    if seeds < 1:
        raise ValueError(f"seeds: expected at least 1, got {seeds}")
    out = []
    for e in experiments:
        base = load_config(os.path.join(repo, e.config), list(e.sets)).runtime.seed
        for k in range(seeds):
            out.append(replace(e, label=f"{e.label} seed {k}", key=f"{e.key or slug(e.label)}-s{k}",
                               sets=[*e.sets, *(s.format(k=k) for s in e.seed_sets),
                                     *([f"runtime.seed={base + k}"] if k else [])],
                               share_key=e.share_key and f"{e.share_key}-s{k}"))
    return out


def experiment_of(summary: dict) -> str:
    """The experiment a seeded run belongs to ("HDA seed 2" -> "HDA")."""
    return summary["label"].rsplit(" seed ", 1)[0]


def by_experiment(summaries: dict) -> dict:
    """{experiment label: its runs, by seed} of a study's summaries."""
    out: dict = {}
    for s in summaries.values():
        out.setdefault(experiment_of(s), []).append(s)
    return {k: sorted(v, key=lambda s: s["seed"]) for k, v in out.items()}


#: how a page names a claim's metric
_METRIC_NAMES = {"mean_m": "mean", "rmse_m": "RMSE"}


@dataclass
class Claim:
    """A paper's claim that experiment ``better`` has a lower ``metric`` (mean or RMSE
    error) than experiment ``worse``; ``source`` says where the paper makes it."""
    better: str
    worse: str
    metric: str = "rmse_m"
    source: str = ""
    #: a curve of the runs other than their model (e.g. "member 1" of the ensemble's runs)
    better_curve: str = ""
    worse_curve: str = ""


def claims_section(claims, runs: dict, title: str = "The paper's claims on our site") -> list:
    """The Markdown section judging ``claims`` (:func:`claim_lines`) with what its verdicts mean."""
    metrics = sorted({_METRIC_NAMES[c.metric] for c in claims})
    return [f"## {title}", "",
            f"Each claim is judged on the difference of the two experiments' {' or '.join(metrics)} "
            "test error on the same test links, paired by seed and link; its interval comes from a "
            "bootstrap that resamples the seeds and, within each, the links. **reproduced**: the "
            "interval lies below zero, as the paper claims; **reversed**: above zero; **not "
            "separable**: it contains zero. With one seed a claim is not judged (one run cannot "
            "show the spread between runs).", "", *claim_lines(claims, runs), ""]


def cdf_lines(runs: dict, labels, out: str, title: str, png: str | None = None) -> list:
    """Writes ``png`` (default ``<out stem>_cdf.png``), the test-error CDFs of the experiments
    ``labels`` over every seed's test links (those whose runs all keep per-link errors), and
    returns the Markdown of the page ``out`` that shows it (nothing when none qualifies)."""
    curves = {label: np.concatenate([s["link_errors_m"][s["model_curve"]] for s in runs[label]])
              for label in labels if runs.get(label) and all("link_errors_m" in s for s in runs[label])}
    if not curves:
        return []
    import matplotlib.pyplot as plt
    png = png or os.path.splitext(out)[0] + "_cdf.png"
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    fig = cdf_figure(curves, title)
    fig.savefig(png)
    plt.close(fig)
    return [f"![{title}]({os.path.relpath(png, os.path.dirname(out) or '.')})", ""]


def claim_lines(claims, runs: dict, n_boot: int = 10000) -> list:
    """A Markdown table judging each claim on the runs of its two experiments (``runs``:
    :func:`by_experiment`), paired by seed and test link (:func:`paired_bootstrap`), with
    the verdict of :func:`verdict`; a claim whose runs are missing, or did not test the same
    links, says so."""
    lines = ["| claim | source | metric | better - worse, mean over seeds [95 % interval] (m) "
             "| seeds | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        names = [f"{e} ({curve})" if curve else e
                 for e, curve in ((c.better, c.better_curve), (c.worse, c.worse_curve))]
        head = f"| {names[0]} < {names[1]} | {c.source} | {_METRIC_NAMES[c.metric]} |"
        a, b = runs.get(c.better), runs.get(c.worse)
        if not a or not b:
            lines.append(f"{head} - | 0 | not run |")
            continue
        seeds = sorted({s["seed"] for s in a} & {s["seed"] for s in b})
        try:
            pa, pb = paired_link_errors([s for s in a if s["seed"] in seeds],
                                        [s for s in b if s["seed"] in seeds],
                                        c.better_curve or None, c.worse_curve or None)
        except ValueError as e:        # e.g. another test split: a page says so, a study goes on
            lines.append(f"{head} - | {len(seeds)} | not judged: {e} |")
            continue
        d = paired_bootstrap(pa, pb, n_boot=n_boot, statistic=c.metric)
        word = verdict(d) if len(seeds) > 1 else "one seed: not judged"
        lines.append(f"{head} {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] | {len(seeds)} | {word} |")
    return lines


def epochs_cell(runs: list) -> str:
    """Per stage: epochs run (best epoch) of each seed; "not converged" where best = last;
    *restored* where the run restored the stage from an earlier run's finished stage."""
    stages = []
    for stage in runs[0]["convergence"]:
        cells = []
        for s in runs:
            c = s["convergence"].get(stage, {})
            text = f"{c.get('epochs', '?')} of {c.get('epoch_cap', '?')} ({c.get('best_epoch', '?')})"
            if (s.get("resumed") or {}).get(stage) == "restored":
                text += " *restored*"
            cells.append(text if c.get("converged", True) else f"{text} **not converged**")
        stages.append(f"{stage}: " + ", ".join(cells))
    return "; ".join(stages) or "-"


def interval_cell(values, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    """A table cell of one metric over seeds: the value of a single seed, else the mean and
    its 95 % interval (:func:`mean_interval`); "-" without values (None is skipped)."""
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    m, lo, hi = mean_interval(values)
    return f"{fmt.format(m)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def add_study_arguments(ap, name: str) -> None:
    """The options every summary-backed study shares: ``--set``, ``--root`` (runs/<name>),
    ``--out`` (docs/results/<name>.md), ``--repo``, ``--pages-only`` and where the runs run
    (``--executor``, ``--address``, ``--workers``, ``--cpus-per-run``)."""
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every run")
    ap.add_argument("--root", default=f"runs/{name}")
    ap.add_argument("--out", default=f"docs/results/{name}.md")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--pages-only", action="store_true", help="regenerate the page from the summaries")
    ap.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: one run after another; ray: runs as Ray tasks (tfloc/studies/executors.py)")
    ap.add_argument("--address", help="with --executor ray: HOST:PORT of a running Ray cluster's head "
                    "(default: start a local cluster)")
    ap.add_argument("--workers", type=int, help="with --executor ray and no --address: runs at once "
                    "(default: this machine's cores / --cpus-per-run)")
    ap.add_argument("--cpus-per-run", type=int, help="with --executor ray: cores each run holds "
                    "(default: a local cluster's cores / --workers; on a cluster 2)")


def run_storing_summaries(experiments, folder: str, args, after=None, keep=(), others=()) -> None:
    """Runs those of ``experiments`` without a summary in ``folder`` (each its own train.py
    process under ``args.root``, with ``args.sets``) and stores each run's summary there as
    it finishes, then calls ``after()`` (e.g. to regenerate the page), so an interrupted
    study resumes where it stopped and its finished runs can be committed as it goes. The
    stored runs of ``experiments`` and of ``others`` (the study's experiments not run now,
    e.g. groups left out by ``--only``) lend their finished shared stages (``share_key``)."""
    stored = load_summaries(folder)
    todo = [e for e in experiments if e.key not in stored]
    version = code_version(args.repo)    # the code the runs train with (a -dirty one too)

    def store(e, run, sets):
        write_summary(os.path.join(folder, e.key + ".json"),
                      summarize_run(run, e.label, e.config, sets, version, keep))
        if after is not None:
            after()
    run_experiments(todo, args.root, args.sets, repo=args.repo, on_done=store,
                    executor=getattr(args, "executor", "local"), address=getattr(args, "address", None),
                    workers=getattr(args, "workers", None), cpus_per_run=getattr(args, "cpus_per_run", None),
                    peers=[e for e in [*experiments, *others] if e.key in stored])


def regenerate_page(folder: str, write_page, out: str, command: str) -> str:
    """``write_page(summaries, out, command)`` of the summaries stored in ``folder``."""
    summaries = load_summaries(folder)
    if not summaries:
        raise SystemExit(f"no run summaries in {folder}: run the study first")
    return write_page(summaries, out, command)


def seeded_study_main(doc: str, name: str, experiments, write_page, argv=None, groups=(),
                      keep=()) -> None:
    """The command line of a seeded paper study ``python -m tfloc.studies.<name>``: runs each of
    ``experiments`` once per ``--seeds`` (default 3; ``--only`` picks ``groups``), stores each
    run's summary (with the report sections ``keep`` names) in docs/results/<name>/runs/ as it
    ends and regenerates the page with
    ``write_page(summaries, out, command)`` after each run (``--pages-only``: only that)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per experiment (default 3)")
    if groups:
        ap.add_argument("--only", nargs="+", choices=list(groups), help="run only these groups")
    add_study_arguments(ap, name)
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    folder, command = f"docs/results/{name}/runs", f"python -m tfloc.studies.{name}"
    t0 = time.time()
    if not args.pages_only:
        only = getattr(args, "only", None)
        seeded = seeded_experiments(experiments, args.seeds, args.repo)
        chosen = [e for e in seeded if not only or e.group in only]
        run_storing_summaries(chosen, folder, args,
                              after=lambda: regenerate_page(folder, write_page, args.out, command),
                              keep=keep, others=[e for e in seeded if e not in chosen])
    regenerate_page(folder, write_page, args.out, command)
    print(f"wrote {args.out} ({(time.time() - t0) / 60:.1f} min)")


def machines_text(summaries) -> str:
    """The machines a page's runs trained on, as a sentence fragment ("1 x AMD EPYC, 2 cores,
    TensorFlow 2.19.1"); runs made before reports recorded it count as "not recorded"."""
    seen: dict = {}
    for s in summaries:
        m = s.get("machine")
        text = (f"{m['cpu_model']}, {m['cpu_cores']} cores" + (f", {m['gpus']} GPU" if m.get("gpus") else "")
                + f", TensorFlow {m['tensorflow']}") if m else "not recorded"
        seen[text] = seen.get(text, 0) + 1
    return "; ".join(f"{n} run{'s' if n > 1 else ''} on {t}" if t != "not recorded" else
                     f"{n} run{'s' if n > 1 else ''}: machine not recorded" for t, n in seen.items())


def provenance(command: str, folder: str, summaries: dict) -> str:
    """The sentences every seeded page opens with: what generated it from which summaries,
    what a cell is, the machines and the code versions of its runs."""
    versions = sorted({s["code_version"] for s in summaries.values()})
    return (f"Generated by `{command}` from the run summaries in `{folder}/` (`--pages-only` "
            "regenerates it without training; no number on this page is typed by hand). Each run "
            "trains until early stopping, once per seed, and is scored once on its test set; a "
            "cell is the mean over seeds with its Student-t 95 % interval. Machines: "
            f"{machines_text(summaries.values())}. Code versions: "
            + ", ".join(f"`{v}`" for v in versions) + ".")
