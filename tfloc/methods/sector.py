"""Seed 000 section III-C: sector rotation with decoupled mapping heads (``sector_heads``).

Sector rotation: every labelled UE of sector j is also used, rotated about the BS by
the angle between the boresights (:func:`tfloc.sim.site.rotate_into_sector`), as a UE
of each other sector k: its CSI is kept (an identical panel at boresight k sees the
rotated scene's UE as panel j saw the real one), its serving sector becomes k and its
coordinates turn with it. Sparse sectors borrow the anchors of dense ones ("a virtual
sector dataset tripling the original size").

Decoupled heads: a shared backbone (``model``), one coordinate head per sector, each
sample routed to its serving sector's head, in training and in the served model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from tfloc.config import param
from tfloc.data.bundle import split_dataset
from tfloc.methods.registry import METHODS
from tfloc.methods.supervised import SupervisedTask
from tfloc.methods.task import require
from tfloc.models import build_model
from tfloc.models.heads import with_sector_heads
from tfloc.sim.site import rotate_into_sector


@dataclass
class SectorHeadsOptions:
    rotate: bool = param(True, doc="add the other sectors' labelled UEs, rotated into each sector")
    head_units: List[int] = param(factory=lambda: [128], min=1, doc="each sector head's hidden layers")


@METHODS.register("sector_heads", config=SectorHeadsOptions)
class SectorHeadsTask(SupervisedTask):

    @property
    def evaluators(self):
        return ("position", "per_sector", "per_condition", "knn", "mean", "bound")

    def check(self, spec):
        super().check(spec)
        require(spec.site == "sectored" and spec.num_sectors > 1,
                "method 'sector_heads' needs a sectored site whose serving sector is fed to the "
                "model (simulation.sector_azimuths_deg with 2 or more sectors, data.use_sector: "
                f"true); this one has {spec.num_sectors} sectors the model is told about")

    def training_rows(self, data):
        """(rows, positions [n, dims], serving sectors, source sectors of the labelled rows):
        the labelled UEs, and with ``rotate`` their copies rotated into every other sector."""
        s, paths = data.splits, data.paths
        sim, dims = self.cfg.simulation, self.cfg.data.position_dims
        rows, src = s.train, paths.sector[s.train].astype(np.int64)
        pos = paths.positions[rows]
        targets = range(data.spec.num_sectors) if self.options.rotate else [None]
        all_rows, all_pos, all_sec = [], [], []
        for k in targets:
            dst = src if k is None else np.full_like(src, k)
            all_rows.append(rows)
            all_pos.append(rotate_into_sector(pos, sim.bs_position_m, sim.sector_azimuths_deg, src, dst))
            all_sec.append(dst)
        return (np.concatenate(all_rows), np.concatenate(all_pos)[:, :dims].astype(np.float32),
                np.concatenate(all_sec), src)

    def build_inputs(self, data):
        rows, positions, sectors, _ = self.training_rows(data)
        train = data.pipeline.feature_dataset(rows, training=True, positions=positions, sectors=sectors)
        return {"train": train, "val": split_dataset(data, "val")}

    def rows_per_epoch(self, data) -> int:
        return len(self.training_rows(data)[0])

    def train(self, models, inputs, data, run):
        result = super().train(models, inputs, data, run)
        _, _, sectors, src = self.training_rows(data)
        n = data.spec.num_sectors
        result.report = {"sector_heads": {
            "rotate": self.options.rotate,
            "labelled_per_sector": np.bincount(src, minlength=n).tolist(),
            "training_per_sector": np.bincount(sectors, minlength=n).tolist()}}
        return result

    def build_models(self, spec):
        backbone = build_model(self.cfg.model, spec)
        return {"inference": with_sector_heads(backbone, spec, tuple(self.options.head_units))}
