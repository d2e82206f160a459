"""The learning-curve study (issue 23, point 5): its power-law fit and goal crossing against
reference values (its page is checked with the others in test_result_pages.py)."""
import numpy as np
import pytest
from scipy import stats

from tfloc.studies import scaling


def test_power_law_recovers_an_exact_exponent_and_matches_a_reference_fit():
    n = np.array([500.0, 1000, 2000, 4000])
    fit = scaling.power_law(n, 30.0 * n ** -0.4, at=60000)
    assert fit["exponent"] == pytest.approx(-0.4, abs=1e-9)
    assert fit["predicted"] == pytest.approx(30.0 * 60000 ** -0.4, rel=1e-9)
    assert fit["predicted_ci"][0] == pytest.approx(fit["predicted"], rel=1e-6)   # no scatter
    # with scatter: NumPy's least squares and the textbook t-interval of the fitted mean
    err = np.array([12.0, 9.5, 8.1, 5.9])
    fit = scaling.power_law(n, err, at=60000)
    x, y = np.log(n), np.log(err)
    b, a = np.polyfit(x, y, 1)
    assert fit["exponent"] == pytest.approx(b) and fit["intercept"] == pytest.approx(a)
    s = np.sqrt(np.sum((y - a - b * x) ** 2) / 2)
    half = stats.t.ppf(0.975, 2) * s * np.sqrt(1 / 4 + (np.log(60000) - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    assert fit["predicted_ci"] == pytest.approx((np.exp(a + b * np.log(60000) - half),
                                                 np.exp(a + b * np.log(60000) + half)))
    lo, hi = fit["exponent_ci"]
    assert lo < b < hi and hi - lo == pytest.approx(2 * stats.t.ppf(0.975, 2) * stats.linregress(x, y).stderr)
    # two points fit a line but bound nothing
    two = scaling.power_law(n[:2], err[:2], at=60000)
    assert not np.isfinite(two["predicted_ci"][1]) and not np.isfinite(two["exponent_ci"][0])
    with pytest.raises(ValueError, match="at least 2 points"):
        scaling.power_law(n[:1], err[:1])


def test_the_data_a_goal_needs_is_where_the_two_fits_cross():
    n = [500, 1000, 2000]
    rows = [{"n_train_labelled": v, "errors": {"model": {"mean_m": 30 * v ** -0.5},
                                               "knn": {"mean_m": 20 * v ** -0.2}}} for v in n]
    # network / kNN = 1.5 N^-0.3 = 0.5  <=>  N = 3^(1 / 0.3)
    assert scaling.samples_for_ratio(rows, "mean_m", 0.5) == pytest.approx(3 ** (1 / 0.3))
    for r in rows:                     # kNN learning faster: more data never gets there
        r["errors"]["knn"]["mean_m"] = 20 * r["n_train_labelled"] ** -0.6
    assert scaling.samples_for_ratio(rows, "mean_m", 0.5) is None
    assert scaling.samples_for_ratio(rows[:1], "mean_m", 0.5) is None


def test_goal_lines_judge_each_baseline_a_goal_names():
    """ECC's goal is below kNN and below MUSIC + least squares: one line for each, and a
    baseline the run did not score is left out."""
    c = scaling.CURVES["ecc"]
    run = {"n_train_labelled": 883, "label": f"ecc {c.default:g}", "error_over_bound_median": 100.0,
           "errors": {"model": {"mean_m": 10.0}, "knn": {"mean_m": 12.5}, "music": {"mean_m": 8.0}}}
    lines = scaling._goal_lines(c, [run])
    assert "- mean at most 1 x kNN's: 0.80 x, met." in lines
    assert "- mean at most 1 x MUSIC + LS's: 1.25 x, missed by 25%." in lines
    del run["errors"]["music"]
    assert not any("MUSIC" in line for line in scaling._goal_lines(c, [run]))
