"""A study's runs on Ray: two local workers run a tiny study's runs at once, each with its
share of the cores; finished runs are not repeated; a failed run stops the study with its log.
The trainer is a stand-in script (what matters here is where and how runs are launched)."""
import json
import os
import sys
import textwrap

import pytest

from conftest import REPO
from tfloc.studies.common import Experiment, run_experiments

FAKE_TRAIN = textwrap.dedent("""
    import json, os, sys, time
    args = sys.argv[1:]
    run = args[args.index("--run-dir") + 1]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    os.makedirs(run, exist_ok=True)
    start = time.time()
    if "fail=1" not in sets:    # the resolved config, as train.py writes it
        from tfloc.config import dump_yaml
        from tfloc.run.experiment import load_config
        dump_yaml(load_config(args[args.index("--config") + 1], sets), os.path.join(run, "config.yaml"))
    ck = os.path.join(run, "checkpoints", "done-source")
    restored = open(ck + ".json").read() if os.path.isfile(ck + ".json") else None
    if not restored:            # a finished stage, as a method's fit leaves it
        os.makedirs(os.path.dirname(ck), exist_ok=True)
        open(ck + ".json", "w").write(run)
        open(ck + ".weights.h5", "w").write("weights")
    time.sleep(3)
    if "fail=1" in sets:
        print("stand-in trainer: told to fail"); sys.exit(3)
    json.dump({"model": {"mean_m": 1.5, "rmse_m": 2.0}, "start": start, "end": time.time(),
               "threads": os.environ.get("TF_NUM_INTRAOP_THREADS"), "cwd": os.getcwd(), "restored": restored,
               "sets": sets}, open(os.path.join(run, "report.json"), "w"))
""")


@pytest.fixture
def fake_train(tmp_path):
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAIN)
    return str(path)


