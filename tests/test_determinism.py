"""runtime.deterministic (issue 11, point 6): two runs of one config give the same report."""
import json
import os

from conftest import REPO, run_python, synthetic_driver
from synthetic import ETOILE_SETS, SYNTHETIC_SETS

#: what differs between identical runs: wall-clock times and where they ran
VOLATILE = {"timings_s", "evaluation_s", "simulation"}


def _report(tmp, name, sets):
    driver = synthetic_driver(tmp)
    args = [a for s in [*SYNTHETIC_SETS, *ETOILE_SETS, "export.enabled=false", "training.epochs=3",
                        "evaluation.evaluators=[position, per_sector, knn]", *sets] for a in ("--set", s)]
    run_python([driver, "--config", os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                *args, "--run-dir", str(tmp / name)], cwd=tmp)
    report = json.loads((tmp / name / "report.json").read_text())
    history = json.loads((tmp / name / "checkpoints" / "done-train.json").read_text())["history"]
    return {k: v for k, v in report.items() if k not in VOLATILE}, history


def test_deterministic_runs_give_identical_reports(tmp_path):
    a, ha = _report(tmp_path, "a", ["runtime.deterministic=true"])
    b, hb = _report(tmp_path, "b", ["runtime.deterministic=true"])
    assert a == b            # every test number, to the last bit
    assert ha == hb          # and every epoch's training loss and validation error
    assert a["model"]["mean_m"] > 0
    assert a["op_determinism"] is True      # as TF itself reports it in the training process
