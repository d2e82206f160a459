"""Named environments for multi-environment training and transfer (seed 001).

An environment is a PathSet with its own splits and CSI pipeline: one scene, or
one view of a site (a sector, a BS). Methods train on several source
environments at once, each sample tagged with its environment index (for
per-environment heads ``g_env``), and transfer to an unseen target.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfloc.config import ConfigError, load_yaml_overrides, merge, validate_tree
from tfloc.data.config import DataConfig
from tfloc.data.measured import measured_pathset, read_measured
from tfloc.data.pipeline import CSIPipeline, Splits, make_splits
import tfloc.sim
from tfloc.sim.config import SimulationConfig
from tfloc.sim.paths import PathSet, sample_groups
from tfloc.sim.tracer import site_panels


@dataclass
class Environment:
    """One environment: its paths, its splits and its CSI pipeline."""
    name: str
    paths: PathSet
    splits: Splits
    pipeline: CSIPipeline


def make_environments(paths_by_name: dict, cfg: DataConfig, seed: int,
                      array_shape=(1, 1, 1)) -> dict:
    """Environments from named PathSets; each gets its own seeded splits.

    ``paths_by_name`` can come from :func:`split_by_sector` (views of one site)
    or from separately traced configs (different scenes or sites).
    """
    if not paths_by_name:
        raise ValueError("no environments given")
    envs = {}
    for i, (name, ps) in enumerate(sorted(paths_by_name.items())):
        envs[name] = Environment(name, ps, make_splits(ps, cfg, seed + i),
                                 CSIPipeline(ps, cfg, seed + i, array_shape))
    return envs


def split_by_sector(paths: PathSet, prefix: str = "sector") -> dict:
    """One site's sectors as separate environments: ``{"sector0": PathSet, ...}``."""
    return {f"{prefix}{s}": paths.select(np.flatnonzero(paths.sector == s))
            for s in np.unique(paths.sector)}


