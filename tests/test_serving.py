"""Serving, hardened (issue 11, point 5): empty batches, TF Serving warm-up requests, and
TF Serving's REST predict API from ``python -m tfloc.serve``."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO
from synthetic import ETOILE_SETS, SYNTHETIC_SETS


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """The SavedModel of a finished configs/etoile_supervised.yaml run on the synthetic set."""
    import tfloc.sim
    from synthetic import synthetic_pathset
    from tfloc.run.experiment import load_config
    from tfloc.run.runner import train_and_evaluate
    ps = synthetic_pathset()
    run = tmp_path_factory.mktemp("serve") / "run"
    cfg = load_config(os.path.join(REPO, "configs", "etoile_supervised.yaml"),
                      [*SYNTHETIC_SETS, *ETOILE_SETS, "evaluation.evaluators=[position]",
                       "export.model_name=etoile"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
        train_and_evaluate(cfg, str(run))
    return run / "export" / "etoile" / "1"


@pytest.fixture(scope="module")
def signature(export_dir):
    import tensorflow as tf
    return tf.saved_model.load(str(export_dir)).signatures["serving_default"]


def _warmup(export_dir):
    from tfloc.export.saved_model import read_warmup
    return read_warmup(str(export_dir / "assets.extra" / "tf_serving_warmup_requests"))


def test_an_empty_batch_gets_an_empty_result(signature):
    import tensorflow as tf
    spec = signature.structured_input_signature[1]
    out = signature(**{k: tf.zeros([0, *v.shape[1:]], v.dtype) for k, v in spec.items()})
    assert out["position"].shape == (0, 2) and out["position"].dtype == tf.float32


def test_warmup_requests_are_real_test_csi_and_run_through_the_signature(export_dir, signature):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    rec = next(iter(tf.data.TFRecordDataset(str(export_dir / "assets.extra" / "tf_serving_warmup_requests"))))
    spec = prediction_log_pb2.PredictionLog.FromString(rec.numpy()).predict_log.request.model_spec
    assert (spec.name, spec.signature_name) == ("etoile", "serving_default")
    requests = _warmup(export_dir)
    assert [len(r["csi"]) for r in requests][0] == 1 and len(requests) == 2
    assert len(requests[1]["csi"]) > 1
    np.testing.assert_array_equal(requests[0]["csi"], requests[1]["csi"][:1])   # the same test UEs
    for r in requests:
        assert set(r) == {"csi", "sector"} and np.abs(r["csi"]).max() > 0
        out = signature(**{k: tf.constant(v) for k, v in r.items()})["position"].numpy()
        assert out.shape == (len(r["csi"]), 2) and np.isfinite(out).all()


def _post(url, body: bytes):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(export_dir):
    proc = subprocess.Popen([sys.executable, "-m", "tfloc.serve", str(export_dir.parent.parent.parent),
                             "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = proc.stdout.readline()
    assert line.startswith("serving etoile (version 1"), line + proc.stderr.read()
    yield line.split(" at ")[1].strip().rsplit("/v1/", 1)[0]
    proc.terminate()
    proc.wait(timeout=30)


def test_rest_predict_answers_real_csi_like_the_signature(server, export_dir, signature):
    import tensorflow as tf
    x = _warmup(export_dir)[1]
    want = signature(**{k: tf.constant(v) for k, v in x.items()})["position"].numpy()
    rows = [{"csi": c.tolist(), "sector": int(s)} for c, s in zip(x["csi"], x["sector"])]
    code, body = _post(f"{server}/v1/models/etoile:predict", json.dumps({"instances": rows}).encode())
    assert code == 200, body
    np.testing.assert_allclose(np.array(body["predictions"]), want, rtol=1e-5, atol=1e-4)
    code, body = _post(f"{server}/v1/models/etoile/versions/1:predict", json.dumps(
        {"inputs": {"csi": x["csi"].tolist(), "sector": x["sector"].tolist()}}).encode())
    assert code == 200
    np.testing.assert_allclose(np.array(body["outputs"]), want, rtol=1e-5, atol=1e-4)
    code, body = _post(f"{server}/v1/models/etoile:predict", b'{"instances": []}')
    assert (code, body) == (200, {"predictions": []})
    with urllib.request.urlopen(f"{server}/v1/models/etoile", timeout=30) as r:
        assert json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE"


def test_rest_predict_rejects_bad_csi_with_a_clear_400(server, export_dir):
    x = _warmup(export_dir)[0]
    url = f"{server}/v1/models/etoile:predict"
    good = {"csi": x["csi"][0].tolist(), "sector": int(x["sector"][0])}
    short = {**good, "csi": x["csi"][0][..., :5, :].tolist()}              # 5 subcarriers, not 16
    nan = {**good, "csi": np.full_like(x["csi"][0], np.nan).tolist()}
    sector = {**good, "sector": 7}
    cases = [(json.dumps({"instances": [short]}).encode(), "input 'csi' must have shape [batch, 1, 8, 16, 2]"),
             (json.dumps({"instances": [nan]}).encode(), "input 'csi' contains NaN or Inf"),
             (json.dumps({"instances": [sector]}).encode(), "input 'sector' must be < 3"),
             (json.dumps({"instances": [{"csi": good["csi"]}]}).encode(), "must be an object with the inputs"),
             (b'{"instances": [', "JSON parse error"),
             (json.dumps({"rows": []}).encode(), "'instances' (row format) or 'inputs'")]
    for body, needle in cases:
        code, answer = _post(url, body)
        assert code == 400 and needle in answer["error"], (needle, answer)
        assert "\n" not in answer["error"]
    code, answer = _post(f"{server}/v1/models/other:predict", json.dumps({"instances": [good]}).encode())
    assert code == 404 and "other" in answer["error"]
