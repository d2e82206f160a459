"""Results pages generated from committed run summaries: each committed page must equal what
its study's generator makes of its summaries (so no number in it is typed by hand), and the
interval the tables use matches SciPy's."""
import os

import numpy as np
import pytest
from scipy import stats

from conftest import REPO
from tfloc.studies import bound, defaults, scaling, seed000, seed001, seed002, seed003, seed004, twin
from tfloc.studies.summary import mean_interval

#: page (docs/results/<page>.md) -> (its summaries folder, what regenerates it, the command that does)
PAGES = {m.__name__.rsplit(".", 1)[1]: (m.SUMMARIES, m.regenerate, f"python -m {m.__name__} --pages-only")
         for m in (bound, scaling, defaults, seed000, seed001, seed002, seed003, seed004, twin)}
PAGES["seed000_uneven"] = (seed000.summaries_folder("seed000_uneven"), seed000.regenerate_uneven,
                           "python -m tfloc.studies.seed000 --site uneven --pages-only")


@pytest.mark.parametrize("name", list(PAGES))
def test_the_committed_page_is_what_its_summaries_generate(name, tmp_path, monkeypatch):
    folder, regenerate, command = PAGES[name]
    monkeypatch.chdir(REPO)
    page = os.path.join("docs", "results", f"{name}.md")
    if not os.path.isdir(folder) or not os.listdir(folder):
        pytest.fail(f"no committed run summaries for {page}")
    out = tmp_path / f"{name}.md"
    with open(page) as fh:
        committed = fh.read()
    out.write_text(committed)          # the hand-written discussion below the marker is kept
    text = regenerate(str(out))
    assert text == committed, f"{page} differs from its summaries: {command}"


def test_the_readmes_results_tables_are_what_the_summaries_generate(tmp_path, monkeypatch):
    from tfloc.studies.common import generated_block_markers
    monkeypatch.chdir(REPO)
    with open("README.md") as fh:
        committed = fh.read()
    readme = tmp_path / "README.md"
    readme.write_text(committed)
    assert defaults.regenerate_readme(str(readme)) == committed, \
        "README.md's results tables differ from their summaries: python -m tfloc.studies.defaults --pages-only"
    begin, end = generated_block_markers(defaults.COMMAND)
    block = committed.split(begin)[1].split(end)[0]
    assert "configs/hda.yaml" in block and "| knn (same links) |" in block


def test_a_generated_block_replaces_only_its_own_text():
    from tfloc.studies.common import generated_block_markers, with_generated_block
    begin, end = generated_block_markers("study x")
    doc = f"intro 1.5 m\n{begin}\nold 9 m\n{end}\noutro 2 m\n"
    assert with_generated_block(doc, "study x", "new 3 m") == f"intro 1.5 m\n{begin}\nnew 3 m\n{end}\noutro 2 m\n"
    for broken in ("no markers", f"{end} {begin}", f"{begin}{end}{begin}{end}"):
        with pytest.raises(ValueError, match="expected one block"):
            with_generated_block(broken, "study x", "new")


def test_mean_interval_is_scipys_t_interval():
    v = [11.4, 12.9, 10.2, 13.3]
    m, lo, hi = mean_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref)
    assert mean_interval([3.0])[1:] == (-np.inf, np.inf)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])


