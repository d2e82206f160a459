"""Seed 000 (Xu et al.): the Table I (backbones) and Table II (semi-supervised) analogs.

    python -m tfloc.studies.seed000 [--semi] [--sectors] [--ensemble] [--backbones]
                                    [--site default|uneven] [--seeds 3] [--set KEY=VALUE ...]
                                    [--root runs/seed000] [--out docs/results/seed000.md]
                                    [--pages-only] [--executor ray ...]

Every run is a shipped config with overrides, as shipped otherwise (epoch caps, early
stopping), in its own ``train.py`` process (resumable), on the etoile site and split of
``configs/etoile_supervised.yaml``, once per seed. ``--semi`` (the default when no group is
given) trains the supervised ResNet-18 of each seed first; Mean Teacher, FixMatch, FixMatch
with the distance threshold, ours (one round) and ours (iterative) of that seed all start from
it (``init_from``), so they differ only in how they use the unlabelled UEs. ``--sectors``
trains sector rotation with decoupled heads (and the heads without rotation), ``--ensemble``
the ensemble of configs/ensemble.yaml, ``--backbones`` every backbone of Table I on the labels
alone. ``--site uneven`` runs the chosen groups on the paper's uneven sectors
(configs/data/etoile_uneven.yaml; runs/seed000-uneven, docs/results/seed000_uneven.md).
Each run's summary goes into docs/results/seed000[_uneven]/runs/ as it ends, and the page is
generated from the summaries alone (``--pages-only``): cells are means over seeds with 95 %
intervals, and the paper's orders are judged on the same test UEs, paired across seeds and UEs.
Paper scale: ``--set`` the overrides in configs/etoile_supervised.yaml's header.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
from functools import partial

import yaml

from tfloc.run.runner import run_finished
from tfloc.studies.common import Experiment, run_experiments, write_keeping_discussion
from tfloc.studies.summary import (Claim, add_study_arguments, by_experiment, cdf_lines, claims_section,
                                   epochs_cell, interval_cell, load_summaries, provenance, regenerate_page,
                                   run_storing_summaries, seeded_experiments, slug)

#: Table I: backbone -> (parameters [M], FLOPs [G], mean error [m])
PAPER_TABLE1 = {"ShuffleNetV2": (1.26, 0.08, 16.80), "MobileNetV2": (2.23, 0.17, 14.61),
                "ResNet18": (11.18, 0.98, 14.25), "ResNet34": (21.29, 1.95, 13.36),
                "ResNet50": (23.52, 2.19, 13.23), "ResNet101": (42.51, 4.17, 12.63)}
SUMMARIES = "docs/results/seed000/runs"
COMMAND = "python -m tfloc.studies.seed000"
UNEVEN_DATA = "configs/data/etoile_uneven.yaml"
#: ``--site`` -> (page name, runs root, the groups its page plans: what its "not run yet" line
#: and claims cover; a group run with other flags shows too)
SITES = {"default": ("seed000", "runs/seed000", ("supervised", "semi", "sectors", "ensemble", "backbone")),
         "uneven": ("seed000_uneven", "runs/seed000-uneven", ("supervised", "semi", "sectors"))}
#: the supervised evaluators and the model's cost (parameters, FLOPs per sample): Table I's columns
COSTED = ["evaluation.evaluators=[position, per_sector, per_condition, knn, mean, bound, cost]"]
BACKBONES = {"ShuffleNetV2": ["model.type=shufflenet_v2"], "MobileNetV2": ["model.type=mobilenet_v2"],
             **{f"ResNet{d}": [f"model.resnet.depth={d}"] for d in (34, 50, 101)}}
#: Table II: method -> mean error [m] (10 % labelled). The paper runs every experiment on
#: ResNet-34 (its section IV-B), so its supervised reference is Table I's ResNet-34, 13.36 m;
#: ours is the shipped ResNet-18
PAPER_TABLE2 = {"supervised ResNet-18": 13.36, "Mean Teacher": 7.55, "FixMatch": 7.28,
                "FixMatch (distance threshold)": 5.65, "ours": 4.13, "ours (iterative)": 2.23}
SEMI = (("Mean Teacher", "configs/mean_teacher.yaml", []),
        ("FixMatch", "configs/fixmatch.yaml", []),
        ("FixMatch (distance threshold)", "configs/fixmatch_distance.yaml", []),
        ("ours", "configs/consistency.yaml", ["method.consistency.iterations=1"]),
        ("ours (iterative)", "configs/consistency.yaml", []))
SUPERVISED = "supervised ResNet-18"
#: report sections the pages need beyond the summary's own
KEEP = ("per_sector", "semi_supervised", "ensemble", "ensemble_test", "cost")

EXPERIMENTS = [
    Experiment(SUPERVISED, "configs/etoile_supervised.yaml", COSTED, group="supervised",
               paper={"mean_m": PAPER_TABLE2[SUPERVISED], "name": "ResNet18"}),
    *[Experiment(label, cfg, sets, group="semi", paper={"mean_m": PAPER_TABLE2[label]})
      for label, cfg, sets in SEMI],
    Experiment("sector rotation + decoupled heads", "configs/sector_heads.yaml", [], group="sectors"),
    Experiment("decoupled heads, no rotation", "configs/sector_heads.yaml",
               ["method.sector_heads.rotate=false"], group="sectors"),
    Experiment("ensemble", "configs/ensemble.yaml", [], group="ensemble"),
    *[Experiment(f"backbone {name}", "configs/etoile_supervised.yaml", [*sets, *COSTED], group="backbone",
                 paper={"name": name}) for name, sets in BACKBONES.items()],
]

#: the paper's orders: Table II (each method against the next weaker one, and every one
#: against the supervised model it starts from), section III (sectors, ensemble), Table I
CLAIMS = [
    Claim("ours (iterative)", "ours", "mean_m", "Table II: iterating helps"),
    Claim("ours", "FixMatch (distance threshold)", "mean_m", "Table II: ours over FixMatch-distance"),
    Claim("FixMatch (distance threshold)", "FixMatch", "mean_m", "Table II: the distance threshold"),
    Claim("FixMatch", "Mean Teacher", "mean_m", "Table II: FixMatch over Mean Teacher"),
    *[Claim(label, SUPERVISED, "mean_m", "Table II: unlabelled UEs help") for label, _, _ in SEMI],
    Claim("sector rotation + decoupled heads", SUPERVISED, "mean_m", "III-C: sector rotation"),
    Claim("sector rotation + decoupled heads", "decoupled heads, no rotation", "mean_m",
          "III-C: the rotation, not the heads alone"),
    Claim("ensemble", SUPERVISED, "mean_m", "III-B: the ensemble"),
    *[Claim("ensemble", "ensemble", "mean_m", "III-B: the ensemble over each of its members",
            worse_curve=f"member {k}") for k in range(3)],
    Claim("backbone ResNet101", "backbone ResNet50", "mean_m", "Table I"),
    Claim("backbone ResNet50", "backbone ResNet34", "mean_m", "Table I"),
    Claim("backbone ResNet34", SUPERVISED, "mean_m", "Table I: ResNet34 over ResNet18"),
    Claim(SUPERVISED, "backbone MobileNetV2", "mean_m", "Table I: ResNet18 over MobileNetV2"),
    Claim("backbone MobileNetV2", "backbone ShuffleNetV2", "mean_m", "Table I"),
]


def site_sets(path: str) -> list:
    """``--set`` overrides of a site variant: the ``simulation`` keys its file sets itself."""
    def flat(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(f"{prefix}{k}.", v)
            else:
                yield f"{prefix}{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
    with open(path) as fh:
        return list(flat("simulation.", yaml.safe_load(fh).get("simulation", {})))


def _seed(key: str) -> str:
    """The seed index of a seeded experiment's key (``<slug>-s<k>``)."""
    return key.rsplit("-s", 1)[1]


