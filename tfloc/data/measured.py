"""Measured CSI as a data source: a documented file format (NPZ, or HDF5 through h5py) fed
through the same features as simulated CSI, with no impairment added (a measurement
carries its own noise and timing errors).

The file (``data.measured_file``; ``configs/data/measured.yaml``):

=====================  ==========================================================
``csi``                complex [N, M, K] (BS antennas x subcarriers; M = 1 allowed) or
                       [N, T, M, K] (T snapshots, or UE antennas x snapshots)
``positions``          float [N, 2 or 3], metres
``condition``          optional int [N]: 0 LOS, 1 NLOS by static objects, 2 NLOS by
                       moving ones (-1 unknown)
``group``              optional int [N]: packets of one measurement point or campaign
                       day; splits never cut a group (default: every sample its own)
``split``              optional str [N]: train / val / test / unlabelled (default: split
                       by group with the config's fractions)
attributes             optional scalars (NPZ: 0-d arrays; HDF5: file attributes):
                       ``subcarrier_spacing_hz``, ``carrier_frequency_hz``,
                       ``array_rows``, ``array_cols``; ``bs_position_m`` [3] and
                       ``bs_orientation_deg`` [azimuth, downtilt] where known
=====================  ==========================================================

The config states the shape it expects (``simulation.bs_array`` rows x columns x
polarisations = M, ``data.num_slots`` x ``simulation.ue_array`` antennas = T,
``data.num_subcarriers`` = K); a file that disagrees with it, or with its own attributes,
is one line. ``adp`` features need the array's rows and columns in the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError
from tfloc.data.csi import to_real_imag
from tfloc.data.pipeline import CSIPipeline, Splits
from tfloc.sim.paths import PathSet

SPLITS = ("train", "val", "test", "unlabelled")
ATTRIBUTES = ("subcarrier_spacing_hz", "carrier_frequency_hz", "array_rows", "array_cols",
              "bs_position_m", "bs_orientation_deg")


@dataclass
class Measured:
    """A measured-CSI file's content (see the module's table)."""
    csi: np.ndarray                     # complex64 [N, T, M, K]
    positions: np.ndarray               # float32 [N, 2 or 3]
    condition: np.ndarray | None = None
    group: np.ndarray | None = None
    split: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)
    path: str = ""

    @property
    def n(self) -> int:
        return len(self.csi)


def read_measured(path: str) -> Measured:
    """The file at ``path`` (.npz, .h5 / .hdf5), checked; ConfigError (one line) when it is
    missing keys, has real-valued or non-finite CSI, or counts that disagree."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: measured-data file not found")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                raw = {k: f[k] for k in f.files}
            attrs = {k: raw.pop(k) for k in ATTRIBUTES if k in raw}
        elif ext in (".h5", ".hdf5"):
            import h5py
            with h5py.File(path, "r") as f:
                raw = {k: f[k][()] for k in f.keys()}
                attrs = {k: f.attrs[k] for k in f.attrs if k in ATTRIBUTES}
        else:
            raise ConfigError(f"{path}: a measured-data file is .npz or .h5 / .hdf5, not '{ext}'")
    except ConfigError:
        raise
    except Exception as e:      # zip, HDF5 and NumPy raise their own kinds
        raise ConfigError(f"{path}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    missing = [k for k in ("csi", "positions") if k not in raw]
    if missing:
        raise ConfigError(f"{path}: no {' or '.join(repr(k) for k in missing)} array (it has "
                          f"{sorted(raw) or 'none'}); see tfloc.data.measured for the format")
    csi, pos = np.asarray(raw["csi"]), np.asarray(raw["positions"])
    if not np.iscomplexobj(csi):
        raise ConfigError(f"{path}: 'csi' is {csi.dtype}, not complex; store the complex CSI "
                          "(real + 1j * imaginary)")
    if csi.ndim == 3:
        csi = csi[:, None]
    if csi.ndim != 4:
        raise ConfigError(f"{path}: 'csi' has shape {list(csi.shape)}; expected [N, M, K] or [N, T, M, K]")
    n = len(csi)
    if pos.ndim != 2 or pos.shape[1] not in (2, 3) or len(pos) != n:
        raise ConfigError(f"{path}: 'positions' has shape {list(pos.shape)}; expected [{n}, 2 or 3] "
                          f"(one per CSI sample)")
    bad = ~np.isfinite(csi).reshape(n, -1).all(axis=1)
    if bad.any():
        raise ConfigError(f"{path}: 'csi' holds NaN or Inf in {int(bad.sum())} of {n} samples "
                          f"(first: {int(np.flatnonzero(bad)[0])})")
    if not np.isfinite(pos).all():
        raise ConfigError(f"{path}: 'positions' holds NaN or Inf")
    out = Measured(csi.astype(np.complex64), pos.astype(np.float32), path=path,
                   attrs={k: np.asarray(v).tolist() for k, v in attrs.items()})
    for key in ("condition", "group", "split"):
        if key not in raw:
            continue
        v = np.asarray(raw[key])
        if v.shape != (n,):
            raise ConfigError(f"{path}: '{key}' has shape {list(v.shape)}; expected [{n}]")
        setattr(out, key, v)
    if out.split is not None:
        out.split = out.split.astype(str)
        unknown = sorted(set(out.split) - set(SPLITS))
        if unknown:
            raise ConfigError(f"{path}: 'split' holds {unknown}; allowed: {list(SPLITS)}")
    if out.condition is not None:
        out.condition = out.condition.astype(np.int8)
        if not np.isin(out.condition, (-1, 0, 1, 2)).all():
            raise ConfigError(f"{path}: 'condition' must be -1 (unknown), 0, 1 or 2")
    return out


def write_measured(path: str, csi, positions, condition=None, group=None, split=None, **attrs) -> str:
    """Writes the format to ``path`` (.npz or .h5 / .hdf5, by its extension); returns it."""
    arrays = {"csi": np.asarray(csi, np.complex64), "positions": np.asarray(positions, np.float32)}
    for key, v in (("condition", condition), ("group", group), ("split", split)):
        if v is not None:
            arrays[key] = np.asarray(v).astype("S10") if key == "split" else np.asarray(v)
    unknown = sorted(set(attrs) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown attributes {unknown}; known: {list(ATTRIBUTES)}")
    ext = os.path.splitext(path)[1].lower()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    if ext == ".npz":
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{k: np.asarray(v) for k, v in attrs.items()})
    elif ext in (".h5", ".hdf5"):
        import h5py
        with h5py.File(tmp, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
            for k, v in attrs.items():
                f.attrs[k] = v
    else:
        raise ValueError(f"{path}: .npz or .h5 / .hdf5")
    os.replace(tmp, path)
    return path


def check_against_config(m: Measured, cfg) -> None:
    """ConfigError (one line) where the file disagrees with the experiment config ``cfg``."""
    sim, d = cfg.simulation, cfg.data
    _, t, ant, k = m.csi.shape
    want = (d.num_slots * sim.ue_array.num_ant, sim.bs_array.num_ant, d.num_subcarriers)
    if (t, ant, k) != want:
        raise ConfigError(f"{m.path}: CSI of {t} snapshot(s) x {ant} BS antenna(s) x {k} subcarriers; "
                          f"the config expects {want[0]} x {want[1]} x {want[2]} (data.num_slots x "
                          "simulation.ue_array antennas, simulation.bs_array rows x cols x "
                          "polarisations, data.num_subcarriers)")
    if m.positions.shape[1] < d.position_dims:
        raise ConfigError(f"{m.path}: {m.positions.shape[1]}D positions; data.position_dims is "
                          f"{d.position_dims}")
    a = m.attrs
    checks = (("subcarrier_spacing_hz", d.subcarrier_spacing_hz, "data.subcarrier_spacing_hz"),
              ("carrier_frequency_hz", sim.frequency_hz, "simulation.frequency_hz"),
              ("array_rows", sim.bs_array.num_rows, "simulation.bs_array.num_rows"),
              ("array_cols", sim.bs_array.num_cols, "simulation.bs_array.num_cols"))
    for key, value, where in checks:
        if key in a and not np.isclose(float(a[key]), float(value), rtol=1e-6):
            raise ConfigError(f"{m.path}: {key} is {a[key]:g}, {where} is {value:g}")
    if d.representation == "adp" and ant < 2:
        raise ConfigError(f"{m.path}: one BS antenna has no angle domain; data.representation "
                          "adp needs an array (use magnitude: amplitude features)")
    if d.representation == "adp" and not {"array_rows", "array_cols"} <= set(a):
        raise ConfigError(f"{m.path}: data.representation adp needs the array's geometry "
                          "(attributes array_rows and array_cols); without it use magnitude or real_imag")


def measured_splits(m: Measured, cfg, seed: int) -> Splits:
    """The file's own ``split`` when it has one; else whole groups drawn at random (fixed by
    ``seed``) into test, validation and labelled training by the data config's fractions
    of samples, the rest unlabelled."""
    n = m.n
    if m.split is not None:
        parts = {s: np.flatnonzero(m.split == s) for s in SPLITS}
    else:
        group = m.group if m.group is not None else np.arange(n)
        uniq, inverse = np.unique(group, return_inverse=True)
        order = np.random.default_rng(seed).permutation(len(uniq))
        sizes = np.bincount(inverse)[order]
        ends = np.cumsum(sizes)
        bounds = np.cumsum([cfg.test_fraction, cfg.val_fraction, cfg.labelled_fraction]) * n
        which = np.searchsorted(bounds, ends - sizes, side="right")   # by each group's first sample
        label = np.empty(len(uniq), int)
        label[order] = which
        parts = {s: np.flatnonzero(label[inverse] == i)
                 for i, s in enumerate(("test", "val", "train", "unlabelled"))}
    empty = [s for s in ("train", "val", "test") if not len(parts[s])]
    if empty:
        raise ConfigError(f"{m.path}: no sample in the {', '.join(empty)} split(s) "
                          f"({n} samples, {len(np.unique(m.group)) if m.group is not None else n} "
                          "groups); give a 'split' array or change data.*_fraction")
    return Splits(train=parts["train"], val=parts["val"], test=parts["test"],
                  unlabelled=parts["unlabelled"], no_path=np.zeros(0, np.int64))


def measured_pathset(m: Measured) -> PathSet:
    """The file's labels as a PathSet of one placeholder path per sample: what splits,
    reports and kNN read (positions, conditions, groups); it holds no propagation paths."""
    n = m.n
    pos = np.zeros((n, 3), np.float32)
    pos[:, :m.positions.shape[1]] = m.positions
    cond = m.condition if m.condition is not None else np.full(n, -1, np.int8)
    zeros = np.zeros(n, np.float32)
    bs = m.attrs.get("bs_position_m")
    return PathSet(positions=pos, sector=np.zeros(n, np.int8), los=cond == 0,
                   offsets=np.arange(n + 1, dtype=np.int64), a=np.zeros((n, 1, 1), np.complex64),
                   tau=zeros, theta_t=zeros, theta_r=zeros, phi_t=zeros, phi_r=zeros,
                   ue_id=(np.asarray(m.group, np.int64) if m.group is not None else np.arange(n)).astype(np.int32),
                   realization=np.zeros(n, np.int16), condition=cond.astype(np.int8),
                   meta={"scene": "measured", "site": "single_bs", "measured_file": os.path.abspath(m.path),
                         "bs_positions": [list(bs)] if bs is not None else [[0.0, 0.0, 0.0]],
                         "conditions": "from the file" if m.condition is not None else "unknown"})


class MeasuredPipeline(CSIPipeline):
    """The CSI pipeline over measured CSI: samples come from the file as measured (every
    ``data.subcarrier_stride``-th subcarrier), no TA error or noise is added, and the
    features are those of simulated CSI (:func:`tfloc.data.features.csi_features`)."""

    def __init__(self, paths: PathSet, csi: np.ndarray, cfg, seed: int, array_shape=(1, 1, 1),
                 frequency_hz: float = 3.5e9):
        super().__init__(paths, cfg, seed, array_shape, frequency_hz)
        self.csi = csi[..., ::cfg.subcarrier_stride]          # [N, T, M, K kept]
        self.num_ue_ant = int(csi.shape[1]) // cfg.num_slots
        self.num_bs_ant = int(csi.shape[2])

    def _clean_csi(self, index, draw_per_epoch: int = 0, positions=None, sectors=None):
        index = np.asarray(index)
        if index.ndim != 1:
            raise ValueError("measured data has one link per sample")
        dims = self.cfg.position_dims
        pos = (self.paths.positions[index, :dims] if positions is None else positions).astype(np.float32)
        side = (np.zeros(len(index), np.int32) if sectors is None else np.asarray(sectors, np.int32))
        labels = {"position": pos, "condition": self.paths.condition[index].astype(np.int32)}
        ds = tf.data.Dataset.from_tensor_slices((self.csi[index], side, labels))
        if draw_per_epoch:
            ds = ds.shuffle(len(index), seed=self.seed, reshuffle_each_iteration=True)
            ds = ds.take(min(draw_per_epoch, len(index)))
        return ds

    def _impair(self, h, seed, aug=None):
        """Measured CSI carries its own impairments: only the real / imaginary stacking."""
        return to_real_imag(h)


def measured_data(cfg, seed: int) -> tuple:
    """(paths, pipeline, splits, info) of the experiment config's ``data.measured_file``."""
    m = read_measured(cfg.data.measured_file)
    check_against_config(m, cfg)
    paths = measured_pathset(m)
    splits = measured_splits(m, cfg.data, seed)
    pipe = MeasuredPipeline(paths, m.csi, cfg.data, seed, array_shape=cfg.simulation.bs_array.shape,
                            frequency_hz=cfg.simulation.frequency_hz)
    info = {"measured_file": os.path.abspath(m.path), "measured": True,
            "groups": int(len(np.unique(m.group))) if m.group is not None else m.n,
            "split_from": "file" if m.split is not None else "groups"}
    return paths, pipe, splits, info
