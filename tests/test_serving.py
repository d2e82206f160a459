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


def _start(export_dir, tmp_path, *flags):
    err = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tfloc.serve", str(export_dir), *flags], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=err, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = proc.stdout.readline()
    assert line.startswith("serving etoile"), line + (tmp_path / "server.log").read_text()
    return proc, line.split(" at ")[1].strip().rsplit("/v1/", 1)[0]


@pytest.fixture
def limited(export_dir, tmp_path):
    """A server with small limits: 50 kB bodies, 4 rows, 1 s of silence, 2 connections."""
    proc, url = _start(export_dir, tmp_path, "--port", "0", "--max-body-mb", "0.05", "--max-batch", "4",
                       "--timeout", "1", "--workers", "2")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]                      # one line per failure


def _raw(url, data: bytes, wait: float = 10.0) -> bytes:
    """What the server answers to the raw bytes ``data`` (until it closes or ``wait`` s)."""
    import socket
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_the_server_answers_hostile_requests_with_json_and_stays_up(limited, export_dir):
    x = _warmup(export_dir)[0]
    url = f"{limited}/v1/models/etoile:predict"
    good = {"csi": x["csi"][0].tolist(), "sector": int(x["sector"][0])}
    cases = [(b"[" * 20000 + b"]" * 20000, 400, "nested too deeply"),
             (b'{"instances": [' + b"1" * 400 + b"]}", 400, "JSON integer of 400 digits"),
             (json.dumps({"inputs": {"csi": 5, "sector": [1]}}).encode(), 400, "input 'csi' must be a list"),
             (json.dumps({"instances": [good] * 5}).encode(), 413, "a batch of 5 rows; this server takes at most 4"),
             (b" " * 60000, 413, "this server takes at most 0.05 MB")]
    for body, code, needle in cases:
        got, answer = _post(url, body)
        assert got == code and needle in answer["error"] and "\n" not in answer["error"], (needle, answer)
    head = f"POST /v1/models/etoile:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {{}}\r\n\r\n"
    for length, needle in (("-1", b"is not a byte count"), ("abc", b"is not a byte count")):
        answer = _raw(limited, head.format(length).encode())
        assert answer.startswith(b"HTTP/1.0 400") and needle in answer, answer[:300]
    # a body that stops arriving: dropped after the 1 s timeout, not held
    t = __import__("time").time()
    assert _raw(limited, head.format(100).encode() + b"{" * 10, wait=30) == b""
    assert __import__("time").time() - t < 10
    # a client that hangs up before its answer: no traceback (checked by the fixture)
    _raw(limited, head.format(10).encode(), wait=0.01)
    got, answer = _post(url, json.dumps({"instances": [good]}).encode())
    assert got == 200 and len(answer["predictions"]) == 1               # still serving


def test_the_server_serves_its_workers_and_answers_the_next_connection_503(limited, export_dir):
    import socket
    import time
    host, port = limited.split("//")[1].split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(2)]     # hold both workers
    time.sleep(0.2)
    answer = _raw(limited, b"GET /v1/models/etoile HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503") and b"the server is busy (2 requests at once)" in answer
    time.sleep(1.5)                          # the idle ones are closed after the 1 s timeout
    assert all(s.recv(10) == b"" for s in idle)
    for s in idle:
        s.close()
    with urllib.request.urlopen(f"{limited}/v1/models/etoile", timeout=30) as r:
        assert r.status == 200


def test_a_burst_of_idle_connections_is_answered_503_or_closed_by_the_timeout_not_queued(limited):
    """100 clients connect at once and send nothing: the 2 workers hold two until the 1 s
    timeout, every other one is answered 503 at once (none waits in the kernel's queue for a
    slot, which would hold it for another timeout)."""
    import selectors
    import socket
    host, port = limited.split("//")[1].split(":")
    socks = [socket.create_connection((host, int(port)), timeout=30) for _ in range(100)]
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    busy = held = 0
    while sel.get_map():
        events = sel.select(timeout=30)
        assert events, f"{len(sel.get_map())} connections neither answered nor closed in 30 s"
        for key, _ in events:
            data = key.fileobj.recv(4096)
            if data:
                key.data.extend(data)
                continue
            sel.unregister(key.fileobj)
            key.fileobj.close()
            busy += key.data.startswith(b"HTTP/1.1 503")
            held += not key.data
    assert (busy, held) == (98, 2)


def test_a_port_in_use_is_one_line(limited, export_dir, tmp_path):
    port = limited.rsplit(":", 1)[1]
    r = subprocess.run([sys.executable, "-m", "tfloc.serve", str(export_dir), "--port", port], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                       timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr
    assert f"cannot serve at 127.0.0.1:{port} (Address already in use)" in lines[0]


def test_large_bodies_are_decoded_in_their_own_process_like_small_ones():
    from tfloc.export.saved_model import SIGNATURE
    from tfloc.rest_body import SIGNATURE as BODY_SIGNATURE, BadRequest, BodyDecoder, decode_bytes
    assert BODY_SIGNATURE == SIGNATURE
    spec = {SIGNATURE: {"csi": ("float32", (None, 2, 3)), "sector": ("int32", (None,))}}
    rows = [{"csi": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]], "sector": k} for k in range(3)]
    body = json.dumps({"instances": rows}).encode()
    decoder = BodyDecoder(min_bytes=10)                 # every body goes to the process
    try:
        assert decoder.pid != os.getpid() and decoder._proc.poll() is None
        sig, x, is_rows = decoder.decode(body, spec, max_batch=8)
        _, want, _ = decode_bytes(body, spec, max_batch=8)
        assert sig == SIGNATURE and is_rows and x.keys() == want.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], want[k])
            assert x[k].dtype == want[k].dtype
        with pytest.raises(BadRequest) as e:            # errors cross with their HTTP code
            decoder.decode(body, spec, max_batch=2)
        assert e.value.code == 413 and "a batch of 3 rows" in str(e.value)
        with pytest.raises(BadRequest, match="JSON parse error"):
            decoder.decode(b'{"instances": [', spec)
        # this process's decoding broken: a large body still decodes (the other process does
        # it), a small one (under min_bytes) is decoded here
        with pytest.MonkeyPatch.context() as mp:
            import tfloc.rest_body
            mp.setattr(tfloc.rest_body, "decode_bytes", lambda *a: pytest.fail("decoded in the server"))
            assert decoder.decode(body, spec)[2] is True
            decoder.min_bytes = len(body) + 1
            with pytest.raises(pytest.fail.Exception):
                decoder.decode(body, spec)
    finally:
        decoder.close()
