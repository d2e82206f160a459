"""Data config section: CSI synthesis, impairments, features, splits (owned by ``tfloc.data``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from tfloc.config import ConfigError, check_pair, param


@dataclass
class AugmentConfig:
    """One view of a CSI sample for consistency training (tfloc.data.CSIPipeline.views_dataset):
    physical impairments only, no image flips. Drawn per sample like the data's own
    TA and noise, after them."""
    snr_db: List[float] = param(factory=lambda: [20.0, 20.0], doc="[low, high] SNR of this view")
    ta_max_ns: float = param(5.0, min=0.0, doc="timing-advance error, uniform in +-ta_max_ns")
    subcarrier_mask_fraction: float = param(0.0, min=0.0, max=0.9,
                                            doc="share of subcarriers zeroed (blanked resource blocks)")
    antenna_dropout: float = param(0.0, min=0.0, max=0.9,
                                   doc="probability that a BS antenna port is zeroed (a failed element)")

    def validate(self):
        check_pair(self.snr_db, "snr_db")


@dataclass
class DataConfig:
    """CSI synthesis, impairments, features and splits (``tfloc.data``)."""
    num_subcarriers: int = param(136, min=2, doc="paper: 408 (8-comb SRS, 100 MHz)")
    subcarrier_spacing_hz: float = param(720e3, min=1e3, doc="effective SRS spacing; paper: 240e3")
    subcarrier_stride: int = param(1, min=1, doc="keep every n-th subcarrier (seed 004: 288 at "
                                "60 kHz, one per resource block: 12)")
    num_slots: int = param(1, min=1, doc="time slots T per snapshot (seed 004: 10); they differ by "
                        "the Doppler of a UE moving at ue_speed_mps")
    ue_speed_mps: float = param(1.0, min=0.0, doc="slot-to-slot variation: each path gets a random "
                             "Doppler shift up to ue_speed / wavelength")
    slot_duration_s: float = param(0.25e-3, min=0.0, doc="slot length (60 kHz SCS: 0.25 ms)")
    position_dims: int = param(2, choices=[2, 3], doc="label: (x, y) or (x, y, z)")
    snr_db: List[float] = param(factory=lambda: [20.0, 20.0], doc="[low, high], drawn per sample")
    ta_max_ns: float = param(5.0, min=0.0, doc="timing-advance error, uniform in +-ta_max_ns")
    max_paths: int = param(32, min=1, doc="strongest paths kept per UE for CSI synthesis")
    max_paths_range: List[int] = param(factory=list, min=1, doc="[low, high]: keep P ~ U{low..high} "
                                    "strongest paths, drawn per realization (seed 002: [10, 25]); "
                                    "empty: max_paths")
    num_delay_taps: int = param(64, min=1, doc="delay taps kept after the IDFT over subcarriers")
    representation: str = param("magnitude", choices=["magnitude", "real_imag", "adp", "real_csi",
                                                    "sample_covariance", "stabilized", "csi"],
                               doc="CSI form fed to the model (tfloc.data.features)")
    normalization: str = param("sample_max", choices=["none", "sample_max", "sample_power", "antenna",
                                                   "subcarrier", "matrix"])
    use_sector: bool = param(True, doc="feed the serving sector index to the model (a BS knows it)")
    labelled_fraction: float = param(0.1, min=0.0, max=1.0)
    val_fraction: float = param(0.05, min=0.0, max=1.0)
    test_fraction: float = param(0.2, min=0.0, max=1.0)
    split_by: str = param("random", choices=["random", "realization"],
                       doc="realization: train / val / test are consecutive blocks of car "
                       "realizations (seed 002), sizes from realization_splits")
    realization_splits: List[int] = param(factory=lambda: [50, 20, 50], min=0,
                                       doc="[train, val, test] realizations (seed 002: 50 / 20 / 50 of "
                                       "120); a 4th entry takes that many realizations after "
                                       "validation as an unlabelled block (a target domain "
                                       "disjoint from test)")
    batch_size: int = param(16, min=1)
    measured_file: str = param("", doc="a measured-CSI file (.npz / .h5, tfloc.data.measured) "
                               "to use instead of the ray tracer's paths; empty: simulated")
    fresh_samples_per_epoch: int = param(0, min=0, doc="seed 004 protocol: >0 trains each epoch on "
                                      "this many UEs drawn anew from every UE outside val/test "
                                      "(labelled_fraction is then unused); 0 = off")

    def validate(self):
        """Cross-field checks within the section (keys relative to it)."""
        check_pair(self.snr_db, "snr_db")
        kept = -(-self.num_subcarriers // self.subcarrier_stride)
        if self.num_delay_taps > kept:
            raise ConfigError(f"num_delay_taps: {self.num_delay_taps} exceeds the "
                              f"{kept} subcarriers kept (num_subcarriers / subcarrier_stride)")
        if self.max_paths_range:
            check_pair(self.max_paths_range, "max_paths_range")
        if self.split_by == "realization" and len(self.realization_splits) not in (3, 4):
            raise ConfigError(f"realization_splits: expected [train, val, test] or "
                              f"[train, val, test, unlabelled], got {self.realization_splits!r}")
        if self.split_by == "realization" and min(self.realization_splits[:3]) < 1:
            raise ConfigError(f"realization_splits: train, val and test need at least one "
                              f"realization each, got {self.realization_splits!r}")
        total = self.labelled_fraction + self.val_fraction + self.test_fraction
        if total > 1.0 + 1e-9:
            raise ConfigError(f"labelled_fraction + val_fraction + test_fraction = {total:g} > 1")
        if self.labelled_fraction <= 0 or self.test_fraction <= 0 or self.val_fraction <= 0:
            raise ConfigError("labelled_fraction, val_fraction and test_fraction must be > 0")