def experiments(groups, seeds: int, root: str, repo: str = ".") -> tuple:
    """(the supervised runs, the rest) of the chosen ``groups``, once per seed; each
    semi-supervised run starts from the supervised run of its seed, which runs first."""
    chosen = {"supervised", *groups}
    runs = seeded_experiments([e for e in EXPERIMENTS if e.group in chosen], seeds, repo)
    first, rest = [e for e in runs if e.group == "supervised"], []
    for e in runs:
        if e.group == "semi":
            method = os.path.splitext(os.path.basename(e.config))[0]
            stage1 = os.path.join(root, f"{slug(SUPERVISED)}-s{_seed(e.key)}")
            e = replace(e, sets=[*e.sets, f"method.{method}.init_from={stage1}"])
        if e.group != "supervised":
            rest.append(e)
    return first, rest


def starts_to_train_again(first, rest, stored, root: str) -> list:
    """The supervised runs of ``first`` that a semi-supervised run of ``rest`` still to run
    starts from (``init_from``) whose summary is ``stored`` but whose run is not under ``root``
    (a fresh clone of the repository): they train again, with the same config and seed, so
    that run has its start. Their stored summaries stay, since the stored semi-supervised runs
    started from those."""
    seeds = {_seed(e.key) for e in rest if e.group == "semi" and e.key not in stored}
    return [e for e in first if e.key in stored and _seed(e.key) in seeds
            and not run_finished(os.path.join(root, e.key))]


