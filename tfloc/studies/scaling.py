"""Learning curves (issue 23, point 5): test error against the amount of training data.

    python -m tfloc.studies.scaling [--curve hda etoile_supervised] [--points 2 4 ...]
                                    [--root runs/scaling] [--out docs/results/scaling.md]
                                    [--pages-only] [--set KEY=VALUE ...]

Each point is a shipped config with one data-size override, trained to convergence by
the config's own early stopping (its own ``train.py`` process, resumable). After each
run its summary is stored in ``docs/results/scaling/runs/<curve>-<point>.json``; the
page, its tables, fits and figure are regenerated from those summaries alone
(``--pages-only`` does only that). Every point of one curve is scored on the same test
UEs: the HDA points trace 22 traffic realizations once and test on the last 4, the
etoile points share the seed's test draw.

The fit is a power law, log(error) = a + b log(samples), by least squares on the
points run; its 95 % intervals are Student-t with n - 2 degrees of freedom, so a curve
of three points has wide intervals, and the extrapolation to a paper's scale assumes
the power law holds that far (no floor).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from tfloc.studies.common import Experiment, write_keeping_discussion
from tfloc.studies.summary import (add_study_arguments, interval_cell, load_summaries, machines_text,
                                   run_storing_summaries, training_seconds)

SUMMARIES = "docs/results/scaling/runs"


@dataclass
class Curve:
    """One learning curve: a shipped config, the knob that sets its training data per point."""
    config: str
    knob: str                         # what a point's value means, for the page
    points: dict                      # point value -> overrides
    common: list = field(default_factory=list)
    default: float = 0.0              # the shipped config's point
    paper: dict = field(default_factory=dict)  # metric, value, samples(summary) -> float, scale
    not_run: list = field(default_factory=list)  # (point, overrides, what it costs) not in `points`
    goals: list = field(default_factory=list)    # (statistic, report key, at most this x the
    #                                              baseline's[, baseline: default "knn"])
    bound_before: float = 0.0                    # median error / bound before issue 23
    note: str = ""                               # how the points share a test set


def point_of(summary: dict) -> str:
    """A summary's point as its label writes it ("hda 4" -> "4")."""
    return summary["label"].rsplit(" ", 1)[-1]


def _hda_paper_samples(s: dict) -> float:
    # the paper's 50 training realizations on a 0.8 m grid (4x the UEs of our 1.6 m grid)
    realizations = int(point_of(s))
    return s["n_train_labelled"] / realizations * 4 * 50


def _etoile_paper_samples(s: dict) -> float:
    # the paper's 10 % labelled on a 1 m grid (4x the UEs of our 2 m grid)
    fraction = float(point_of(s))
    return s["n_train_labelled"] / fraction * 4 * 0.1


def _ecc_paper_samples(s: dict) -> float:
    # the paper's pool: 40,000 candidate positions (configs/data/campus.yaml's header), of
    # which the same share as ours is outdoors and in the training split
    return s["n_train_labelled"] / float(point_of(s)) * 40000


CURVES = {
    "hda": Curve(
        "configs/hda.yaml", "training realizations (1.6 m grid)",
        {n: [f"data.realization_splits=[{n}, 2, 4]"] for n in (2, 4, 8, 16)},
        common=["simulation.cars.num_realizations=22"], default=4,
        goals=[("mean", "mean_m", 0.5), ("median", "p50_m", 1.0)], bound_before=86,
        note="Every point traces 22 realizations, validates on the two after its training "
             "block and tests on the last 4 (18-21): the default point has the main job's data "
             "size, not its test realizations (6-9).",
        paper={"metric": "rmse_m", "value": 0.8165, "samples": _hda_paper_samples,
               "scale": "50 training realizations on the 0.8 m grid (seed 002 Table II, HDA RMSE)"},
        not_run=[("0.8 m grid, 16 realizations",
                  "--set simulation.ue_grid.spacing_m=0.8",
                  "4x the UEs per realization: about 4x the 16-realization point's training time "
                  "and tracing")]),
    "etoile_supervised": Curve(
        "configs/etoile_supervised.yaml", "labelled share of the 2 m grid",
        {f: [f"data.labelled_fraction={f}"] for f in (0.05, 0.1, 0.2, 0.5)}, default=0.1,
        goals=[("mean", "mean_m", 0.6)], bound_before=162,
        note="Every point shares the seed's validation and test draws; only the labelled "
             "share of the remaining UEs grows.",
        paper={"metric": "mean_m", "value": 14.25, "samples": _etoile_paper_samples,
               "scale": "10 % labelled on the 1 m grid (seed 000 Table I, ResNet-18 mean)"},
        not_run=[("1 m grid, 10 %", "--set simulation.ue_grid.spacing_m=1.0",
                  "4x the UEs: about the 50 % point's training time, plus 4 min of tracing")]),
    "ecc": Curve(
        "configs/ecc.yaml", "candidate campus UE positions (reflection depth 3)",
        {n: [f"simulation.ue_grid.num_ues={n}"] for n in (1500, 3000, 6000)}, default=3000,
        goals=[("mean", "mean_m", 1.0), ("mean", "mean_m", 1.0, "music")], bound_before=210,
        note="Each point draws and traces its own pool of positions and splits it, so the "
             "test UEs differ between points (more of them at the larger points); kNN is "
             "scored on each point's own test UEs. MUSIC + least squares is in each run's report.",
        paper={"metric": "mean_m", "value": 0.48, "samples": _ecc_paper_samples,
               "scale": "40,000 candidate positions (seed 004, Q = 10, local + joint)"},
        not_run=[("12,000 candidates", "--set simulation.ue_grid.num_ues=12000",
                  "twice the 6,000 point's tracing and stage-I time per epoch")]),
}


