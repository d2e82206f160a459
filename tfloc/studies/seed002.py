"""Seed 002 (Chu et al.): Table II analog, the DA baselines and the section-V ablations.

    python -m tfloc.studies.seed002 [--seeds 3] [--only "Table II" baselines ablations]
                                    [--root runs/seed002] [--out docs/results/seed002.md]
                                    [--pages-only] [--set KEY=VALUE ...]

Every experiment is a shipped config (configs/{mda,hda,dcnn,tl,rda}.yaml) plus overrides,
trained with the config's own epoch cap and early stopping on the same street-canyon build
and realization split, once per seed (seed 0: the config's ``runtime.seed``; seed k adds k).
After each run its summary is stored in ``docs/results/seed002/runs/`` and the page is
regenerated from the summaries alone (``--pages-only`` does only that): each cell is the
mean over seeds with a Student-t 95 % interval, beside the paper's Table II, and each of the
paper's claims (:data:`CLAIMS`) is judged on the difference of the two experiments' errors on
the same test links, paired across seeds and links (a two-level bootstrap).
"""
from __future__ import annotations

from tfloc.studies.common import Experiment, write_keeping_discussion
from tfloc.studies.summary import (Claim, by_experiment, cdf_lines, claims_section, epochs_cell,
                                   interval_cell, provenance, regenerate_page,
                                   seeded_study_main)

SUMMARIES = "docs/results/seed002/runs"
COMMAND = "python -m tfloc.studies.seed002"

_COORDS = ["method.mda.num_conditions=0", "method.mda.coordinate_weight=1",
           "method.mda.condition_weight=0"]
_CONDS = ["method.mda.coordinate_weight=0", "method.mda.condition_weight=1"]

#: Table II (P ~ U(10, 25), 100 MHz in the paper): RMSE [m] and condition accuracy
EXPERIMENTS = [
    Experiment("coordinates only", "configs/mda.yaml", _COORDS + ["method.mda.alignment=none"],
               {"rmse_m": 1.0567}, "Table II"),
    Experiment("coordinates only + KT", "configs/mda.yaml", _COORDS, {"rmse_m": 0.9893}, "Table II"),
    Experiment("conditions only", "configs/mda.yaml", _CONDS + ["method.mda.alignment=none"],
               {"accuracy": 0.8772}, "Table II", trains_position=False),
    Experiment("conditions only + KT", "configs/mda.yaml", _CONDS, {"accuracy": 0.9148}, "Table II",
               trains_position=False),
    Experiment("unweighted 0.5 / 0.5 + KT", "configs/mda.yaml",
               ["method.mda.coordinate_weight=0.5", "method.mda.condition_weight=0.5"],
               {"rmse_m": 0.8802, "accuracy": 0.9311}, "Table II"),
    Experiment("MDA 0.7 / 0.3", "configs/mda.yaml",
               ["method.mda.coordinate_weight=0.7", "method.mda.condition_weight=0.3"],
               {"rmse_m": 0.8299, "accuracy": 0.9417}, "Table II"),
    Experiment("HDA", "configs/hda.yaml", [], {"rmse_m": 0.8165, "accuracy": 0.9359}, "Table II"),
    # not in the paper's table (no claim needs it): last, so the claims' runs come first
    Experiment("MDA 0.3 / 0.7", "configs/mda.yaml",
               ["method.mda.coordinate_weight=0.3", "method.mda.condition_weight=0.7"], {},
               "Table II"),
    Experiment("DCNN (supervised)", "configs/dcnn.yaml", [], {}, "baselines"),
    Experiment("TL (MMD)", "configs/tl.yaml", [], {}, "baselines"),
    Experiment("RDA (adversarial)", "configs/rda.yaml", [], {}, "baselines"),
    Experiment("HDA, 2 conditions (LOS / NLOS)", "configs/hda.yaml",
               ["method.hda.num_conditions=2"], {}, "ablations"),
    Experiment("HDA, RCSI input", "configs/hda.yaml", ["data.representation=real_csi"], {},
               "ablations"),
    Experiment("HDA, SCM input", "configs/hda.yaml", ["data.representation=sample_covariance"], {},
               "ablations"),
    Experiment("HDA, ADP without normalisation", "configs/hda.yaml", ["data.normalization=none"],
               {}, "ablations"),
    Experiment("HDA, P = 10", "configs/hda.yaml", ["data.max_paths=10"], {}, "ablations"),
    Experiment("HDA, P ~ U(10, 25)", "configs/hda.yaml", ["data.max_paths_range=[10, 25]"], {},
               "ablations"),
]