def _cells(runs, who="model") -> str:
    return " | ".join(interval_cell([s["errors"][who].get(k) if who in s["errors"] else None for s in runs])
                      for k in ("mean_m", "p50_m", "p90_m"))


def summaries_folder(name: str) -> str:
    """Where the summaries of the page ``name`` (seed000, seed000_uneven) live."""
    return f"docs/results/{name}/runs"


def write_page(summaries: dict, out: str, command: str, site: str = "default") -> str:
    """The page of ``site`` (a key of SITES) from its run summaries, written to ``out``."""
    runs = by_experiment(summaries)
    exps = [e for e in EXPERIMENTS if e.label in runs]
    uneven = site == "uneven"
    name, _, groups = SITES[site]
    planned = [e for e in EXPERIMENTS if e.group in groups or e.label in runs]
    sup = runs.get(SUPERVISED) or runs[exps[0].label]
    s0 = sup[0]
    sim = s0["resolved_config"]["simulation"]
    g = sim["ue_grid"]
    area = (f"x in [{g['x_range_m'][0]:g}, {g['x_range_m'][1]:g}] m, y in [{g['y_range_m'][0]:g}, "
            f"{g['y_range_m'][1]:g}] m" if g.get("x_range_m") else "the scene's box") + f" at {g['spacing_m']:g} m"
    traced = (s0.get("sections") or {}).get("per_sector") or []
    L = ["# Seed 000 (Xu et al.): label-scarce positioning on etoile" + (", uneven sectors" if uneven else ""), "",
         provenance(command, summaries_folder(name), summaries) + " Every run: Sionna RT "
         "`etoile`, the split of `configs/etoile_supervised.yaml`.", "",
         f"- Site: one BS with three sectors, boresights "
         f"{' / '.join(f'{a:g}' for a in sim['sector_azimuths_deg'])} degrees, UE grid {area}; "
         + (f"traced UEs per sector {' / '.join(f'{n:,}' for n in traced)} ({sum(traced):,}); " if traced else "")
         + "the paper's sectors hold 21,745 / 6,764 / 12,308 UEs (53, 17, 30 %) "
         + (f"({UNEVEN_DATA}: this page's site, our etoile with such uneven sectors)." if uneven else
            f"({UNEVEN_DATA} is our site with such uneven sectors: [seed000_uneven.md](seed000_uneven.md))."),
         f"- Scale: {s0['n_train_labelled']} labelled UEs, {s0['n_val']} validation, {s0['n_test']} "
         "test (the paper: 1 m grid, 10 % labelled).",
         "- Errors in metres (2D), test set; the paper's numbers are on its own dataset.", ""]
    seeds = max(len(v) for v in runs.values())
    short = [f"{e.label} ({len(runs.get(e.label, []))})" for e in planned
             if len(runs.get(e.label, [])) < seeds]
    if short:
        L += [f"Not run yet with {seeds} seeds (seeds stored): {'; '.join(short)}.", ""]
    semi = [e for e in exps if e.group in ("supervised", "semi")]
    if len(semi) > 1:
        L += ["## Table II analog: semi-supervised methods", "",
              "Each starts from the supervised ResNet-18 of its seed (`init_from`). The paper runs "
              "every method on ResNet-34 (its section IV-B), so its supervised row is its Table I "
              "ResNet-34; compare each method's gain over its own supervised model.", "",
              "| method | seeds | mean | p50 | p90 | median error / PEB | paper mean (ResNet-34) "
              "| epochs run of cap (best) |", "|---" * 8 + "|"]
        for e in semi:
            rs = runs[e.label]
            L.append(f"| {e.label} | {len(rs)} | {_cells(rs)} "
                     f"| {interval_cell([s.get('error_over_bound_median') for s in rs], '{:.0f}')} "
                     f"| {e.paper['mean_m']:.2f} | {epochs_cell(rs)} |")
        L.append(f"| kNN (labelled UEs, per sector) | {len(sup)} | {_cells(sup, 'knn')} | - | - | - |")
        L += ["", "Median error / PEB: each run's median over its test UEs of the error over the UE's "
              "position error bound (2D Cramér-Rao bound of the pipeline's own channel, "
              "`tfloc.physics.bound`; [bound.md](bound.md)).",
              "", *cdf_lines(runs, [e.label for e in semi], out,
                             "seed 000 Table II analog: test error CDF (every seed's test UEs)",
                             png=os.path.join(os.path.splitext(out)[0], "table2_cdf.png"))]
        L += ["### Pseudo-labels kept (true error known in simulation)", "",
              "| method | seeds | kept share, last round or epoch | kept: true error mean (m) |", "|---" * 4 + "|"]
        for e in semi[1:]:
            shares, errs = [], []
            for s in runs[e.label]:
                ss = (s.get("sections") or {}).get("semi_supervised") or {}
                if ss.get("iterations"):
                    r = ss["iterations"][-1]
                    shares.append(r["kept_fraction"])
                    errs.append(r["kept_error"].get("mean_m"))
                elif ss.get("semi", {}).get("per_epoch", {}).get("pseudo_kept"):
                    pe = ss["semi"]["per_epoch"]
                    shares.append(pe["pseudo_kept"][-1])
                    errs.append(pe["pseudo_true_error_m"][-1])
            L.append(f"| {e.label} | {len(shares)} | {interval_cell(shares, '{:.1f} %', 100)} | "
                     f"{interval_cell(errs)} |")
        L.append("")
    other = [e for e in exps if e.group in ("sectors", "ensemble")]
    if other:
        title = ("Sector rotation, decoupled heads and the ensemble" if any(e.group == "ensemble" for e in other)
                 else "Sector rotation and decoupled heads")
        L += [f"## {title} (labelled UEs only)", "",
              "With rotation every head trains on all labelled UEs, the other sectors' rotated into "
              "its own.", "",
              "| method | seeds | mean | p50 | p90 | mean per sector (0 / 1 / 2) | epochs run of cap (best) |",
              "|---" * 7 + "|"]
        for e in [e for e in exps if e.label == SUPERVISED] + other:
            rs = runs[e.label]
            sectors = sorted({k for s in rs for k in s.get("per_sector_errors", {})})
            per = " / ".join(interval_cell([s["per_sector_errors"].get(k, {}).get("mean_m") for s in rs])
                             for k in sectors) or "-"
            L.append(f"| {e.label} | {len(rs)} | {_cells(rs)} | {per} | {epochs_cell(rs)} |")
        L.append("")
    bb = [e for e in exps if e.group in ("supervised", "backbone")]
    if len(bb) > 1:
        L += ["## Table I analog: backbones (labelled UEs only)", "",
              "FLOPs: TF profiler over one sample at inference (a multiply-add counts 2).", "",
              "| backbone | seeds | parameters [M] | FLOPs [G] | mean | p50 | p90 | epochs run of cap (best) "
              "| paper: params [M] / FLOPs [G] / mean [m] |", "|---" * 9 + "|"]
        for e in bb:
            rs, p = runs[e.label], PAPER_TABLE1[e.paper["name"]]
            c = (rs[0].get("sections") or {}).get("cost") or {}
            flops = f"{c['flops_per_sample'] / 1e9:.3f}" if c else "-"
            L.append(f"| {e.paper['name']} | {len(rs)} | {rs[0]['num_parameters'] / 1e6:.2f} | {flops} | "
                     f"{_cells(rs)} | {epochs_cell(rs)} | {p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} |")
        L.append("")
    labels = {e.label for e in planned}
    L += claims_section([c for c in CLAIMS if {c.better, c.worse} <= labels and (c.better in runs or c.worse in runs)],
                        runs)
    return write_keeping_discussion(out, "\n".join(L))


