"""The dataset tool behind ``python -m tfloc.sim {build,merge,inspect,bound} ...``.

    python -m tfloc.sim build --config configs/etoile_supervised.yaml [--set k=v] [--shard I/N]
    python -m tfloc.sim build --config configs/etoile_supervised.yaml --executor ray [--address HOST:PORT]
    python -m tfloc.sim merge --config configs/etoile_supervised.yaml
    python -m tfloc.sim inspect cache/paths-etoile-<key>
    python -m tfloc.sim bound cache/paths-etoile-<key> [--config F] [--mode nuisance] [--snr-db 0]
"""
from __future__ import annotations

import argparse
import os

from tfloc.config import ConfigError
from tfloc.run.bound import bound_cache_entry
from tfloc.run.experiment import load_config
from tfloc.sim.build import DatasetBuild, entry_lock, parse_shard
from tfloc.sim.inspect import describe, write_maps
from tfloc.sim.paths import PathSet
from tfloc.sim.ray_build import build_on_ray, check_address, import_ray
from tfloc.sim.scenes import check_scene_config


def _parser():
    p = argparse.ArgumentParser(prog="python -m tfloc.sim", description="Build and inspect traced datasets.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("build", "trace a config's UEs into the cache (resumes; --shard for parallel builds)"),
                        ("merge", "join the chunks of a sharded build into the cache entry")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--config", required=True)
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        if name == "build":
            s.add_argument("--shard", default="0/1", help="I/N: trace chunk c when c %% N == I")
            s.add_argument("--executor", choices=["local", "ray"], default="local",
                           help="ray: map the chunks over Ray workers (pip install -e \".[ray]\")")
            s.add_argument("--address", help="with --executor ray: HOST:PORT of a running Ray "
                           "cluster (default: start a local one)")
            s.add_argument("--workers", type=int, help="with --executor ray: Ray workers, each "
                           "loading the scene once (default: the cluster's CPUs)")
    s = sub.add_parser("inspect", help="print counts and write maps of a cache entry")
    s.add_argument("directory")
    s.add_argument("--out", help="where to write the PNG maps (default: the entry directory)")
    s.add_argument("--realization", type=int, default=0, help="car realization the maps show")
    s = sub.add_parser("bound", help="the position error bound (Cramer-Rao) of every UE of a cache "
                       "entry: bound.json, bound.npz and a map bound.png")
    s.add_argument("directory")
    s.add_argument("--config", help="the data settings (subcarriers, SNR, TA) the bound follows "
                   "(default: tfloc's defaults); also the simulation if the entry has no simulation.json")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--mode", choices=["mirror", "nuisance"], default="mirror",
                   help="mirror: specular paths follow the UE through mirror images (default); "
                   "nuisance: only the LOS path does (the conservative bound)")
    s.add_argument("--clock", choices=["prior", "unknown", "known"], default="prior",
                   help="the TA error: a prior from data.ta_max_ns (default), unknown, or known")
    s.add_argument("--snr-db", type=float, help="instead of the middle of data.snr_db")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--out", help="where to write (default: the entry directory)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.cmd == "inspect":
        if not os.path.isdir(args.directory):
            raise FileNotFoundError(f"{args.directory}: no such cache entry")
        ps = PathSet.load(args.directory)
        print(describe(ps))
        for path in write_maps(ps, args.out or args.directory, realization=args.realization):
            print(f"wrote {path}")
        return 0
    if args.cmd == "bound":
        return _bound(args)
    ray = args.cmd == "build" and args.executor == "ray"
    if args.cmd == "build" and not ray and (args.address or args.workers):
        raise ConfigError("--address and --workers go with --executor ray")
    if ray and args.shard != "0/1":
        raise ConfigError("--shard and --executor ray are two ways to split a build; choose one")
    if ray:
        import_ray()
        check_address(args.address)
        if args.workers is not None and args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: need at least 1")
    cfg = load_config(args.config, args.overrides)
    try:
        check_scene_config(cfg.simulation)
    except Exception as e:
        raise type(e)(f"{args.config}: {e}") from None
    b = DatasetBuild(cfg.simulation, cfg.runtime.cache_dir)
    if os.path.isdir(b.final_dir):
        print(f"already built: {b.final_dir}")
        return 0
    if args.cmd == "build" and args.shard != "0/1":    # shards run at once by design: no entry lock
        return _build_shard(b, parse_shard(args.shard), args.config)
    with entry_lock(b.final_dir):                # a second build of this entry waits, then finds it
        if os.path.isdir(b.final_dir):
            print(f"already built: {b.final_dir}")
            return 0
        return _build_entry(b, args, ray)


def _build_shard(b, shard, config) -> int:
    n = b.build(shard=shard)
    left = len(b.missing_chunks(b.plan()))
    print(f"traced {n} chunk(s); {left} chunk(s) of other shards left")
    print(f"when every shard is done: python -m tfloc.sim merge --config {config}")
    return 0


def _build_entry(b, args, ray: bool) -> int:
    if ray:
        n = build_on_ray(b, args.address, args.workers)
        print(f"traced {n} chunk(s) on Ray")
    elif args.cmd == "build":
        n = b.build()
        print(f"traced {n} chunk(s)")
    b.merge()
    print(f"dataset: {b.final_dir}")
    return 0


def _bound(args) -> int:
    if not os.path.isdir(args.directory):
        raise FileNotFoundError(f"{args.directory}: no such cache entry")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: need at least 1")
    cfg = load_config(args.config, args.overrides)
    has_sim = os.path.isfile(os.path.join(args.directory, "simulation.json"))
    extra = {} if args.snr_db is None else {"snr_db": args.snr_db}
    s = bound_cache_entry(args.directory, cfg.data, sim=None if has_sim or not args.config else cfg.simulation,
                          out_dir=args.out, batch_size=args.batch_size, mode=args.mode, clock=args.clock,
                          **extra)
    p = s["peb_m"]

    def fmt(d):
        med = "-" if not d["n"] else "unbounded" if d["median"] is None else f"{d['median']:.4g} m"
        return f"median {med} over {d['n']} ({d['n_unbounded']} unbounded)"
    print(f"position error bound ({s['mode']}, clock {s['clock']}, {s['bandwidth_hz'] / 1e6:.1f} MHz, "
          f"{s['snr_db']:g} dB, {s['bs_antennas']} BS antennas): {s['samples_with_paths']} UEs in {s['seconds']} s")
    print(f"  all: {fmt(p)}; LOS: {fmt(p['LOS'])}; NLOS: {fmt(p['NLOS'])}")
    print(f"wrote {s['map']} and bound.json / bound.npz beside it")
    return 0
