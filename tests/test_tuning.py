"""keras-tuner search from the config (issue 11, point 1): the space is checked before
anything runs, trials are scored on validation, the search resumes, the best config is
ready to run."""
import json
import os

import pytest

from conftest import REPO, run_python
from synthetic import ETOILE_SETS, SYNTHETIC_SETS
from tfloc.config import ConfigError
from tfloc.run.experiment import load_config

CONFIG = os.path.join(REPO, "configs", "etoile_supervised.yaml")
SPACE = ("tuning.space=[{key: training.learning_rate, min: 1.0e-4, max: 1.0e-2, log: true}, "
         "{key: model.resnet.width, values: [4, 8]}]")
SETS = [*SYNTHETIC_SETS, *ETOILE_SETS, "evaluation.evaluators=[position]", "tuning.tuner=random",
        "tuning.max_trials=3", "tuning.epochs=1", SPACE]


@pytest.mark.parametrize("space, needle", [
    ("[]", "tuning.space: empty"),
    ("[{key: training.learnin_rate, min: 0.1, max: 1.0}]", "unknown config key 'training.learnin_rate'"),
    ("[{key: training.learning_rate, min: 0.1}]", "needs values, or both min and max"),
    ("[{key: training.learning_rate, min: 0.1, max: 0.01}]", "min 0.1 must be below max 0.01"),
    ("[{key: training.learning_rate, min: 0.0, max: 0.01, log: true}]", "a log scale needs min > 0"),
    ("[{key: training.epochs, min: 1.5, max: 3}]", "integer key"),
    ("[{key: model.resnet.width, values: [8, abc]}]", "tuning.space[0].values: 'abc'"),
    ("[{key: training, values: [1]}]", "is a section"),
    ("[{key: runtime.seed, values: [1, 2]}]", "not a training choice"),
])
def test_a_bad_search_space_is_refused_naming_the_key(space, needle):
    from tfloc.run.tuning import check_space
    cfg = load_config(CONFIG, [f"tuning.space={space}"])
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        check_space(cfg)


def test_tune_with_an_unknown_key_exits_2_before_anything_is_written(tmp_path):
    r = run_python([os.path.join(REPO, "train.py"), "--config", CONFIG, "--tune", "--set",
                    "tuning.space=[{key: model.resnet.widht, values: [8]}]", "--run-dir",
                    str(tmp_path / "search")], cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        "error: tuning.space: unknown config key 'model.resnet.widht'"
    assert not (tmp_path / "search").exists()


def test_search_scores_validation_resumes_and_writes_a_ready_to_run_best_config(tmp_path, monkeypatch):
    import tfloc.run.tuning as tuning
    import tfloc.sim
    from synthetic import synthetic_pathset
    ps = synthetic_pathset()
    monkeypatch.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
    cfg = load_config(CONFIG, SETS)
    directory = str(tmp_path / "search")
    # the test split is never scored: a trial that reached the test evaluation would fail
    import tfloc.run.runner as runner
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: pytest.fail("a trial scored the test set"))
    real = tuning.validation_error
    calls = []

    def interrupted(c, run_dir):
        calls.append(run_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt   # the search is killed in its second trial
        return real(c, run_dir)
    monkeypatch.setattr(tuning, "validation_error", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tuning.tune(cfg, directory, CONFIG, SETS)
    monkeypatch.setattr(tuning, "validation_error", lambda c, d: (calls.append(d), real(c, d))[1])
    s = tuning.tune(cfg, directory, CONFIG, SETS)     # the same command again: resumes
    assert len(s["trials"]) == 3
    assert len(set(calls)) == 3 and calls.count(calls[0]) == 1   # trial 1 was not trained again
    assert s["best"]["val_mean_error_m"] == min(t["val_mean_error_m"] for t in s["trials"])
    for t in s["trials"]:
        assert 1e-4 <= t["values"]["training.learning_rate"] <= 1e-2
        assert t["values"]["model.resnet.width"] in (4, 8)
    # best.yaml is the searched config with the best values: it loads and runs as is
    best = load_config(s["best_config"])
    assert best.training.learning_rate == pytest.approx(s["best"]["values"]["training.learning_rate"])
    assert best.model.resnet.width == s["best"]["values"]["model.resnet.width"]
    assert best.data.num_subcarriers == 16          # the command's --set overrides came along
    # HParams: one event file per trial with the objective
    tb = tmp_path / "search" / "tensorboard"
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == sorted(t["trial"] for t in s["trials"])
    assert json.loads((tmp_path / "search" / "summary.json").read_text())["best"] == s["best"]
    # the search directory of another config is not resumed
    other = load_config(CONFIG, [*SETS, "tuning.max_trials=4"])
    with pytest.raises(ConfigError, match="holds a run of another config"):
        tuning.tune(other, directory, CONFIG, SETS)
