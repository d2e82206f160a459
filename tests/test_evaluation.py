"""Evaluators, the kNN baseline in 3D and the run comparison, on numbers we know."""
import json

import numpy as np
import pytest
from scipy.stats import chi2

from tfloc.evaluation import EvalContext, run_evaluators
from tfloc.evaluation.compare import comparison_table, write_comparison
from tfloc.evaluation.knn import SectorKNN


def _ctx(rng, n=400, **kw):
    y = rng.normal(size=(n, 3)) * 10
    pred = y + rng.normal(size=(n, 3))
    return EvalContext(model_name="m", x={"features": y[:, :, None]}, outputs={"position": pred},
                       y={"position": y, "condition": rng.integers(0, 3, n)}, **kw)


def test_position_and_per_condition(rng):
    ctx = _ctx(rng)
    res = run_evaluators(["position", "per_condition"], ctx)
    err = np.linalg.norm(ctx.outputs["position"] - ctx.y["position"], axis=-1)
    m = res.report["model"]
    assert m["dims"] == 3 and m["mean_m"] == pytest.approx(err.mean())
    assert m["rmse_m"] == pytest.approx(np.sqrt((err ** 2).mean()))
    assert m["p90_m"] == pytest.approx(np.percentile(err, 90))
    los = ctx.y["condition"] == 0
    assert m["per_condition"]["LOS"]["n"] == los.sum()
    assert m["per_condition"]["LOS"]["mean_m"] == pytest.approx(err[los].mean())
    assert set(m["per_condition"]) == {"LOS", "NLOS-static", "NLOS-car"}


def test_the_training_mean_predictor(rng):
    train_y = rng.normal(size=(50, 3)) * 5 + [100.0, -40.0, 2.0]
    ctx = _ctx(rng, fixed_set=lambda split: ({}, {"position": train_y}) if split == "train" else None)
    res = run_evaluators(["mean"], ctx)
    err = np.linalg.norm(ctx.y["position"] - train_y.mean(0), axis=-1)
    b = res.report["baselines"]["mean"]
    assert b["mean_m"] == pytest.approx(err.mean()) and b["p90_m"] == pytest.approx(np.percentile(err, 90))
    np.testing.assert_allclose(res.curves["training mean"], err, rtol=1e-6)


def test_the_cost_of_the_served_model(rng):
    import keras
    inp = keras.Input((4, 4, 2), name="features")
    m = keras.Model({"features": inp}, keras.layers.Dense(3)(keras.layers.Flatten()(inp)))
    res = run_evaluators(["cost"], _ctx(rng, model=m))
    assert res.report["cost"] == {"parameters": 32 * 3 + 3, "flops_per_sample": 2 * 32 * 3 + 3}


def test_condition_confusion_matrix(rng):
    ctx = _ctx(rng, n=6, class_names=("LOS", "NLOS"), to_class=lambda c: np.minimum(c, 1))
    ctx.y["condition"] = np.array([0, 0, 1, 2, 2, 1])
    probs = np.array([[.9, .1], [.2, .8], [.1, .9], [.3, .7], [.6, .4], [.4, .6]])
    ctx.outputs["condition_probs"] = probs
    res = run_evaluators(["condition"], ctx)
    c = res.report["condition"]
    assert c["confusion"] == [[1, 1], [1, 3]] and c["accuracy"] == pytest.approx(4 / 6)
    assert c["recall"] == {"LOS": 0.5, "NLOS": 0.75} and "confusion.png" in res.figures
    with pytest.raises(ValueError, match="needs a model with a condition head"):
        run_evaluators(["condition"], _ctx(rng))


def test_calibration_of_a_calibrated_gaussian(rng):
    n = 20000
    y = np.zeros((n, 2))
    std = rng.uniform(0.5, 3.0, size=(n, 2))
    ctx = EvalContext("m", {"features": y}, {"position": y, "condition": np.zeros(n, int)},
                      {"position": rng.normal(size=(n, 2)) * std, "position_std": std})
    cal = run_evaluators(["calibration"], ctx).report["calibration"]
    for k in (1, 2, 3):
        assert cal[f"within_{k}sigma"]["expected"] == pytest.approx(chi2.cdf(k * k, 2))
        assert cal[f"within_{k}sigma"]["observed"] == pytest.approx(chi2.cdf(k * k, 2), abs=0.01)
    assert cal["within_1sigma"]["expected"] == pytest.approx(0.393, abs=1e-3)


def test_knn_in_3d_with_sectors(rng):
    x = rng.normal(size=(60, 4, 2))
    y = rng.normal(size=(60, 3))
    s = np.repeat([0, 1, 2], 20)
    knn = SectorKNN(1, "uniform").fit(x, y, s)
    # held-out queries: each near one training fingerprint of its own sector ...
    q = x + 1e-3 * rng.normal(size=x.shape)
    np.testing.assert_allclose(knn.predict(q, s), y)
    # ... and a query of sector 1 that sits on a sector-0 fingerprint takes sector 1's nearest
    d = np.linalg.norm((x[20:40] - x[0]).reshape(20, -1), axis=1)
    np.testing.assert_allclose(knn.predict(x[:1], np.array([1])), y[20 + np.argmin(d)][None])
    # k = 3 uniform: the mean of the three nearest of the sector
    knn3 = SectorKNN(3, "uniform").fit(x, y, s)
    d = np.linalg.norm((x[40:] - q[45]).reshape(20, -1), axis=1)
    np.testing.assert_allclose(knn3.predict(q[45:46], np.array([2]))[0], y[40 + np.argsort(d)[:3]].mean(0))


def _fake_run(path, mean, acc=None):
    path.mkdir()
    rep = {"model": {"mean_m": mean, "p50_m": 1.0, "p67_m": 2.0, "p80_m": 3.0, "p90_m": 4.0,
                     "rmse_m": 5.0}, "n_test": 10, "model_name": "net",
           "baselines": {"knn": {"mean_m": 9.0, "p50_m": 1.0, "p67_m": 2.0, "p80_m": 3.0,
                                 "p90_m": 4.0, "rmse_m": 5.0, "k": 3, "weights": "distance"}}}
    if acc is not None:
        rep["condition"] = {"accuracy": acc}
    (path / "report.json").write_text(json.dumps(rep))
    np.savez(path / "errors.npz", net=np.arange(10.0), **{"kNN (k=3)": np.arange(10.0) + 1})
    return str(path)


def test_comparison_table_and_page(tmp_path):
    a, b = _fake_run(tmp_path / "a", 1.5, 0.9), _fake_run(tmp_path / "b", 2.25)
    table = comparison_table([a, b], ["first", "second"])
    assert "| first | 1.50 | 1.00 |" in table and "| 90.0 % |" in table
    assert "| second | 2.25 |" in table and "kNN (k=3, distance) | 9.00" in table
    text = write_comparison([a, b], str(tmp_path / "cmp.md"), ["first", "second"])
    assert "![CDF](cmp_cdf.png)" in text and (tmp_path / "cmp_cdf.png").exists()
    with pytest.raises(FileNotFoundError, match="no report.json"):
        comparison_table([str(tmp_path)])