def test_a_study_stores_each_runs_summary_as_it_ends_and_skips_stored_ones(tmp_path, monkeypatch):
    import argparse
    import json
    from tfloc.studies import summary
    from tfloc.studies.common import Experiment

    def fake_run_experiments(exps, root, sets, repo, on_done, **where):   # what train.py leaves behind
        for e in exps:
            run = tmp_path / "runs" / e.key
            run.mkdir(parents=True)
            (run / "report.json").write_text(json.dumps({
                "model": {"mean_m": 2.0, "p50_m": 1.0}, "baselines": {"knn": {"mean_m": 3.0}},
                "n_train_labelled": 10, "n_val": 2, "n_test": 4,
                "convergence": {"train": {"epochs": 5, "best_epoch": 3, "converged": True}},
                "timings_s": {"training_s": 1.25},
                # the code that trained it, as the runner records it (x-s0: an older report without)
                **({"code_version": "abc1234"} if e.key == "x-s1" else {})}))
            (run / "config.yaml").write_text("runtime: {seed: 7}\n")
            np.savez(run / "errors.npz", net=np.arange(4.0), knn=np.arange(4.0) + 1)
            on_done(e, str(run), [*sets, *e.sets])

    monkeypatch.setattr(summary, "run_experiments", fake_run_experiments)
    folder = tmp_path / "summaries"
    args = argparse.Namespace(root=str(tmp_path / "runs"), sets=["a=1"], repo=str(tmp_path))
    exps = [Experiment("x seed 0", "configs/x.yaml", key="x-s0"),
            Experiment("x seed 1", "configs/x.yaml", ["runtime.seed=8"], key="x-s1")]
    calls = []
    summary.run_storing_summaries(exps[:1], str(folder), args, after=lambda: calls.append(1))
    summary.run_storing_summaries(exps, str(folder), args, after=lambda: calls.append(2))
    stored = summary.load_summaries(str(folder))
    assert sorted(stored) == ["x-s0", "x-s1"] and calls == [1, 2]     # x-s0 did not run twice
    s = stored["x-s1"]
    assert s["sets"] == ["a=1", "runtime.seed=8"] and s["seed"] == 7 and s["model_curve"] == "net"
    assert s["errors"]["knn"]["mean_m"] == 3.0 and s["error_quantiles"]["knn"][-1] == 4.0
    assert s["convergence"]["train"]["best_epoch"] == 3
    # a run's summary names the code that trained it, not the code the study runs now
    assert s["code_version"] == "abc1234" and stored["x-s0"]["code_version"] == "unknown"


def test_paired_bootstrap_of_one_seed_is_scipys_paired_percentile_bootstrap():
    from tfloc.studies.summary import paired_bootstrap
    rng = np.random.default_rng(3)
    a = rng.gamma(2.0, 3.0, 400)
    b = a + rng.normal(0.4, 2.0, 400)              # b is worse by 0.4 m on average
    got = paired_bootstrap([a], [b], n_boot=20000)
    ref = stats.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                          n_resamples=20000, method="percentile", random_state=0).confidence_interval
    assert got["mean"] == pytest.approx(np.mean(a - b))
    assert (got["low"], got["high"]) == pytest.approx((ref.low, ref.high), abs=0.03)
    assert got["n_seeds"] == 1 and got["n_links"] == 400


def test_paired_bootstrap_carries_the_spread_between_seeds():
    from tfloc.studies.summary import paired_bootstrap
    rng = np.random.default_rng(4)
    links = rng.gamma(2.0, 3.0, 300)
    a = [links + s for s in (-1.5, 0.0, 1.5)]      # three seeds of one method: runs differ
    b = [links + 0.2 * rng.normal(size=300) for _ in range(3)]
    one = paired_bootstrap(a[1:2], b[1:2])
    three = paired_bootstrap(a, b)
    assert three["mean"] == pytest.approx(0.0, abs=0.05)
    assert three["high"] - three["low"] > 5 * (one["high"] - one["low"])   # the seeds' spread
    same = paired_bootstrap([links, links], [links, links])
    assert same == {"mean": 0.0, "low": 0.0, "high": 0.0, "n_seeds": 2, "n_links": 600}
    with pytest.raises(ValueError, match="same number"):
        paired_bootstrap(a, b[:2])
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([links], [links[:-1]])


def test_a_claim_is_reproduced_not_separable_or_reversed_by_its_interval():
    from tfloc.studies.summary import verdict
    assert verdict({"low": -2.0, "high": -0.1}) == "reproduced"           # a lower, as claimed
    assert verdict({"low": -2.0, "high": 0.3}) == "not separable"
    assert verdict({"low": 0.2, "high": 1.0}) == "reversed"
    assert verdict({"low": 0.2, "high": 1.0}, claimed_lower=False) == "reproduced"


