"""Simulation config sections: scene, site, arrays, UE grid, cars (owned by ``tfloc.sim``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from tfloc.config import ConfigError, check_pair, param


@dataclass
class ArrayConfig:
    """An antenna array (Sionna ``PlanarArray``); spacings in wavelengths."""
    num_rows: int = param(1, min=1)
    num_cols: int = param(1, min=1)
    vertical_spacing: float = param(0.5, min=0.01)
    horizontal_spacing: float = param(0.5, min=0.01)
    pattern: str = param("iso", choices=["iso", "dipole", "hw_dipole", "tr38901"])
    polarization: str = param("cross", choices=["V", "H", "VH", "cross"])

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
class TrajectoryConfig:
    """A moving UE's 3D spiral (seed 004's trajectory), in the scene's coordinates: it
    circles ``center_m`` at ``radius_m``, ``turns`` times, rising linearly through
    ``height_range_m``, one snapshot per ``snapshots``-th of the way."""
    center_m: List[float] = param(factory=lambda: [155.0, 100.0], doc="[x, y] of the axis; the "
                                  "default is an open square of the campus (configs/data/campus.yaml)")
    radius_m: float = param(20.0, min=0.0)
    turns: float = param(3.0, min=0.0)
    height_range_m: List[float] = param(factory=lambda: [1.5, 28.5], doc="[start, end] height")
    snapshots: int = param(240, min=2)

    def validate(self):
        if len(self.center_m) != 2:
            raise ConfigError(f"center_m: expected [x, y], got {self.center_m!r}")
        if len(self.height_range_m) != 2 or min(self.height_range_m) <= 0:
            raise ConfigError(f"height_range_m: expected [start, end] above the ground (> 0 m), "
                              f"got {self.height_range_m!r}")


@dataclass
class UEGridConfig:
    """A regular grid of UE positions; cells inside buildings are dropped."""
    x_range_m: List[float] = param(factory=lambda: [-30.0, 230.0])
    y_range_m: List[float] = param(factory=lambda: [-230.0, 30.0])
    spacing_m: float = param(2.0, min=0.05, doc="1.0 is the paper scale (~40,000 UEs)")
    height_m: float = param(1.5, min=0.0)
    exclude_indoor: bool = param(True)
    sampling: str = param("grid", choices=["grid", "uniform"],
                       doc="grid: every spacing_m; uniform: num_ues random positions in the box")
    num_ues: int = param(2000, min=1, doc="positions drawn when sampling is uniform (before indoor ones drop)")
    height_range_m: List[float] = param(factory=list, doc="[low, high]: heights uniform in it "
                                     "(seed 004: [0, 30]); empty: height_m")
    regions_m: List[List[float]] = param(factory=list, doc="rectangles [x0, x1, y0, y1] the UEs must "
                                      "lie in (e.g. sidewalks); empty: the whole box")
    seed: int = param(0, min=0, doc="seed of uniform positions and heights")


@dataclass
class BaseStationConfig:
    """One BS panel of a multi-BS site; every UE is traced against every panel."""
    position_m: List[float] = param(factory=lambda: [0.0, 0.0, 10.0])
    azimuth_deg: float = param(0.0)
    downtilt_deg: float = param(10.0, min=-90.0, max=90.0)


@dataclass
class VehicleConfig:
    """A vehicle type of the traffic: the scene's car mesh scaled to these dimensions."""
    name: str = param("car")
    count: int = param(1, min=0, doc="vehicles of this type")
    length_m: float = param(0.0, min=0.0, doc="0: the mesh's own length")
    width_m: float = param(0.0, min=0.0, doc="0: the mesh's own width")
    height_m: float = param(0.0, min=0.0, doc="0: the mesh's own height")


