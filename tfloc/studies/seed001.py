"""Seed 001 (Foliadis et al.): Tables II-V and Fig. 9-14 analogs, in one process.

    python -m tfloc.studies.seed001 [--quick] [--folds 1] [--fractions 0.2 1.0]
                                    [--sweep-losses NLL] [--sweep-sources NLL]
                                    [--root runs/seed001] [--out docs/results/seed001.md]

The paper's protocol (some 580 runs, many hours on 2 cores):

    python -m tfloc.studies.seed001 --folds 5 --sweep-folds 5 \
        --fractions 0.2 0.4 0.6 0.8 1.0 --sweep-losses MSE NLL --sweep-sources MSE NLL

Every run is a shipped config (configs/{scratch,dtl,meml}.yaml) with overrides,
through the methods' own hooks. What the study adds is bookkeeping: a source
stage (phi after DTL or MEML training) is trained once per (method, source
loss) and reused by every target run that shares it, and finished runs are
kept in ``<root>/results.jsonl`` so an interrupted study resumes.

Protocol: per target environment (LOS: campus BS 5; NLOS: the street canyon),
the test set is fixed; the training pool is used at 20 % for the tables and
at each ``--fractions`` for the figures, each fraction split into 5 folds (one
validates). ``--folds k`` runs folds 0..k-1 of the 5 (the paper: all 5).
Every target run trains to convergence as the paper's do (up to ``--epochs``,
early stopping with ``--patience``; gradual unfreezing counts both phases).
The figures' lines are scratch and, for each ``--sweep-sources`` loss, DTL and
MEML with fine-tuning, for each ``--sweep-losses`` target loss.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

TARGETS = {"LOS": "campus_ground/bs5", "NLOS": "street_canyon"}
LOSS = {"MSE": "mse", "NLL": "gaussian_nll"}

#: seed 001 Tables II-V at 20 % of the target data: (target, target loss) -> rows of
#: (source loss, TL type, target training, ME [m], CRPS [m] or None)
PAPER_TABLES = {
    ("LOS", "MSE"): [("N/A", "Scratch", "Fine-tuning", 0.5345, None),
                     ("MSE", "MEML", "Fine-tuning", 0.4292, None),
                     ("NLL", "MEML", "Fine-tuning", 0.4074, None),
                     ("MSE", "MEML", "Gradual Unfreezing", 0.3994, None),
                     ("NLL", "MEML", "Gradual Unfreezing", 0.3796, None)],
    ("LOS", "NLL"): [("N/A", "Scratch", "Fine-tuning", 0.6349, 0.278),
                     ("MSE", "MEML", "Fine-tuning", 0.5074, 0.2627),
                     ("NLL", "MEML", "Fine-tuning", 0.4716, 0.2251),
                     ("MSE", "MEML", "Gradual Unfreezing", 0.4114, 0.1963),
                     ("NLL", "MEML", "Gradual Unfreezing", 0.3925, 0.1769)],
    ("NLOS", "MSE"): [("N/A", "Scratch", "Fine-tuning", 0.5288, None),
                      ("MSE", "MEML", "Fine-tuning", 0.4803, None),
                      ("NLL", "MEML", "Fine-tuning", 0.4603, None),
                      ("MSE", "MEML", "Gradual Unfreezing", 0.4168, None),
                      ("NLL", "MEML", "Gradual Unfreezing", 0.4194, None)],
    ("NLOS", "NLL"): [("N/A", "Scratch", "Fine-tuning", 0.5954, 0.2752),
                      ("MSE", "MEML", "Fine-tuning", 0.6595, 0.3795),
                      ("NLL", "MEML", "Fine-tuning", 0.5494, 0.2332),
                      ("MSE", "MEML", "Gradual Unfreezing", 0.4479, 0.2016),
                      ("NLL", "MEML", "Gradual Unfreezing", 0.4364, 0.1996)],
}
TABLE_NUMBER = {("LOS", "MSE"): "II", ("LOS", "NLL"): "III", ("NLOS", "MSE"): "IV",
                ("NLOS", "NLL"): "V"}
FIGURES = {("LOS", "MSE"): "9", ("LOS", "NLL"): "10-11", ("NLOS", "MSE"): "12",
           ("NLOS", "NLL"): "13-14"}


def _setting(method, source, training):
    """A study setting: (method, source loss name or None, target training)."""
    return (method, source, training)


#: rows of the tables, in the paper's order
TABLE_SETTINGS = [_setting("scratch", None, "fine_tune"),
                  _setting("meml", "MSE", "fine_tune"), _setting("meml", "NLL", "fine_tune"),
                  _setting("meml", "MSE", "gradual_unfreezing"),
                  _setting("meml", "NLL", "gradual_unfreezing")]
#: lines of the figures (fine-tuning, as in Fig. 9-14)
FIGURE_SETTINGS = [_setting("scratch", None, "fine_tune"),
                   _setting("dtl", "MSE", "fine_tune"), _setting("dtl", "NLL", "fine_tune"),
                   _setting("meml", "MSE", "fine_tune"), _setting("meml", "NLL", "fine_tune")]


def figure_settings(sources) -> list:
    """The figures' lines for the given source losses (scratch always)."""
    return [s for s in FIGURE_SETTINGS if s[1] is None or s[1] in sources]


