"""Seed 004 (An et al.): the Table II, Fig. 9-11 and accumulation analogs.

    python -m tfloc.studies.seed004 [--seeds 3] [--bits 10 8 6 4] [--strategies] [--ablation]
                                    [--root runs/seed004] [--out docs/results/seed004.md]
                                    [--pages-only] [--set KEY=VALUE ...]

Every run is ``configs/ecc.yaml`` as shipped (its schedule and early stopping) with the
experiment's overrides, once per seed, each its own ``train.py`` process (resumable). The
default runs the Q sweep with the paper's strategy (local then joint) and the lossless-CSI
reference; ``--strategies`` adds local-then-split and joint-from-scratch at every Q (Fig. 10),
``--ablation`` the Transformer without gain mask at the first Q (Fig. 11). Each run's summary
(with its accumulation, trajectory and fronthaul sections) goes into docs/results/seed004/runs/
as it ends, and the page is generated from the summaries alone (``--pages-only``): cells are
means over seeds with 95 % intervals, the fronthaul ratio eta is the run's own, and the
paper's orders are judged on the same test UEs, paired across seeds and UEs. Paper scale:
``--set`` the overrides in configs/ecc.yaml's header (they reach every run).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from tfloc.studies.common import Experiment, write_keeping_discussion
from tfloc.studies.summary import (Claim, add_study_arguments, by_experiment, cdf_lines, claims_section,
                                   epochs_cell, interval_cell, provenance, regenerate_page,
                                   run_storing_summaries, seeded_experiments, training_minutes)

SUMMARIES = "docs/results/seed004/runs"
COMMAND = "python -m tfloc.studies.seed004"
KEEP = ("accumulation", "trajectory", "fronthaul")

#: seed 004 Table II: Q (None: lossless CSI) -> (eta %, mean [m], p90 [m])
PAPER_TABLE2 = {None: (100.0, 0.42, 0.75), 10: (6.25, 0.48, 0.83), 8: (5.00, 0.52, 0.90),
                6: (3.75, 0.54, 0.92), 4: (2.50, 0.56, 0.97)}
PAPER_BITS = tuple(q for q in PAPER_TABLE2 if q is not None)     # 10, 8, 6, 4
STRATEGY_LABELS = {"local_joint": "local + joint (paper)", "local_split": "local + split",
                   "joint_scratch": "joint from scratch", "raw_csi": "lossless CSI"}


def label(strategy: str, q: int) -> str:
    return f"{STRATEGY_LABELS[strategy]}, Q = {q}"


def experiments(bits, strategies: bool, ablation: bool) -> list:
    exps = [Experiment("lossless CSI", "configs/ecc.yaml", ["method.ecc.strategy=raw_csi"],
                       group="raw_csi")]
    for s in (["local_joint", "local_split", "joint_scratch"] if strategies else ["local_joint"]):
        exps += [Experiment(label(s, q), "configs/ecc.yaml", [f"method.ecc.strategy={s}", f"model.ecc.bits={q}"],
                            group=s, paper={"bits": q}) for q in bits]
    if ablation:
        exps.append(Experiment(f"Transformer (no gain mask), Q = {bits[0]}", "configs/ecc.yaml",
                               ["model.ecc.fusion=transformer", f"model.ecc.bits={bits[0]}"],
                               group="transformer", paper={"bits": bits[0]}))
    return exps


def claims(bits) -> list:
    """The paper's orders, at the first Q: Fig. 9 (strategies), Fig. 11 (CMA against the
    unmasked Transformer) and Table II (lossless CSI is best; the error grows as Q falls: first Q
    against the last)."""
    q0, q1 = bits[0], bits[-1]
    out = [Claim("lossless CSI", label("local_joint", q0), "mean_m", f"Table II: lossless CSI beats Q = {q0}"),
           Claim(label("local_joint", q0), label("local_split", q0), "mean_m", "Fig. 9: local + joint"),
           Claim(label("local_split", q0), label("joint_scratch", q0), "mean_m", "Fig. 9: local + split"),
           Claim(label("local_joint", q0), f"Transformer (no gain mask), Q = {q0}", "mean_m",
                 "Fig. 11: channel-masked attention")]
    if q1 != q0:
        out.append(Claim(label("local_joint", q0), label("local_joint", q1), "mean_m",
                         f"Table II: Q = {q0} beats Q = {q1}"))
    return out


def _mean(runs, get):
    return interval_cell([get(s) for s in runs])


def stored_bits(summaries: dict) -> list:
    """The paper's Q values and those of the stored runs, highest first, so the page shows every
    stored run whichever ``--bits`` the last study ran with, and names the claims still to run."""
    qs = {int(x.split("=", 1)[1]) for s in summaries.values() for x in s.get("sets", [])
          if x.startswith("model.ecc.bits=")}
    return sorted(qs | set(PAPER_BITS), reverse=True)


def write_page(summaries: dict, out: str, command: str = COMMAND) -> str:
    """The page of ``summaries``: Fig. 9 and 11 and the claims at the highest Q of
    :func:`stored_bits`, Table II over every stored Q."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = by_experiment(summaries)
    bits = stored_bits(summaries)
    exps = [e for e in experiments(list(bits), True, True) if e.label in runs]
    first = runs[exps[0].label][0]
    figdir = os.path.join(os.path.dirname(out), "seed004")
    os.makedirs(figdir, exist_ok=True)
    L = ["# Seed 004: cooperative 3D positioning over a quantized fronthaul (measured)", "",
         "An et al., *Fronthaul-Efficient Distributed Cooperative 3D Positioning with Quantized "
         "Latent CSI Embeddings*. " + provenance(command, SUMMARIES, summaries) + " Every run is "
         "`configs/ecc.yaml` as shipped with the experiment's overrides. Test samples: "
         f"{first['n_test']}, training pool {first['n_train_labelled']}, validation {first['n_val']}.", "",
         "## Table II analog: accuracy against the fronthaul budget", "",
         "eta is each run's own: its edge model's latent codes x Q bits over the 64-bit complex "
         "CSI of its input (seed 004 eq. 37-39).", "",
         "| embedding | seeds | eta ours | eta paper | mean ours [m] | p90 ours [m] | mean paper [m] "
         "| p90 paper [m] | kNN mean [m] | MUSIC + LS mean [m] | median error / PEB | "
         "epochs run of cap (best) |",
         "|---" * 12 + "|"]
    for e in exps:
        if e.group not in ("raw_csi", "local_joint"):
            continue
        rs = runs[e.label]
        p = PAPER_TABLE2.get(e.paper.get("bits"), (None, None, None))
        eta = [(s.get("sections") or {}).get("fronthaul", {}).get("eta") for s in rs]
        L.append(f"| {e.label} | {len(rs)} | {interval_cell(eta, '{:.2f} %', 100)} | "
                 + (f"{p[0]:.2f} %" if p[0] else "-")
                 + f" | {_mean(rs, lambda s: s['errors']['model']['mean_m'])} | "
                 f"{_mean(rs, lambda s: s['errors']['model']['p90_m'])} | "
                 + (f"{p[1]:.2f} | {p[2]:.2f}" if p[1] else "- | -")
                 + f" | {_mean(rs, lambda s: s['errors'].get('knn', {}).get('mean_m'))} | "
                 f"{_mean(rs, lambda s: s['errors'].get('music', {}).get('mean_m'))} | "
                 f"{interval_cell([s.get('error_over_bound_median') for s in rs], '{:.0f}')} | {epochs_cell(rs)} |")
    L += ["", "Median error / PEB: each run's median over its test UEs of the error over the UE's "
          "position error bound (the 3D Cramér-Rao bound of all six BSs' links together, of the "
          "CSI before the fronthaul, so it bounds every Q; `tfloc.physics.bound`)."]
    q0 = bits[0]
    fig9 = [e for e in exps if e.group in ("local_joint", "local_split", "joint_scratch", "raw_csi")
            and e.paper.get("bits") in (None, q0)]
    L += ["", f"## Fig. 9 analog: training strategies at Q = {q0}", "",
          "Paper (Fig. 9, no numbers given): local + joint beats local + split, which beats joint "
          "from scratch; local + joint approaches lossless CSI.", "",
          "| strategy | seeds | mean [m] | p50 [m] | p90 [m] | epochs run of cap (best) | training [min] |",
          "|---|---|---|---|---|---|---|"]
    for e in fig9:
        rs = runs[e.label]
        L.append(f"| {e.label} | {len(rs)} | {_mean(rs, lambda s: s['errors']['model']['mean_m'])} | "
                 f"{_mean(rs, lambda s: s['errors']['model']['p50_m'])} | "
                 f"{_mean(rs, lambda s: s['errors']['model']['p90_m'])} | {epochs_cell(rs)} | "
                 f"{_mean(rs, training_minutes)} |")
    L += ["", *cdf_lines(runs, [e.label for e in fig9], out,
                         f"training strategies at Q = {q0} (Fig. 9 analog; every seed's test UEs)",
                         png=os.path.join(figdir, "cdf.png"))]
    # Fig. 10 analog: error against Q per strategy (means over seeds)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for group in ("local_joint", "local_split", "joint_scratch"):
        pts = sorted((e.paper["bits"], np.mean([s["errors"]["model"]["mean_m"] for s in runs[e.label]]))
                     for e in exps if e.group == group)
        if pts:
            ax.plot(*zip(*pts), "o-", label=STRATEGY_LABELS[group])
    if "lossless CSI" in runs:
        ax.axhline(np.mean([s["errors"]["model"]["mean_m"] for s in runs["lossless CSI"]]),
                   color="k", ls="--", label="lossless CSI")
    ax.set_xlabel("Q [bits per latent value]")
    ax.set_ylabel("mean 3D error [m], mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(figdir, "error_vs_q.png"))
    plt.close(fig)
    L += ["## Fig. 10 analog: error against Q", "", "![error against Q](seed004/error_vs_q.png)", ""]
    fig11 = [e for e in exps if e.group in ("local_joint", "raw_csi", "transformer")
             and e.paper.get("bits") in (None, q0)]
    L += ["## Fig. 11 analog: methods", "",
          "| method (Fig. 11 analog) | seeds | mean [m] | p50 [m] | p90 [m] | epochs run of cap (best) |",
          "|---|---|---|---|---|---|"]
    for e in fig11:
        rs = runs[e.label]
        L.append(f"| {e.label} | {len(rs)} | {_mean(rs, lambda s: s['errors']['model']['mean_m'])} | "
                 f"{_mean(rs, lambda s: s['errors']['model']['p50_m'])} | "
                 f"{_mean(rs, lambda s: s['errors']['model']['p90_m'])} | {epochs_cell(rs)} |")
    base = runs[fig11[0].label] if fig11 else runs[exps[0].label]
    for name, title in (("knn", "kNN on the raw CSI"), ("music", "MUSIC + least squares")):
        if all(name in s["errors"] for s in base):
            L.append(f"| {title} (the same test UEs) | {len(base)} | "
                     f"{_mean(base, lambda s: s['errors'][name]['mean_m'])} | "
                     f"{_mean(base, lambda s: s['errors'][name]['p50_m'])} | "
                     f"{_mean(base, lambda s: s['errors'][name]['p90_m'])} | - |")
    L += ["", "## Error against the subcarriers accumulated (eq. 33)", "",
          "| run | after 1 | after 6 | after 12 | after 24 |", "|---|---|---|---|---|"]
    for e in exps:
        accs = [(s.get("sections") or {}).get("accumulation") for s in runs[e.label]]
        if all(accs):
            L.append(f"| {e.label} | " + " | ".join(
                interval_cell([a["mean_m"][min(i, len(a["mean_m"])) - 1] for a in accs])
                for i in (1, 6, 12, 24)) + " |")
    moving = [e for e in fig9 + fig11 if all((s.get("sections") or {}).get("trajectory")
                                              for s in runs[e.label])]
    if moving:
        tr0 = runs[moving[0].label][0]["sections"]["trajectory"]
        sp = tr0["spiral"]
        L += ["", "## A moving UE: 3D spiral through the campus", "",
              f"{sp['snapshots']} snapshots on a helix of radius {sp['radius_m']:g} m about "
              f"({sp['center_m'][0]:g}, {sp['center_m'][1]:g}) m, {sp['turns']:g} turns rising from "
              f"{sp['height_range_m'][0]:g} to {sp['height_range_m'][1]:g} m "
              "(`evaluation.trajectory`), traced against the six BSs with the pool's settings and "
              "positioned snapshot by snapshot (each run's `trajectory.png` draws it).", "",
              "| run | seeds | mean [m] | p50 [m] | p90 [m] |", "|---|---|---|---|---|"]
        for label in dict.fromkeys(e.label for e in moving):
            rs = runs[label]
            L.append(f"| {label} | {len(rs)} | "
                     + " | ".join(_mean(rs, lambda s, k=k: s["sections"]["trajectory"][k])
                                  for k in ("mean_m", "p50_m", "p90_m")) + " |")
    L += ["", *claims_section(claims(bits), runs)]
    return write_keeping_discussion(out, "\n".join(L))


def regenerate(out: str, command: str = COMMAND) -> str:
    return regenerate_page(SUMMARIES, write_page, out, command)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per experiment (default 3)")
    ap.add_argument("--bits", type=int, nargs="+", default=list(PAPER_BITS))
    ap.add_argument("--strategies", action="store_true", help="local + split and joint from scratch at every Q")
    ap.add_argument("--ablation", action="store_true", help="the Transformer without gain mask")
    add_study_arguments(ap, "seed004")
    args = ap.parse_args(argv)
    bad = [q for q in args.bits if not 1 <= q <= 16]
    if bad:
        ap.error(f"--bits: Q must be in 1..16, got {bad}")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")

    def page():
        return regenerate(args.out)
    if not args.pages_only:
        exps = experiments(args.bits, args.strategies, args.ablation)
        run_storing_summaries(seeded_experiments(exps, args.seeds, args.repo), SUMMARIES, args,
                              after=page, keep=KEEP)
    page()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