#: the paper's claims about RMSE (Table II and section V), judged on paired test links
CLAIMS = [
    Claim("coordinates only + KT", "coordinates only", "rmse_m", "Table II: knowledge transfer helps"),
    Claim("MDA 0.7 / 0.3", "coordinates only + KT", "rmse_m", "Table II: semantics help"),
    Claim("MDA 0.7 / 0.3", "unweighted 0.5 / 0.5 + KT", "rmse_m", "Table II: weighting the tasks"),
    Claim("HDA", "MDA 0.7 / 0.3", "rmse_m", "Table II: learnt (homoscedastic) weights"),
    Claim("HDA", "DCNN (supervised)", "rmse_m", "section V: domain adaptation"),
    Claim("HDA", "TL (MMD)", "rmse_m", "section V: against MMD transfer"),
    Claim("HDA", "RDA (adversarial)", "rmse_m", "section V: against adversarial adaptation"),
    # section V-D's ablations (the paper shows them for its DA methods, as CDFs)
    Claim("HDA", "HDA, RCSI input", "rmse_m", "V-D1, Fig. 5: ADP over real-valued CSI"),
    Claim("HDA", "HDA, SCM input", "rmse_m", "V-D1, Fig. 5: ADP over the sample covariance"),
    Claim("HDA", "HDA, ADP without normalisation", "rmse_m", "V-D2, Fig. 7: antenna-wise normalisation"),
]


def _scale_text(s: dict) -> str:
    cfg = s["resolved_config"]
    c = s.get("link_conditions") or {}
    per = "; ".join(f"{k} " + " / ".join(str(v.get(n, 0)) for n in ("LOS", "NLOS-static", "NLOS-car"))
                    for k, v in (s.get("conditions_per_split") or {}).items() if v)
    tr, va, te = cfg["data"]["realization_splits"][:3]
    return (f"street canyon with moving vehicles, {cfg['simulation']['cars']['num_realizations']} "
            f"traffic realizations at a {cfg['simulation']['ue_grid']['spacing_m']} m grid (links LOS / "
            "NLOS-static / NLOS-by-vehicle / no path: "
            f"{' / '.join(str(c.get(n, 0)) for n in ('LOS', 'NLOS-static', 'NLOS-car', 'no path'))}). "
            f"Source: {s['n_train_labelled']} links of the first {tr} realizations, validation "
            f"{s['n_val']} (next {va}), test {s['n_test']} (last {te}); LOS / NLOS-static / "
            f"NLOS-by-vehicle per split: {per}. Target domain: the test realizations' CSI without "
            f"labels. Every experiment keeps P = {_paths(cfg['data'])} strongest paths per link unless "
            f"its row says otherwise (the paper's Table II: P ~ U(10, 25)), over "
            f"{cfg['data']['num_subcarriers']} subcarriers x "
            f"{cfg['data']['subcarrier_spacing_hz'] / 1e3:g} kHz = "
            f"{cfg['data']['num_subcarriers'] * cfg['data']['subcarrier_spacing_hz'] / 1e6:g} MHz. "
            f"Each run trains until early stopping, at most {cfg['training']['epochs']} epochs.")


def _paths(data: dict) -> str:
    low_high = data.get("max_paths_range") or []
    return f"U({low_high[0]}, {low_high[1]})" if low_high else str(data["max_paths"])