def key(curve: str, point) -> str:
    return f"{curve}-{point:g}"


def experiments(curves=None, points=None) -> list:
    out = []
    for name, c in CURVES.items():
        if curves and name not in curves:
            continue
        for p, sets in c.points.items():
            if points and not any(np.isclose(p, q) for q in points):
                continue
            out.append(Experiment(f"{name} {p:g}", c.config, [*c.common, *sets], group=name,
                                  key=key(name, p)))
    return out


# -- fits --------------------------------------------------------------------- #
def power_law(samples, errors, at=None, confidence: float = 0.95) -> dict:
    """Least-squares fit of log(error) = a + b log(samples).

    Returns the exponent ``b`` with its ``confidence`` interval and, with ``at``, the
    fitted error there with the interval of the fitted mean (Student-t, n - 2 degrees of
    freedom; none with fewer than 3 points).
    """
    x, y = np.log(np.asarray(samples, float)), np.log(np.asarray(errors, float))
    n = len(x)
    if n < 2:
        raise ValueError("a power-law fit needs at least 2 points")
    fit = stats.linregress(x, y)
    out = {"n": n, "exponent": fit.slope, "intercept": fit.intercept}
    t = stats.t.ppf(0.5 + confidence / 2, n - 2) if n > 2 else np.inf
    resid = y - (fit.intercept + fit.slope * x)
    s2 = float(resid @ resid) / (n - 2) if n > 2 else np.inf
    sxx = float(((x - x.mean()) ** 2).sum())
    out["exponent_ci"] = (fit.slope - t * fit.stderr, fit.slope + t * fit.stderr) if n > 2 else (-np.inf, np.inf)
    if at is not None:
        x0 = np.log(at)
        mean = fit.intercept + fit.slope * x0
        half = t * np.sqrt(s2 * (1 / n + (x0 - x.mean()) ** 2 / sxx)) if n > 2 else np.inf
        out.update(at=float(at), predicted=float(np.exp(mean)),
                   predicted_ci=(float(np.exp(mean - half)), float(np.exp(mean + half))))
    return out


# -- the page ----------------------------------------------------------------- #
def _curve_rows(name: str, summaries: dict) -> list:
    """The curve's stored summaries, ordered by training samples."""
    rows = [s for k, s in summaries.items() if k.startswith(name + "-")]
    return sorted(rows, key=lambda s: s["n_train_labelled"])


def _stages(convergence: dict) -> str:
    """Epochs run / best epoch, per stage when a method has several ("local: 40 / 32; ...")."""
    cells = [f"{c.get('epochs', '-')} / {c.get('best_epoch', '-')}"
             + ("" if c.get("converged", True) else " (not converged)") for c in convergence.values()]
    if len(cells) > 1:
        cells = [f"{stage}: {cell}" for stage, cell in zip(convergence, cells)]
    return "; ".join(cells) or "-"


