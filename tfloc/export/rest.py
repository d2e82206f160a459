"""TF Serving's REST predict API for one exported SavedModel, for users without the
model server binary (``python -m tfloc.serve``).

``POST /v1/models/<name>[/versions/<v>]:predict`` takes ``{"instances": [...]}`` (row
format: one object of named inputs per UE, or the bare value when the signature has one
input) or ``{"inputs": {...}}`` (columnar) and answers ``{"predictions": [...]}`` (one
object of named outputs per UE, or the bare value for one output) or ``{"outputs":
...}``, as TF Serving does. ``GET /v1/models/<name>`` reports the version's status.
A request the model rejects (CSI of the wrong shape, NaN, a sector out of range,
malformed JSON) gets HTTP 400 and ``{"error": "<one line>"}``; an unknown model 404.

The server protects itself (:class:`ServerLimits`, flags of ``python -m tfloc.serve``): a body
larger than ``max_body_mb`` or a batch of more than ``max_batch`` rows is refused with 413
before it is read or run; every socket read waits at most ``timeout_s`` (a client that stops
sending is dropped); at most ``workers`` connections are served at once and the next one
gets 503 at once; JSON nested deeper than Python's parser allows or with integers of more
than 30 digits is a 400. Every failure is a JSON answer and one log line (a client that hangs
up is one debug line, not a traceback).
"""
from __future__ import annotations

import dataclasses
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

log = logging.getLogger("tfloc")

_PREDICT = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_STATUS = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?$")


class BadRequest(ValueError):
    """A request the model cannot answer (HTTP 400, or ``code``)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class ServerLimits:
    """What one request and the server as a whole may take. Defaults sized for CSI batches:
    an etoile UE's CSI (2 x 32 x 136 complex values) is about 424 kB of JSON, so 128 MB holds
    about 300 of them (the REST benchmark's batch of 256 is 106 MB); an HDA UE's 8 x 8 x 64
    is about 90 kB."""
    max_body_mb: float = 128.0
    max_batch: int = 1024
    timeout_s: float = 10.0
    workers: int = 16


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:        # no input of a positioning model needs more
        raise BadRequest(f"JSON integer of {len(text)} digits; at most 30")
    return int(text)


def parse_body(data: bytes):
    """The JSON body of a request; BadRequest (400) for what cannot be decoded."""
    try:
        return json.loads(data or b"null", parse_int=_parse_int)
    except RecursionError:
        raise BadRequest("JSON parse error: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"JSON parse error: {e}") from None


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
    """The ``serving_default`` signature of a SavedModel on JSON-decoded requests."""

    def __init__(self, model_dir: str, name: str | None = None):
        import tensorflow as tf
        self.model_dir = os.path.abspath(model_dir)
        self.loaded = tf.saved_model.load(self.model_dir)
        self.fn = self.loaded.signatures[SIGNATURE]
        self.inputs = dict(self.fn.structured_input_signature[1])
        self.version = os.path.basename(self.model_dir)
        self.name = name or os.path.basename(os.path.dirname(self.model_dir))
        self._tf = tf

    def _array(self, key, value, spec) -> np.ndarray:
        try:
            a = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise BadRequest(f"input '{key}': not a {spec.dtype.name} array ({str(e).splitlines()[0]})") from None
        if a.ndim != len(spec.shape):
            raise BadRequest(f"input '{key}' must have shape [batch, "
                             f"{', '.join(map(str, spec.shape[1:]))}], got {list(a.shape)}")
        return a

    def predict(self, body, max_batch: int | None = None) -> dict:
        if not isinstance(body, dict) or (("instances" in body) == ("inputs" in body)):
            raise BadRequest("the request body must be a JSON object with 'instances' (row "
                             "format) or 'inputs' (columnar format)")
        sig = body.get("signature_name", SIGNATURE)
        if sig != SIGNATURE:
            raise BadRequest(f"signature '{sig}' not found; the model serves '{SIGNATURE}'")
        names = list(self.inputs)
        rows = "instances" in body
        if rows:
            inst = body["instances"]
            if not isinstance(inst, list):
                raise BadRequest("'instances' must be a list")
            if len(names) == 1 and not (inst and isinstance(inst[0], dict)):
                cols = {names[0]: inst}
            else:
                bad = [i for i, v in enumerate(inst) if not isinstance(v, dict) or set(v) != set(names)]
                if bad:
                    raise BadRequest(f"instance {bad[0]} must be an object with the inputs "
                                     f"{names}")
                cols = {k: [v[k] for v in inst] for k in names}
        else:
            cols = body["inputs"] if isinstance(body["inputs"], dict) else {names[0]: body["inputs"]}
            if set(cols) != set(names):
                raise BadRequest(f"'inputs' must hold the inputs {names}, got {sorted(cols)}")
        x = {}
        for k in names:
            spec = self.inputs[k]
            if not isinstance(cols[k], list):
                raise BadRequest(f"input '{k}' must be a list with one entry per row, got "
                                 f"{type(cols[k]).__name__}")
            if max_batch is not None and len(cols[k]) > max_batch:
                raise BadRequest(f"a batch of {len(cols[k])} rows; this server takes at most "
                                 f"{max_batch} per request (--max-batch)", code=413)
            if len(cols[k]) == 0:
                x[k] = np.zeros([0, *spec.shape[1:]], spec.dtype.as_numpy_dtype)
            else:
                x[k] = self._array(k, cols[k], spec)
        try:
            out = self.fn(**{k: self._tf.constant(v) for k, v in x.items()})
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
        return {"model_version_status": [{"version": self.version, "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}


def make_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 8501,
                limits: ServerLimits | None = None) -> "LimitedHTTPServer":
    """An HTTP server (not started) answering TF Serving's REST API for ``predictor`` within
    ``limits``; ConfigError (one line) when the address is taken."""
    limits = limits or ServerLimits()
    max_body = int(limits.max_body_mb * 2 ** 20)

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
            if name != predictor.name or (version and version != predictor.version):
                self._send(404, {"error": f"Servable not found for request: Latest({name})"
                                 if not version else f"Servable not found: {name} version {version}"})
                return False
            return True

        def do_GET(self):  # noqa: N802 (http.server's names)
            m = _STATUS.match(self.path)
            if not m:
                return self._send(404, {"error": f"Malformed request: GET {self.path}"})
            if self._model(m):
                self._send(200, predictor.status())

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
                self._send(200, predictor.predict(parse_body(self._body()), limits.max_batch))
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
    except OSError as e:
        raise ConfigError(f"cannot serve at {host}:{port} ({e.strerror}); another server may hold "
                          "the port: give another --port, or --port 0 for any free one") from None
    return server


class LimitedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``workers`` connections at once and
    answers the next with 503 at once; errors of a connection are one log line."""
    daemon_threads = True

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

    def handle_error(self, request, client_address):
        kind = sys.exc_info()[0]
        log.info("%s: connection ended by %s", client_address[0], getattr(kind, "__name__", kind))


def serve_forever(server: ThreadingHTTPServer) -> threading.Thread:
    """Starts ``server`` on a daemon thread (tests, notebooks); returns the thread."""
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t
