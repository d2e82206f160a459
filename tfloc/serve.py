"""Serve an exported model with TF Serving's REST predict API on this machine:

    python -m tfloc.serve RUN_DIR_OR_EXPORT [--port 8501] [--host 127.0.0.1] [--name NAME]
                      [--max-body-mb 128] [--max-batch 1024] [--timeout 10] [--workers 16]

then ``POST http://127.0.0.1:8501/v1/models/NAME:predict`` with ``{"instances": [...]}``.
See :mod:`tfloc.export.rest`. For production, TF Serving's model server loads the same
export directory (``export/<name>``) and replays its warm-up requests.
"""
from __future__ import annotations

import argparse
import logging

from tfloc.config import ConfigError
from tfloc.rest_body import ServerLimits


def main(argv=None):
    p = argparse.ArgumentParser(description="TF Serving's REST predict API for a tfloc export.")
    p.add_argument("path", help="a run directory, export/<name> or export/<name>/<version>")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501, help="0: any free port (printed)")
    p.add_argument("--name", help="model name in the URL (default: the export's name)")
    d = ServerLimits()
    p.add_argument("--max-body-mb", type=float, default=d.max_body_mb, help="larger bodies get 413 "
                   f"(default {d.max_body_mb:g})")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="rows per request; more get 413 "
                   f"(default {d.max_batch})")
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds a connection may stay "
                   f"silent before it is closed (default {d.timeout_s:g})")
    p.add_argument("--workers", type=int, default=d.workers, help="connections served at once; the "
                   f"next gets 503 (default {d.workers})")
    args = p.parse_args(argv)
    for flag in ("max_body_mb", "max_batch", "timeout", "workers"):
        if not getattr(args, flag) > 0:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be > 0")
    limits = ServerLimits(args.max_body_mb, args.max_batch, args.timeout, args.workers)
    # TensorFlow only now: the process that decodes large bodies imports this module again
    from tfloc.export.rest import Predictor, find_export, make_server
    model_dir = find_export(args.path)
    predictor = Predictor(model_dir, args.name)
    server = make_server(predictor, args.host, args.port, limits)
    host, port = server.server_address[:2]
    print(f"serving {predictor.name} (version {predictor.version}, {model_dir}) at "
          f"http://{host}:{port}/v1/models/{predictor.name}:predict", flush=True)
    logging.getLogger("tfloc").info("inputs: %s", {k: v.shape.as_list() for k, v in predictor.inputs.items()})
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    from tfloc.run.cli import run_cli
    run_cli(main)
