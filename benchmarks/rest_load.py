"""The REST server under mixed load (``python benchmarks/bench.py --rest-load RUN_DIR``).

Starts ``python -m tfloc.serve RUN_DIR`` as its own process, as a deployment would, and
measures from client threads in this process:

- the p50 / p99 latency of ``clients`` clients that each send one UE's CSI (a warm-up
  request of the export: real test CSI) in a loop, alone ("unloaded") and while one more
  client sends the largest body the server takes (``--max-body-mb``, at most
  ``--max-batch`` rows) in a loop ("loaded");
- ``idle`` connections that connect and send nothing: how many are answered 503 at once
  (beyond the server's worker slots) and when the others are closed (the read timeout).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time

import numpy as np


def start_server(run_dir: str, timeout_s: float, extra=()) -> tuple[subprocess.Popen, str, int]:
    """``python -m tfloc.serve`` on a free port: (process, model name, port)."""
    proc = subprocess.Popen([sys.executable, "-m", "tfloc.serve", run_dir, "--port", "0",
                             "--timeout", str(timeout_s), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"at http://[^:]+:(\d+)/v1/models/([^:]+):predict", line)
    if not m:
        proc.kill()
        raise SystemExit(f"--rest-load: the server did not start ({line.strip() or 'no output'})")
    return proc, m.group(2), int(m.group(1))


def post(port: int, path: str, body: bytes) -> float:
    """Seconds from connecting to the whole answer; raises on any answer but 200."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"answer {r.status}: {data[:200]!r}")
    finally:
        c.close()
    return time.perf_counter() - t0


def load_phase(port: int, path: str, small: bytes, clients: int, seconds: float,
               big: bytes | None = None) -> dict:
    """``clients`` threads posting ``small`` for ``seconds`` (and one posting ``big`` when
    given): their latencies' p50 / p99 and the big requests' times."""
    stop = threading.Event()
    lat: list[float] = []
    big_times: list[float] = []
    errors: list[str] = []

    def client(body, out):
        while not stop.is_set():
            try:
                out.append(post(port, path, body))
            except Exception as e:  # noqa: BLE001 (counted and reported, not raised in a thread)
                errors.append(f"{type(e).__name__}: {e}")
    threads = [threading.Thread(target=client, args=(small, lat)) for _ in range(clients)]
    if big is not None:
        threads.append(threading.Thread(target=client, args=(big, big_times)))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    a = np.asarray(lat)
    return {"requests": len(a), "p50_ms": 1e3 * float(np.percentile(a, 50)),
            "p99_ms": 1e3 * float(np.percentile(a, 99)), "max_ms": 1e3 * float(a.max()),
            "big_requests": len(big_times), "big_s": [round(t, 2) for t in big_times],
            "errors": len(errors), "first_error": errors[0] if errors else None}


def idle_phase(port: int, n: int, timeout_s: float) -> dict:
    """``n`` connections opened at once that send nothing, watched together: how many get 503
    at once and when the others are closed, in seconds from the first connect."""
    socks, t0 = [], time.perf_counter()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s * 3 + 30)
        s.setblocking(False)
        socks.append(s)
    connected_s = time.perf_counter() - t0
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ, bytearray())
    busy, closed_at, deadline = 0, [], t0 + 10 * timeout_s + 60
    while sel.get_map() and time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=1.0):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if data:
                key.data.extend(data)
                continue
            sel.unregister(key.fileobj)     # the server closed it
            key.fileobj.close()
            if key.data.startswith(b"HTTP/1.1 503"):
                busy += 1
            else:
                closed_at.append(time.perf_counter() - t0)
    still_open = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return {"connections": n, "connected_in_s": round(connected_s, 2), "answered_503": busy,
            "closed_by_timeout": len(closed_at), "still_open_after_wait": still_open,
            "first_close_s": round(min(closed_at), 2) if closed_at else None,
            "last_close_s": round(max(closed_at), 2) if closed_at else None}


