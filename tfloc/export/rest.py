"""TF Serving's REST predict API for one exported SavedModel, for users without the
model server binary (``python -m tfloc.serve``).

``POST /v1/models/<name>[/versions/<v>]:predict`` takes ``{"instances": [...]}`` (row
format: one object of named inputs per UE, or the bare value when the signature has one
input) or ``{"inputs": {...}}`` (columnar) and answers ``{"predictions": [...]}`` (one
object of named outputs per UE, or the bare value for one output) or ``{"outputs":
...}``, as TF Serving does; ``signature_name`` picks the signature. ``GET
/v1/models/<name>[/versions/<v>]`` reports the version's status and ``.../metadata`` its
SignatureDefs, in TF Serving's JSON (tests/test_tf_serving_contract.py).
A request the model rejects (CSI of the wrong shape, NaN, a sector out of range,
malformed JSON) gets HTTP 400 and ``{"error": "<one line>"}``; an unknown model 404.

The server protects itself (:class:`ServerLimits`, flags of ``python -m tfloc.serve``): a body
larger than ``max_body_mb`` or a batch of more than ``max_batch`` rows is refused with 413
before it is read or run; every socket read waits at most ``timeout_s`` (a client that stops
sending is dropped); at most ``workers`` connections are served at once and the next one
gets 503 at once; JSON nested deeper than Python's parser allows or with integers of more
than 30 digits is a 400. Bodies of 1 MB and more are decoded in a separate process
(:class:`tfloc.rest_body.BodyDecoder`), so decoding one holds no other client up. Every failure is a JSON answer and one log line (a client that hangs
up is one debug line, not a traceback).
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tfloc.config import ConfigError
from tfloc.export.saved_model import SIGNATURE
from tfloc.rest_body import BadRequest, BodyDecoder, ServerLimits, decode_request

log = logging.getLogger("tfloc")

_PREDICT = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_STATUS = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(/metadata)?$")


def find_export(path: str) -> str:
    """``path`` itself if it is a SavedModel; else the newest version under ``path`` (an
    ``export/<name>`` directory) or under the one ``export/<name>`` of a run directory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    found = [os.path.join(path, v[-1]) for v in [versions_of(path)] if v]
    export = os.path.join(path, "export")
    if not found and os.path.isdir(export):
        found = [os.path.join(export, n, versions_of(os.path.join(export, n))[-1])
                 for n in sorted(os.listdir(export)) if versions_of(os.path.join(export, n))]
    if len(found) != 1:
        raise FileNotFoundError(f"{path}: {'no SavedModel' if not found else 'several SavedModels'} "
                                f"found{': ' + ', '.join(found) if found else ''}; give one "
                                "export/<name>/<version> directory")
    return found[0]


def versions_of(d: str) -> list[str]:
    """The numbered SavedModel versions in ``d``, oldest first."""
    if not os.path.isdir(d):
        return []
    return sorted((v for v in os.listdir(d) if v.isdigit()
                   and os.path.isfile(os.path.join(d, v, "saved_model.pb"))), key=int)


def error_line(message: str) -> str:
    """The one line of a TF runtime error a user needs: an assertion's own message (the
    signature's input checks), not the graph location around it."""
    m = re.search(r"assertion failed: \[(.+?)\](?: \[|$)", message)
    if m:
        return m.group(1).replace("\\'", "'")
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return (lines[0] if lines else message.strip()).split("\t [[")[0].strip()


