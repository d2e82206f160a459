import numpy as np
import pytest

from tfloc.metrics import error_summary, position_errors_m
from tfloc.evaluation.knn import SectorKNN, fit_knn


def test_error_summary_matches_numpy(rng):
    pred, true = rng.normal(size=(500, 2)) * 5, rng.normal(size=(500, 2)) * 5
    e = np.hypot(*(pred - true).T)
    np.testing.assert_allclose(position_errors_m(pred, true), e)
    s = error_summary(e)
    assert s["mean_m"] == pytest.approx(e.mean())
    for p in (50, 67, 80, 90):
        assert s[f"p{p}_m"] == pytest.approx(np.percentile(e, p))
    assert s["rmse_m"] == pytest.approx(np.sqrt((e ** 2).mean()))


def test_error_summary_rejects_empty_and_shape_mismatch():
    with pytest.raises(ValueError, match="empty"):
        error_summary(np.array([]))
    with pytest.raises(ValueError, match="shape"):
        position_errors_m(np.zeros((3, 2)), np.zeros((3, 3)))


def test_knn_picks_k_on_validation(rng):
    pos = rng.uniform(0, 100, size=(400, 2))
    feats = np.concatenate([pos, rng.normal(size=(400, 3))], 1)  # features ~ position
    reg, info = fit_knn((feats[:300], pos[:300], None), (feats[300:350], pos[300:350], None),
                        (1, 3, 5))
    err = position_errors_m(reg.predict(feats[350:]), pos[350:]).mean()
    assert info["k"] in (1, 3, 5) and err < 5.0


def test_sector_knn_searches_own_sector_only():
    # two sectors whose fingerprints coincide: only the sector tells them apart
    x = np.array([[0.0], [0.0], [1.0], [1.0]])
    y = np.array([[0, 0], [100, 100], [5, 5], [105, 105]], float)
    s = np.array([0, 1, 0, 1])
    knn = SectorKNN(1, "uniform").fit(x, y, s)
    np.testing.assert_allclose(knn.predict(np.array([[0.0], [0.0]]), np.array([1, 0])),
                               [[100, 100], [0, 0]])
    with pytest.raises(ValueError, match="sector 2 has no training"):
        knn.predict(np.array([[0.0]]), np.array([2]))