def largest_body(rows: list, max_mb: float, max_batch: int) -> tuple[bytes, int]:
    """The largest ``{"instances": ...}`` body of ``rows`` (cycled) within ``max_mb`` and
    ``max_batch`` rows: (body, rows)."""
    texts = [json.dumps(r) for r in rows]
    budget, size, parts = int(max_mb * 2 ** 20) - 64, len('{"instances": []}'), []
    while len(parts) < max_batch:
        t = texts[len(parts) % len(texts)]
        if size + len(t) + 2 > budget:
            break
        parts.append(t)
        size += len(t) + 2
    return ('{"instances": [' + ", ".join(parts) + "]}").encode(), len(parts)


def bench_rest_load(run_dir: str, clients: int = 8, seconds: float = 30.0, idle: int = 500,
                    timeout_s: float = 10.0) -> dict:
    from tfloc.export.rest import find_export
    from tfloc.export.saved_model import WARMUP_FILE, read_warmup
    from tfloc.rest_body import ServerLimits
    export = find_export(run_dir)
    warm = read_warmup(os.path.join(export, "assets.extra", WARMUP_FILE))
    req = max(warm, key=lambda x: len(next(iter(x.values()))))
    n = len(next(iter(req.values())))
    rounded = {k: np.round(v, 6) if v.dtype.kind == "f" else v for k, v in req.items()}
    if len(req) == 1:       # row format: one input is one array per instance, several a dict
        rows = [v.tolist() for v in next(iter(rounded.values()))]
    else:
        rows = [{k: v[i].tolist() for k, v in rounded.items()} for i in range(n)]
    small = json.dumps({"instances": rows[:1]}).encode()
    limits = ServerLimits()
    big, big_rows = largest_body(rows, limits.max_body_mb, limits.max_batch)
    proc, name, port = start_server(run_dir, timeout_s)
    path = f"/v1/models/{name}:predict"
    try:
        post(port, path, small)
        post(port, path, big)           # warm both paths once
        out = {"export": export, "clients": clients, "seconds_per_phase": seconds,
               "small_body_kb": len(small) / 1024, "big_body_mb": len(big) / 2 ** 20,
               "big_body_rows": big_rows, "limits": {"max_body_mb": limits.max_body_mb,
                                                     "max_batch": limits.max_batch,
                                                     "timeout_s": timeout_s, "workers": limits.workers}}
        out["unloaded"] = load_phase(port, path, small, clients, seconds)
        out["loaded"] = load_phase(port, path, small, clients, seconds, big=big)
        out["p99_ratio"] = out["loaded"]["p99_ms"] / out["unloaded"]["p99_ms"]
        out["idle"] = idle_phase(port, idle, timeout_s)
        out["server_alive"] = proc.poll() is None
        post(port, path, small)         # still answers after all of it
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def table(r: dict) -> str:
    u, lo, i = r["unloaded"], r["loaded"], r["idle"]
    return (f"| load ({r['clients']} clients, one UE each, {r['seconds_per_phase']:.0f} s) | requests | "
            f"p50 | p99 | max |\n|---|---|---|---|---|\n"
            f"| alone | {u['requests']} | {u['p50_ms']:.0f} ms | {u['p99_ms']:.0f} ms | {u['max_ms']:.0f} ms |\n"
            f"| beside one client sending {r['big_body_mb']:.0f} MB bodies ({r['big_body_rows']} UEs; "
            f"{lo['big_requests']} sent, {', '.join(f'{t:.1f}' for t in lo['big_s'])} s each) | "
            f"{lo['requests']} | {lo['p50_ms']:.0f} ms | {lo['p99_ms']:.0f} ms | {lo['max_ms']:.0f} ms |\n\n"
            f"p99 loaded / alone: {r['p99_ratio']:.2f}x; failed requests: {u['errors'] + lo['errors']}\n\n"
            f"| {i['connections']} idle connections | |\n|---|---|\n"
            f"| answered 503 at once (beyond {r['limits']['workers']} worker slots) | {i['answered_503']} |\n"
            f"| closed by the {r['limits']['timeout_s']:g} s read timeout | {i['closed_by_timeout']} "
            f"(after {i['first_close_s']}-{i['last_close_s']} s) |\n"
            f"| still open | {i['still_open_after_wait']} |\n"
            f"| server answers afterwards | {'yes' if r['server_alive'] else 'no'} |")
