"""End to end: the shipped config at tiny scale through real Sionna RT, training,
evaluation and the TF Serving export, each CLI in its own process."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, run_python, train_tiny

pytestmark = pytest.mark.slow  # real Sionna RT; deselect with -m 'not slow'

# Large enough that the network learns: on a 5 m grid, half of the UEs labelled (about 600),
# 80 epochs of a width-16 ResNet-18 beat kNN's mean error on the same test UEs (15.9 against
# 17.7 m when written; with 3 epochs on an 8 m grid the model was no better than the mean).
TINY = ["simulation.ue_grid.spacing_m=5.0", "data.labelled_fraction=0.5", "training.epochs=80",
        "data.batch_size=32", "model.resnet.width=16", "runtime.deterministic=true"]


_run = run_python


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run, r = train_tiny("etoile_supervised.yaml", TINY, tmp_path_factory.mktemp("e2e"))
    assert "test error" in r.stdout
    return run


def test_run_directory_contents(run_dir):
    for f in ("config.yaml", "model.keras", "report.json", "cdf.png",
              "checkpoints/best.npz", "export/etoile_supervised/1/saved_model.pb"):
        assert (run_dir / f).exists(), f
    events = {p.parent.name for p in (run_dir / "tensorboard").rglob("events.out.tfevents*")}
    assert {"train", "validation", "eval", "config"} <= events
    assert not list(run_dir.rglob(".tmp*"))


def test_report_shape(run_dir):
    rep = json.loads((run_dir / "report.json").read_text())
    keys = {"mean_m", "p50_m", "p67_m", "p80_m", "p90_m", "rmse_m"}
    assert keys <= set(rep["model"]) and keys <= set(rep["baselines"]["knn"])
    assert rep["n_test"] > 20 and rep["n_train_labelled"] > 5
    assert rep["n_no_path_excluded"] >= 0 and rep["n_indoor_excluded"] > 0
    m = rep["model"]
    assert 0 < m["p50_m"] <= m["p67_m"] <= m["p80_m"] <= m["p90_m"]
    assert rep["simulation"]["cache_hit"] is False
    # the network learnt: better than kNN's mean on the same test UEs (issue 24)
    assert m["mean_m"] < rep["baselines"]["knn"]["mean_m"], (m, rep["baselines"]["knn"])
    # the model against the physical limit (issue 12), LOS and NLOS apart
    b = rep["bound"]["mirror"]
    assert b["peb_m"]["n_unbounded"] == 0 and b["peb_m"]["n"] == rep["n_test"]
    assert 0 < b["peb_m"]["LOS"]["median"] < b["peb_m"]["p90"]
    assert b["error_over_peb"]["n"] == rep["n_test"] and b["error_over_peb"]["median"] > 1
    assert (run_dir / "bound_mirror.png").exists()


def test_evaluate_cli_reproduces_report(run_dir):
    before = json.loads((run_dir / "report.json").read_text())
    _run([os.path.join(REPO, "evaluate.py"), "--run-dir", str(run_dir)], cwd=run_dir.parent)
    after = json.loads((run_dir / "report.json").read_text())
    assert after["simulation"]["cache_hit"] is True
    for who in ("model",):
        assert after[who]["mean_m"] == pytest.approx(before[who]["mean_m"], rel=1e-4)
    assert after["baselines"]["knn"]["mean_m"] == pytest.approx(before["baselines"]["knn"]["mean_m"], rel=1e-4)
    assert after["bound"]["mirror"]["peb_m"]["median"] == pytest.approx(before["bound"]["mirror"]["peb_m"]["median"],
                                                                       rel=1e-6)


@pytest.fixture(scope="module")
def served(run_dir):
    """CSI of test UEs, the Keras model's positions for it, and the export path."""
    import keras
    from tfloc.layers import CSIFeatures
    from tfloc.data.bundle import load_data
    from tfloc.run.runner import load_run_config
    cfg = load_run_config(str(run_dir))
    data = load_data(cfg, progress=False)
    pipe, splits = data.pipeline, data.splits
    x, _ = next(iter(pipe.csi_dataset(splits.test[:16], training=False)))
    csi, sector = x["csi"].numpy(), x["sector"].numpy()
    model = keras.models.load_model(run_dir / "model.keras")
    d = cfg.data
    feats = CSIFeatures(d.num_delay_taps, d.representation, d.normalization,
                        cfg.simulation.bs_array.shape)(csi)
    expected = model.predict({"features": feats, "sector": sector}, verbose=0)["position"]
    np.save(run_dir.parent / "csi.npy", csi)
    np.save(run_dir.parent / "sector.npy", sector)
    return csi, sector, expected, run_dir / "export" / "etoile_supervised" / "1"


