#!/usr/bin/env python
"""Train one tfloc experiment end to end: python train.py --config configs/etoile_supervised.yaml"""
from tfloc.run.cli import run_cli, train_main

if __name__ == "__main__":
    run_cli(train_main)