def test_runs_pair_by_seed_and_only_on_the_same_test_links():
    from tfloc.studies.summary import paired_link_errors
    run = lambda label, seed, links, err: {"label": label, "seed": seed, "test_links_sha256": links,  # noqa: E731
                                            "model_curve": "net", "link_errors_m": {"net": err, "knn": [9.0]}}
    a = [run("a1", 1, "x", [1.0]), run("a0", 0, "y", [2.0])]
    b = [run("b0", 0, "y", [3.0]), run("b1", 1, "x", [4.0])]
    assert paired_link_errors(a, b) == ([[2.0], [1.0]], [[3.0], [4.0]])
    assert paired_link_errors(a, a, curve_b="knn") == ([[2.0], [1.0]], [[9.0], [9.0]])
    with pytest.raises(ValueError, match="did not test the same links"):
        paired_link_errors(a, [run("b0", 0, "z", [3.0]), run("b1", 1, "x", [4.0])])
    with pytest.raises(ValueError, match="no run of seed 1"):
        paired_link_errors(a, b[:1])


def test_a_claim_can_judge_a_run_against_another_curve_of_the_same_runs():
    """The ensemble against each of its members: the claim names the curve and pairs it."""
    from tfloc.studies.summary import Claim, claim_lines
    runs = {"ens": [_fake_summary("ens", k, [1.0, 2.0, 1.5], knn=[3.0, 4.0, 3.5]) for k in range(2)]}
    rows = claim_lines([Claim("ens", "ens", "mean_m", "III-B", worse_curve="knn")], runs, n_boot=200)
    assert rows[2].startswith("| ens < ens (knn) | III-B | mean | -2.00 [-2.00, -2.00] | 2 | reproduced |")
    rows = claim_lines([Claim("ens", "ens", "mean_m", "III-B", worse_curve="member 1")], runs, n_boot=200)
    assert rows[2] == "| ens < ens (member 1) | III-B | mean | - | 2 | not judged: ens seed 0 has no per-link errors of 'member 1' (it has net, knn) |"


def test_paired_bootstrap_of_the_rmse_difference():
    from tfloc.studies.summary import paired_bootstrap
    rng = np.random.default_rng(5)
    a, b = rng.gamma(2.0, 3.0, 500), rng.gamma(2.0, 3.5, 500)
    got = paired_bootstrap([a], [b], n_boot=20000, statistic="rmse_m")
    rms = lambda x: np.sqrt(np.mean(x ** 2))   # noqa: E731
    ref = stats.bootstrap((a, b), lambda x, y: rms(x) - rms(y), paired=True, vectorized=False,
                          n_resamples=20000, method="percentile", random_state=0).confidence_interval
    assert got["mean"] == pytest.approx(rms(a) - rms(b))
    assert (got["low"], got["high"]) == pytest.approx((ref.low, ref.high), abs=0.05)
    with pytest.raises(ValueError, match="statistic"):
        paired_bootstrap([a], [b], statistic="p50_m")


def _fake_summary(label, seed, link_errors, knn):
    e = np.asarray(link_errors, float)
    scal = lambda x: {"mean_m": float(x.mean()), "rmse_m": float(np.sqrt((x ** 2).mean())),   # noqa: E731
                      "p50_m": float(np.median(x)), "p90_m": float(np.percentile(x, 90))}
    return {"label": f"{label} seed {seed}", "seed": 7 + seed, "code_version": "abc1234",
            "n_train_labelled": 100, "n_val": 20, "n_test": e.size, "test_links_sha256": f"links{seed}",
            "model_curve": "net", "link_errors_m": {"net": e.tolist(), "knn": list(knn)},
            "errors": {"model": scal(e), "knn": scal(np.asarray(knn, float))},
            "condition_accuracy": 0.9, "convergence": {"train": {"epochs": 50, "best_epoch": 30,
                                                                 "converged": True}},
            "conditions_per_split": {"test": {"LOS": 3}}, "link_conditions": {"LOS": 9},
            "timings_s": {"training_s": 60.0 * (1 + seed)},
            "resolved_config": {"data": {"realization_splits": [4, 2, 4], "max_paths": 25,
                                         "num_subcarriers": 64, "subcarrier_spacing_hz": 1.5625e6},
                                "training": {"epochs": 300},
                                "simulation": {"cars": {"num_realizations": 10},
                                               "ue_grid": {"spacing_m": 1.6}}}}