def _fmt_ci(lo, hi, digits=2):
    return "unbounded" if not np.isfinite(lo) or not np.isfinite(hi) else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def figure(summaries: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    names = [n for n in CURVES if _curve_rows(n, summaries)]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(6 * max(len(names), 1), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        c, rows = CURVES[name], _curve_rows(name, summaries)
        metric = c.paper["metric"]
        n = np.array([s["n_train_labelled"] for s in rows], float)
        for who, style in (("model", "o-"), ("knn", "s--")):
            e = [s["errors"].get(who, {}).get(metric) for s in rows]
            if None not in e:
                ax.plot(n, e, style, label=f"{'network' if who == 'model' else 'kNN'} ({metric[:-2]})")
        paper_n = c.paper["samples"](rows[-1])
        if len(rows) >= 2:
            fit = power_law(n, [s["errors"]["model"][metric] for s in rows], at=paper_n)
            xs = np.geomspace(n.min(), paper_n, 50)
            ax.plot(xs, np.exp(fit["intercept"]) * xs ** fit["exponent"], ":", color="C0",
                    label=f"power-law fit, exponent {fit['exponent']:.2f}")
        ax.plot([paper_n], [c.paper["value"]], "k*", ms=12, label="paper (its scene)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):        # plain numbers at 1, 2, 5 x 10^k, not 2 x 10^1
            axis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("labelled training samples")
        ax.set_ylabel(f"test {metric[:-2]} error [m]")
        ax.set_title(f"{name}: {c.knob}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_page(summaries: dict, out: str, command: str) -> str:
    lines = ["# Learning curves: test error against training data", "",
             f"Generated by `{command}` from the run summaries in [`{SUMMARIES}`](scaling/runs) "
             "(`--pages-only` regenerates this page from them without training). "
             "Each point is the shipped config with one data-size override, trained until its "
             "early stopping ended it; one seed per point. Errors are test errors; each curve says "
             "which test UEs its points share. Machines: " + machines_text(summaries.values()) + ".", "",
             f"![learning curves]({os.path.splitext(os.path.basename(out))[0]}.png)", ""]
    for name, c in CURVES.items():
        rows = _curve_rows(name, summaries)
        if not rows:
            continue
        metric = c.paper["metric"]
        tests = sorted({s["n_test"] for s in rows})
        lines += [f"## {name} (`{c.config}`): {c.knob}", "",
                  (f"{tests[0]} test UEs." if len(tests) == 1 else "Test UEs per point: "
                   + " / ".join(str(s["n_test"]) for s in rows) + ".")
                  + f" {c.note} The shipped default's size is the row "
                  "marked *.", "",
                  "| point | training samples | epochs run / best | mean [m] | median [m] | RMSE [m] | "
                  "kNN mean [m] | kNN median [m] | mean / kNN | median / kNN | median error / bound | "
                  "training [s] | code |",
                  "|---" * 13 + "|"]
        for s in rows:
            m, k = s["errors"]["model"], s["errors"].get("knn", {})
            point = point_of(s)
            star = " *" if np.isclose(float(point), c.default) else ""
            ratio = s.get("error_over_bound_median")
            lines.append(
                f"| {point}{star} | {s['n_train_labelled']} | {_stages(s['convergence'])} | "
                f"{m['mean_m']:.2f} | {m['p50_m']:.2f} | {m['rmse_m']:.2f} | "
                f"{k.get('mean_m', float('nan')):.2f} | {k.get('p50_m', float('nan')):.2f} | "
                f"{m['mean_m'] / k['mean_m'] if k else float('nan'):.2f} | "
                f"{m['p50_m'] / k['p50_m'] if k else float('nan'):.2f} | "
                f"{interval_cell([ratio], '{:.0f}')} | {interval_cell([training_seconds(s)], '{}')} | "
                f"{s['code_version']} |")
        lines.append("")
        paper_n = c.paper["samples"](rows[-1])
        if len(rows) >= 2:
            n = [s["n_train_labelled"] for s in rows]
            fits = {who: power_law(n, [s["errors"][who][metric] for s in rows], at=paper_n)
                    for who in ("model", "knn") if all(who in s["errors"] for s in rows)}
            f = fits["model"]
            lines += [f"Power-law fit of the network's {metric[:-2]} error over {f['n']} points: exponent "
                      f"{f['exponent']:.3f}, 95 % interval {_fmt_ci(*f['exponent_ci'], digits=3)}"
                      + (f" (kNN: {fits['knn']['exponent']:.3f}, {_fmt_ci(*fits['knn']['exponent_ci'], digits=3)})"
                         if "knn" in fits else "") + ".", "",
                      f"Extrapolated to the paper's scale, {c.paper['scale']}: about {paper_n:,.0f} "
                      f"training samples on our site, where the fit gives {f['predicted']:.2f} m "
                      f"(95 % interval of the fitted curve {_fmt_ci(*f['predicted_ci'])})"
                      + (f"; kNN's fit gives {fits['knn']['predicted']:.2f} m" if "knn" in fits else "")
                      + f". The paper reports {c.paper['value']} m on its own scene, which is not ours.", ""]
        lines += _goal_lines(c, rows)
        done = {point_of(s) for s in rows}
        missing = [f"{p:g}" for p in c.points if f"{p:g}" not in done]
        if missing or c.not_run:
            big = rows[-1]
            per = (training_seconds(big) or 0) / big["n_train_labelled"] / _epochs(big)
            epochs = max(_epochs(r) for r in rows)
            lines.append("Not run:")
            for p in missing:
                lines.append(f"- point {p} (`python -m tfloc.studies.scaling --curve {name} --points {p}`): "
                             f"at the largest run point's {1e3 * per:.2f} ms of training per sample and "
                             f"epoch, for as many epochs as the longest point ran ({epochs}), about "
                             f"{per * epochs * _samples_of(float(p), rows) / 60:.0f} min of training.")
            for label, sets, cost in c.not_run:
                lines.append(f"- {label} (`{sets}`): {cost}.")
            lines.append("")
    idle = [name for name in CURVES if not _curve_rows(name, summaries)]
    if idle:
        lines += ["## Curves not run yet", ""]
        lines += [f"- {name} (`{CURVES[name].config}`, {CURVES[name].knob}: points "
                  + ", ".join(f"{p:g}" for p in CURVES[name].points)
                  + f"): `python -m tfloc.studies.scaling --curve {name}`." for name in idle]
        lines.append("")
    return write_keeping_discussion(out, "\n".join(lines))


def samples_for_ratio(rows: list, key: str, ratio: float) -> float | None:
    """Training samples where the power-law fits of the network's and kNN's ``key`` error
    cross ``ratio`` (network = ratio x kNN); None when the fits do not get there with more
    data (the network's exponent not steeper than kNN's) or fewer than 2 points."""
    if len(rows) < 2:
        return None
    n = [s["n_train_labelled"] for s in rows]
    m = power_law(n, [s["errors"]["model"][key] for s in rows])
    k = power_law(n, [s["errors"]["knn"][key] for s in rows])
    gap = m["exponent"] - k["exponent"]
    if gap >= 0:
        return None
    # log ratio = (a_m - a_k) + gap log N
    return float(np.exp((np.log(ratio) - (m["intercept"] - k["intercept"])) / gap))


#: how the goal lines name a baseline
BASELINE_NAMES = {"knn": "kNN", "music": "MUSIC + LS"}


def _goal_lines(c: Curve, rows: list) -> list:
    """Issue 23's accuracy goals at the default point, and what the fits say it would take."""
    at = [s for s in rows if np.isclose(float(point_of(s)), c.default)]
    if not c.goals or not at or "knn" not in at[0]["errors"]:
        return []
    s = at[0]
    out = [f"Goals at the default point ({s['n_train_labelled']} training samples; one seed, so a "
           "ratio near its goal is not separable from it):"]
    for stat, key, goal, *other in c.goals:
        baseline = other[0] if other else "knn"
        if baseline not in s["errors"]:
            continue
        r = s["errors"]["model"][key] / s["errors"][baseline][key]
        line = f"- {stat} at most {goal:g} x {BASELINE_NAMES.get(baseline, baseline)}'s: {r:.2f} x, "
        if r <= goal:
            out.append(line + "met.")
            continue
        if baseline != "knn":      # the curves fit the network's and kNN's errors only
            out.append(line + f"missed by {r / goal - 1:.0%}.")
            continue
        need = samples_for_ratio(rows, key, goal)
        lo, hi = power_law([q["n_train_labelled"] for q in rows],
                           [q["errors"]["model"][key] for q in rows])["exponent_ci"] if need else (0, 0)
        out.append(line + f"missed by {r / goal - 1:.0%}; " + (
            f"the two fits cross {goal:g} x at about {need:,.0f} training samples "
            f"({need / s['n_train_labelled']:.1f}x the default's)"
            + (", but the network's exponent interval includes zero: not a prediction." if lo <= 0 <= hi
               else ".") if need else
            "the fits do not reach it with more data (the network's exponent is not steeper "
            "than kNN's)."))
    ratio = s.get("error_over_bound_median")
    if ratio is not None:
        out.append(f"- median error over the bound: {ratio:.0f} (before issue 23: {c.bound_before:g}).")
    return out + [""]


def _epochs(summary: dict) -> int:
    """Epochs the run trained (summed over its stages)."""
    return sum(c.get("epochs", 0) for c in summary["convergence"].values()) or 1


def _samples_of(point: float, rows: list) -> float:
    """Training samples a not-run point would have, scaled from the largest run point."""
    big = rows[-1]
    return big["n_train_labelled"] * point / float(point_of(big))


def regenerate(out: str, command: str = "python -m tfloc.studies.scaling") -> str:
    summaries = load_summaries(SUMMARIES)
    if not summaries:
        raise SystemExit(f"no run summaries in {SUMMARIES}: run the study first")
    figure(summaries, os.path.splitext(out)[0] + ".png")
    return write_page(summaries, out, command)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curve", nargs="+", choices=list(CURVES), help="curves to run (default: all)")
    ap.add_argument("--points", nargs="+", type=float, help="points to run (default: all)")
    add_study_arguments(ap, "scaling")
    args = ap.parse_args(argv)
    t0 = time.time()
    if not args.pages_only:
        run_storing_summaries(experiments(args.curve, args.points), SUMMARIES, args)
    regenerate(args.out)
    print(f"wrote {args.out} ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