def multi_environment_dataset(envs: dict, names: list, split: str = "train", *,
                              training: bool, weights=None, seed: int = 0) -> tf.data.Dataset:
    """Features of several environments in one stream, each sample tagged.

    Output elements: ({"features": [B, H, W, C], "environment": [B] int32}, labels) with
    the labels of :meth:`CSIPipeline.csi_dataset`,
    where ``environment`` indexes ``names``. Training streams sample the
    environments at random (``weights``, default by size) until every sample of
    every environment has come once; evaluation streams concatenate them in order.
    """
    unknown = [n for n in names if n not in envs]
    if unknown:
        raise KeyError(f"unknown environment(s) {unknown}; have {sorted(envs)}")
    parts = []
    for i, name in enumerate(names):
        env = envs[name]
        ds = env.pipeline.feature_dataset(getattr(env.splits, split), training=training)
        ds = ds.unbatch().map(lambda x, y, i=i: ({"features": x["features"],
                                                  "environment": tf.constant(i, tf.int32)}, y))
        parts.append(ds)
    batch = envs[names[0]].pipeline.cfg.batch_size
    if training:
        if weights is None:
            sizes = np.array([len(getattr(envs[n].splits, split)) for n in names], float)
            weights = sizes / sizes.sum()
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=list(weights), seed=seed,
                                                  stop_on_empty_dataset=False)
    else:
        ds = parts[0]
        for p in parts[1:]:
            ds = ds.concatenate(p)
    total = sum(len(getattr(envs[n].splits, split)) for n in names)
    ds = ds.batch(batch).apply(tf.data.experimental.assert_cardinality(-(-total // batch)))
    return ds.prefetch(tf.data.AUTOTUNE)


# -- named environments of traced sites (seed 001's transfer study) ------------------ #
#: where environment names look for their site's config: ``<name>`` -> configs/data/<name>.yaml
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "data")
_NAME = re.compile(r"^(?P<site>[A-Za-z0-9_.-]+)(/(?P<kind>bs|sector)(?P<index>\d+))?$")


@dataclass(frozen=True)
class EnvironmentRef:
    """A parsed environment name ``<site config>[/bs<k> | /sector<k>]``.

    ``site`` names a data config under ``configs/data/`` whose ``simulation``
    section is traced (cached like any run); the view picks the links of one BS
    of a multi-BS site (``bs<k>``) or of one sector (``sector<k>``). A site with
    one link per sample needs no view.
    """
    name: str
    site: str
    kind: str
    index: int
    simulation: object       # the site's SimulationConfig (None for a measured file)
    measured_array: tuple = ()   # a measured file's (rows, cols, polarisations)

    @property
    def array_shape(self):
        if self.kind == "measured":
            return self.measured_array
        a = self.simulation.bs_array
        return (a.num_rows, a.num_cols, a.shape[2])


def environment_ref(name: str, config_dir: str | None = None) -> EnvironmentRef:
    """Parses and checks an environment name against its site config, without tracing.

    Raises ConfigError (one line) for a malformed name, an unknown site config or a
    view the site does not have.
    """
    if is_measured_name(name):
        return measured_ref(str(name))
    m = _NAME.match(str(name))
    config_dir = config_dir or CONFIG_DIR
    if not m:
        raise ConfigError(f"environment {name!r}: expected <site config>[/bs<k>|/sector<k>], "
                          "e.g. campus_ground/bs0")
    path = os.path.join(config_dir, m["site"] + ".yaml")
    if not os.path.isfile(path):
        have = sorted(f[:-5] for f in os.listdir(config_dir) if f.endswith(".yaml"))
        raise ConfigError(f"unknown environment {name!r}: no site config {m['site']!r} "
                          f"(have {have} in {config_dir})")
    sim = site_simulation(path)
    sectored, panels = site_panels(sim)
    kind, index = m["kind"] or "", int(m["index"] or 0)
    views = (f"sector0..sector{len(panels) - 1}" if sectored else
             f"bs0..bs{len(panels) - 1}" if len(panels) > 1 else "none")
    wanted = "sector" if sectored else ("bs" if len(panels) > 1 else "")
    if kind != wanted or index >= len(panels):
        raise ConfigError(f"unknown environment {name!r}: site {m['site']!r} has views {views}")
    return EnvironmentRef(str(name), m["site"], kind, index, sim)


def is_measured_name(name) -> bool:
    """Whether an environment name is a measured-CSI file (.npz, .h5, .hdf5)."""
    return os.path.splitext(str(name))[1].lower() in (".npz", ".h5", ".hdf5")


def measured_ref(path: str) -> EnvironmentRef:
    """The environment of a measured-CSI file (:mod:`tfloc.data.measured`): its array's rows
    and columns must be in the file, so that a sub-array can be cut from it."""
    m = read_measured(path)
    if not {"array_rows", "array_cols"} <= set(m.attrs):
        raise ConfigError(f"environment {path!r}: the file has no array_rows / array_cols attributes, "
                          "which cutting the methods' common sub-array needs")
    rows, cols = int(m.attrs["array_rows"]), int(m.attrs["array_cols"])
    if m.csi.shape[2] % (rows * cols):
        raise ConfigError(f"environment {path!r}: {m.csi.shape[2]} BS antennas are not a multiple "
                          f"of its {rows} x {cols} array")
    return EnvironmentRef(path, path, "measured", 0, None, (rows, cols, m.csi.shape[2] // (rows * cols)))


def measured_environment(ref: EnvironmentRef, sub_array, num_subcarriers: int) -> tuple:
    """(PathSet of its labels, CSI [n, 1, sub-array ports, K]) of a measured environment: the
    first UE antenna / snapshot and the ``sub_array`` (rows, cols) of the first polarisation,
    as :func:`load_environment` cuts a traced site."""
    m = read_measured(ref.site)
    if m.csi.shape[-1] != num_subcarriers:
        raise ConfigError(f"environment {ref.name!r}: {m.csi.shape[-1]} subcarriers; data.num_subcarriers "
                          f"is {num_subcarriers}")
    ports = sub_array_ports(ref.array_shape, sub_array) if sub_array else np.arange(m.csi.shape[2])
    ps = measured_pathset(m)
    ps.meta = {**ps.meta, "environment": ref.name}
    return ps, np.ascontiguousarray(m.csi[:, :1][:, :, ports])


def site_simulation(path: str) -> SimulationConfig:
    """The ``simulation`` section of a site's config file (its ``base:`` chain first), checked
    (ConfigError naming the file); the file's other sections are not read."""
    sim = SimulationConfig()
    for source, mapping in load_yaml_overrides(path):
        try:
            merge(sim, mapping.get("simulation") or {}, "simulation.")
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    try:
        validate_tree(sim, "simulation.")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return sim


def sub_array_ports(array_shape, sub_shape) -> np.ndarray:
    """BS antenna ports of the top-left ``sub_shape`` = (rows, cols) sub-array, first polarisation.

    Sionna orders ports polarisation-major, then column, then row
    (port = pol * rows * cols + col * rows + row).
    """
    rows, cols = int(array_shape[0]), int(array_shape[1])
    r, c = int(sub_shape[0]), int(sub_shape[1])
    if r > rows or c > cols:
        raise ValueError(f"a {r} x {c} sub-array does not fit the {rows} x {cols} array")
    return np.array([col * rows + row for col in range(c) for row in range(r)], np.int64)


_SITES: dict = {}


def load_environment(ref: EnvironmentRef, cache_dir: str, sub_array=None,
                     progress: bool = True) -> PathSet:
    """The single-link PathSet of one environment: its site traced (or from the cache),
    the view's links kept and, with ``sub_array`` = (rows, cols), the BS array cut to
    that sub-array (first polarisation) and the UE to its first antenna."""
    key = (ref.site, cache_dir)
    if key not in _SITES:   # the views of one site share one trace (and one load)
        _SITES[key] = tfloc.sim.load_or_trace(ref.simulation, cache_dir, progress=progress)[0]
    paths = _SITES[key]
    if ref.kind == "bs":
        rows = sample_groups(paths)[:, ref.index]
    elif ref.kind == "sector":
        rows = np.flatnonzero(paths.sector == ref.index)
    else:
        rows = np.arange(paths.num_ue)
    ps = paths.select(rows)
    bs_pos = paths.meta.get("bs_positions")
    ps.meta = {**paths.meta, "environment": ref.name,
               "bs_positions": [bs_pos[ref.index]] if (ref.kind == "bs" and bs_pos) else bs_pos}
    ps.sector = np.zeros(ps.num_ue, np.int8)
    if sub_array:
        ports = sub_array_ports(ref.array_shape, sub_array)
        ps.a = np.ascontiguousarray(ps.a[:, :1][:, :, ports])
    return ps