def regenerate(out: str, command: str = COMMAND) -> str:
    """The default site's page from its stored summaries (what ``--pages-only`` writes)."""
    return regenerate_page(SUMMARIES, write_page, out, command)


def regenerate_uneven(out: str) -> str:
    """The uneven site's page from its stored summaries (``--site uneven --pages-only``)."""
    return regenerate_page(summaries_folder(SITES["uneven"][0]), partial(write_page, site="uneven"), out,
                           COMMAND + " --site uneven")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for group, text in (("semi", "Table II: the semi-supervised methods"),
                        ("sectors", "sector rotation with decoupled heads"),
                        ("ensemble", "the ensemble of configs/ensemble.yaml"),
                        ("backbones", "Table I: every backbone")):
        ap.add_argument(f"--{group}", action="store_true", help=text)
    ap.add_argument("--site", choices=["default", "uneven"], default="default",
                    help="uneven: the paper's uneven sectors (configs/data/etoile_uneven.yaml)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per experiment (default 3)")
    add_study_arguments(ap, "seed000")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    uneven = args.site == "uneven"
    name, root, _ = SITES[args.site]
    if uneven and args.root == SITES["default"][1]:
        args.root = root
    if uneven and args.out == "docs/results/seed000.md":
        args.out = f"docs/results/{name}.md"
    folder = summaries_folder(name)
    groups = [g for g in ("semi", "sectors", "ensemble", "backbones") if getattr(args, g)] or ["semi"]
    groups = ["backbone" if g == "backbones" else g for g in groups]
    command = COMMAND + (" --site uneven" if uneven else "")
    if uneven:
        args.sets = [*site_sets(os.path.join(args.repo, UNEVEN_DATA)), *args.sets]

    def page():
        return regenerate_page(folder, partial(write_page, site=args.site), args.out, command)
    if not args.pages_only:
        first, rest = experiments(groups, args.seeds, args.root, args.repo)
        again = starts_to_train_again(first, rest, load_summaries(folder), args.root)
        if again:
            print("training again the supervised start(s) this machine lacks (their stored summaries "
                  f"stay): {', '.join(e.key for e in again)}", flush=True)
            run_experiments(again, args.root, args.sets, repo=args.repo, executor=args.executor,
                            address=args.address, workers=args.workers, cpus_per_run=args.cpus_per_run)
        for batch in (first, rest):     # every seed's supervised run before what starts from it
            run_storing_summaries(batch, folder, args, after=page, keep=KEEP)
    page()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
