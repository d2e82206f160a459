"""tfloc.serve against TF Serving's own REST expectations, on a model with half_plus_two's
contract (tests/data/tf_serving_half_plus_two.json says where each expectation comes from)."""
import json
import os
import urllib.error
import urllib.request

import pytest
import tensorflow as tf

from tfloc.export.rest import Predictor, make_server, serve_forever

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED = json.load(open(os.path.join(HERE, "data", "tf_serving_half_plus_two.json")))


class HalfPlusTwo(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def half_plus_two(self, x):
        return {"y": x / 2.0 + 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def times_three(self, x):
        return {"y": x * 3.0}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """``python -m tfloc.serve``'s server on half_plus_two/00000123, named 'default' as in
    TF Serving's test."""
    path = str(tmp_path_factory.mktemp("tfs") / "half_plus_two" / "00000123")
    m = HalfPlusTwo()
    tf.saved_model.save(m, path, signatures={"serving_default": m.half_plus_two,
                                              "custom_signature_key": m.times_three})
    server = make_server(Predictor(path, "default"), port=0)
    serve_forever(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url, req=None):
    """TF Serving's CallREST: a POST of ``json.dumps(req)`` (no Content-Type), or a GET;
    (HTTP code, decoded answer)."""
    data = None if req is None else json.dumps(req).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


@pytest.mark.parametrize("path", ["/v1/models/default:predict",
                                  "/v1/models/default/versions/123:predict"])
@pytest.mark.parametrize("case", ["predict_row", "predict_columnar"])
def test_predict_answers_as_tf_serving(url, path, case):
    assert call(url + path, EXPECTED[case]["request"]) == (200, EXPECTED[case]["answer"])


@pytest.mark.parametrize("path", ["/v1/models/default", "/v1/models/default/versions/123"])
def test_status_answers_as_tf_serving(url, path):
    assert call(url + path) == (200, EXPECTED["status"])


@pytest.mark.parametrize("path", ["/v1/models/default/metadata",
                                  "/v1/models/default/versions/123/metadata"])
def test_metadata_answers_as_tf_serving(url, path):
    assert call(url + path) == (200, EXPECTED["metadata"])


def test_the_requests_signature_name_is_honoured(url):
    req = {"signature_name": "custom_signature_key", "instances": [[2.0]]}
    assert call(url + "/v1/models/default:predict", req) == (200, {"predictions": [[6.0]]})
    req = {"signature_name": "serving_default", "inputs": {"x": [[2.0]]}}
    assert call(url + "/v1/models/default:predict", req) == (200, {"outputs": [[3.0]]})
    code, answer = call(url + "/v1/models/default:predict", {"signature_name": "nope", "instances": [[2.0]]})
    assert (code, answer) == (400, {"error": 'Serving signature name: "nope" not found in signature def'})


def test_other_versions_and_names_are_404_as_in_tf_serving(url):
    assert call(url + "/v1/models/default/versions/124") == (
        404, {"error": "Servable not found for request: Specific(default, 124)"})
    assert call(url + "/v1/models/other:predict", {"instances": [[2.0]]}) == (
        404, {"error": "Servable not found for request: Latest(other)"})


def test_tfloc_checks_the_signatures_shape_where_tf_serving_feeds_the_values_as_they_come(url):
    """TF Serving's own request (one bare value per row) is refused in one line: documented."""
    code, answer = call(url + "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert (code, answer) == (400, {"error": "input 'x' must have shape [batch, 1], got [3]"})