class Predictor:
    """The signatures of a SavedModel on JSON-decoded requests, with TF Serving's status and
    metadata answers. The version is the version directory's integer, as TF Serving reports it
    (``00000123`` is version ``"123"``)."""

    def __init__(self, model_dir: str, name: str | None = None):
        import tensorflow as tf
        self.model_dir = os.path.abspath(model_dir)
        self.loaded = tf.saved_model.load(self.model_dir)
        self.signatures = dict(self.loaded.signatures)
        if SIGNATURE not in self.signatures:
            raise ConfigError(f"{model_dir}: no '{SIGNATURE}' signature (it has "
                              f"{sorted(self.signatures) or 'none'})")
        self.fn = self.signatures[SIGNATURE]
        self.inputs = dict(self.fn.structured_input_signature[1])
        #: what the decoding needs of each signature's inputs, picklable:
        #: {signature: {input: (NumPy dtype name, shape)}}
        self.specs = {s: {k: (np.dtype(v.dtype.as_numpy_dtype).name, tuple(v.shape))
                          for k, v in f.structured_input_signature[1].items()}
                      for s, f in self.signatures.items()}
        base = os.path.basename(self.model_dir)
        self.version = str(int(base)) if base.isdigit() else base
        self.name = name or os.path.basename(os.path.dirname(self.model_dir))
        self._signature_defs = signature_defs(self.model_dir)
        self._tf = tf

    def serves(self, version: str | None) -> bool:
        """Whether a request for ``version`` (None: the latest) reaches this model."""
        return version is None or (version.isdigit() and self.version.isdigit()
                                   and int(version) == int(self.version))

    def predict(self, body, max_batch: int | None = None) -> dict:
        """The answer to a JSON-decoded request ``body``."""
        return self.run(*decode_request(body, self.specs, max_batch))

    def run(self, signature: str, x: dict, rows: bool) -> dict:
        """The answer to a decoded request (:func:`tfloc.rest_body.decode_request`)."""
        try:
            out = self.signatures[signature](**{k: self._tf.constant(v) for k, v in x.items()})
        except (self._tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise BadRequest(error_line(getattr(e, "message", str(e)))) from None
        out = {k: v.numpy().tolist() for k, v in out.items()}
        if not rows:
            return {"outputs": out if len(out) > 1 else next(iter(out.values()))}
        keys = sorted(out)
        n = len(out[keys[0]])
        if len(keys) == 1:
            return {"predictions": out[keys[0]]}
        return {"predictions": [{k: out[k][i] for k in keys} for i in range(n)]}

    def status(self) -> dict:
        """``GET /v1/models/<name>[/versions/<v>]``, as TF Serving answers it."""
        return {"model_version_status": [{"version": self.version, "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def metadata(self) -> dict:
        """``GET /v1/models/<name>[/versions/<v>]/metadata``, as TF Serving answers it: the
        model spec and the meta graph's SignatureDefs in protobuf's JSON form (proto field
        names, every field printed, 64-bit integers as strings)."""
        return {"model_spec": {"name": self.name, "signature_name": "", "version": self.version},
                "metadata": {"signature_def": self._signature_defs}}


def signature_defs(model_dir: str) -> dict:
    """The ``SignatureDefMap`` of a SavedModel's (first) meta graph as TF Serving's REST
    metadata renders it."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    m = get_model_metadata_pb2.SignatureDefMap()
    for k, v in sm.meta_graphs[0].signature_def.items():
        m.signature_def[k].CopyFrom(v)
    return json_format.MessageToDict(m, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


def make_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 8501,
                limits: ServerLimits | None = None) -> "LimitedHTTPServer":
    """An HTTP server (not started) answering TF Serving's REST API for ``predictor`` within
    ``limits``; ConfigError (one line) when the address is taken."""
    limits = limits or ServerLimits()
    max_body = int(limits.max_body_mb * 2 ** 20)
    decoder = BodyDecoder()     # large bodies are decoded in their own process

    class Handler(BaseHTTPRequestHandler):
        timeout = limits.timeout_s          # every socket read and write of this connection

        def _send(self, code: int, payload: dict):
            data = json.dumps(payload).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code >= 400:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
            except OSError as e:            # the client hung up: nothing to answer
                log.debug("%s: answer %d not sent (%s)", self.address_string(), code, type(e).__name__)
                self.close_connection = True

        def _model(self, m) -> bool:
            name, version = m.group(1), m.group(2)
            if name != predictor.name or not predictor.serves(version):
                self._send(404, {"error": "Servable not found for request: "
                                 + (f"Latest({name})" if version is None else f"Specific({name}, {version})")})
                return False
            return True

        def do_GET(self):  # noqa: N802 (http.server's names)
            m = _STATUS.match(self.path)
            if not m:
                return self._send(404, {"error": f"Malformed request: GET {self.path}"})
            if self._model(m):
                self._send(200, predictor.metadata() if m.group(3) else predictor.status())

        def _body(self) -> bytes:
            text = self.headers.get("Content-Length")
            if text is None:
                raise BadRequest("a POST needs a Content-Length header", code=411)
            try:
                length = int(text)
            except ValueError:
                length = -1
            if length < 0:
                raise BadRequest(f"Content-Length {text!r} is not a byte count")
            if length > max_body:
                raise BadRequest(f"a body of {length / 2 ** 20:.1f} MB; this server takes at most "
                                 f"{limits.max_body_mb:g} MB (--max-body-mb)", code=413)
            data = self.rfile.read(length)
            if len(data) < length:
                raise BadRequest(f"the body ended after {len(data)} of {length} bytes")
            return data

        def do_POST(self):  # noqa: N802
            m = _PREDICT.match(self.path)
            if not m:
                return self._send(404, {"error": f"Malformed request: POST {self.path}"})
            if not self._model(m):
                return
            try:
                self._send(200, predictor.run(*decoder.decode(self._body(), predictor.specs, limits.max_batch)))
            except BadRequest as e:
                self._send(e.code, {"error": str(e)})
            except TimeoutError:
                log.info("%s: no data for %g s, connection closed", self.address_string(), limits.timeout_s)
                self.close_connection = True
            except OSError as e:
                log.debug("%s: connection lost (%s)", self.address_string(), type(e).__name__)
                self.close_connection = True
            except Exception as e:      # a bug of ours: still one JSON answer and one log line
                log.error("%s: %s: %s", self.address_string(), type(e).__name__, str(e).splitlines()[:1])
                self._send(500, {"error": f"internal error ({type(e).__name__})"})

        def log_message(self, fmt, *args):
            log.debug("%s %s", self.address_string(), fmt % args)

    try:
        server = LimitedHTTPServer((host, port), Handler, workers=limits.workers)
        server.decoder = decoder
    except OSError as e:
        decoder.close()
        raise ConfigError(f"cannot serve at {host}:{port} ({e.strerror}); another server may hold "
                          "the port: give another --port, or --port 0 for any free one") from None
    return server


class LimitedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``workers`` connections at once and
    answers the next with 503 at once; errors of a connection are one log line."""
    daemon_threads = True
    #: connections the kernel queues before the server accepts them (socketserver's 5 made a
    #: burst of clients wait for TCP's connect retries, seconds, before any answer)
    request_queue_size = 128

    def __init__(self, address, handler, workers: int = 16):
        self._slots = threading.BoundedSemaphore(workers)
        self.workers = workers
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": f"the server is busy ({self.workers} requests at once); "
                               "retry later"}).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                                + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_close(self):
        super().server_close()
        if getattr(self, "decoder", None) is not None:
            self.decoder.close()

    def handle_error(self, request, client_address):
        kind = sys.exc_info()[0]
        log.info("%s: connection ended by %s", client_address[0], getattr(kind, "__name__", kind))


def serve_forever(server: ThreadingHTTPServer) -> threading.Thread:
    """Starts ``server`` on a daemon thread (tests, notebooks); returns the thread."""
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t
