#!/usr/bin/env python
"""Which Python versions can install tfloc's pinned stack from binary wheels?

    python benchmarks/python_versions.py [3.9 3.10 3.11 3.12 3.13] [--keep DIR]

For each version, ``pip download --only-binary=:all: --python-version X`` resolves
setup.cfg's ``install_requires`` (and the ``test`` extra) for this machine's platform
into a scratch directory, which is deleted afterwards unless ``--keep``. Prints one
line per version: the wheels it resolved, or pip's reason it could not. Needs the
package index (network); it is a tool, not a test. setup.cfg's ``python_requires``
should allow exactly the versions this reports as resolving.
"""
from __future__ import annotations

import argparse
import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pinned_requirements(setup_cfg: str = os.path.join(REPO, "setup.cfg")) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    reqs = cfg["options"]["install_requires"]
    reqs += "\n" + cfg["options.extras_require"]["test"]
    return [r.strip() for r in reqs.splitlines() if r.strip() and not r.strip().startswith("#")]


def resolve(version: str, reqs: list[str], dest: str) -> tuple[bool, str]:
    """Runs pip download for one Python version; (resolved, summary)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", version, "-d", dest, *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        err = [line for line in r.stderr.splitlines() if line.startswith("ERROR")]
        why = [e for e in err if "No matching distribution" in e] or err  # not the "Ignored ..." list
        return False, (why[-1] if why else r.stderr.strip().splitlines()[-1])
    wheels = sorted(f for f in os.listdir(dest) if f.endswith(".whl"))
    size = sum(os.path.getsize(os.path.join(dest, f)) for f in wheels) / 2**20
    return True, f"{len(wheels)} wheels, {size:,.0f} MB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="*", default=["3.9", "3.10", "3.11", "3.12", "3.13"])
    ap.add_argument("--keep", help="keep the downloaded wheels under DIR/<version>")
    args = ap.parse_args(argv)
    reqs = pinned_requirements()
    ok = []
    for v in args.versions:
        dest = os.path.join(args.keep, v) if args.keep else tempfile.mkdtemp(prefix=f"tfloc-py{v}-")
        t = time.time()
        try:
            good, summary = resolve(v, reqs, dest)
        finally:
            if not args.keep:
                shutil.rmtree(dest, ignore_errors=True)
        print(f"Python {v}: {'resolves' if good else 'does not resolve'} ({summary}; {time.time() - t:.0f} s)",
              flush=True)
        ok += [v] if good else []
    print(f"resolving: {', '.join(ok) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
