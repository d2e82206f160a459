#!/usr/bin/env python
"""Measured rates for docs/scale.md: what each paper's full setup costs on this machine.

    python benchmarks/scale.py [--out FILE]

For each paper's dataset it ray traces a small sample at the paper's tracing settings
(grid spacing, rays, reflection depth, realizations) into a throw-away cache and times
the whole build (scene load and JIT warm-up included, so the rate is a lower bound of a
long build's), and times training steps of the paper's model at the paper's input shape
and batch on random features (the TaskTrainer every method uses). Writes JSON and prints
the rates; docs/scale.md turns them into costs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

#: name -> (config, the paper's overrides, the sample's extra overrides for tracing)
SETUPS = {
    "seed000_etoile": ("configs/etoile_supervised.yaml",
                       ["simulation.ue_grid.spacing_m=1.0", "simulation.samples_per_src=10000",
                        "data.num_subcarriers=408", "data.subcarrier_spacing_hz=240e3",
                        "data.num_delay_taps=128"],
                       ["simulation.ue_grid.x_range_m=[40.0, 140.0]",
                        "simulation.ue_grid.y_range_m=[-160.0, -60.0]"]),
    "seed002_street_canyon": ("configs/hda.yaml",
                              ["simulation.ue_grid.spacing_m=0.8", "simulation.cars.num_realizations=120",
                               "data.realization_splits=[50, 20, 50]", "data.batch_size=256"],
                              ["simulation.cars.num_realizations=3", "data.realization_splits=[1, 1, 1]"]),
    "seed004_campus": ("configs/ecc.yaml",
                       ["simulation.max_depth=10", "simulation.ue_grid.num_ues=40000",
                        "data.fresh_samples_per_epoch=3000", "model.ecc.encoder_filters=[16, 32, 64]"],
                       ["simulation.ue_grid.num_ues=600"]),
}


def trace_sample(config, sets):
    from tfloc.run.experiment import load_config
    from tfloc.sim import DatasetBuild
    cfg = load_config(os.path.join(REPO, config), sets)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        b = DatasetBuild(cfg.simulation, tmp)
        b.build(progress=False)
        ps = b.merge()
        dt = time.perf_counter() - t
    positions = len(set(map(int, ps.ue_id)))
    return {"receiver_positions": positions, "links": int(ps.num_ue), "seconds": dt,
            "links_per_s": ps.num_ue / dt, "positions_per_s": positions / dt}


def training_rate(config, sets, steps=20):
    import numpy as np
    from bench import bench_training
    from tfloc.data.spec import DataSpec
    from tfloc.run.experiment import load_config
    cfg = load_config(os.path.join(REPO, config), sets)
    spec = DataSpec.from_config(cfg).with_targets(np.zeros((4, cfg.data.position_dims), np.float32) +
                                                  np.arange(4)[:, None])
    r, _ = bench_training(cfg, spec, steps=steps)
    r["feature_shape"] = list(spec.feature_shape)
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--only", nargs="+", choices=sorted(SETUPS))
    args = p.parse_args(argv)
    out = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    for name in args.only or SETUPS:
        config, paper, sample = SETUPS[name]
        print(f"{name}: tracing a sample ...", flush=True)
        r = {"tracing_sample": trace_sample(config, [*paper, *sample])}
        if name != "seed004_campus":   # seed 004's step rates: benchmarks/bench.py --ecc
            print(f"{name}: training steps ...", flush=True)
            r["training"] = training_rate(config, paper)
        out[name] = r
        print(json.dumps(r, indent=1), flush=True)
    path = args.out or os.path.join(REPO, "benchmarks", "results",
                                    f"scale-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
