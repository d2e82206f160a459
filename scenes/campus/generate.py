"""Generates the procedural campus scene into scenes/campus/seed-NNN/.

    python scenes/campus/generate.py [--seed 4] [--render docs/campus.png]

The geometry code lives in tfloc/sim/campus.py; configs that name the scene
``campus`` generate it on first use, so running this by hand is optional.
"""
import sys

from tfloc.sim.campus import main

if __name__ == "__main__":
    from tfloc.cli import run_cli
    sys.exit(run_cli(main))