def test_two_ray_workers_run_a_study_at_once_and_resume(tmp_path, fake_train):
    pytest.importorskip("ray")
    exps = [Experiment(f"point {k}", "configs/hda.yaml", [f"runtime.seed={k}"], key=f"p{k}") for k in range(2)]
    done = []
    run_experiments(exps, str(tmp_path / "runs"), ["training.epochs=3"], repo=REPO, executor="ray", workers=2,
                    train_script=fake_train, on_done=lambda e, run, sets: done.append((e.key, sets)))
    reps = [json.loads((tmp_path / "runs" / f"p{k}" / "report.json").read_text()) for k in range(2)]
    assert sorted(done) == [("p0", ["training.epochs=3", "runtime.seed=0"]),
                            ("p1", ["training.epochs=3", "runtime.seed=1"])]
    assert max(r["start"] for r in reps) < min(r["end"] for r in reps)      # the two overlapped
    assert {r["threads"] for r in reps} == {str(max(1, os.cpu_count() // 2))}   # each its share
    assert {r["cwd"] for r in reps} == {REPO}
    assert all("export.enabled=false" in r["sets"] for r in reps)
    # again: nothing runs (the stand-in would take 3 s and rewrite the reports), both are reported done
    done.clear()
    mtimes = [(tmp_path / "runs" / f"p{k}" / "report.json").stat().st_mtime for k in range(2)]
    run_experiments(exps, str(tmp_path / "runs"), ["training.epochs=3"], repo=REPO, executor="ray", workers=2,
                    train_script=fake_train, on_done=lambda e, run, sets: done.append(e.key))
    assert sorted(done) == ["p0", "p1"]
    assert mtimes == [(tmp_path / "runs" / f"p{k}" / "report.json").stat().st_mtime for k in range(2)]
    # a finished run of another config in an experiment's place is refused, not counted as done
    with pytest.raises(RuntimeError, match=r"another config .* \(training.epochs: 3 != 4\)"):
        run_experiments(exps, str(tmp_path / "runs"), ["training.epochs=4"], repo=REPO,
                        train_script=fake_train)


def test_a_failed_run_on_ray_stops_the_study_with_its_log(tmp_path, fake_train):
    pytest.importorskip("ray")
    exps = [Experiment("broken", "configs/hda.yaml", ["fail=1"], key="broken")]
    with pytest.raises(RuntimeError, match=r"(?s)broken failed \(exit 3\).*told to fail"):
        run_experiments(exps, str(tmp_path / "runs"), repo=REPO, executor="ray", workers=1,
                        train_script=fake_train)


def test_an_unknown_executor_is_refused(tmp_path, fake_train):
    exps = [Experiment("a", "configs/hda.yaml", key="a")]
    with pytest.raises(ValueError, match="executor: expected 'local' or 'ray'"):
        run_experiments(exps, str(tmp_path / "runs"), repo=REPO, executor="slurm", train_script=fake_train)


def test_the_local_executor_runs_one_after_another(tmp_path, fake_train):
    exps = [Experiment(f"point {k}", "configs/hda.yaml", key=f"p{k}") for k in range(2)]
    run_experiments(exps, str(tmp_path / "runs"), repo=REPO, train_script=fake_train)
    reps = [json.loads((tmp_path / "runs" / f"p{k}" / "report.json").read_text()) for k in range(2)]
    # one after another, each with the threads it inherits (the executor pins none)
    assert reps[0]["end"] <= reps[1]["start"]
    assert reps[0]["threads"] == os.environ.get("TF_NUM_INTRAOP_THREADS")


def test_runs_with_one_share_key_train_the_shared_stage_once(tmp_path, fake_train):
    from tfloc.studies.summary import seeded_experiments
    exps = [Experiment(f"target {t}", "configs/hda.yaml", [], key=f"t{t}", share_key="src",
                       share_stages=("source",)) for t in "ab"]
    exps.append(Experiment("scratch", "configs/hda.yaml", [], key="scratch"))
    seeded = seeded_experiments(exps[:2], 2, REPO) + seeded_experiments(exps[2:], 1, REPO)
    root = tmp_path / "runs"
    run_experiments(seeded, str(root), repo=REPO, train_script=fake_train)
    rep = {e.key: json.loads((root / e.key / "report.json").read_text()) for e in seeded}
    # per seed: the first run trains the stage, the other target restores that one's; seeds and
    # runs without the key never share
    assert rep["ta-s0"]["restored"] is None and rep["ta-s1"]["restored"] is None
    assert rep["tb-s0"]["restored"] == str(root / "ta-s0") and rep["tb-s1"]["restored"] == str(root / "ta-s1")
    assert rep["scratch-s0"]["restored"] is None
    # a later study run whose provider finished before (a peer, not re-run) still shares it
    (root / "tb-s0").rename(tmp_path / "old")
    run_experiments([e for e in seeded if e.key == "tb-s0"], str(root), repo=REPO, train_script=fake_train,
                    peers=[e for e in seeded if e.key == "ta-s0"])
    assert json.loads((root / "tb-s0" / "report.json").read_text())["restored"] == str(root / "ta-s0")


def test_a_study_run_with_only_shares_stages_of_the_groups_it_leaves_out(tmp_path, monkeypatch):
    """``--only b`` still lends b's runs the finished stages of a's stored runs (seed by seed)."""
    from tfloc.studies import summary
    exps = [Experiment(f"{g} target", "configs/hda.yaml", key=g, group=g, share_key="src",
                       share_stages=("source",)) for g in "ab"]
    folder = tmp_path / "docs" / "results" / "study" / "runs"
    folder.mkdir(parents=True)
    (folder / "a-s0.json").write_text("{}")          # a stored run of the group left out
    seen = {}
    monkeypatch.setattr(summary, "run_experiments",
                        lambda todo, *a, peers=(), **k: seen.update(todo=[e.key for e in todo],
                                                                    peers=[e.key for e in peers]))
    monkeypatch.chdir(tmp_path)
    summary.seeded_study_main("", "study", exps, lambda *a: None, ["--seeds", "2", "--only", "b",
                                                                    "--repo", REPO], groups=("a", "b"))
    assert seen == {"todo": ["b-s0", "b-s1"], "peers": ["a-s0"]}


def test_a_resumed_runs_log_keeps_its_earlier_processes_output(tmp_path):
    from tfloc.studies.executors import run_logged
    log = tmp_path / "run.log"
    for word in ("killed", "resumed"):
        assert run_logged([sys.executable, "-c", f"print('{word}')"], str(log)) == 0
    assert log.read_text().split() == ["killed", "resumed"]


def test_a_fresh_clone_trains_again_only_the_supervised_starts_its_pending_runs_need(tmp_path, monkeypatch):
    """seed000's semi-supervised runs start from their seed's supervised run (``init_from``): on
    a clone that has the supervised summaries but not their runs, the study trains again the
    starts of the seeds it still has to run, and stores no new summary for them."""
    from tfloc.studies import seed000
    root = tmp_path / "runs"
    first, rest = seed000.experiments(["semi"], 2, str(root), REPO)
    folder = tmp_path / "docs" / "results" / "seed000" / "runs"
    folder.mkdir(parents=True)
    for e in [*first, *[e for e in rest if e.key.endswith("-s0")]]:   # seed 1's semi runs are to do
        (folder / f"{e.key}.json").write_text("{}")
    trained, stored_by_study = [], []
    monkeypatch.setattr(seed000, "run_experiments", lambda todo, r, *a, **k: trained.append([e.key for e in todo]))
    monkeypatch.setattr(seed000, "run_storing_summaries", lambda todo, *a, **k: stored_by_study.append(todo))
    monkeypatch.setattr(seed000, "regenerate_page", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    argv = ["--semi", "--seeds", "2", "--repo", REPO, "--root", str(root)]
    seed000.main(argv)
    assert trained == [["supervised-resnet-18-s1"]]
    # the start is there now (a finished run): nothing trains again
    (root / "supervised-resnet-18-s1").mkdir(parents=True)
    (root / "supervised-resnet-18-s1" / "report.json").write_text("{}")
    trained.clear()
    seed000.main(argv)
    assert trained == []
