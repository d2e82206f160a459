"""Refining a network's estimates against the ray-traced twin, and what a wrong twin costs
(issue 27): docs/results/twin.md.

    python -m tfloc.studies.twin --run street_canyon=RUN [--run etoile=RUN ...]
                                 [--max-samples 200] [--variants exact "no vehicles" ...]
                                 [--set evaluation.twin.slots=1] [--pages-only]

For each site's finished run and each twin variant, the run's test estimates are refined by
the ``twin_refine`` evaluator (``evaluate.py --run-dir RUN --set ...`` into
``RUN/eval/twin-<variant>``) and a summary is stored in docs/results/twin/runs/ (the exact
twin's CDF beside it); the page is generated from the summaries alone (``--pages-only``).
The variant "exact, whole test set" (not run by default) refines every test sample: the
speed measurement and the goals on the whole set.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time


from tfloc.run.runner import load_run_config
from tfloc.run.rescore import evaluate_on_data
from tfloc.studies.common import write_keeping_discussion
from tfloc.studies.summary import load_summaries, machines_text, slug, write_summary
from tfloc.utils import code_version

SUMMARIES = "docs/results/twin/runs"
COMMAND = "python -m tfloc.studies.twin"
#: twin variant -> the overrides that make it (the observed data's TA error is a data setting)
VARIANTS = {"exact": [],
            "exact, whole test set": ["evaluation.twin.max_samples=1000000"],
            "no vehicles": ["evaluation.twin.vehicles=false"],
            "materials -30 %": ["evaluation.twin.material_scale=0.7"],
            "materials +30 %": ["evaluation.twin.material_scale=1.3"],
            "BS 0.5 m off": ["evaluation.twin.bs_offset_m=[0.5, 0.0, 0.0]"],
            "TA +-50 ns": ["data.ta_max_ns=50"]}
#: each variant's file and folder name (slugs of the labels would collide: -30 % and +30 %)
VARIANT_IDS = {"exact": "exact", "exact, whole test set": "exact-whole-test-set", "no vehicles": "no-vehicles", "materials -30 %": "materials-minus-30",
               "materials +30 %": "materials-plus-30", "BS 0.5 m off": "bs-offset-0.5m",
               "TA +-50 ns": "ta-50ns"}
#: variants a study runs unless named
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "exact, whole test set"]
#: what a variant needs of the site (the vehicles variant: moving cars)
NEEDS_CARS = ("no vehicles",)


def summarize(site: str, variant: str, run: str, report: dict) -> dict:
    t = report["twin_refine"]
    return {"site": site, "variant": variant, "sets": VARIANTS[variant], "run": os.path.abspath(run),
            "method": report.get("method"), "model_name": report.get("model_name"),
            "code_version": code_version(), "date": time.strftime("%Y-%m-%d"),
            "machine": report.get("machine"), "twin_refine": t}


def _cell(d: dict, key: str, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(d['before'][key])} -> {fmt.format(d['after'][key])}"


def _ratio(d: dict) -> str:
    return "-" if d["before"] is None else f"{d['before']:.0f} -> {d['after']:.0f}"


def goals(rows: list) -> list:
    """(goal, measured, verdict) rows of issue 27's goals, from the summaries."""
    by = {(s["site"], s["variant"]): s["twin_refine"] for s in rows}
    out = []
    whole = by.get(("etoile", "exact, whole test set")) or by.get(("etoile", "exact"))
    if whole:
        which = "whole test set" if ("etoile", "exact, whole test set") in by else f"{whole['n']} samples"
        los = whole["per_condition"].get("LOS", {}).get("median_error_over_peb")
        if los and los["after"] is not None:
            out.append((f"etoile, exact twin ({which}): median error / PEB of LOS samples at most 5",
                        f"{los['before']:.0f} -> {los['after']:.2f}",
                        "met" if los["after"] <= 5 else f"missed by {los['after'] / 5:.1f}x"))
        p50 = whole["after"]["p50_m"]
        out.append((f"etoile, exact twin ({which}): median error below 0.5 m",
                    f"{whole['before']['p50_m']:.2f} -> {p50:.3f} m",
                    "met" if p50 < 0.5 else f"missed by {p50 - 0.5:.2f} m"))
    canyon = by.get(("street_canyon", "no vehicles"))
    if canyon:
        p50 = canyon["after"]["p50_m"]
        out.append(("street canyon, twin without vehicles: median error below 1 m",
                    f"{canyon['before']['p50_m']:.2f} -> {p50:.2f} m",
                    "met" if p50 < 1 else f"missed by {p50 - 1:.2f} m"))
    worse = [f"{s['site']} / {s['variant']} ({s['twin_refine']['before']['p90_m']:.1f} -> "
             f"{s['twin_refine']['after']['p90_m']:.1f} m)" for s in rows
             if s["twin_refine"]["after"]["p90_m"] > s["twin_refine"]["before"]["p90_m"] + 1e-9]
    out.append(("the 90th percentile never worse than the network's (every row)",
                f"worse in {len(worse)} of {len(rows)} rows" + (f": {', '.join(worse)}" if worse else ""),
                "met" if not worse else "missed"))
    return out


