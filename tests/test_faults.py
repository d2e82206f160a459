"""Faults an unlucky or hostile user meets: damaged files, unwritable places, files left
half-written. Each test asserts the documented outcome (a one-line error with exit 2, or a
fallback) and that nothing already finished is lost."""
import os
import stat

import pytest

from conftest import REPO
from tfloc.config import dump_yaml
from tfloc.run.experiment import load_config


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_written_atomically_get_the_mode_of_a_normally_opened_file(tmp_path):
    import keras
    from tfloc.methods.callbacks import save_state
    from tfloc.utils import atomic_write_text, normal_file_mode
    old = os.umask(0o022)
    try:
        assert normal_file_mode() == 0o644
        atomic_write_text(str(tmp_path / "simulation.json"), "{}")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        save_state(model, str(tmp_path / "latest.npz"))
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "simulation.json") == _mode(tmp_path / "plain.txt") == 0o644
    assert _mode(tmp_path / "latest.npz") == 0o644
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncated", "not a Keras archive"])
def test_a_damaged_model_file_is_named_as_damaged_before_any_tracing(damage, tmp_path, monkeypatch, capsys):
    import keras
    from tfloc.run import runner
    from tfloc.run.cli import evaluate_main, run_cli
    run = tmp_path / "run"
    run.mkdir()
    dump_yaml(load_config(os.path.join(REPO, "configs", "hda.yaml")), str(run / "config.yaml"))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(run / "model.keras")
    data = (run / "model.keras").read_bytes()
    damaged = data[: len(data) // 2] if damage == "truncated" else b"\0" * 64
    (run / "model.keras").write_bytes(damaged)
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: pytest.fail("traced before loading the model"))
    with pytest.raises(SystemExit) as e:
        run_cli(evaluate_main, ["--run-dir", str(run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and f"{run / 'model.keras'}: damaged model file" in line[0]
    assert (run / "model.keras").read_bytes() == damaged          # left as it was
