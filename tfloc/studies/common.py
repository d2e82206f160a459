"""Running a study's experiments (each in its own process, resumable) and collecting them."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from tfloc.config import to_dict
from tfloc.run.experiment import load_config, load_run_config
from tfloc.run.runner import run_finished
from tfloc.studies.executors import StudyRun, run_logged, run_on_ray
from tfloc.utils import atomic_write_text, replace_durably


@dataclass
class Experiment:
    """One run of a study: a label, a shipped config, overrides, and the paper's numbers."""
    label: str
    config: str
    sets: list = field(default_factory=list)
    paper: dict = field(default_factory=dict)   # e.g. {"rmse_m": 0.8165, "accuracy": 0.9359}
    group: str = ""
    trains_position: bool = True
    key: str = ""   # the run's directory name under the study root (default: index and label)
    #: runs of one study with the same ``share_key`` train the stages ``share_stages`` the same
    #: way (e.g. a transfer method's source stage, which no target setting changes): a run
    #: starts from the finished stages of one that ran before it instead of training them again
    share_key: str = ""
    share_stages: tuple = ()
    #: overrides that differ per seed, formatted with the seed index k (e.g. "method.meml.fold={k}")
    seed_sets: tuple = ()


def run_dir(root: str, index: int, label: str) -> str:
    """Where :func:`run_experiments` puts the ``index``-th experiment, labelled ``label``."""
    slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    return os.path.join(root, f"{index:02d}-{slug}")


def run_experiments(experiments, root: str, common_sets=(), repo: str = ".", on_done=None,
                    executor: str = "local", address: str | None = None, workers: int | None = None,
                    cpus_per_run: int | None = None, train_script: str | None = None,
                    peers=()) -> dict:
    """Runs each experiment into ``root/<slug>`` unless its report exists (resumable).

    Each run is a separate ``train.py`` process (fresh TF state, bounded memory): one after
    another here (``executor="local"``), or as Ray tasks (``executor="ray"``, see
    :func:`tfloc.studies.executors.run_on_ray`: a local cluster of ``workers`` runs at once, or
    the cluster at ``address``; each task holds ``cpus_per_run`` cores). Returns {label: run_dir}.
    A failed run stops the study with its log's tail. ``on_done(experiment, run_dir, sets)``,
    if given, is called for each finished run, made now or before (``sets``: every override it
    ran with), e.g. to store its summary before the next starts. ``train_script``: the
    trainer to run (default ``<repo>/train.py``; tests give a stand-in). A run whose
    experiment has a ``share_key`` starts from the stages it shares with a finished run of
    ``experiments`` or of ``peers`` (further keyed experiments of the study, under ``root``)
    (:func:`share_finished_stages`).
    """
    os.makedirs(root, exist_ok=True)
    out, pending = {}, []
    n = len(experiments)
    for i, e in enumerate(experiments):
        run = os.path.join(root, e.key) if e.key else run_dir(root, i, e.label)
        out[e.label] = run
        if run_finished(run):
            stale = config_difference(run, e.config, [*common_sets, *e.sets, "export.enabled=false"], repo)
            if stale:
                raise RuntimeError(f"{run} holds a finished run of another config than '{e.label}' "
                                   f"asks for ({stale}); move it away to re-run it")
            print(f"[{i + 1}/{n}] {e.label}: done before ({run})", flush=True)
            if on_done is not None:
                on_done(e, run, [*common_sets, *e.sets])
            continue
        sets = [a for s in [*common_sets, *e.sets, "export.enabled=false"] for a in ("--set", s)]
        cmd = [sys.executable, os.path.abspath(train_script or os.path.join(repo, "train.py")),
               "--config", os.path.abspath(os.path.join(repo, e.config)), *sets,
               "--run-dir", os.path.abspath(run)]
        pending.append(StudyRun(f"[{i + 1}/{n}] {e.label}", e, run, cmd, [*common_sets, *e.sets]))

    def finished(job: StudyRun, returncode: int, seconds: float):
        if returncode != 0:
            with open(job.run + ".log") as fh:
                tail = fh.read()[-3000:]
            raise RuntimeError(f"{job.experiment.label} failed (exit {returncode}):\n{tail}")
        with open(os.path.join(job.run, "report.json")) as fh:
            rep = json.load(fh)
        acc = rep.get("condition", {}).get("accuracy")
        print(f"{job.title}: mean {rep['model']['mean_m']:.2f} m, RMSE {rep['model']['rmse_m']:.2f} m"
              + (f", accuracy {100 * acc:.1f} %" if acc is not None else "")
              + f" ({seconds:.0f} s)", flush=True)
        if on_done is not None:
            on_done(job.experiment, job.run, job.sets)

    def start(job: StudyRun):
        others = [(e, out[e.label]) for e in experiments] + [(e, os.path.join(root, e.key)) for e in peers]
        shared = share_finished_stages(job.experiment, job.run, others)
        if shared:
            print(f"{job.title}: stage(s) {', '.join(shared)} from {shared[next(iter(shared))]}", flush=True)

    if executor == "ray":
        for job in pending:    # all start at once: a stage is shared only from runs finished before
            start(job)
        run_on_ray(pending, finished, cwd=os.path.abspath(repo), address=address, workers=workers,
                   cpus_per_run=cpus_per_run)
    elif executor == "local":
        for job in pending:
            print(f"{job.title} ...", flush=True)
            start(job)
            t = time.time()
            finished(job, run_logged(job.cmd, job.run + ".log"), time.time() - t)
    else:
        raise ValueError(f"executor: expected 'local' or 'ray', got {executor!r}")
    return out


