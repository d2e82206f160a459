"""The command lines of ``train.py`` and ``evaluate.py`` and the user-error contract they share.

Imports of TensorFlow-backed modules stay inside the functions: :func:`run_cli` quiets
TensorFlow's start-up logging first, which works only before TensorFlow is imported.

User mistakes (bad config, missing scene, missing run directory, corrupt cache)
print one line on stderr and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import logging
import os
import sys

from tfloc.utils import quiet_tensorflow


def _user_errors():
    from tfloc.config import ConfigError
    from tfloc.methods.callbacks import CheckpointError
    from tfloc.sim.paths import CacheError
    return (ConfigError, CacheError, CheckpointError, FileNotFoundError)


def run_cli(fn, argv=None):
    """Runs ``fn(args)``; converts user errors to a one-line message and exit code 2."""
    quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="[tfloc] %(message)s")
    try:
        return fn(argv)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: {e.strerror}{where}; free space (or make it writable) and run the same "
              "command again: it resumes at the last finished epoch", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def train_main(argv=None):
    p = argparse.ArgumentParser(description="Train, evaluate and export one tfloc experiment.")
    p.add_argument("--config", required=True, help="YAML file of overrides, e.g. configs/etoile_supervised.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.epochs=5 (repeatable)")
    p.add_argument("--run-dir", help="where to write logs, model, report and export "
                                     "(default: <runtime.runs_dir>/<name>-<timestamp>; with "
                                     "--tune: the search, default <runs_dir>/<name>-tune)")
    p.add_argument("--tune", action="store_true", help="search the config's tuning.space with "
                   "keras-tuner (validation mean error); resumes an interrupted search")
    args = p.parse_args(argv)
    from tfloc.run.experiment import load_config
    cfg = load_config(args.config, args.overrides)
    if args.tune:
        return tune_main(cfg, args)
    run_dir = args.run_dir or os.path.join(
        cfg.runtime.runs_dir, f"{cfg.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    logging.getLogger("tfloc").info("run directory: %s (if interrupted, the same command with "
                                    "--run-dir %s resumes it)", run_dir, run_dir)
    from tfloc.run.runner import train_and_evaluate
    report = train_and_evaluate(cfg, run_dir)
    print(f"\nrun: {run_dir}\n{summary_lines(report)}\n"
          f"report: {os.path.join(run_dir, 'report.json')}  |  "
          f"tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}")
    return report


def tune_main(cfg, args):
    from tfloc.run.tuning import search_dir, tune
    directory = search_dir(cfg, args.run_dir)
    logging.getLogger("tfloc").info("search directory: %s (the same command resumes it)", directory)
    s = tune(cfg, directory, args.config, args.overrides)
    keys = list(s["best"]["values"])
    rows = [f"{'trial':<6} {'val mean [m]':>12}  " + "  ".join(keys)]
    for t in s["trials"]:
        rows.append(f"{t['trial']:<6} {t['val_mean_error_m']:>12.3f}  "
                    + "  ".join(str(t["values"][k]) for k in keys))
    print("\n" + "\n".join(rows) + f"\n\nbest: trial {s['best']['trial']}, validation mean error "
          f"{s['best']['val_mean_error_m']:.3f} m\nready-to-run config: {s['best_config']}\n"
          f"  python train.py --config {s['best_config']}\n"
          f"tensorboard --logdir {os.path.join(directory, 'tensorboard')}  (HParams dashboard)")
    return s


def summary_lines(report: dict) -> str:
    """The test numbers of a report, one line per method (model first, then baselines)."""
    def line(who, s):
        return (f"  {who:<8} mean {s['mean_m']:.2f} m, p50 {s['p50_m']:.2f}, p67 {s['p67_m']:.2f}, "
                f"p80 {s['p80_m']:.2f}, p90 {s['p90_m']:.2f} m, RMSE {s['rmse_m']:.2f} m")
    rows = [f"test error (n={report['n_test']}):"]
    if "mean_m" in report.get("model", {}):
        rows.append(line("model", report["model"]))
    for name, s in report.get("baselines", {}).items():
        rows.append(line(name, s))
    if "condition" in report:
        c = report["condition"]
        rows.append(f"  condition accuracy {100 * c['accuracy']:.1f} % over {', '.join(c['classes'])}")
    def g(v):
        return "unbounded" if v is None else f"{v:.3g}"
    for mode, b in report.get("bound", {}).items():
        if "peb_m" in b:
            p, r = b["peb_m"], b["error_over_peb"]
            rows.append(f"  position error bound ({mode}): median {g(p['median'])} m (LOS {g(p['LOS']['median'])}, "
                        f"NLOS {g(p['NLOS']['median'])}); error / bound: median {g(r['median'])}, p90 {g(r['p90'])}")
    for stage, c in report.get("convergence", {}).items():
        if not c.get("converged", True):
            rows.append(f"  not converged: stage {stage}'s best epoch is its last ({c['best_epoch']} of "
                        f"{c['epochs']}, cap {c['epoch_cap']}); validation was still improving")
    return "\n".join(rows)


def differences_line(report: dict) -> str:
    """What the data scored on changes against the run's training data, in one line."""
    d = report.get("scored_on", {}).get("differs_from_training", {})
    if not d:
        return "scored on the run's own data (no data setting differs)"
    return "differs from the training data: " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in d.items())