def test_a_seeded_paper_page_judges_the_papers_claims_on_paired_links(tmp_path):
    from tfloc.studies import seed002
    rng = np.random.default_rng(6)
    links = [rng.gamma(2.0, 3.0, 300) for _ in range(3)]
    knn = rng.gamma(2.0, 5.0, 300)
    summaries = {}
    for k in range(3):
        for label, shift in (("HDA", -2.0), ("MDA 0.7 / 0.3", 0.0), ("DCNN (supervised)", 2.0),
                             ("TL (MMD)", -2.0)):
            s = _fake_summary(label, k, np.maximum(links[k] + shift + 0.3 * rng.normal(size=300), 0), knn)
            summaries[f"{label}-{k}"] = s
    text = seed002.write_page(summaries, str(tmp_path / "seed002.md"))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if " < " in line}
    assert rows["HDA < MDA 0.7 / 0.3"].endswith("| 3 | reproduced |")
    assert rows["HDA < DCNN (supervised)"].endswith("| 3 | reproduced |")
    assert rows["HDA < TL (MMD)"].endswith("| 3 | not separable |")
    assert rows["HDA < RDA (adversarial)"].endswith("| 0 | not run |")
    assert "| HDA | 3 | " in text and "0.82" in text                       # beside the paper's RMSE
    assert "P = 25 strongest paths" in text and "64 subcarriers x 1562.5 kHz = 100 MHz" in text
    assert (tmp_path / "seed002_cdf.png").exists()
    one = {k: v for k, v in summaries.items() if k.endswith("-0")}
    text = seed002.write_page(one, str(tmp_path / "one.md"))
    assert "| 1 | one seed: not judged |" in text


def test_the_seed003_page_from_seeded_summaries(tmp_path):
    from tfloc.studies import seed003
    rng = np.random.default_rng(7)
    summaries = {}
    for k in range(2):
        base = rng.gamma(2.0, 3.0, 200)
        for label, shift in (("CNN AE pre-trained (Model 4)", -3.0), ("CNN, scratch (Model 2)", 0.0)):
            s = _fake_summary(label, k, np.maximum(base + shift, 0.1), base)
            s["resolved_config"]["data"]["labelled_fraction"] = 0.1
            s["axis_errors"] = {"average": {"mae_m": 4.0 + k, "nmae": 0.02, "rmse_m": 9.0, "nrmse": 0.05}}
            s["error_over_bound_median"] = 100.0 + 20 * k if shift else None
            summaries[f"{label}-{k}"] = s
    text = seed003.write_page(summaries, str(tmp_path / "seed003.md"))
    assert "| CNN AE pre-trained (Model 4) | 2 | 4.50 [" in text            # mean of 4 and 5
    row4 = next(line for line in text.splitlines() if line.startswith("| CNN AE pre-trained (Model 4) | 2 |"))
    assert "| 110 [" in row4                                               # error / PEB: mean of 100, 120
    row2 = next(line for line in text.splitlines() if line.startswith("| CNN, scratch (Model 2) | 2 |"))
    assert "| - |" in row2                                                 # runs without the bound
    assert "16.87 / 0.1065 / 26.15 / 0.1323" in text                      # the paper's row
    row = next(line for line in text.splitlines() if line.startswith("| CNN AE pre-trained (Model 4) < CNN"))
    assert row.endswith("| 2 | reproduced |")
    assert "| MLP AE pre-trained (Model 3) < MLP, scratch (Model 1) |" in text and "not run" in text


def test_pages_name_the_machines_their_runs_trained_on():
    from tfloc.studies.summary import machines_text
    m = {"cpu_model": "AMD EPYC", "cpu_cores": 2, "gpus": 0, "tensorflow": "2.19.1"}
    assert machines_text([{"machine": m}, {"machine": m}, {}]) == \
        "2 runs on AMD EPYC, 2 cores, TensorFlow 2.19.1; 1 run: machine not recorded"
    assert machines_text([{"machine": {**m, "gpus": 1, "cpu_cores": 8}}]) == \
        "1 run on AMD EPYC, 8 cores, 1 GPU, TensorFlow 2.19.1"


def test_the_scale_page_is_what_the_summaries_generate(tmp_path, monkeypatch):
    from tfloc.studies import scale
    monkeypatch.chdir(REPO)
    out = tmp_path / "scale.md"
    committed = open("docs/scale.md").read()
    out.write_text(committed)
    assert scale.write_page(str(out)) == committed, \
        "docs/scale.md differs from its summaries: python -m tfloc.studies.scale"


