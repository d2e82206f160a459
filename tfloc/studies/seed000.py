"""Seed 000 (Xu et al.): the Table I (backbones) and Table II (semi-supervised) analogs.

    python -m tfloc.studies.seed000 [--semi] [--sectors] [--ensemble] [--backbones]
                                    [--site default|uneven] [--set KEY=VALUE ...]
                                    [--root runs/seed000] [--out docs/results/seed000.md]

Every run is a shipped config with overrides, in its own ``train.py`` process
(resumable: a run with a report is not re-run), on the etoile site and split of
``configs/etoile_supervised.yaml``. ``--semi`` (the default when neither is given)
trains the supervised ResNet-18 once, then Mean Teacher, FixMatch, FixMatch with the
distance threshold, ours (one round) and ours (iterative) all start from that model
(``init_from``), so they differ only in how they use the unlabelled UEs.
``--sectors`` trains sector rotation with decoupled heads (and the heads without
rotation), ``--ensemble`` the ensemble of configs/ensemble.yaml. ``--backbones`` trains
every backbone of Table I on the labels alone and adds its parameters and FLOPs (TF
profiler, one sample). ``--site uneven`` runs the chosen groups on the paper's uneven
sectors (configs/data/etoile_uneven.yaml; default root runs/seed000-uneven, page
docs/results/seed000_uneven.md). Paper scale: ``--set`` the overrides in
configs/etoile_supervised.yaml's header (they reach every run).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tfloc.studies.common import Experiment, run_dir, run_experiments, load_run, training_samples_per_s

#: Table I: backbone -> (parameters [M], FLOPs [G], mean error [m])
PAPER_TABLE1 = {"ShuffleNetV2": (1.26, 0.08, 16.80), "MobileNetV2": (2.23, 0.17, 14.61),
                "ResNet18": (11.18, 0.98, 14.25), "ResNet34": (21.29, 1.95, 13.36),
                "ResNet50": (23.52, 2.19, 13.23), "ResNet101": (42.51, 4.17, 12.63)}
BACKBONES = {"ShuffleNetV2": ["model.type=shufflenet_v2"], "MobileNetV2": ["model.type=mobilenet_v2"],
             **{f"ResNet{d}": [f"model.resnet.depth={d}"] for d in (18, 34, 50, 101)}}
#: Table II: method -> mean error [m] (10 % labelled; the supervised ResNet-18 of Table I: 14.25)
PAPER_TABLE2 = {"supervised ResNet-18": 14.25, "Mean Teacher": 7.55, "FixMatch": 7.28,
                "FixMatch (distance threshold)": 5.65, "ours": 4.13, "ours (iterative)": 2.23}
SEMI = (("Mean Teacher", "configs/mean_teacher.yaml", "mean_teacher", []),
        ("FixMatch", "configs/fixmatch.yaml", "fixmatch", []),
        ("FixMatch (distance threshold)", "configs/fixmatch_distance.yaml", "fixmatch_distance", []),
        ("ours", "configs/consistency.yaml", "consistency", ["method.consistency.iterations=1"]),
        ("ours (iterative)", "configs/consistency.yaml", "consistency", []))


def site_sets(path: str) -> list:
    """``--set`` overrides of a site variant: the ``simulation`` keys its file sets itself."""
    import yaml

    def flat(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(f"{prefix}{k}.", v)
            else:
                yield f"{prefix}{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
    with open(path) as fh:
        return list(flat("simulation.", yaml.safe_load(fh).get("simulation", {})))


def experiments(root: str, semi: bool, backbones: bool, sectors: bool = False,
                ensemble: bool = False) -> list:
    """The chosen groups; each run keeps its place in the full list as its directory name,
    so a study re-run with other groups finds the runs it has."""
    sup = Experiment("supervised ResNet-18", "configs/etoile_supervised.yaml", [], group="supervised",
                     paper={"mean_m": PAPER_TABLE2["supervised ResNet-18"]})
    stage1 = run_dir(root, 0, sup.label)
    exps = [sup]
    exps += [Experiment(label, cfg, [*sets, f"method.{m}.init_from={stage1}"], group="semi",
                        paper={"mean_m": PAPER_TABLE2[label]}) for label, cfg, m, sets in SEMI]
    exps += [Experiment("sector rotation + decoupled heads", "configs/sector_heads.yaml", [],
                        group="sectors"),
             Experiment("decoupled heads, no rotation", "configs/sector_heads.yaml",
                        ["method.sector_heads.rotate=false"], group="sectors"),
             Experiment("ensemble", "configs/ensemble.yaml", [], group="ensemble")]
    exps += [Experiment(f"backbone {name}", "configs/etoile_supervised.yaml", sets, group="backbone",
                        paper={"name": name}) for name, sets in BACKBONES.items() if name != "ResNet18"]
    for i, e in enumerate(exps):
        e.key = os.path.basename(run_dir(root, i, e.label))
    chosen = {"supervised", *(["semi"] if semi else []), *(["sectors"] if sectors else []),
              *(["ensemble"] if ensemble else []), *(["backbone"] if backbones else [])}
    return [e for e in exps if e.group in chosen]


def model_flops(model) -> int:
    """Floating-point operations of one sample through ``model`` (TF profiler; a
    multiply-add counts 2)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph
    specs = {k: tf.TensorSpec([1, *v.shape[1:]], v.dtype, name=k) for k, v in
             zip([i.name for i in model.inputs], model.inputs)}
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(specs)
    _, graph_def = convert_variables_to_constants_v2_as_graph(fn)
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
        prof = tf.compat.v1.profiler.profile(graph=g, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                             options=opts)
    return int(prof.total_float_ops)


