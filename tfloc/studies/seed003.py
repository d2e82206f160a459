"""Seed 003 (Dash et al.): the Table I analog, autoencoder pre-training against scratch.

    python -m tfloc.studies.seed003 [--seeds 3] [--root runs/seed003]
                                    [--out docs/results/seed003.md] [--pages-only] [--set KEY=VALUE ...]

Four experiments of ``configs/autoencoder.yaml`` on the etoile site and split of
``configs/etoile_supervised.yaml``: the MLP and CNN networks, each trained from scratch on
the labels and pre-trained as an autoencoder on the unlabelled UEs first, every one until
early stopping and once per seed. After each run its summary is stored in
``docs/results/seed003/runs/`` and the page is regenerated from the summaries alone
(``--pages-only`` does only that): cells are means over seeds with 95 % intervals, and the
paper's order is judged on the same test UEs, paired across seeds and UEs.
"""
from __future__ import annotations

from tfloc.studies.common import Experiment, write_keeping_discussion
from tfloc.studies.summary import (Claim, by_experiment, cdf_lines, claims_section, epochs_cell,
                                   interval_cell, provenance, regenerate_page,
                                   seeded_study_main)

SUMMARIES = "docs/results/seed003/runs"
COMMAND = "python -m tfloc.studies.seed003"

#: seed 003 Table I (CTW-2020, 3D): model -> averaged (MAE, NMAE, RMSE, NRMSE)
PAPER = {"MLP, scratch (Model 1)": (60.9031, 0.5622, 89.0806, 0.814),
         "CNN, scratch (Model 2)": (21.6608, 0.0909, 33.3804, 0.1225),
         "MLP AE pre-trained (Model 3)": (32.4949, 0.1066, 57.1584, 0.1389),
         "CNN AE pre-trained (Model 4)": (16.8682, 0.1065, 26.1507, 0.1323)}
RUNS = {"MLP, scratch (Model 1)": ["model=ae_mlp", "method.autoencoder.pretrain=false"],
        "CNN, scratch (Model 2)": ["method.autoencoder.pretrain=false"],
        "MLP AE pre-trained (Model 3)": ["model=ae_mlp"],
        "CNN AE pre-trained (Model 4)": []}
EXPERIMENTS = [Experiment(label, "configs/autoencoder.yaml", sets, paper={"average": PAPER[label]})
               for label, sets in RUNS.items()]

#: Table I's order (averaged MAE and RMSE): Model 4 < Model 2 < Model 3 < Model 1; judged on
#: the mean 2D error of the same test UEs
CLAIMS = [
    Claim("CNN AE pre-trained (Model 4)", "CNN, scratch (Model 2)", "mean_m", "Table I: pre-training helps the CNN"),
    Claim("MLP AE pre-trained (Model 3)", "MLP, scratch (Model 1)", "mean_m", "Table I: pre-training helps the MLP"),
    Claim("CNN, scratch (Model 2)", "MLP, scratch (Model 1)", "mean_m", "Table I: the CNN beats the MLP"),
    Claim("CNN, scratch (Model 2)", "MLP AE pre-trained (Model 3)", "mean_m", "Table I: Model 2 < Model 3"),
]


def write_page(summaries: dict, out: str, command: str = COMMAND) -> str:
    runs = by_experiment(summaries)
    first = next(s for e in EXPERIMENTS for s in runs.get(e.label, []))
    unlabelled = first["resolved_config"]["data"]
    lines = ["# Seed 003 (Dash et al.): self-supervised autoencoder pre-training", "",
             provenance(command, SUMMARIES, summaries) + " Sionna RT `etoile`, the split of "
             f"`configs/etoile_supervised.yaml`: {first['n_train_labelled']} labelled UEs "
             f"({100 * unlabelled['labelled_fraction']:g} %) fine-tune, the unlabelled UEs pre-train, "
             f"{first['n_val']} validate, {first['n_test']} test; 2D positions (the paper: 3D on "
             "CTW-2020, 646 x 943 x 41 m).", "",
             "## Table I analog: per axis and averaged (seed 003 eq. 4-11)", "",
             "NMAE and NRMSE divide by each axis's range of the test labels. Ours: metres and "
             "ratios; the paper's averaged values (3 axes, its dataset) in the last column. Median "
             "error / PEB: the median over test UEs of the 2D error over the UE's Cramér-Rao "
             "position error bound (`tfloc.physics.bound`, mirror model, the run's own channel, "
             "SNR and TA error).", "",
             "| model | seeds | MAE avg | NMAE avg | RMSE avg | NRMSE avg | mean 2D error | median error "
             "/ PEB | epochs run of cap (best) | paper avg MAE / NMAE / RMSE / NRMSE |",
             "|---" * 10 + "|"]
    for e in EXPERIMENTS:
        rs = runs.get(e.label)
        if not rs:
            continue
        avg = lambda k, fmt="{:.2f}": interval_cell(   # noqa: E731
            [(s.get("axis_errors") or {}).get("average", {}).get(k) for s in rs], fmt)
        p = e.paper["average"]
        lines.append(f"| {e.label} | {len(rs)} | {avg('mae_m')} | {avg('nmae', '{:.4f}')} | "
                     f"{avg('rmse_m')} | {avg('nrmse', '{:.4f}')} | "
                     f"{interval_cell([s['errors']['model']['mean_m'] for s in rs])} | "
                     f"{interval_cell([s.get('error_over_bound_median') for s in rs], '{:.0f}')} | {epochs_cell(rs)} | "
                     f"{p[0]:.2f} / {p[1]:.4f} / {p[2]:.2f} / {p[3]:.4f} |")
    knn = runs.get("CNN AE pre-trained (Model 4)") or [first]
    lines += ["", f"kNN fingerprinting on the same labelled UEs (k and weighting chosen on validation), "
              f"same test UEs: mean {interval_cell([s['errors']['knn']['mean_m'] for s in knn])} m.", "",
              *claims_section(CLAIMS, runs),
              *cdf_lines(runs, list(RUNS), out, "seed 003 analog: test error CDF (every seed's test UEs)")]
    return write_keeping_discussion(out, "\n".join(lines))


def regenerate(out: str, command: str = COMMAND) -> str:
    return regenerate_page(SUMMARIES, write_page, out, command)


def main(argv=None):
    seeded_study_main(__doc__, "seed003", EXPERIMENTS, write_page, argv)


if __name__ == "__main__":
    main()