def test_wall_time_places_the_longest_runs_first_on_the_first_free_worker():
    import itertools
    from tfloc.studies.scale import wall_time
    d = [5.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0]
    assert wall_time(d, 1) == sum(d) and wall_time(d, 10) == 5.0
    # LPT's makespan is within 4/3 of the best assignment's (Graham 1969); here it is the best
    best = min(max(sum(x for x, w in zip(d, a) if w == k) for k in range(3))
               for a in itertools.product(range(3), repeat=len(d)))
    assert best == 7.0 and wall_time(d, 3) == 7.0
    with pytest.raises(ValueError, match="at least 1"):
        wall_time(d, 0)


def test_the_wall_time_estimate_takes_each_runs_own_time_first():
    """A run's own stored time, else its experiment's other seeds, else its config's defaults run."""
    from tfloc.studies.common import Experiment
    from tfloc.studies.scale import study_durations
    from tfloc.studies.summary import seeded_experiments
    exps = seeded_experiments([Experiment("a", "configs/hda.yaml", key="a"),
                               Experiment("b", "configs/hda.yaml", key="b")], 2, REPO)
    run = lambda t: {"timings_s": {"training_s": t, "simulation_s": 1.0}, "config": "configs/hda.yaml"}  # noqa: E731
    study = {"a-s0": run(99.0), "a-s1": run(199.0)}
    durations, used, *kinds = study_durations(exps, study, {"d": run(9.0)})
    assert durations == [100.0, 200.0, 10.0, 10.0] and kinds == [2, 0, 2] and len(used) == 3
    durations, _, *kinds = study_durations(exps, {"a-s0": run(99.0)}, {"d": run(9.0)})
    assert durations == [100.0, 100.0, 10.0, 10.0] and kinds == [1, 1, 2]
    with pytest.raises(SystemExit, match="defaults-study run of configs/hda.yaml"):
        study_durations(exps, {"a-s0": run(99.0)}, {})
    # a run resumed mid-stage that did not keep its earlier processes' time is not measured
    partial = {**run(5.0), "resumed": {"train": 40}}
    durations, _, *kinds = study_durations(exps, {"a-s0": run(99.0), "a-s1": partial}, {"d": run(9.0)})
    assert durations == [100.0, 100.0, 10.0, 10.0] and kinds == [1, 1, 2]
    kept = {**partial, "timings_s": {**partial["timings_s"], "training_s_earlier": 150.0}}
    durations, _, *kinds = study_durations(exps, {"a-s0": run(99.0), "a-s1": kept}, {"d": run(9.0)})
    assert durations == [100.0, 6.0, 10.0, 10.0] and kinds == [2, 0, 2]