def evaluate_main(argv=None):
    p = argparse.ArgumentParser(description="Re-score a tfloc run (report.json, figures), or "
                                "compare several runs in one table and CDF.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run-dir", help="a directory written by train.py")
    g.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="finished runs to compare")
    p.add_argument("--data", metavar="CONFIG_OR_FILE", help="with --run-dir: score the run's model "
                   "on another dataset: a data config (configs/data/*.yaml or an experiment file: its "
                   "simulation and data sections) or a measured-CSI file (.npz, .h5); the run's "
                   "own report is not touched")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --run-dir: change the data scored on (simulation.* / data.*), e.g. "
                   "--set simulation.ue_grid.sampling=uniform, or how it is scored (evaluation.*), "
                   "e.g. --set 'evaluation.evaluators=[position, twin_refine]' (repeatable)")
    p.add_argument("--split", default="test", choices=["test", "all"], help="with --data / --set: "
                   "score the other data's test split (default) or every sample with a path")
    p.add_argument("--out", help="with --compare: the Markdown file to write (CDF beside it); with "
                   "--data / --set: the report directory (default RUN/eval/<name>)")
    p.add_argument("--labels", nargs="+", help="with --compare: a label per run")
    args = p.parse_args(argv)
    from tfloc.run.rescore import evaluate_on_data, is_data_override
    if args.run_dir and (args.data or any(map(is_data_override, args.overrides))):
        if not os.path.isdir(args.run_dir):
            raise FileNotFoundError(f"{args.run_dir}: run directory not found")
        report, out = evaluate_on_data(args.run_dir, args.data, args.overrides, args.out, args.split)
        print(f"{summary_lines(report)}\n{differences_line(report)}\n-> {os.path.join(out, 'report.json')}")
        return report
    if args.compare:
        from tfloc.evaluation.compare import comparison_table, write_comparison
        for d in args.compare:
            if not os.path.isdir(d):
                raise FileNotFoundError(f"{d}: run directory not found")
        if args.labels and len(args.labels) != len(args.compare):
            p.error(f"--labels: {len(args.labels)} labels for {len(args.compare)} runs")
        if args.out:
            print(write_comparison(args.compare, args.out, args.labels))
        else:
            print(comparison_table(args.compare, args.labels))
        return 0
    if not os.path.isdir(args.run_dir):
        raise FileNotFoundError(f"{args.run_dir}: run directory not found")
    from tfloc.run.runner import evaluate_run
    report = evaluate_run(args.run_dir, args.overrides)
    print(f"{summary_lines(report)}\n-> {os.path.join(args.run_dir, 'report.json')}")
    return report