def setting_label(s) -> str:
    method, source, training = s
    if method == "scratch":
        return "Scratch"
    t = "GU" if training == "gradual_unfreezing" else "FT"
    return f"{method.upper()} ({source} source, {t})"


def run_key(target, loss, s, fraction, fold) -> str:
    return f"{target}|{loss}|{s[0]}|{s[1]}|{s[2]}|{fraction:g}|{fold}"


class Study:
    """Runs target trainings in this process, reusing each source stage."""

    def __init__(self, root: str, repo: str, source_epochs: int, epochs: int, patience: int):
        self.root, self.repo = root, repo
        self.source_epochs, self.epochs, self.patience = source_epochs, epochs, patience
        self.results_file = os.path.join(root, "results.jsonl")
        self.results = {}
        self.phi = {}
        os.makedirs(root, exist_ok=True)
        if os.path.isfile(self.results_file):
            with open(self.results_file) as fh:
                for line in fh:
                    r = json.loads(line)
                    self.results[r["key"]] = r

    def _config(self, target, loss, s, fraction, fold):
        from tfloc.run.experiment import load_config
        method, source, training = s
        m = f"method.{method}"
        sets = [f"{m}.target={TARGETS[target]}", f"{m}.target_loss={LOSS[loss]}",
                f"{m}.target_fraction={fraction}", f"{m}.fold={fold}", f"{m}.num_folds=5",
                f"training.epochs={self.epochs}", f"training.early_stopping_patience={self.patience}",
                "export.enabled=false", "runtime.verbose=0"]
        if method != "scratch":
            sets += [f"{m}.source_loss={LOSS[source]}", f"{m}.target_training={training}",
                     f"{m}.source_epochs={self.source_epochs}"]
        return load_config(os.path.join(self.repo, "configs", f"{method}.yaml"), sets)

    def run(self, target, loss, s, fraction, fold) -> dict:
        key = run_key(target, loss, s, fraction, fold)
        if key in self.results:
            return self.results[key]
        import keras
        from tfloc.data.bundle import fixed_set
        from tfloc.losses import gaussian_crps
        from tfloc.methods.task import TrainingRun
        from tfloc.run.runner import make_task
        from tfloc.utils import set_seed
        keras.backend.clear_session()
        cfg = self._config(target, loss, s, fraction, fold)
        set_seed(cfg.runtime.seed + fold)
        task = make_task(cfg)
        data = task.load_data(progress=True)
        source_key = (s[0], s[1])
        phi_file = os.path.join(self.root, f"phi-{s[0]}-{s[1]}.weights.npz")
        if s[0] != "scratch" and source_key not in self.phi and os.path.isfile(phi_file):
            with np.load(phi_file) as z:
                self.phi[source_key] = [z[f"w{i}"] for i in range(len(z.files))]
        task.phi_weights = self.phi.get(source_key)
        inputs = task.build_inputs(data)
        models = task.make_models(data.spec)
        run_dir = os.path.join(self.root, "runs", key.replace("|", "_"))
        t0 = time.time()
        facts = task.train(models, inputs, data, TrainingRun(run_dir)).facts
        if "source" in facts and not facts["source"].get("reused"):
            self.phi[source_key] = models["inference"].get_layer("phi").get_weights()
            np.savez(phi_file, **{f"w{i}": w for i, w in enumerate(self.phi[source_key])})
        elapsed = time.time() - t0
        x, y = fixed_set(data, "test")
        out = models["inference"].predict(x, batch_size=512, verbose=0)
        err = np.linalg.norm(out["position"] - y["position"], axis=-1)
        r = {"key": key, "target": target, "loss": loss, "setting": list(s), "fraction": fraction,
             "fold": fold, "n_train": int(len(data.splits.train)), "n_val": int(len(data.splits.val)),
             "n_test": int(len(data.splits.test)), "me_m": float(err.mean()),
             "p90_m": float(np.percentile(err, 90)), "target_epochs": facts["target"]["epochs"],
             "unfrozen_epoch": facts["target"].get("unfrozen_epoch"), "train_s": round(elapsed, 1),
             "source": facts.get("source", {})}
        if "position_std" in out:
            from scipy.stats import chi2
            std = out["position_std"]
            r["crps_m"] = float(np.mean(gaussian_crps(y["position"], out["position"], std).numpy()))
            r2 = np.sum(((out["position"] - y["position"]) / std) ** 2, axis=-1)
            r["within_1sigma"] = float((r2 <= 1).mean())
            r["within_1sigma_expected"] = float(chi2.cdf(1, 2))
        self.results[key] = r
        with open(self.results_file, "a") as fh:
            fh.write(json.dumps(r) + "\n")
        return r