def test_the_bound_page_from_seeded_summaries(tmp_path):
    from tfloc.studies import bound
    peb = lambda los, p90: {"LOS": {"median": los}, "NLOS": {"median": 4 * los}, "p90": p90}   # noqa: E731
    summaries = {}
    for k, los in enumerate((0.01, 0.03)):
        s = _fake_summary("reference: 98 MHz, 20 dB, 2x8 cross-pol (32), TA +-5 ns", k, [2.0, 4.0], [3.0, 5.0])
        s["resolved_config"]["simulation"].update(max_depth=2)
        s["sections"] = {"bound": {"mirror": {"peb_m": peb(los, 0.2), "error_over_peb": {"median": 100.0 + k}},
                                   "nuisance": {"peb_m": peb(0.1, float("inf")),
                                                "error_over_peb": {"LOS": {"median": 30.0}}}}}
        summaries[f"ref-{k}"] = s
    text = bound.write_page(summaries, str(tmp_path / "bound.md"))
    row = next(line for line in text.splitlines() if line.startswith("| reference"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2" and cells[2].startswith("0.02 [") and cells[2].endswith("] m")   # mean of 1 and 3 cm
    assert cells[8].startswith("100 [")          # error over PEB: mean of 100 and 101
    assert "unbounded" not in row                # only the nuisance p90, not shown, is unbounded
    assert "| 20 MHz (136 x 147 kHz) | " not in text       # settings without runs are left out
    assert "| 20 MHz (136 x 147 kHz) < reference" in text and "bound: not run yet | mean | - | 0 | not run |" in text


def test_the_bound_page_judges_whether_the_model_follows_the_bound(tmp_path):
    from tfloc.studies import bound
    rng = np.random.default_rng(9)
    peb = lambda los: {"LOS": {"median": los}, "NLOS": {"median": 4 * los}, "p90": 10 * los}   # noqa: E731
    summaries = {}
    for k in range(3):
        links = rng.gamma(2.0, 3.0, 300)
        for label, los, shift in (("reference: 98 MHz, 20 dB, 2x8 cross-pol (32), TA +-5 ns", 0.02, 0.0),
                                  ("20 MHz (136 x 147 kHz)", 0.05, 2.0),     # bound up, error up
                                  ("0 dB", 0.2, -2.0),                       # bound up, error down
                                  ("TA +-50 ns", 0.021, 5.0)):               # bound still
            s = _fake_summary(label, k, np.maximum(links + shift + 0.2 * rng.normal(size=300), 0), links)
            s["resolved_config"]["simulation"].update(max_depth=2)
            s["sections"] = {"bound": {"mirror": {"peb_m": peb(los), "error_over_peb": {"median": 100.0}},
                                       "nuisance": {"peb_m": peb(0.1), "error_over_peb": {"LOS": {"median": 30.0}}}}}
            summaries[f"{label}-{k}"] = s
    text = bound.write_page(summaries, str(tmp_path / "bound.md"))
    row = lambda end: next(line for line in text.splitlines() if f"< {end} |" in line)   # noqa: E731
    assert "x2.50" in row("20 MHz (136 x 147 kHz)") and row("20 MHz (136 x 147 kHz)").endswith("| 3 | reproduced |")
    assert "x10.00" in row("0 dB") and row("0 dB").endswith("| 3 | reversed |")
    assert "no direction to follow): TA +-50 ns (bound (LOS median) x1.05)" in text
    assert "| 8x4 array (64 antennas) < reference" in text and "not run" in text
    for k in range(3):                       # a setting that tested other links is not judged
        s = dict(summaries[f"0 dB-{k}"], test_links_sha256=f"other{k}")
        summaries[f"0 dB-{k}"] = s
    text = bound.write_page(summaries, str(tmp_path / "bound.md"))
    assert "did not test the same links" in row("0 dB") and "| 3 | not judged:" in row("0 dB")


def test_the_seed004_page_from_seeded_summaries(tmp_path):
    from tfloc.studies import seed004
    from tfloc.studies.summary import epochs_cell
    rng = np.random.default_rng(8)
    summaries = {}
    for k in range(2):
        base = rng.gamma(2.0, 5.0, 150)
        for label, shift, eta in (("local + joint (paper), Q = 10", 0.0, 0.0625),
                                  ("local + split, Q = 10", 4.0, 0.0625), ("lossless CSI", -1.0, 1.0),
                                  ("local + joint (paper), Q = 4", 1.0, 0.025)):
            s = _fake_summary(label, k, base + shift, base + 2)
            q = label.split("Q = ")[1] if "Q = " in label else None
            s["sets"] = [f"model.ecc.bits={q}"] if q else []
            s["error_over_bound_median"] = 80.0 + 10 * k
            s["errors"]["music"] = dict(s["errors"]["knn"])
            s["sections"] = {"fronthaul": {"eta": eta},
                             "accumulation": {"mean_m": list(np.linspace(20, 10 + k, 24))},
                             "trajectory": {"mean_m": 7.0 + k, "p50_m": 6.0, "p90_m": 9.0,
                                            "spiral": {"center_m": [155.0, 100.0], "radius_m": 20.0,
                                                       "turns": 3.0, "height_range_m": [1.5, 28.5],
                                                       "snapshots": 240}}}
            summaries[f"{label}-{k}"] = s
    (tmp_path / "results").mkdir()
    out = tmp_path / "results" / "seed004.md"
    text = seed004.write_page(summaries, str(out))
    row = next(line for line in text.splitlines() if line.startswith("| local + joint (paper), Q = 10 | 2 | 6.25 %"))
    assert "| 6.25 % | " in row and "0.48 | 0.83" in row                 # ours from the run, the paper's
    assert row.split(" | ")[-2] == "85 [21, 149]"                         # median error / PEB, from the runs
    # Table II shows every stored Q, whichever --bits the last study ran with, and judges Q = 10 against Q = 4
    q4 = next(line for line in text.splitlines() if line.startswith("| local + joint (paper), Q = 4 | 2 | 2.50 %"))
    assert "0.56 | 0.97" in q4
    table2 = next(line for line in text.splitlines() if line.startswith("| local + joint (paper), Q = 10 < local + joint (paper), Q = 4"))
    assert table2.endswith("| 2 | reproduced |")
    lossless = next(line for line in text.splitlines() if line.startswith("| lossless CSI < local + joint (paper), Q = 10"))
    assert lossless.endswith("| 2 | reproduced |")
    acc = next(line for line in text.splitlines() if line.startswith("| lossless CSI | 20.00"))
    assert acc.endswith("| 10.50 [4.15, 16.85] |")                     # after 24: mean of 10 and 11
    claim = next(line for line in text.splitlines() if line.startswith("| local + joint (paper), Q = 10 < local + split"))
    assert claim.endswith("| 2 | reproduced |")
    assert "![training strategies" in text and "(seed004/cdf.png)" in text
    fig9 = text.split("## Fig. 9 analog")[1].split("##")[0]               # the strategies at Q = 10
    assert [line.split(" | ")[0] for line in fig9.splitlines() if line.startswith("| ") and "[m]" not in line] == [
        "| lossless CSI", "| local + joint (paper), Q = 10", "| local + split, Q = 10"]
    fig11 = text.split("## Fig. 11 analog")[1].split("##")[0]              # each network's epochs, none for a baseline
    rows = {line.split(" | ")[0][2:]: line for line in fig11.splitlines() if line.startswith("| ") and "[m]" not in line}
    assert rows["lossless CSI"].endswith(f"| {epochs_cell([summaries['lossless CSI-0'], summaries['lossless CSI-1']])} |")
    assert rows["kNN on the raw CSI (the same test UEs)"].endswith("| - |")
    assert "240 snapshots on a helix of radius 20 m about (155, 100) m, 3 turns rising from 1.5 to 28.5 m" in text
    assert "| local + joint (paper), Q = 10 | 2 | 7.50 [" in text.split("## A moving UE")[1]
    assert (tmp_path / "results" / "seed004" / "cdf.png").exists()
    assert (tmp_path / "results" / "seed004" / "error_vs_q.png").exists()


def test_the_seed000_page_from_seeded_summaries(tmp_path):
    from tfloc.studies import seed000
    rng = np.random.default_rng(9)
    summaries = {}
    for k in range(2):
        base = rng.gamma(2.0, 5.0, 120)
        for label, shift in (("supervised ResNet-18", 0.0), ("Mean Teacher", -0.05),
                             ("sector rotation + decoupled heads", -3.0), ("backbone ResNet34", 1.0)):
            s = _fake_summary(label, k, np.maximum(base + shift + 0.5 * rng.normal(size=120), 0.1), base + 3)
            s["resolved_config"]["simulation"].update(
                sector_azimuths_deg=[30.0, 150.0, 270.0], ue_grid={"spacing_m": 2.0})
            s["num_parameters"] = 11_180_000
            s["per_sector_errors"] = {"0": {"mean_m": 5.0 + k}, "1": {"mean_m": 7.0}, "2": {"mean_m": 20.0}}
            s["sections"] = {"per_sector": [100, 200, 300], "cost": {"flops_per_sample": 1.82e9},
                             "semi_supervised": {"semi": {"per_epoch": {
                "pseudo_kept": [0.5, 0.25], "pseudo_true_error_m": [9.0, 8.0 + k]}}}}
            summaries[f"{label}-{k}"] = s
    text = seed000.write_page(summaries, str(tmp_path / "seed000.md"), "python -m tfloc.studies.seed000")
    lines = text.splitlines()
    row = lambda start: next(line for line in lines if line.startswith(start))   # noqa: E731
    assert "| 13.36 |" in row("| supervised ResNet-18 | 2 |") and "| 7.55 |" in row("| Mean Teacher | 2 |")
    assert row("| Mean Teacher | 2 | 25.0 % [").endswith("| 8.50 [2.15, 14.85] |")    # the last epoch's kept UEs
    assert row("| sector rotation + decoupled heads | 2 |").count("5.50 [") == 1     # sector 0: 5 and 6
    assert row("| ResNet34 | 2 | 11.18 | 1.820 |").endswith("| 21.29 / 1.95 / 13.36 |")
    assert row("| sector rotation + decoupled heads < supervised ResNet-18 |").endswith("| 2 | reproduced |")
    assert row("| Mean Teacher < supervised ResNet-18 |").endswith("| 2 | not separable |")
    assert row("| ensemble < supervised ResNet-18 |").endswith("| 0 | not run |")
    assert "traced UEs per sector 100 / 200 / 300 (600)" in text


def test_seed000_semi_runs_start_from_the_supervised_run_of_their_seed(tmp_path):
    from tfloc.studies import seed000
    first, rest = seed000.experiments(["semi"], 2, "runs/x", REPO)
    assert [e.key for e in first] == ["supervised-resnet-18-s0", "supervised-resnet-18-s1"]
    mt = [e for e in rest if e.label.startswith("Mean Teacher")]
    assert [e.sets[-1] for e in mt] == ["method.mean_teacher.init_from=runs/x/supervised-resnet-18-s0",
                                        "method.mean_teacher.init_from=runs/x/supervised-resnet-18-s1"]
    assert "runtime.seed=8" in mt[1].sets and all(e.group == "semi" for e in rest)


def test_the_seed001_page_from_seeded_summaries(tmp_path):
    from tfloc.studies import seed001
    rng = np.random.default_rng(8)
    summaries = {}
    gu, scratch = seed001.TABLE_SETTINGS[4], seed001.TABLE_SETTINGS[0]
    for k in range(3):
        base = rng.gamma(2.0, 3.0, 200)
        for s, shift in ((gu, -2.0), (scratch, 0.0)):
            for f in (0.2, 1.0) if s is scratch else (0.2,):
                label = seed001.label("LOS", "NLL", s, f)
                x = _fake_summary(label, k, np.maximum(base + shift - 3 * (f == 1.0), 0.1), base)
                x["resolved_config"]["data"]["snr_db"] = [20.0, 30.0]
                x["sections"] = {"calibration": {"crps_m": 1.0 + k, "within_1sigma": {"observed": 0.4}},
                                 "transfer": {"target": "etoile/sector0", "target_fraction": f,
                                              "sources": ["campus_ground/bs0"], "sub_array": [2, 4],
                                              "environments": {
                                                  "campus_ground/bs0": {"samples": 2054, "los_share": 0.55},
                                                  "etoile/sector0": {"samples": 2489, "los_share": 0.978}}}}
                if s is gu:
                    x["convergence"] = {"source": {"epochs": 70, "epoch_cap": 150, "best_epoch": 62},
                                        **x["convergence"]}
                    x["resumed"] = {"source": "restored"} if k else {}
                summaries[f"{label}-{k}"] = x
    text = seed001.write_page(summaries, str(tmp_path / "seed001.md"))
    assert "## Table III analog: LOS target (`etoile/sector0`), NLL target loss, 20 % of the target data" in text
    assert "| `etoile/sector0` | LOS target | 2489 | 98 % | 100 / 20 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| MEML (NLL source, GU) | 3 |"))
    assert "| 0.3925 | 2.00 [" in row and "| 0.1769 | 40 % [" in row and "*restored*" in row
    claim = next(line for line in text.splitlines()
                 if line.startswith("| LOS, NLL target, MEML (NLL source, GU), 20 % < LOS, NLL target, Scratch"))
    assert claim.endswith("| 3 | reproduced |")
    assert "not run" in text                     # the claims whose runs are missing say so
    assert (tmp_path / "seed001" / "los_fractions.png").exists()
    assert "trained their source stage (1) 1.0 (1.0-1.0)" in text and "restored it (2) 2.5 (2.0-3.0)" in text


def test_the_uneven_sites_page_plans_only_its_own_groups(tmp_path, monkeypatch):
    """seed000 --site uneven runs the semi-supervised and sector groups: its page and claims
    cover those, not the default site's ensemble and backbones."""
    monkeypatch.chdir(REPO)
    text = seed000.regenerate_uneven(str(tmp_path / "page.md"))
    assert text.splitlines()[0].endswith("uneven sectors")
    assert "docs/results/seed000_uneven/runs/" in text and "this page's site" in text
    assert "ensemble" not in text.lower() and "backbone" not in text.lower()