def _load(run: str):
    with np.load(os.path.join(run, "errors.npz")) as z:
        errors = {k: z[k] for k in z.files}
    return load_run(run), errors


def _split_sectors(run: str) -> dict:
    """Serving sectors of a run's test and labelled training UEs, and the UEs with paths
    per sector (every run of a study shares the split), so runs scored before the
    ``per_sector`` evaluator existed get the same breakdown from their per-UE errors."""
    from tfloc.data.bundle import load_data
    from tfloc.run.experiment import load_config
    data = load_data(load_config(os.path.join(run, "config.yaml")), progress=False)
    sec = data.paths.sector
    return {"test": sec[data.splits.test], "train": sec[data.splits.train],
            "with_paths": np.bincount(sec[data.paths.num_paths > 0], minlength=sec.max() + 1)}


def _cells(s: dict) -> str:
    return " | ".join(f"{s[k]:.2f}" for k in ("mean_m", "p50_m", "p67_m", "p80_m", "p90_m"))


def write_page(exps, runs: dict, out: str, command: str) -> str:
    import keras
    import tfloc.layers  # noqa: F401  (registers the custom layers model.keras files use)
    import tfloc.models  # noqa: F401
    from tfloc.metrics import cdf_figure
    from tfloc.studies.common import write_keeping_discussion
    import matplotlib.pyplot as plt
    missing = [e.label for e in exps if not os.path.isfile(os.path.join(runs[e.label], "report.json"))]
    exps = [e for e in exps if e.label not in missing]
    reps = {e.label: _load(runs[e.label]) for e in exps}
    sup, _ = reps[exps[0].label]
    sectors = _split_sectors(runs[exps[0].label])
    wp = sectors["with_paths"]
    with_paths = (" / ".join(f"{n:,}" for n in wp) + " ("
                  + ", ".join(f"{100 * n / wp.sum():.0f}" for n in wp) + " %)")
    import yaml
    with open(os.path.join(runs[exps[0].label], "config.yaml")) as fh:
        sim = yaml.safe_load(fh)["simulation"]
    g = sim["ue_grid"]
    site = {"az": " / ".join(f"{a:g}" for a in sim["sector_azimuths_deg"]),
            "area": (f"x in [{g['x_range_m'][0]:g}, {g['x_range_m'][1]:g}] m, "
                     f"y in [{g['y_range_m'][0]:g}, {g['y_range_m'][1]:g}] m" if g.get("x_range_m") else "the scene's box")
            + f" at {g['spacing_m']:g} m"}
    fig_dir = os.path.splitext(out)[0]
    os.makedirs(fig_dir, exist_ok=True)
    lines = ["# Seed 000 (Xu et al.): label-scarce positioning on etoile", "",
             f"Generated by `{command}` (runs in `{os.path.dirname(runs[exps[0].label])}`). "
             "Every run: Sionna RT `etoile`, the split of `configs/etoile_supervised.yaml`, "
             "each run's test set scored once.", "",
             f"- Site: one BS with three sectors, boresights {site['az']} degrees, UE grid {site['area']}; "
             f"traced UEs per sector {' / '.join(f'{n:,}' for n in sup['per_sector'])} "
             f"({sum(sup['per_sector']):,}), with paths {with_paths}; "
             "the paper's sectors hold 21,745 / 6,764 / 12,308 UEs (53, 17, 30 %) "
             "(configs/data/etoile_uneven.yaml is our site with such uneven sectors).",
             f"- Scale: {sup['n_train_labelled']} labelled UEs (10 %), {sup['n_unlabelled']} unlabelled, "
             f"{sup['n_val']} validation, {sup['n_test']} test; 2 m UE grid unless the command sets "
             "otherwise (the paper: 1 m grid, 10 % labelled).",
             "- Errors in metres (2D), test set; the paper's numbers are on its own dataset.", ""]
    if missing:
        lines += [f"- Not run yet (the command resumes them): {', '.join(missing)}.", ""]
    semi = [e for e in exps if e.group in ("supervised", "semi")]
    if len(semi) > 1:
        lines += ["## Table II analog: semi-supervised methods", "",
                  "All start from the supervised ResNet-18 of the first row (`init_from`).", "",
                  "| method | mean | p50 | p67 | p80 | p90 | paper mean | training [s] | training samples/s |",
                  "|---" * 9 + "|"]
        for e in semi:
            rep = reps[e.label][0]
            t = rep.get("timings_s", {}).get("training_s")
            rate = training_samples_per_s(rep)
            lines.append(f"| {e.label} | {_cells(rep['model'])} | {e.paper['mean_m']:.2f} | "
                         + (f"{t:.0f} |" if t is not None else "- |")
                         + (f" {rate:.0f} |" if rate else " - |"))
        k = sup["baselines"].get("knn")
        if k:
            lines.append(f"| kNN (k = {k['k']}, labelled UEs) | {_cells(k)} | - | - | - |")
        lines.append("")
        curves = {e.label: reps[e.label][1][reps[e.label][0]["model_name"]] for e in semi}
        fig = cdf_figure(curves, title="seed 000 Table II analog: test error CDF")
        fig.savefig(os.path.join(fig_dir, "table2_cdf.png"))
        plt.close(fig)
        lines += [f"![CDF]({os.path.basename(fig_dir)}/table2_cdf.png)", ""]
        lines += ["### Pseudo-labels (true error known in simulation)", "",
                  "| method | round | kept | kept share | kept: true error mean / p90 | "
                  "rejected: mean | validation after |", "|---" * 7 + "|"]
        for e in semi[1:]:
            ss = reps[e.label][0].get("semi_supervised", {})
            for r in ss.get("iterations", []):
                ke, re_ = r["kept_error"], r["rejected_error"]
                lines.append(f"| {e.label} | {r['iteration']} | {r['kept']} | {100 * r['kept_fraction']:.1f} % | "
                             f"{ke.get('mean_m', float('nan')):.2f} / {ke.get('p90_m', float('nan')):.2f} | "
                             f"{re_.get('mean_m', float('nan')):.2f} | {r['val_mean_m']:.2f} |")
            pe = ss.get("semi", {}).get("per_epoch", {})
            if pe.get("pseudo_kept"):
                lines.append(f"| {e.label} | last epoch | - | {100 * pe['pseudo_kept'][-1]:.1f} % | "
                             f"{pe['pseudo_true_error_m'][-1]:.2f} / - | - | "
                             f"{ss['semi']['best_val_mean_error_m']:.2f} (best) |")
        lines.append("")
    other = [e for e in exps if e.group in ("sectors", "ensemble")]
    if other:
        test_sec, train_sec = sectors["test"], sectors["train"]
        lines += ["## Sector rotation, decoupled heads and the ensemble (labelled UEs only)", "",
                  f"Labelled training UEs per sector: {' / '.join(str(n) for n in np.bincount(train_sec))}; "
                  f"test UEs: {' / '.join(str(n) for n in np.bincount(test_sec))}. With rotation every "
                  "head trains on all labelled UEs, the other sectors' rotated into its own.", "",
                  "| method | mean | p50 | p67 | p80 | p90 | mean per sector (0 / 1 / 2) "
                  "| training [s] | training samples/s |", "|---" * 9 + "|"]
        for e in [exps[0], *other]:
            rep, errors = reps[e.label]
            err = errors[rep["model_name"]]
            per = " / ".join(f"{err[test_sec == k].mean():.2f}" for k in np.unique(test_sec))
            t = rep.get("timings_s", {}).get("training_s")
            rate = training_samples_per_s(rep)
            lines.append(f"| {e.label} | {_cells(rep['model'])} | {per} | "
                         + (f"{t:.0f} |" if t is not None else "- |") + (f" {rate:.0f} |" if rate else " - |"))
        ens = [reps[e.label][0]["ensemble"] for e in other if e.group == "ensemble"]
        if ens:
            lines += ["", "Ensemble members and combinations (the weights come from validation errors):", "",
                      "| member / combination | weight | mean | p50 | p67 | p80 | p90 |", "|---" * 7 + "|"]
            e0 = ens[0]
            test = [reps[e.label][0] for e in other if e.group == "ensemble"][0]["ensemble_test"]
            for m, s_ in zip(e0["members"], test["members"]):
                lines.append(f"| member {m['member']}: {m['model']}, seed {m['seed']}, "
                             f"{m['parameters'] / 1e6:.2f} M parameters, {m['epochs']} epochs | "
                             f"{m['weight']:.3f} | {_cells(s_)} |")
            lines.append(f"| weighted average | - | {_cells(test['weighted'])} |")
            c = test["consensus"]
            lines.append(f"| consensus (r = {e0['radius_m']:g} m; {100 * c['agreed_share']:.0f} % of UEs "
                         f"with >= 2 agreeing) | - | {_cells(c)} |")
        lines.append("")
    bb = [e for e in exps if e.group in ("supervised", "backbone")]
    if len(bb) > 1:
        lines += ["## Table I analog: backbones (labelled UEs only)", "",
                  "FLOPs: TF profiler over one sample at inference (a multiply-add counts 2).", "",
                  "| backbone | parameters [M] | FLOPs [G] | training [s] | epochs | mean | p50 | p67 | p80 | p90 "
                  "| paper: params / FLOPs / mean |", "|---" * 11 + "|"]
        for e in bb:
            rep = reps[e.label][0]
            name = e.paper.get("name", "ResNet18")
            model = keras.models.load_model(os.path.join(runs[e.label], "model.keras"))
            p = PAPER_TABLE1[name]
            t = rep.get("timings_s", {})
            lines.append(f"| {name} | {model.count_params() / 1e6:.2f} | {model_flops(model) / 1e9:.3f} | "
                         f"{t.get('training_s', float('nan')):.0f} | {t.get('epochs', '-')} | "
                         f"{_cells(rep['model'])} | {p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} |")
        lines.append("")
    return write_keeping_discussion(out, "\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--semi", action="store_true", help="Table II: the semi-supervised methods")
    ap.add_argument("--page-only", action="store_true",
                    help="write the page from the runs that have finished; train nothing")
    ap.add_argument("--backbones", action="store_true", help="Table I: every backbone")
    ap.add_argument("--sectors", action="store_true", help="sector rotation with decoupled heads")
    ap.add_argument("--ensemble", action="store_true", help="the ensemble of configs/ensemble.yaml")
    ap.add_argument("--site", choices=["default", "uneven"], default="default",
                    help="uneven: the paper's uneven sectors (configs/data/etoile_uneven.yaml)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every run")
    ap.add_argument("--root", default=None, help="default: runs/seed000[-uneven]")
    ap.add_argument("--out", default=None, help="default: docs/results/seed000[_uneven].md")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    uneven = args.site == "uneven"
    root = args.root or ("runs/seed000-uneven" if uneven else "runs/seed000")
    out = args.out or ("docs/results/seed000_uneven.md" if uneven else "docs/results/seed000.md")
    semi = args.semi or not (args.backbones or args.sectors or args.ensemble)
    exps = experiments(root, semi, args.backbones, args.sectors, args.ensemble)
    sets = [*(site_sets(os.path.join(args.repo, "configs/data/etoile_uneven.yaml")) if uneven else []),
            *args.sets]
    t0 = time.time()
    runs = ({e.label: os.path.join(root, e.key) for e in exps} if args.page_only
            else run_experiments(exps, root, sets, repo=args.repo))
    cmd = "python -m tfloc.studies.seed000" + "".join(
        f" --{k}" for k in ("semi", "sectors", "ensemble", "backbones") if getattr(args, k)) + (
        " --site uneven" if uneven else "")
    write_page(exps, runs, out, cmd)
    print(f"wrote {out} ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