def write_page(summaries: dict, out: str, command: str = COMMAND) -> str:
    rows = sorted(summaries.values(), key=lambda s: (s["site"], list(VARIANTS).index(s["variant"])))
    versions = sorted({s["code_version"] for s in rows})
    lines = ["# Refining the networks' estimates against the digital twin", "",
             f"Generated by `{command}` from the summaries in `{SUMMARIES}/` (`--pages-only` regenerates "
             "it; no number on this page is typed by hand). Machines: "
             f"{machines_text(rows)}. Code versions: " + ", ".join(f"`{v}`" for v in versions) + ".", "",
             "Each row refines one run's test estimates (one trained run, one seed; a fixed random subset "
             "unless the row says whole test set) against the twin (`tfloc.physics.twin`, evaluator "
             "`twin_refine`): several starts on the estimate's uncertainty, re-traces, and a refined "
             "position kept only where its likelihood beats the start's and the twin explains the CSI "
             "to within `max_fit` times the noise power; a multi-BS sample is refined from all its "
             "links jointly. The observed CSI carries the data's TA error (+-5 ns, uniform per link) "
             "except in the TA +-50 ns rows. The mean change is after - before over the same samples, "
             "with a 95 % bootstrap interval over samples (one run: the spread between training runs "
             "is not in it). Seconds are wall time on the machine above, split into tracing the twin "
             "and fitting.", ""]
    table = goals(rows)
    if table:
        lines += ["## Goals (issue 27)", "", "| goal | measured (network -> refined) | verdict |", "|---|---|---|"]
        lines += [f"| {g} | {m} | {v} |" for g, m, v in table]
        lines.append("")
    for site in sorted({s["site"] for s in rows}):
        part = [s for s in rows if s["site"] == site]
        first = part[0]["twin_refine"]
        lines += [f"## {site} ({part[0]['method']}, `{part[0]['model_name']}`)", "",
                  f"{first['starts']} starts per sample (radius from {first['start_radius_from']}); the fit "
                  "threshold of each row chosen on as many validation samples, refined alike"
                  + (f"; {first['slots']} of each link's {first['of_slots']} time slots refined (and in "
                     "the bound)." if first.get("of_slots", 1) > 1 else "."), "",
                  "| twin | samples | fit threshold | median error [m] | mean error [m] | mean change [m] [95 % "
                  "interval] | improved / worsened | median error / PEB (LOS) | seconds per sample (trace + fit) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in part:
            t = s["twin_refine"]
            c = t["mean_change_m"]
            los = t["per_condition"].get("LOS", {}).get("median_error_over_peb")
            sec = t.get("seconds")
            split = (f" ({sec['trace'] / t['n']:.2f} + {sec['fit'] / t['n']:.2f})" if sec and "trace" in sec else "")
            thr = ("none" if t.get("max_fit") is None else "0 (starts kept)" if t["max_fit"] == 0
                   else f"{t['max_fit']:g}") + (
                "" if t.get("max_fit_chosen_on") == "validation" else " (set)")
            lines.append(f"| {s['variant']} | {t['n']} of {t['of_test']} | {thr} | {_cell(t, 'p50_m')} | {_cell(t, 'mean_m')} | "
                         f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] | {100 * t['improved']:.0f} % / "
                         f"{100 * t['worsened']:.0f} % | {_ratio(t['median_error_over_peb'])}"
                         + (f" ({_ratio(los)})" if los else "") + f" | {t['seconds_per_sample']:.2f}{split} |")
        figure = os.path.join(os.path.dirname(SUMMARIES), f"{slug(site)}.png")
        if os.path.isfile(figure):
            lines += ["", f"![{site}: the network's errors and the refined ones, exact twin]"
                      f"({os.path.relpath(figure, 'docs/results')})"]        # the page's own folder
        lines.append("")
    missing = sorted({"etoile", "street_canyon", "campus"} - {s["site"] for s in rows})
    if missing:
        lines += [f"Not run yet: {', '.join(missing)}.", ""]
    return write_keeping_discussion(out, "\n".join(lines))


def regenerate(out: str, command: str = COMMAND) -> str:
    summaries = load_summaries(SUMMARIES)
    if not summaries:
        raise SystemExit(f"no summaries in {SUMMARIES}: run the study first")
    return write_page(summaries, out, command)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], metavar="SITE=RUN_DIR",
                    help="a site's finished run (repeatable)")
    ap.add_argument("--max-samples", type=int, default=200)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="an override for every variant of these runs, e.g. evaluation.twin.slots=1")
    ap.add_argument("--out", default="docs/results/twin.md")
    ap.add_argument("--pages-only", action="store_true")
    args = ap.parse_args(argv)
    for text in [] if args.pages_only else args.run:
        site, _, run = text.partition("=")
        if not run or not os.path.isdir(run):
            ap.error(f"--run {text}: expected SITE=RUN_DIR of a finished run")
        has_cars = load_run_config(run).simulation.cars.num_realizations > 0
        for variant in args.variants:
            path = os.path.join(SUMMARIES, f"{slug(site)}-{VARIANT_IDS[variant]}.json")
            if os.path.isfile(path) or (variant in NEEDS_CARS and not has_cars):
                continue
            sets = ["evaluation.evaluators=[position, twin_refine]",
                    f"evaluation.twin.max_samples={args.max_samples}", *args.sets, *VARIANTS[variant]]
            t0 = time.time()
            report, where = evaluate_on_data(run, None, sets, os.path.join(run, "eval", f"twin-{VARIANT_IDS[variant]}"))
            if variant == "exact":
                os.makedirs(os.path.dirname(SUMMARIES), exist_ok=True)
                shutil.copyfile(os.path.join(where, "twin_refine.png"),
                                os.path.join(os.path.dirname(SUMMARIES), f"{slug(site)}.png"))
            write_summary(path, summarize(site, variant, run, report))
            print(f"{site}, {variant}: {json.dumps(report['twin_refine']['after'])} ({time.time() - t0:.0f} s)",
                  flush=True)
            regenerate(args.out)
    regenerate(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