def test_saved_model_load_in_fresh_process(served, tmp_path):
    csi, sector, expected, export = served
    base = export.parents[2].parent
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        f = tf.saved_model.load({str(export)!r}).signatures["serving_default"]
        out = f(csi=tf.constant(np.load({str(base / 'csi.npy')!r})),
                sector=tf.constant(np.load({str(base / 'sector.npy')!r})))
        np.save({str(tmp_path / 'pos.npy')!r}, out["position"].numpy())
    """)
    _run(["-c", script], cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "pos.npy"), expected, rtol=1e-4, atol=1e-3)


def test_saved_model_cli_run(served, tmp_path):
    csi, sector, expected, export = served
    base = export.parents[2].parent
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    r = subprocess.run([cli, "run", "--dir", str(export), "--tag_set", "serve",
                        "--signature_def", "serving_default",
                        "--inputs", f"csi={base / 'csi.npy'};sector={base / 'sector.npy'}",
                        "--outdir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "position.npy"), expected,
                               rtol=1e-4, atol=1e-3)


def test_serving_rejects_bad_csi(served):
    import tensorflow as tf
    csi, sector, _, export = served
    f = tf.saved_model.load(str(export)).signatures["serving_default"]
    sec = tf.constant(sector)
    bad = csi.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="'csi' contains NaN or Inf"):
        f(csi=tf.constant(bad), sector=sec)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                       match=r"csi\\*' must have shape \[batch, 2, 32, 136, 2\]"):
        f(csi=tf.constant(csi[:, :, :, :-1]), sector=sec)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sector\\*' must be < 3"):
        f(csi=tf.constant(csi), sector=tf.fill(sec.shape, 7))


def test_csi_only_export_when_sector_unused(tmp_path):
    """use_sector=false: the signature is exactly csi -> position."""
    import tensorflow as tf
    from conftest import make_spec
    from tfloc.export import ServingModule
    from tfloc.models.resnet import ResNetConfig, build_resnet
    spec = make_spec((8, 6, 2), csi_shape=(2, 8, 10, 2))
    model = build_resnet(ResNetConfig(width=4), spec)
    path = ServingModule("m", model, spec).write(str(tmp_path / "m" / "3"))
    f = tf.saved_model.load(path).signatures["serving_default"]
    assert set(f.structured_input_signature[1]) == {"csi"}
    out = f(csi=tf.random.normal((5, 2, 8, 10, 2)))
    assert out["position"].shape == (5, 2)
    assert path.endswith(os.path.join("m", "3"))


def test_evaluate_on_other_data_writes_its_own_report_and_keeps_the_runs(run_dir):
    """evaluate.py --run-dir R --set ...: the run's model and its kNN (fitted on the run's own
    training split) scored on UEs off the training grid, in R/eval/<name>; R's report stays."""
    before = (run_dir / "report.json").read_bytes()
    trained = json.loads(before)
    r = _run([os.path.join(REPO, "evaluate.py"), "--run-dir", str(run_dir), "--split", "all",
              "--set", "simulation.ue_grid.sampling=uniform", "--set", "simulation.ue_grid.num_ues=150"],
             cwd=run_dir.parent)
    assert (run_dir / "report.json").read_bytes() == before
    out = [p for p in (run_dir / "eval").iterdir() if p.is_dir()]
    assert [p.name for p in out] == ["own_sampling-uniform_num_ues-150_all"]
    rep = json.loads((out[0] / "report.json").read_text())
    assert (out[0] / "cdf.png").exists() and "differs from the training data: simulation.ue_grid" in r.stdout
    s = rep["scored_on"]
    assert s["split"] == "all" and s["differs_from_training"] == {
        "simulation.ue_grid.sampling": ["grid", "uniform"], "simulation.ue_grid.num_ues": [2000, 150]}
    # every outdoor UE with a path scored; the baselines fitted on the run's own training split
    n_scored = rep["n_test"]
    errors = np.load(out[0] / "errors.npz")
    assert 0 < n_scored <= 150 and len(errors[rep["model_name"]]) == n_scored
    assert rep["n_train_labelled"] == trained["n_train_labelled"]
    assert rep["model"]["mean_m"] > 0 and "knn" in rep["baselines"]
    assert rep["bound"]["mirror"]["peb_m"]["n"] == n_scored          # traced data: the bound is there


def test_evaluate_on_other_data_refuses_what_the_model_cannot_take(run_dir):
    from tfloc.config import ConfigError
    from tfloc.run.rescore import evaluate_on_data
    r = _run([os.path.join(REPO, "evaluate.py"), "--run-dir", str(run_dir), "--set", "data.position_dims=3"],
             cwd=run_dir.parent, check=False)
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and lines == ["error: --set: 3D labels for a 2D model"], r.stderr[-2000:]
    for sets, data, needle in (
            (["data.num_subcarriers=64"], None, "another CSI shape"),
            (["simulation.bs_array.num_cols=4"], None, "another BS array (2x4x2 against the model's 2x8x2)"),
            (["training.epochs=5"], None, "only simulation.*, data.* (the data a run is scored on) and evaluation.*"),
            ([], os.path.join(REPO, "configs", "data", "street_canyon.yaml"), "3D labels for a 2D model"),
            ([], None, "give the data to score on")):
        with pytest.raises(ConfigError, match=__import__("re").escape(needle)):
            evaluate_on_data(str(run_dir), data, sets)
    assert not (run_dir / "eval").exists() or all(
        (p / "report.json").exists() for p in (run_dir / "eval").iterdir() if p.is_dir())


def test_twin_refinement_of_a_run(run_dir):
    """evaluate.py --set evaluation.evaluators=[..., twin_refine]: the run's test estimates
    refined against its traced twin, reported beside the network's."""
    from tfloc.run.runner import evaluate_run
    rep = evaluate_run(str(run_dir), ["evaluation.evaluators=[position, twin_refine]",
                                      "evaluation.twin.max_samples=6", "evaluation.twin.starts=2"])
    t = rep["twin_refine"]
    assert t["n"] == 6 and t["starts"] == 2 and t["of_test"] == rep["n_test"]
    assert {"mean_m", "p50_m", "p90_m"} <= set(t["before"]) and {"mean_m", "p50_m"} <= set(t["after"])
    assert 0 <= t["improved"] + t["worsened"] <= 1 and t["seconds_per_sample"] > 0
    assert t["median_error_over_peb"]["before"] > 1 and (run_dir / "twin_refine.png").exists()
    with pytest.raises(__import__("tfloc").config.ConfigError, match="changes evaluation.\\* only"):
        evaluate_run(str(run_dir), ["training.epochs=3"])