@dataclass
class CarsConfig:
    """Moving cars (seed 002): each realization is a snapshot of the traffic."""
    num_realizations: int = param(0, min=0, doc="0: the scene as loaded; paper: 120")
    name_regex: str = param("car", doc="scene objects that are cars")
    lanes_y_m: List[float] = param(factory=lambda: [-4.9, -1.65, 2.35, 5.6])
    speeds_mps: List[float] = param(factory=lambda: [13.9, 9.7, -11.1, -8.3],
                                 doc="signed speed along x of each lane")
    x_range_m: List[float] = param(factory=lambda: [-75.0, 75.0], doc="cars wrap around in this range")
    interval_s: float = param(0.7, min=0.0, doc="time between realizations")
    start_s: float = param(0.0, min=0.0, doc="the traffic's time at realization 0; a later start "
                           "shows traffic the default realizations never do (e.g. scoring a run "
                           "on unseen traffic)")
    fleet: List[VehicleConfig] = param(factory=list, doc="vehicle types, made from the scene's car "
                                       "meshes (duplicated, scaled) and mixed over the lanes; "
                                       "empty: the scene's cars as modelled")

    @property
    def vehicle_types(self) -> list:
        """The fleet's types, one entry per vehicle, interleaved so every lane gets a mix."""
        left = {i: v.count for i, v in enumerate(self.fleet)}
        out = []
        while any(left.values()):
            for i, v in enumerate(self.fleet):
                if left[i]:
                    out.append(v)
                    left[i] -= 1
        return out


@dataclass
class SimulationConfig:
    """Sionna RT scene, site and ray-tracing settings."""
    scene: str = param("etoile", doc="registered scene name or path to a Mitsuba XML file")
    frequency_hz: float = param(3.5e9, min=1e8)
    bs_position_m: List[float] = param(factory=lambda: [100.0, -100.0, 30.0])
    sector_azimuths_deg: List[float] = param(factory=lambda: [30.0, 150.0, 270.0],
                                          doc="boresight of each sector; sectors split azimuth evenly")
    bs_downtilt_deg: float = param(10.0, min=-90.0, max=90.0)
    bs_array: ArrayConfig = param(factory=lambda: ArrayConfig(num_rows=2, num_cols=8,
                                                           pattern="tr38901", polarization="cross"))
    ue_array: ArrayConfig = param(factory=lambda: ArrayConfig(num_rows=1, num_cols=1,
                                                           pattern="iso", polarization="cross"))
    ue_grid: UEGridConfig = param(factory=UEGridConfig)
    base_stations: List[BaseStationConfig] = param(
        factory=list, doc="multi-BS site (every UE traced against every BS); empty: the scene's "
        "own sites, else the sectored site of bs_position_m / sector_azimuths_deg")
    scene_seed: int = param(4, min=0, doc="seed of procedural scenes (campus)")
    cars: CarsConfig = param(factory=CarsConfig)
    max_depth: int = param(2, min=0, max=10)
    samples_per_src: int = param(100_000, min=1000)
    max_num_paths_per_src: int = param(2_000_000, min=1000)
    los: bool = param(True)
    specular_reflection: bool = param(True)
    receivers_per_batch: int = param(512, min=1)
    seed: int = param(42, min=0)

    def validate(self):
        """Cross-field checks; keys are relative to the section (the caller prefixes them)."""
        if len(self.bs_position_m) != 3:
            raise ConfigError(f"bs_position_m: expected [x, y, z], got {self.bs_position_m!r}")
        if not self.sector_azimuths_deg:
            raise ConfigError("sector_azimuths_deg: needs at least one sector")
        g = self.ue_grid
        check_pair(g.x_range_m, "ue_grid.x_range_m", positive=True)
        check_pair(g.y_range_m, "ue_grid.y_range_m", positive=True)
        if g.height_range_m:
            check_pair(g.height_range_m, "ue_grid.height_range_m")
        for i, r in enumerate(g.regions_m):
            if len(r) != 4 or r[1] <= r[0] or r[3] <= r[2]:
                raise ConfigError(f"ue_grid.regions_m[{i}]: expected [x0, x1, y0, y1] with "
                                  f"x0 < x1 and y0 < y1, got {r!r}")
        for i, b in enumerate(self.base_stations):
            if len(b.position_m) != 3:
                raise ConfigError(f"base_stations[{i}].position_m: expected [x, y, z], "
                                  f"got {b.position_m!r}")
        cars = self.cars
        if len(cars.speeds_mps) != len(cars.lanes_y_m):
            raise ConfigError(f"cars.speeds_mps: {len(cars.speeds_mps)} speeds for "
                              f"{len(cars.lanes_y_m)} lanes (need one per lane)")
        check_pair(cars.x_range_m, "cars.x_range_m", positive=True)
