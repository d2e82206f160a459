"""Measured CSI as a data source (tfloc.data.measured): the file format, its round trip
through the converter, group-aware splits, a single-antenna file, bad files, and methods
training on a converter-made file end to end."""
import json
import os

import numpy as np
import pytest

from conftest import LEARN_EPOCHS, REPO, run_python
from synthetic import ETOILE_SITE, LEARNABLE_BS, LEARNABLE_SETS, SYNTHETIC_SETS, synthetic_pathset
from tfloc.config import ConfigError
from tfloc.data.bundle import fixed_set, load_data
from tfloc.data.measured import measured_splits, read_measured, write_measured
from tfloc.run.convert import write_from_bundle
from tfloc.run.experiment import load_config

HDA = os.path.join(REPO, "configs", "hda.yaml")
SETS = [*SYNTHETIC_SETS, *LEARNABLE_SETS]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The street-canyon experiment on the synthetic PathSet (learnable site), and the file
    the converter makes of it: (config, bundle, file)."""
    import tfloc.sim
    mp = pytest.MonkeyPatch()
    ps = synthetic_pathset(bs=LEARNABLE_BS)
    mp.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
    cfg = load_config(HDA, SETS)
    data = load_data(cfg, progress=False)
    path = str(tmp_path_factory.mktemp("measured") / "canyon.npz")
    write_from_bundle(cfg, data, path)
    yield cfg, data, path
    mp.undo()


def test_the_converter_round_trip_gives_the_simulated_samples_exactly(simulated, tmp_path):
    cfg, data, path = simulated
    m = read_measured(path)
    rows = np.sort(np.concatenate([data.splits.train, data.splits.val, data.splits.test, data.splits.unlabelled]))
    assert m.csi.shape == (len(rows), 1, 8, 32) and np.iscomplexobj(m.csi)
    np.testing.assert_array_equal(m.positions, data.paths.positions[rows, :3])
    np.testing.assert_array_equal(m.condition, data.paths.condition[rows])
    np.testing.assert_array_equal(m.group, data.paths.ue_id[rows])
    assert m.attrs["array_rows"] == 2 and m.attrs["array_cols"] == 4
    assert m.attrs["subcarrier_spacing_hz"] == cfg.data.subcarrier_spacing_hz
    # the measured path feeds the file's CSI through the same features: a run scored on the
    # file sees exactly the features of its own test split (noise and TA of the same draws)
    measured = load_data(load_config(HDA, [*SETS, f"data.measured_file={path}"]), progress=False)
    for split in ("train", "val", "test"):
        assert np.array_equal(np.sort(rows[np.asarray(getattr(measured.splits, split))]),
                              np.sort(getattr(data.splits, split)))
    x_sim, y_sim = fixed_set(data, "test")
    x_mea, y_mea = fixed_set(measured, "test")
    order = np.argsort(np.searchsorted(rows, data.splits.test))      # file rows are sorted
    np.testing.assert_allclose(x_mea["features"], x_sim["features"][order], atol=1e-5)
    np.testing.assert_array_equal(y_mea["position"], y_sim["position"][order])
    # HDF5 holds the same
    h5 = str(tmp_path / "canyon.h5")
    write_measured(h5, m.csi, m.positions, m.condition, m.group, m.split, **m.attrs)
    again = read_measured(h5)
    np.testing.assert_array_equal(again.csi, m.csi)
    np.testing.assert_array_equal(again.split, m.split)
    assert again.attrs == m.attrs


def test_splits_by_group_never_cut_a_group_and_follow_the_fractions(tmp_path):
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(60), rng.integers(1, 9, 60))          # packets per measurement point
    n = len(group)
    path = write_measured(str(tmp_path / "g.npz"), np.ones((n, 2, 8), np.complex64),
                          rng.normal(size=(n, 2)), group=group)
    cfg = load_config(HDA, [*SETS, "data.labelled_fraction=0.5", "data.val_fraction=0.1",
                            "data.test_fraction=0.3"]).data
    s = measured_splits(read_measured(path), cfg, seed=0)
    parts = [s.train, s.val, s.test, s.unlabelled]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    owners = [{int(g) for g in group[p]} for p in parts]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not owners[i] & owners[j], "a group was cut"
    for p, want in zip(parts[:3], (0.5, 0.1, 0.3)):
        assert abs(len(p) / n - want) < 0.1
    assert np.array_equal(measured_splits(read_measured(path), cfg, seed=0).test, s.test)   # fixed by seed


def test_a_single_antenna_file_takes_amplitude_features_and_refuses_adp(tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    csi = (rng.normal(size=(n, 32)) + 1j * rng.normal(size=(n, 32)))[:, None, :]   # [N, M=1, K]
    path = write_measured(str(tmp_path / "one.npz"), csi, rng.uniform(0, 20, (n, 2)),
                          split=np.array(["train"] * 30 + ["val"] * 10 + ["test"] * 10))
    one = ["simulation.bs_array={num_rows: 1, num_cols: 1, pattern: iso, polarization: V}",
           "data.num_subcarriers=32", "data.num_delay_taps=32", "data.position_dims=2",
           f"data.measured_file={path}"]
    data = load_data(load_config(HDA, [*SETS, *one, "data.representation=magnitude",
                                       "data.normalization=sample_max"]), progress=False)
    x, y = fixed_set(data, "test")
    assert x["features"].shape[0] == 10 and np.isfinite(x["features"]).all()
    with pytest.raises(ConfigError, match="one BS antenna has no angle domain"):
        load_data(load_config(HDA, [*SETS, *one]), progress=False)             # hda: adp


@pytest.mark.parametrize("change, needle", [
    (lambda a: a.pop("positions"), "no 'positions' array"),
    (lambda a: a.__setitem__("csi", a["csi"].real.copy()), "'csi' is float32, not complex"),
    (lambda a: a["csi"].__setitem__((3, 0, 0, 0), np.nan), "'csi' holds NaN or Inf in 1 of"),
    (lambda a: a.__setitem__("positions", a["positions"][:-1]), "'positions' has shape"),
    (lambda a: a.__setitem__("split", np.array(["train"] * len(a["csi"]))), "no sample in the val, test split"),
])
def test_bad_files_are_one_line_errors(simulated, tmp_path, change, needle):
    _, _, good = simulated
    with np.load(good) as f:
        arrays = {k: f[k].copy() for k in f.files}
    change(arrays)
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **arrays)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        load_data(load_config(HDA, [*SETS, f"data.measured_file={bad}"]), progress=False)


def test_a_bad_file_stops_train_py_with_one_line_and_exit_2(simulated, tmp_path):
    _, _, good = simulated
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files if k != "csi"}
    bad = str(tmp_path / "no_csi.npz")
    np.savez(bad, **arrays)
    args = [a for s in [*SETS, f"data.measured_file={bad}"] for a in ("--set", s)]
    r = run_python([os.path.join(REPO, "train.py"), "--config", HDA, *args, "--run-dir",
                    str(tmp_path / "run")], cwd=tmp_path, check=False)
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "no 'csi' array" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config, extra", [
    ("hda.yaml", []),
    ("etoile_supervised.yaml", [*ETOILE_SITE, "model.resnet.width=8", "data.use_sector=false",
                                "data.position_dims=2", "data.subcarrier_spacing_hz=1.5625e6"]),
])
def test_methods_train_and_evaluate_on_a_converter_made_file(simulated, tmp_path, config, extra):
    """hda-style and etoile_supervised-style configs train on the file end to end, learn (beat
    the training mean), and the evaluators that need traced geometry say unavailable."""
    from tfloc.run.runner import train_and_evaluate
    _, _, path = simulated
    cfg = load_config(os.path.join(REPO, "configs", config),
                      [*SETS, *extra, f"data.measured_file={path}", "runtime.deterministic=true",
                       f"training.epochs={LEARN_EPOCHS}", "evaluation.evaluators=[position, per_condition, knn, mean, bound]"])
    report = train_and_evaluate(cfg, str(tmp_path / "run"))
    assert report["simulation"]["scene"] == "measured" and report["simulation"]["measured_file"] == os.path.abspath(path)
    assert report["unavailable"] == {"bound": "needs geometry, which measured data does not have"}
    print("LEARNING", config, report["model"]["mean_m"], report["baselines"]["mean"]["mean_m"], report["baselines"]["knn"]["mean_m"])
    assert report["model"]["mean_m"] < 0.6 * report["baselines"]["mean"]["mean_m"]
    assert "knn" in report["baselines"] and (tmp_path / "run" / "export").is_dir()
    assert set(report["model"]["per_condition"]) <= {"LOS", "NLOS-static", "NLOS-car"}
    # evaluate.py --data FILE scores a run on a measured file: its own file gives its own numbers
    from tfloc.run.rescore import evaluate_on_data
    again, out = evaluate_on_data(str(tmp_path / "run"), path)
    assert again["model"]["mean_m"] == pytest.approx(report["model"]["mean_m"], rel=1e-5)
    assert again["scored_on"]["differs_from_training"] == {} and out.endswith(os.path.join("eval", "canyon"))


def test_a_transfer_method_adapts_simulated_sources_to_a_measured_target(simulated, tmp_path, monkeypatch):
    """Sim-to-real, seed 001's point: MEML's source stage on simulated sites, its target a
    measured file (here the converter's, a 2 x 4 array, cut to the methods' sub-array)."""
    import tfloc.methods.transfer
    from tfloc.run.runner import train_and_evaluate
    _, _, path = simulated

    def synthetic_environment(ref, cache_dir, sub_array=None, progress=True):
        import zlib
        ps = synthetic_pathset(seed=zlib.crc32(ref.name.encode()) % 1000, bs=LEARNABLE_BS)
        ps.meta = {**ps.meta, "environment": ref.name}
        return ps
    monkeypatch.setattr(tfloc.methods.transfer, "load_environment", synthetic_environment)
    cfg = load_config(os.path.join(REPO, "configs", "meml.yaml"),
                      [*SETS, f"method.meml.target={path}", "method.meml.source_epochs=2",
                       "training.epochs=2", "data.subcarrier_spacing_hz=1.5625e6"])
    report = train_and_evaluate(cfg, str(tmp_path / "run"))
    m = read_measured(path)
    assert report["n_test"] == max(1, round(cfg.method.meml.test_fraction * m.n))
    assert report["simulation"]["scene"] == "measured" and report["model"]["mean_m"] > 0
    with pytest.raises(ConfigError, match="no array_rows / array_cols"):
        bare = str(tmp_path / "bare.npz")
        write_measured(bare, m.csi, m.positions)
        train_and_evaluate(load_config(os.path.join(REPO, "configs", "meml.yaml"),
                                       [*SETS, f"method.meml.target={bare}"]), str(tmp_path / "run2"))
