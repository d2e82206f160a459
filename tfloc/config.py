"""Typed experiment configuration.

A YAML file holds only overrides of the registered defaults below (the Model
Garden habit). Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` with one line naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, List

import yaml


class ConfigError(ValueError):
    """A user mistake in a config file or override; the CLIs print it in one line."""


def _f(default=dataclasses.MISSING, *, factory=None, min=None, max=None,
       choices=None, doc=""):
    """A dataclass field with validation metadata."""
    meta = {"min": min, "max": max, "choices": choices, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ArrayConfig:
    """An antenna array (Sionna ``PlanarArray``); spacings in wavelengths."""
    num_rows: int = _f(1, min=1)
    num_cols: int = _f(1, min=1)
    vertical_spacing: float = _f(0.5, min=0.01)
    horizontal_spacing: float = _f(0.5, min=0.01)
    pattern: str = _f("iso", choices=["iso", "dipole", "hw_dipole", "tr38901"])
    polarization: str = _f("cross", choices=["V", "H", "VH", "cross"])

    @property
    def num_polarizations(self) -> int:
        return 2 if self.polarization in ("VH", "cross") else 1

    @property
    def num_ant(self) -> int:
        return self.num_rows * self.num_cols * self.num_polarizations

    @property
    def shape(self) -> tuple[int, int, int]:
        """(rows, cols, polarisations)."""
        return (self.num_rows, self.num_cols, self.num_polarizations)


@dataclass
class UEGridConfig:
    """A regular grid of UE positions; cells inside buildings are dropped."""
    x_range_m: List[float] = _f(factory=lambda: [-30.0, 230.0])
    y_range_m: List[float] = _f(factory=lambda: [-230.0, 30.0])
    spacing_m: float = _f(2.0, min=0.05, doc="1.0 is the paper scale (~40,000 UEs)")
    height_m: float = _f(1.5, min=0.0)
    exclude_indoor: bool = _f(True)
    sampling: str = _f("grid", choices=["grid", "uniform"],
                       doc="grid: every spacing_m; uniform: num_ues random positions in the box")
    num_ues: int = _f(2000, min=1, doc="positions drawn when sampling is uniform (before indoor ones drop)")
    height_range_m: List[float] = _f(factory=list, doc="[low, high]: heights uniform in it "
                                     "(seed 004: [0, 30]); empty: height_m")
    regions_m: List[List[float]] = _f(factory=list, doc="rectangles [x0, x1, y0, y1] the UEs must "
                                      "lie in (e.g. sidewalks); empty: the whole box")
    seed: int = _f(0, min=0, doc="seed of uniform positions and heights")


@dataclass
class BaseStationConfig:
    """One BS panel of a multi-BS site; every UE is traced against every panel."""
    position_m: List[float] = _f(factory=lambda: [0.0, 0.0, 10.0])
    azimuth_deg: float = _f(0.0)
    downtilt_deg: float = _f(10.0, min=-90.0, max=90.0)


@dataclass
class CarsConfig:
    """Moving cars (seed 002): each realization is a snapshot of the traffic."""
    num_realizations: int = _f(0, min=0, doc="0: the scene as loaded; paper: 120")
    name_regex: str = _f("car", doc="scene objects that are cars")
    lanes_y_m: List[float] = _f(factory=lambda: [-4.9, -1.65, 2.35, 5.6])
    speeds_mps: List[float] = _f(factory=lambda: [13.9, 9.7, -11.1, -8.3],
                                 doc="signed speed along x of each lane")
    x_range_m: List[float] = _f(factory=lambda: [-75.0, 75.0], doc="cars wrap around in this range")
    interval_s: float = _f(0.7, min=0.0, doc="time between realizations")


@dataclass
class SimulationConfig:
    """Sionna RT scene, site and ray-tracing settings."""
    scene: str = _f("etoile", doc="registered scene name or path to a Mitsuba XML file")
    frequency_hz: float = _f(3.5e9, min=1e8)
    bs_position_m: List[float] = _f(factory=lambda: [100.0, -100.0, 30.0])
    sector_azimuths_deg: List[float] = _f(factory=lambda: [30.0, 150.0, 270.0],
                                          doc="boresight of each sector; sectors split azimuth evenly")
    bs_downtilt_deg: float = _f(10.0, min=-90.0, max=90.0)
    bs_array: ArrayConfig = _f(factory=lambda: ArrayConfig(num_rows=2, num_cols=8,
                                                           pattern="tr38901", polarization="cross"))
    ue_array: ArrayConfig = _f(factory=lambda: ArrayConfig(num_rows=1, num_cols=1,
                                                           pattern="iso", polarization="cross"))
    ue_grid: UEGridConfig = _f(factory=UEGridConfig)
    base_stations: List[BaseStationConfig] = _f(
        factory=list, doc="multi-BS site (every UE traced against every BS); empty: the scene's "
        "own sites, else the sectored site of bs_position_m / sector_azimuths_deg")
    scene_seed: int = _f(4, min=0, doc="seed of procedural scenes (campus)")
    cars: CarsConfig = _f(factory=CarsConfig)
    max_depth: int = _f(2, min=0, max=10)
    samples_per_src: int = _f(100_000, min=1000)
    max_num_paths_per_src: int = _f(2_000_000, min=1000)
    los: bool = _f(True)
    specular_reflection: bool = _f(True)
    receivers_per_batch: int = _f(512, min=1)
    seed: int = _f(42, min=0)


@dataclass
class DataConfig:
    """CSI synthesis, impairments, features and splits (``tfloc.data``)."""
    num_subcarriers: int = _f(136, min=2, doc="paper: 408 (8-comb SRS, 100 MHz)")
    subcarrier_spacing_hz: float = _f(720e3, min=1e3, doc="effective SRS spacing; paper: 240e3")
    subcarrier_stride: int = _f(1, min=1, doc="keep every n-th subcarrier (seed 004: 288 at "
                                "60 kHz, one per resource block: 12)")
    num_slots: int = _f(1, min=1, doc="time slots T per snapshot (seed 004: 10); they differ by "
                        "the Doppler of a UE moving at ue_speed_mps")
    ue_speed_mps: float = _f(1.0, min=0.0, doc="slot-to-slot variation: each path gets a random "
                             "Doppler shift up to ue_speed / wavelength")
    slot_duration_s: float = _f(0.25e-3, min=0.0, doc="slot length (60 kHz SCS: 0.25 ms)")
    position_dims: int = _f(2, choices=[2, 3], doc="label: (x, y) or (x, y, z)")
    snr_db: List[float] = _f(factory=lambda: [20.0, 20.0], doc="[low, high], drawn per sample")
    ta_max_ns: float = _f(5.0, min=0.0, doc="timing-advance error, uniform in +-ta_max_ns")
    max_paths: int = _f(32, min=1, doc="strongest paths kept per UE for CSI synthesis")
    max_paths_range: List[int] = _f(factory=list, min=1, doc="[low, high]: keep P ~ U{low..high} "
                                    "strongest paths, drawn per realization (seed 002: [10, 25]); "
                                    "empty: max_paths")
    num_delay_taps: int = _f(64, min=1, doc="delay taps kept after the IDFT over subcarriers")
    representation: str = _f("magnitude", choices=["magnitude", "real_imag", "adp", "real_csi",
                                                    "sample_covariance", "stabilized"],
                               doc="CSI form fed to the model (tfloc.data.features)")
    normalization: str = _f("sample_max", choices=["none", "sample_max", "sample_power", "antenna",
                                                   "subcarrier", "matrix"])
    use_sector: bool = _f(True, doc="feed the serving sector index to the model (a BS knows it)")
    labelled_fraction: float = _f(0.1, min=0.0, max=1.0)
    val_fraction: float = _f(0.05, min=0.0, max=1.0)
    test_fraction: float = _f(0.2, min=0.0, max=1.0)
    split_by: str = _f("random", choices=["random", "realization"],
                       doc="realization: train / val / test are consecutive blocks of car "
                       "realizations (seed 002), sizes from realization_splits")
    realization_splits: List[int] = _f(factory=lambda: [50, 20, 50], min=1,
                                       doc="[train, val, test] realizations (seed 002: of 120)")
    batch_size: int = _f(16, min=1)
    fresh_samples_per_epoch: int = _f(0, min=0, doc="seed 004 protocol: >0 trains each epoch on "
                                      "this many UEs drawn anew from every UE outside val/test "
                                      "(labelled_fraction is then unused); 0 = off")


@dataclass
class ResNetConfig:
    depth: int = _f(18, choices=[18, 34])
    width: int = _f(32, min=4, doc="filters of the first stage (torchvision: 64)")
    stem_stride: int = _f(2, min=1, max=4)
    head_units: int = _f(128, min=1)
    # Where a peak sits in the angle-delay map is the position information
    # (delay tap = range, angle bin = bearing); coordinate channels keep it
    # through global pooling (flatten overfits small labelled sets).
    coord_channels: bool = _f(True)
    pooling: str = _f("avg", choices=["avg", "flatten"])
    dropout: float = _f(0.0, min=0.0, max=0.9)
    # Small labelled sets give few steps per epoch; Keras' 0.99 leaves the
    # inference statistics far from the data for many epochs.
    bn_momentum: float = _f(0.9, min=0.0, max=0.999)


@dataclass
class ModelConfig:
    type: str = _f("resnet", doc="registered model name")
    resnet: ResNetConfig = _f(factory=ResNetConfig)


@dataclass
class TrainingConfig:
    epochs: int = _f(80, min=1)
    learning_rate: float = _f(1e-3, min=0.0)
    loss: str = _f("mse", doc="registered loss name")
    early_stopping_patience: int = _f(20, min=1)
    reduce_lr_patience: int = _f(8, min=1)


@dataclass
class EvaluationConfig:
    knn_neighbors: List[int] = _f(factory=lambda: [1, 2, 3, 4, 5, 7, 10, 15, 20])


@dataclass
class ExportConfig:
    enabled: bool = _f(True)
    model_name: str = _f("tfloc")
    version: int = _f(1, min=1)


@dataclass
class RuntimeConfig:
    seed: int = _f(7, min=0)
    runs_dir: str = _f("runs")
    cache_dir: str = _f("cache")
    verbose: int = _f(1, min=0, max=2)


@dataclass
class ExperimentConfig:
    name: str = _f("experiment")
    method: str = _f("supervised", doc="registered training recipe")
    simulation: SimulationConfig = _f(factory=SimulationConfig)
    data: DataConfig = _f(factory=DataConfig)
    model: ModelConfig = _f(factory=ModelConfig)
    training: TrainingConfig = _f(factory=TrainingConfig)
    evaluation: EvaluationConfig = _f(factory=EvaluationConfig)
    export: ExportConfig = _f(factory=ExportConfig)
    runtime: RuntimeConfig = _f(factory=RuntimeConfig)

    @property
    def num_model_sectors(self) -> int:
        """Sectors the model is told about (0: the model takes CSI alone)."""
        return len(self.simulation.sector_azimuths_deg) if self.data.use_sector else 0


# --------------------------------------------------------------------------- #
# Loading, overriding, checking
# --------------------------------------------------------------------------- #

def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str):
    """Checks ``value`` against the annotation ``tp``; returns the typed value."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value  # merged field by field by the caller
    if origin in (list, List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of {_type_name(item_tp)}, got {value!r}")
        if dataclasses.is_dataclass(item_tp):
            items = []
            for i, v in enumerate(value):
                _coerce(v, item_tp, f"{where}[{i}]")
                item = item_tp()
                _merge(item, v, f"{where}[{i}].")
                items.append(item)
            return items
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 240e3 and 1e-3 as strings: accept what float() reads.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp} at {where}")


