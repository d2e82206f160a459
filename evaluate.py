#!/usr/bin/env python
"""Re-score a run: python evaluate.py --run-dir runs/<name>"""
from tfloc.run.cli import evaluate_main, run_cli

if __name__ == "__main__":
    run_cli(evaluate_main)
