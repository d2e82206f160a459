"""What a dataset gives a method: named input shapes, label dims, links, target statistics."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tfloc.data.features import feature_shape
from tfloc.sim.tracer import site_panels


@dataclass(frozen=True)
class DataSpec:
    """The contract between the data side and the methods (Model Garden's input spec).

    Known from the config before anything is traced (:meth:`from_config`);
    :meth:`with_targets` adds the statistics of the training labels.

    Parameters
    ----------
    site : "sectored" | "multi_bs" | "single_bs"
    links : int -- CSI tensors per sample (one per BS on multi-BS sites, else 1)
    csi_shape : per-link raw CSI shape ``[T*num_ue_ant, num_bs_ant, subcarriers, 2]``
    feature_shape : per-link model feature shape ``[H, W, C]``
    position_dims : 2 or 3
    num_sectors : sectors the model is told about (0: none)
    has_car_conditions : the scene has moving cars, so NLOS-by-car labels exist
    num_delay_taps, representation, normalization, array_shape : the feature transform
    target_mean, target_std : [position_dims] of the labelled training positions
    """
    site: str
    links: int
    csi_shape: tuple
    feature_shape: tuple
    position_dims: int
    num_sectors: int
    has_car_conditions: bool
    num_delay_taps: int
    representation: str
    normalization: str
    array_shape: tuple
    target_mean: tuple = field(default=())
    target_std: tuple = field(default=())

    @staticmethod
    def from_config(cfg) -> "DataSpec":
        sim, d = cfg.simulation, cfg.data
        sectored, panels = site_panels(sim)
        site = "sectored" if sectored else ("multi_bs" if len(panels) > 1 else "single_bs")
        kept = -(-d.num_subcarriers // d.subcarrier_stride)
        csi = (d.num_slots * sim.ue_array.num_ant, sim.bs_array.num_ant, kept, 2)
        return DataSpec(
            site=site, links=len(panels) if site == "multi_bs" else 1, csi_shape=csi,
            feature_shape=tuple(feature_shape(csi, d.num_delay_taps, d.representation,
                                              sim.bs_array.shape)),
            position_dims=d.position_dims,
            num_sectors=cfg.num_model_sectors if sectored else 0,
            has_car_conditions=sim.cars.num_realizations > 0,
            num_delay_taps=d.num_delay_taps, representation=d.representation,
            normalization=d.normalization, array_shape=tuple(sim.bs_array.shape))

    def with_targets(self, positions: np.ndarray) -> "DataSpec":
        """The spec with the mean and spread of ``positions`` [n, >= dims] (training labels)."""
        p = np.asarray(positions, np.float64)[:, :self.position_dims]
        return replace(self, target_mean=tuple(float(v) for v in p.mean(axis=0)),
                       target_std=tuple(float(v) + 1e-6 for v in p.std(axis=0)))

    @property
    def model_inputs(self) -> dict:
        """Per-sample ``{name: (shape, dtype)}`` of what the data side feeds a model."""
        lead = (self.links,) if self.links > 1 else ()
        out = {"features": (lead + tuple(self.feature_shape), "float32")}
        if self.site == "multi_bs":
            out["bs_positions"] = ((self.links, 3), "float32")
        elif self.num_sectors:
            out["sector"] = ((), "int32")
        return out

    @property
    def serving_inputs(self) -> dict:
        """Per-sample ``{name: (shape, dtype)}`` a served model takes: raw CSI instead of features."""
        lead = (self.links,) if self.links > 1 else ()
        out = {"csi": (lead + tuple(self.csi_shape), "float32")}
        out.update({k: v for k, v in self.model_inputs.items() if k != "features"})
        return out
