"""A config's simulated CSI written in the measured-data format (:mod:`tfloc.data.measured`):

    python -m tfloc.run.convert --config configs/data/street_canyon.yaml --out canyon.npz

Every sample with a path, with the impairments (TA error, noise) of its split's fixed draws,
its position, condition, measurement point (``group``: one UE position over its traffic
realizations) and split; attributes from the config. The file trains and scores like a
measurement campaign (``data.measured_file``), so the tests and users can try the
measured-data path on known ground truth.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

from tfloc.config import ConfigError
from tfloc.data.bundle import SPLIT_SEED_OFFSETS, DataBundle, load_data
from tfloc.data.measured import SPLITS, write_measured
from tfloc.run.experiment import load_config
from tfloc.sim.tracer import site_panels

log = logging.getLogger("tfloc")


def write_from_bundle(cfg, data: DataBundle, path: str) -> dict:
    """Writes ``data`` (of experiment config ``cfg``) to ``path``; returns a summary."""
    if data.spec.links > 1:
        raise ConfigError("a multi-BS site: the measured-data format holds one BS's CSI per sample")
    if data.info.get("measured"):
        raise ConfigError(f"{cfg.data.measured_file} is measured data already")
    rows, csi, split = [], [], []
    for name in SPLITS:
        idx = np.asarray(getattr(data.splits, name))
        if not len(idx):
            continue
        # the split's own batches and draws: the file's CSI is what a run evaluates on
        ds = data.pipeline.csi_dataset(idx, training=False, split_seed_offset=SPLIT_SEED_OFFSETS[name])
        h = np.concatenate([x["csi"].numpy() for x, _ in ds])         # [n, T, M, K, 2]
        csi.append(h[..., 0] + 1j * h[..., 1])
        rows.append(idx)
        split += [name] * len(idx)
    rows = np.concatenate(rows)
    order = np.argsort(rows, kind="stable")
    rows, p = rows[order], data.paths
    sim, d = cfg.simulation, cfg.data
    sectored, panels = site_panels(sim)
    attrs = {"subcarrier_spacing_hz": d.subcarrier_spacing_hz * d.subcarrier_stride,
             "carrier_frequency_hz": sim.frequency_hz,
             "array_rows": sim.bs_array.num_rows, "array_cols": sim.bs_array.num_cols,
             "bs_position_m": panels[0]["position"]}
    if not sectored:
        attrs["bs_orientation_deg"] = [panels[0]["azimuth_deg"], panels[0]["downtilt_deg"]]
    write_measured(path, np.concatenate(csi)[order], p.positions[rows, :d.position_dims],
                   condition=p.condition[rows], group=p.ue_id[rows], split=np.asarray(split)[order],
                   **attrs)
    return {"path": path, "samples": int(len(rows)), "groups": int(len(np.unique(p.ue_id[rows]))),
            "csi_shape": list(np.concatenate(csi).shape[1:]), **attrs}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a data or experiment config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="the file to write (.npz, .h5)")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    s = write_from_bundle(cfg, load_data(cfg), args.out)
    print(f"wrote {s['path']}: {s['samples']} samples ({s['groups']} measurement points), CSI "
          f"{' x '.join(map(str, s['csi_shape']))} per sample (snapshots x BS antennas x subcarriers)")
    return s


if __name__ == "__main__":
    from tfloc.run.cli import run_cli
    run_cli(main)