def share_finished_stages(e: Experiment, run: str, others) -> dict:
    """Copies into ``run``'s checkpoints each of ``e.share_stages`` that another run of
    ``others`` ([(experiment, run_dir)]) with the same ``share_key`` finished (its
    ``checkpoints/done-<stage>.*``; the method then restores the stage instead of training it,
    and the run's report marks it *restored*). Returns {stage: the run it came from}."""
    shared = {}
    if not e.share_key or os.path.isdir(os.path.join(run, "checkpoints")):
        return shared              # nothing to share, or the run has started (it resumes itself)
    for stage in e.share_stages:
        for other, other_run in others:
            files = [os.path.join(other_run, "checkpoints", f"done-{stage}{ext}")
                     for ext in (".weights.h5", ".json")]
            if other is e or other.share_key != e.share_key or not all(map(os.path.isfile, files)):
                continue
            os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
            for f in files:
                tmp = os.path.join(run, "checkpoints", ".tmp-" + os.path.basename(f))
                shutil.copyfile(f, tmp)
                replace_durably(tmp, os.path.join(run, "checkpoints", os.path.basename(f)))
            shared[stage] = other_run
            break
    return shared


def config_difference(run: str, config: str, sets, repo: str = ".") -> str:
    """"" when the finished run in ``run`` trained the config that ``config`` with ``sets``
    resolves to, else the first few keys that differ ("training.epochs: 30 != 400; ...")."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out
    want = flat(to_dict(load_config(os.path.join(repo, config), list(sets))))
    have = flat(to_dict(load_run_config(os.path.join(run, "config.yaml"))))
    diff = [f"{k}: {have.get(k)!r} != {want.get(k)!r}" for k in sorted(set(want) | set(have))
            if want.get(k) != have.get(k)]
    return "; ".join(diff[:4]) + (f"; {len(diff) - 4} more" if len(diff) > 4 else "")


def load_reports(exps, runs: dict) -> dict:
    """{label: report.json} of each experiment's run (``runs``: {label: run_dir})."""
    out = {}
    for e in exps:
        with open(os.path.join(runs[e.label], "report.json")) as fh:
            out[e.label] = json.load(fh)
    return out


def study_main(doc: str, exps: list, name: str, write_page, common_sets=(), argv=None):
    """The command line of a one-table study ``python -m tfloc.studies.<name>``: runs ``exps``
    (resumable) under ``--root`` (default runs/<name>) with ``common_sets`` and each ``--set``,
    then ``write_page(exps, runs, out, command)`` into ``--out`` (docs/results/<name>.md)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every run")
    ap.add_argument("--root", default=f"runs/{name}")
    ap.add_argument("--out", default=f"docs/results/{name}.md")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = run_experiments(exps, args.root, [*common_sets, *args.sets], repo=args.repo)
    write_page(exps, runs, args.out, f"python -m tfloc.studies.{name}")
    print(f"wrote {args.out} ({len(exps)} runs, {(time.time() - t0) / 60:.1f} min)")


#: below this line a results page is written by people and kept when the study re-runs
DISCUSSION_MARKER = "<!-- discussion: written by hand, kept when the study re-runs -->"


def generated_block_markers(tag: str) -> tuple:
    """The HTML comments that open and close a block of a hand-written document (e.g. the
    README's results tables) that the study ``tag`` names writes."""
    return (f"<!-- generated by {tag}: do not edit by hand -->", f"<!-- end of generated block: {tag} -->")


def with_generated_block(document: str, tag: str, block: str) -> str:
    """``document`` with the text between ``tag``'s markers replaced by ``block``."""
    begin, end = generated_block_markers(tag)
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        raise ValueError(f"expected one block opened by '{begin}' and closed by '{end}'")
    head, rest = document.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return f"{head}{begin}\n{block.strip()}\n{end}{tail}"


def write_generated_block(path: str, tag: str, block: str) -> str:
    """Rewrites ``tag``'s block of the document at ``path`` (see :func:`with_generated_block`)."""
    with open(path) as fh:
        text = with_generated_block(fh.read(), tag, block)
    atomic_write_text(path, text)
    return text


def write_keeping_discussion(path: str, generated: str) -> str:
    """Writes ``generated`` to ``path``, keeping what stood below DISCUSSION_MARKER there."""
    tail = ""
    if os.path.isfile(path):
        with open(path) as fh:
            old = fh.read()
        if DISCUSSION_MARKER in old:
            tail = old.split(DISCUSSION_MARKER, 1)[1]
    text = generated.rstrip() + "\n\n" + DISCUSSION_MARKER + (tail or "\n")
    atomic_write_text(path, text)
    return text


def load_run(run: str) -> dict:
    """A finished run's report."""
    with open(os.path.join(run, "report.json")) as fh:
        return json.load(fh)


def training_samples_per_s(rep: dict) -> float | None:
    """Training samples per second of a run, as its method reported them (``timings_s``'s
    ``training_rows_per_s``: rows through a training step over the time they took; see
    :class:`tfloc.methods.task.TrainResult`). None for a run made before methods reported it."""
    return rep.get("timings_s", {}).get("training_rows_per_s")