def _merge(obj, overrides: dict, prefix: str):
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix or 'top level'}: expected a mapping, got {overrides!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            _coerce(value, tp, where)
            _merge(getattr(obj, key), value, where + ".")
        else:
            setattr(obj, key, _coerce(value, tp, where))


def _check_ranges(obj, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, where + ".")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, v in enumerate(value):
                _check_ranges(v, f"{where}[{i}].")
            continue
        meta = f.metadata
        items = value if isinstance(value, list) else [value]
        items = [u for v in items for u in (v if isinstance(v, list) else [v])]
        for v in items:
            if meta.get("min") is not None and v < meta["min"]:
                raise ConfigError(f"{where}: {v!r} is below the minimum {meta['min']}")
            if meta.get("max") is not None and v > meta["max"]:
                raise ConfigError(f"{where}: {v!r} is above the maximum {meta['max']}")
            if meta.get("choices") is not None and v not in meta["choices"]:
                raise ConfigError(f"{where}: {v!r} is not one of {meta['choices']}")


def _check_pair(value, where, *, positive=False):
    if len(value) != 2:
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    if value[1] < value[0]:
        raise ConfigError(f"{where}: range {value!r} is negative (high < low)")
    if positive and value[1] == value[0]:
        raise ConfigError(f"{where}: range {value!r} is empty")


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Range and cross-field checks; raises ConfigError naming the key."""
    _check_ranges(cfg)
    sim, data = cfg.simulation, cfg.data
    if len(sim.bs_position_m) != 3:
        raise ConfigError(f"simulation.bs_position_m: expected [x, y, z], got {sim.bs_position_m!r}")
    if not sim.sector_azimuths_deg:
        raise ConfigError("simulation.sector_azimuths_deg: needs at least one sector")
    _check_pair(sim.ue_grid.x_range_m, "simulation.ue_grid.x_range_m", positive=True)
    _check_pair(sim.ue_grid.y_range_m, "simulation.ue_grid.y_range_m", positive=True)
    g = sim.ue_grid
    if g.height_range_m:
        _check_pair(g.height_range_m, "simulation.ue_grid.height_range_m")
    for i, r in enumerate(g.regions_m):
        if len(r) != 4 or r[1] <= r[0] or r[3] <= r[2]:
            raise ConfigError(f"simulation.ue_grid.regions_m[{i}]: expected [x0, x1, y0, y1] with "
                              f"x0 < x1 and y0 < y1, got {r!r}")
    for i, b in enumerate(sim.base_stations):
        if len(b.position_m) != 3:
            raise ConfigError(f"simulation.base_stations[{i}].position_m: expected [x, y, z], "
                              f"got {b.position_m!r}")
    cars = sim.cars
    if len(cars.speeds_mps) != len(cars.lanes_y_m):
        raise ConfigError(f"simulation.cars.speeds_mps: {len(cars.speeds_mps)} speeds for "
                          f"{len(cars.lanes_y_m)} lanes (need one per lane)")
    _check_pair(cars.x_range_m, "simulation.cars.x_range_m", positive=True)
    _check_pair(data.snr_db, "data.snr_db")
    kept = -(-data.num_subcarriers // data.subcarrier_stride)
    if data.num_delay_taps > kept:
        raise ConfigError(f"data.num_delay_taps: {data.num_delay_taps} exceeds the "
                          f"{kept} subcarriers kept (num_subcarriers / subcarrier_stride)")
    if data.max_paths_range:
        _check_pair(data.max_paths_range, "data.max_paths_range")
    if data.split_by == "realization":
        if len(data.realization_splits) != 3:
            raise ConfigError(f"data.realization_splits: expected [train, val, test], got "
                              f"{data.realization_splits!r}")
        if sum(data.realization_splits) > max(sim.cars.num_realizations, 1):
            raise ConfigError(f"data.realization_splits: {data.realization_splits} needs "
                              f"{sum(data.realization_splits)} realizations, "
                              f"simulation.cars.num_realizations is {sim.cars.num_realizations}")
    total = data.labelled_fraction + data.val_fraction + data.test_fraction
    if total > 1.0 + 1e-9:
        raise ConfigError(f"data: labelled_fraction + val_fraction + test_fraction = {total:g} > 1")
    if data.labelled_fraction <= 0 or data.test_fraction <= 0 or data.val_fraction <= 0:
        raise ConfigError("data: labelled_fraction, val_fraction and test_fraction must be > 0")
    from tfloc.models import MODELS
    from tfloc.losses import LOSSES
    from tfloc.methods import METHODS
    for reg, value, where in ((MODELS, cfg.model.type, "model.type"),
                              (LOSSES, cfg.training.loss, "training.loss"),
                              (METHODS, cfg.method, "method")):
        if value not in reg:
            raise ConfigError(f"{where}: unknown {reg.kind} '{value}' "
                              f"(registered: {', '.join(reg.names())})")
    from tfloc.sim.scenes import check_scene_name
    try:
        check_scene_name(sim.scene)
    except KeyError as e:
        raise ConfigError(f"simulation.scene: {e.args[0]}") from None
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. training.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Registered defaults <- YAML file <- ``--set`` overrides, then validation.

    Every ConfigError message starts with the file (or ``--set``) it came from.
    """
    cfg = ExperimentConfig()
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: config file not found")
        with open(path) as fh:
            try:
                data = yaml.safe_load(fh) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        try:
            _merge(cfg, data, "")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        try:
            _merge(cfg, nested, "")
        except ConfigError as e:
            raise ConfigError(f"--set {text}: {e}") from None
    try:
        return validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path or '--set'}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> ExperimentConfig:
    cfg = ExperimentConfig()
    _merge(cfg, data, "")
    return validate(cfg)


def dump_yaml(cfg, path: str):
    """Writes the resolved config atomically."""
    from tfloc.utils import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