def write_page(summaries: dict, out: str, command: str = COMMAND) -> str:
    """docs/results/seed002.md from the run summaries: tables beside the paper's Table II,
    the claims judged on paired test links, and the CDFs (every seed's test links)."""
    runs = by_experiment(summaries)
    first = next(s for e in EXPERIMENTS for s in runs.get(e.label, []))
    lines = ["# Seed 002 (Chu et al.): semantic localization in a dynamic street canyon", "",
             provenance(command, SUMMARIES, summaries) + " Each experiment is a shipped config plus "
             "overrides (listed in `tfloc/studies/seed002.py`). RMSE is the square root of the mean "
             "squared 3D distance (the paper's formula prints 1/(L Gamma) outside the root, which "
             "cannot give its ~1 m values, so we read it as the usual RMSE).", "",
             "Scale and split: " + _scale_text(first), ""]
    for group in ("Table II", "baselines", "ablations"):
        exps = [e for e in EXPERIMENTS if e.group == group and e.label in runs]
        missing = [e.label for e in EXPERIMENTS if e.group == group and e.label not in runs]
        if not exps:
            lines += [f"## {group}", "", f"Not run yet with seeds: {'; '.join(missing)} "
                      f"(`{command} --only {group}` runs them).", ""]
            continue
        lines += [f"## {group}", "",
                  "| experiment | seeds | RMSE (ours) | mean | p50 | p90 | median error / PEB | accuracy (ours) "
                  "| RMSE (paper) | accuracy (paper) | epochs run of cap (best), per seed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in exps:
            rs = runs[e.label]
            m = (lambda k: interval_cell([s["errors"]["model"].get(k) for s in rs])) if e.trains_position \
                else (lambda k: "-")
            paper_rmse, paper_acc = e.paper.get("rmse_m"), e.paper.get("accuracy")
            lines.append(
                f"| {e.label} | {len(rs)} | {m('rmse_m')} | {m('mean_m')} | {m('p50_m')} | {m('p90_m')} "
                f"| {interval_cell([s.get('error_over_bound_median') for s in rs], '{:.0f}') if e.trains_position else '-'} "
                f"| {interval_cell([s.get('condition_accuracy') for s in rs], '{:.1f} %', 100)} "
                f"| {interval_cell([paper_rmse])} "
                f"| {interval_cell([paper_acc], '{:.1f} %', 100)} | {epochs_cell(rs)} |")
        lines += ["", f"Not run yet: {'; '.join(missing)}.", ""] if missing else [""]
        if group == "ablations":     # an input ablation changes kNN's features too
            rows = [(e.label, runs[e.label]) for e in EXPERIMENTS
                    if (e.label == "HDA" or e.group == group) and e.label in runs]
            lines += ["kNN fingerprinting on each row's own input features (same links, k and "
                      "weighting chosen on validation), RMSE / mean: "
                      + "; ".join(f"{label} {interval_cell([s['errors']['knn']['rmse_m'] for s in rs])} / "
                                  f"{interval_cell([s['errors']['knn']['mean_m'] for s in rs])} m"
                                  for label, rs in rows) + ".", ""]
    knn = [s for e in EXPERIMENTS if e.label == "HDA" for s in runs.get(e.label, [])] or [first]
    lines += ["RMSE, mean, p50 and p90: test errors in metres. Median error / PEB: each run's median of its test "
              "links' error over their position error bound (3D Cramér-Rao bound of the pipeline's own channel, "
              "`tfloc.physics.bound`), where the run's evaluators compute it.", "",
              f"kNN fingerprinting on the same ADP features and labelled realizations (k and weighting "
              f"chosen on validation), on the same test links: RMSE "
              f"{interval_cell([s['errors']['knn']['rmse_m'] for s in knn])} m, mean "
              f"{interval_cell([s['errors']['knn']['mean_m'] for s in knn])} m, p50 "
              f"{interval_cell([s['errors']['knn']['p50_m'] for s in knn])} m.", "",
              *claims_section(CLAIMS, runs),
              *cdf_lines(runs, [e.label for e in EXPERIMENTS if e.group in ("Table II", "baselines")
                                and e.trains_position], out,
                         "seed 002 analog: test error CDF (every seed's test links)")]
    return write_keeping_discussion(out, "\n".join(lines))


def regenerate(out: str, command: str = COMMAND) -> str:
    return regenerate_page(SUMMARIES, write_page, out, command)


def main(argv=None):
    seeded_study_main(__doc__, "seed002", EXPERIMENTS, write_page, argv, groups=("Table II", "baselines", "ablations"))


if __name__ == "__main__":
    main()
