"""Results pages generated from committed run summaries: each committed page must equal what
its study's generator makes of its summaries (so no number in it is typed by hand), and the
interval the tables use matches SciPy's."""
import os

import numpy as np
import pytest
from scipy import stats

from conftest import REPO
from tfloc.studies import defaults, scaling
from tfloc.studies.summary import mean_interval

STUDIES = {"scaling": scaling, "defaults": defaults}


@pytest.mark.parametrize("name", list(STUDIES))
def test_the_committed_page_is_what_its_summaries_generate(name, tmp_path, monkeypatch):
    study = STUDIES[name]
    monkeypatch.chdir(REPO)
    page = os.path.join("docs", "results", f"{name}.md")
    if not os.path.isdir(study.SUMMARIES) or not os.listdir(study.SUMMARIES):
        pytest.fail(f"no committed run summaries for {page}")
    out = tmp_path / f"{name}.md"
    with open(page) as fh:
        committed = fh.read()
    out.write_text(committed)          # the hand-written discussion below the marker is kept
    text = study.regenerate(str(out))
    assert text == committed, f"{page} differs from its summaries: python -m tfloc.studies.{name} --pages-only"


def test_mean_interval_is_scipys_t_interval():
    v = [11.4, 12.9, 10.2, 13.3]
    m, lo, hi = mean_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref)
    assert mean_interval([3.0])[1:] == (-np.inf, np.inf)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