def aggregate(results, target, loss, s, fraction, folds) -> dict | None:
    """Mean and spread (std over folds) of one setting; None if no fold ran."""
    rs = [results.get(run_key(target, loss, s, fraction, k)) for k in range(folds)]
    rs = [r for r in rs if r]
    if not rs:
        return None
    out = {"n": len(rs), "n_train": rs[0]["n_train"], "n_val": rs[0]["n_val"],
           "n_test": rs[0]["n_test"]}
    for k in ("me_m", "crps_m", "within_1sigma"):
        v = [r[k] for r in rs if k in r]
        if v:
            out[k], out[k + "_std"] = float(np.mean(v)), float(np.std(v))
    return out


def _pm(a, k, digits=2):
    if not a or k not in a:
        return "-"
    if a["n"] == 1:           # one fold: no spread to show
        return f"{a[k]:.{digits}f}"
    return f"{a[k]:.{digits}f} ± {a[k + '_std']:.{digits}f}"


def figure(results, target, loss, settings, fractions, folds, metric, path, n_pool):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for s in settings:
        pts = [(f, aggregate(results, target, loss, s, f, folds)) for f in fractions]
        pts = [(f, a) for f, a in pts if a and metric in a]
        if not pts:
            continue
        xs = [100 * f for f, _ in pts]
        ax.errorbar(xs, [a[metric] for _, a in pts], yerr=[a[metric + "_std"] for _, a in pts],
                    marker="o", capsize=3, label=setting_label(s))
    ax.set_xlabel(f"target training + validation data [% of {n_pool}]")
    ax.set_ylabel({"me_m": "mean error [m]", "crps_m": "CRPS [m]"}[metric])
    ax.set_title(f"{target} target, {loss} target loss", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_page(study: Study, args, envs: dict, out: str):
    from tfloc.studies.common import write_keeping_discussion
    res, folds = study.results, args.folds
    figdir = os.path.join(os.path.dirname(out), "seed001")
    os.makedirs(figdir, exist_ok=True)
    L = ["# Seed 001: transfer with multi-environment meta-learning and uncertainty (measured)", "",
         "Foliadis et al., *Transfer Learning for CSI-based Positioning with Multi-environment "
         "Meta-learning*. Generated by `python -m tfloc.studies.seed001"
         + (" --quick" if args.quick else "") + "` ("
         + (f"folds 0-{folds - 1}" if folds > 1 else "fold 0") + " of 5 for the tables, "
         f"{args.sweep_folds} per point of the figures, fractions "
         + ", ".join(f"{100 * f:.0f} %" for f in args.fractions)
         + f", source stage up to {args.source_epochs} epochs, target up to {args.epochs} epochs "
         f"with early-stopping patience {args.patience}; "
         f"{len(res)} runs on 2 CPU cores). Mean ± standard deviation over the folds; the "
         "test set of each target is fixed and scored once per run.", "",
         "## Environments (Table I analog)", "",
         "| environment | role | samples with paths | LOS share | train / val per fold at 20 % | test |",
         "|---|---|---|---|---|---|"]
    for name, c in envs.items():
        L.append(f"| `{name}` | {c['role']} | {c['samples']} | {100 * c['los_share']:.0f} % | "
                 f"{c.get('train20', '-')} / {c.get('val20', '-')} | {c.get('test', '-')} |")
    L += ["", "Paper (Table I): 4 source BSs with 60,000 training + 6,000 validation samples each; "
          "LOS target 22,234 / 5,558 / 13,131 (train / val / test), NLOS target 16,928 / 4,234 / "
          "5,001. At 20 % the paper trains on 5,558 (LOS) and 4,232 (NLOS) samples.", ""]
    for (target, loss), rows in PAPER_TABLES.items():
        crps = loss == "NLL"
        L += [f"## Table {TABLE_NUMBER[(target, loss)]} analog: {target} target, {loss} target "
              f"loss, 20 % of the target data", "",
              "| source loss | TL type | target training | ME ours [m] | ME paper [m] |"
              + (" CRPS ours [m] | CRPS paper [m] | 1-σ coverage ours (Gaussian 39 %) |" if crps else ""),
              "|---|---|---|---|---|" + ("---|---|---|" if crps else "")]
        scratch = aggregate(res, target, loss, TABLE_SETTINGS[0], 0.2, folds)
        for s, p in zip(TABLE_SETTINGS, rows):
            a = aggregate(res, target, loss, s, 0.2, folds)
            line = f"| {p[0]} | {p[1]} | {p[2]} | {_pm(a, 'me_m')} | {p[3]:.4f} |"
            if crps:
                cov = f"{100 * a['within_1sigma']:.0f} %" if a and "within_1sigma" in a else "-"
                line += f" {_pm(a, 'crps_m')} | {p[4]:.4f} | {cov} |"
            L.append(line)
        best = aggregate(res, target, loss, TABLE_SETTINGS[-1], 0.2, folds)
        if scratch and best:
            L += ["", f"MEML (NLL source) + gradual unfreezing against scratch: "
                  f"{100 * (1 - best['me_m'] / scratch['me_m']):+.0f} % mean error"
                  + (f", {100 * (1 - best['crps_m'] / scratch['crps_m']):+.0f} % CRPS"
                     if crps and "crps_m" in best and "crps_m" in scratch else "")
                  + " (positive: MEML better; the paper: "
                  f"{100 * (1 - rows[-1][3] / rows[0][3]):.0f} % mean error"
                  + (f", {100 * (1 - rows[-1][4] / rows[0][4]):.0f} % CRPS" if crps else "") + ")."]
        L.append("")
    settings = figure_settings(args.sweep_sources)
    L += ["## Fig. 9-14 analogs: error against the amount of target data (fine-tuning)", "",
          "Lines: " + ", ".join(setting_label(s) for s in settings) + f"; {args.sweep_folds} "
          f"fold(s) per point; target losses: {', '.join(args.sweep_losses)}.", ""]
    for (target, loss), fig_no in FIGURES.items():
        if loss not in args.sweep_losses:
            continue
        n_pool = envs[TARGETS[target]].get("pool", "?")
        name = f"{target.lower()}_{loss.lower()}"
        metrics = ["me_m"] + (["crps_m"] if loss == "NLL" else [])
        for metric in metrics:
            figure(res, target, loss, settings, args.fractions, args.sweep_folds, metric,
                   os.path.join(figdir, f"{name}_{metric[:-2]}.png"), n_pool)
            L.append(f"![Fig. {fig_no} analog, {metric[:-2].upper()}](seed001/{name}_{metric[:-2]}.png)")
        for metric in metrics:
            L += ["", f"| {target}, {loss}, {metric[:-2].upper()} [m] | "
                  + " | ".join(f"{100 * f:.0f} %" for f in args.fractions) + " |",
                  "|---|" + "---|" * len(args.fractions)]
            for s in settings:
                cells = [_pm(aggregate(res, target, loss, s, f, args.sweep_folds), metric)
                         for f in args.fractions]
                L.append(f"| {setting_label(s)} | " + " | ".join(cells) + " |")
        L.append("")
    src = [r["source"] for r in res.values() if r.get("source") and not r["source"].get("reused")]
    src_s = sum(x["elapsed_s"] for x in src)
    src_n = sum(x["samples"] * x["epochs"] for x in src)
    L += ["## Speed", "",
          f"Source stages ({len(src)}, each trained once and reused): {src_s:.0f} s for "
          f"{src_n:,} sample-epochs, {src_n / max(src_s, 1e-9):.0f} training samples/s (CSI "
          "synthesis and features included). All training, source stages included: "
          f"{sum(r['train_s'] for r in res.values()) / 60:.1f} min over {len(res)} runs; by "
          "target fraction: " + ", ".join(
              f"{100 * f:.0f} %: {sum(r['train_s'] for r in res.values() if r['fraction'] == f) / 60:.1f} min"
              for f in sorted({r["fraction"] for r in res.values()})) + ".", ""]
    return write_keeping_discussion(out, "\n".join(L))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a first look: one fold, 20 %% and "
                    "100 %%, short training, too short to converge (about 10 minutes)")
    ap.add_argument("--folds", type=int, default=1, help="folds 0..k-1 of 5 for the tables (paper: 5)")
    ap.add_argument("--sweep-folds", type=int, default=1, help="folds per point of the figures "
                    "(paper: 5)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.2, 1.0],
                    help="target data fractions of the figures (paper: 0.2 0.4 0.6 0.8 1.0)")
    ap.add_argument("--sweep-losses", nargs="+", choices=list(LOSS), default=["NLL"],
                    help="target losses swept in the figures (paper: MSE NLL)")
    ap.add_argument("--sweep-sources", nargs="+", choices=list(LOSS), default=["NLL"],
                    help="source losses of the DTL and MEML lines of the figures (paper: MSE NLL)")
    ap.add_argument("--source-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=100, help="target training epochs at most "
                    "(early stopping; the shipped configs' training.epochs)")
    ap.add_argument("--patience", type=int, default=8, help="target early-stopping patience")
    ap.add_argument("--root", default="runs/seed001")
    ap.add_argument("--out", default="docs/results/seed001.md")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    if args.quick:
        args.folds, args.sweep_folds, args.fractions = 1, 1, [0.2, 1.0]
        args.sweep_losses, args.sweep_sources = ["NLL"], ["NLL"]
        args.source_epochs, args.epochs = min(args.source_epochs, 5), min(args.epochs, 15)
        args.patience = min(args.patience, 3)
        args.root = args.root.rstrip("/") + "-quick" if args.root == "runs/seed001" else args.root
    if not 1 <= args.folds <= 5 or not 1 <= args.sweep_folds <= 5:
        raise SystemExit("error: --folds and --sweep-folds must be in 1..5 (of 5 folds)")
    if 0.2 not in args.fractions:
        args.fractions = sorted({0.2, *args.fractions})
    t0 = time.time()
    study = Study(args.root, args.repo, args.source_epochs, args.epochs, args.patience)
    plan = []
    for target in TARGETS:
        for loss in LOSS:
            for s in TABLE_SETTINGS:
                plan += [(target, loss, s, 0.2, k) for k in range(args.folds)]
            for s in figure_settings(args.sweep_sources) if loss in args.sweep_losses else []:
                for f in args.fractions:
                    plan += [(target, loss, s, f, k) for k in range(args.sweep_folds)]
    seen, unique = set(), []
    for p in plan:
        k = run_key(*p)
        if k not in seen:
            seen.add(k)
            unique.append(p)
    for i, p in enumerate(unique):
        done = run_key(*p) in study.results
        r = study.run(*p)
        extra = f", CRPS {r['crps_m']:.2f} m" if "crps_m" in r else ""
        print(f"[{i + 1}/{len(unique)}] {run_key(*p)}: ME {r['me_m']:.2f} m{extra}"
              + (" (done before)" if done else f" ({r['train_s']:.0f} s)"), flush=True)
    envs = environment_table(study.results, args.repo)
    text = write_page(study, args, envs, args.out)
    print(f"wrote {args.out} ({len(study.results)} runs, {(time.time() - t0) / 60:.1f} min)")
    return text


def environment_table(results, repo) -> dict:
    """Per environment: role, samples, LOS share, and the target's split sizes at 20 %."""
    from tfloc.run.experiment import load_config
    from tfloc.run.runner import make_task
    cfg = load_config(os.path.join(repo, "configs", "meml.yaml"))
    out = {}
    for role, target in TARGETS.items():
        cfg.method.options.target = target
        task = make_task(cfg)
        data = task.load_data(progress=False)
        for name, c in data.info["environments"].items():
            is_target = name == target
            entry = out.setdefault(name, {"role": "source", **c})
            if is_target:
                entry["role"] = f"{role} target"
                entry["pool"] = c["samples"] - c["test"]
                r = [v for v in results.values() if v["target"] == role and v["fraction"] == 0.2]
                if r:
                    entry["train20"], entry["val20"] = r[0]["n_train"], r[0]["n_val"]
    return out


if __name__ == "__main__":
    main()
