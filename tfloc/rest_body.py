"""Decoding a TF Serving REST predict request into NumPy arrays, without TensorFlow.

The REST server (:mod:`tfloc.export.rest`) decodes small bodies in its request thread and
large ones in a separate process (:class:`BodyDecoder`): Python's JSON parser and NumPy's
conversion of nested lists hold the GIL for the whole of a large body, which would stall
every other client's request for seconds. This module imports only NumPy, so that process
starts in a fraction of a second.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import struct
import subprocess
import sys
import threading

import numpy as np

SIGNATURE = "serving_default"


@dataclasses.dataclass
class ServerLimits:
    """What one request and the server as a whole may take. Defaults sized for CSI batches:
    an etoile UE's CSI (2 x 32 x 136 complex values) is about 424 kB of JSON, so 128 MB holds
    about 300 of them (the REST benchmark's batch of 256 is 106 MB)."""
    max_body_mb: float = 128.0
    max_batch: int = 1024
    timeout_s: float = 10.0
    workers: int = 16


class BadRequest(ValueError):
    """A request the model cannot answer (HTTP 400, or ``code``)."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code

    def __reduce__(self):          # crosses the process boundary with its code
        return (BadRequest, (str(self), self.code))


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


def _array(key, value, dtype: str, shape) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise BadRequest(f"input '{key}': not a {np.dtype(dtype).name} array ({str(e).splitlines()[0]})") from None
    if a.ndim != len(shape):
        raise BadRequest(f"input '{key}' must have shape [batch, {', '.join(map(str, shape[1:]))}], "
                         f"got {list(a.shape)}")
    return a


def decode_request(body, signatures: dict, max_batch: int | None = None) -> tuple[str, dict, bool]:
    """``(signature, {input: array}, rows)`` of a decoded JSON ``body``. ``signatures`` maps
    each servable signature's name to its inputs, ``{name: (NumPy dtype name, shape with None
    for the batch)}``; the request's ``signature_name`` picks one (default
    ``serving_default``, as in TF Serving); ``rows``: the request used the row format
    (``instances``) rather than the columnar one (``inputs``)."""
    if not isinstance(body, dict) or (("instances" in body) == ("inputs" in body)):
        raise BadRequest("the request body must be a JSON object with 'instances' (row "
                         "format) or 'inputs' (columnar format)")
    sig = body.get("signature_name", SIGNATURE)
    if not isinstance(sig, str) or sig not in signatures:
        raise BadRequest(f'Serving signature name: "{sig}" not found in signature def')
    inputs = signatures[sig]
    names = list(inputs)
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
                raise BadRequest(f"instance {bad[0]} must be an object with the inputs {names}")
            cols = {k: [v[k] for v in inst] for k in names}
    else:
        cols = body["inputs"] if isinstance(body["inputs"], dict) else {names[0]: body["inputs"]}
        if set(cols) != set(names):
            raise BadRequest(f"'inputs' must hold the inputs {names}, got {sorted(cols)}")
    x = {}
    for k in names:
        dtype, shape = inputs[k]
        if not isinstance(cols[k], list):
            raise BadRequest(f"input '{k}' must be a list with one entry per row, got {type(cols[k]).__name__}")
        if max_batch is not None and len(cols[k]) > max_batch:
            raise BadRequest(f"a batch of {len(cols[k])} rows; this server takes at most {max_batch} per "
                             "request (--max-batch)", code=413)
        x[k] = (np.zeros([0, *shape[1:]], dtype) if len(cols[k]) == 0 else _array(k, cols[k], dtype, shape))
    return sig, x, rows


def decode_bytes(data: bytes, signatures: dict, max_batch: int | None = None) -> tuple[str, dict, bool]:
    """:func:`decode_request` of the raw body ``data`` (what the decoding process runs)."""
    return decode_request(parse_body(data), signatures, max_batch)


class BodyDecoder:
    """Decodes request bodies of at least ``min_bytes`` in one separate Python process
    (``python -m tfloc.rest_body``, fed over a pipe: it imports only this module, shares no
    lock with TensorFlow's threads and needs no ``__main__`` guard in the caller's script),
    the rest in the calling thread. Large bodies queue for that process, one at a time; a
    process that died is started again for the next body."""

    def __init__(self, min_bytes: int = 2 ** 20):
        self.min_bytes = min_bytes
        self._lock = threading.Lock()
        self._proc = None
        with self._lock:
            self._start()

    def _start(self):
        self._proc = subprocess.Popen([sys.executable, "-m", "tfloc.rest_body"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                          filter(None, [_REPO, os.environ.get("PYTHONPATH")]))})

    @property
    def pid(self) -> int:
        return self._proc.pid

    def decode(self, data: bytes, signatures: dict, max_batch: int | None = None) -> tuple[str, dict, bool]:
        """:func:`decode_bytes` of ``data``, in the decoding process when it is large."""
        if len(data) < self.min_bytes:
            return decode_bytes(data, signatures, max_batch)
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                _send(self._proc.stdin, (data, signatures, max_batch))
                ok, value = _receive(self._proc.stdout)
            except (OSError, EOFError):
                self._proc.kill()
                self._proc = None
                raise BadRequest("the decoding process ended while it read this body", code=500) from None
        if not ok:
            raise value
        return value

    def close(self):
        with self._lock:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                self._proc = None


def _send(stream, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    data = stream.read(struct.unpack("<Q", head)[0])
    return pickle.loads(data)


#: the repository root, so the decoding process finds this module however the server started
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _serve(stdin, stdout):
    """The decoding process: one (body, signatures, max_batch) after another, answering
    (True, decoded) or (False, BadRequest)."""
    while True:
        try:
            data, signatures, max_batch = _receive(stdin)
        except EOFError:
            return
        try:
            answer = (True, decode_bytes(data, signatures, max_batch))
        except BadRequest as e:
            answer = (False, e)
        except Exception as e:          # still an answer: the server stays up
            answer = (False, BadRequest(f"cannot decode the body ({type(e).__name__})", code=500))
        _send(stdout, answer)


if __name__ == "__main__":     # run as the module itself, so its errors unpickle as tfloc.rest_body's
    from tfloc.rest_body import _serve as serve
    serve(sys.stdin.buffer, sys.stdout.buffer)
