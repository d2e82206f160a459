"""Dataset tool: ``python -m tfloc.sim {build,merge,inspect} ...``.

    python -m tfloc.sim build --config configs/etoile_supervised.yaml [--set k=v] [--shard I/N]
    python -m tfloc.sim build --config configs/etoile_supervised.yaml --executor ray [--address HOST:PORT]
    python -m tfloc.sim merge --config configs/etoile_supervised.yaml
    python -m tfloc.sim inspect cache/paths-etoile-<key>
"""
from __future__ import annotations

import argparse
import os
import sys


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
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    from tfloc.sim.paths import PathSet
    if args.cmd == "inspect":
        if not os.path.isdir(args.directory):
            raise FileNotFoundError(f"{args.directory}: no such cache entry")
        from tfloc.sim.inspect import describe, write_maps
        ps = PathSet.load(args.directory)
        print(describe(ps))
        for path in write_maps(ps, args.out or args.directory, realization=args.realization):
            print(f"wrote {path}")
        return 0
    from tfloc.config import ConfigError
    from tfloc.experiment import load_config
    from tfloc.sim.build import DatasetBuild, parse_shard
    from tfloc.sim.scenes import check_scene_config
    ray = args.cmd == "build" and args.executor == "ray"
    if args.cmd == "build" and not ray and (args.address or args.workers):
        raise ConfigError("--address and --workers go with --executor ray")
    if ray and args.shard != "0/1":
        raise ConfigError("--shard and --executor ray are two ways to split a build; choose one")
    if ray:
        from tfloc.sim.ray_build import check_address, import_ray
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
    if ray:
        from tfloc.sim.ray_build import build_on_ray
        n = build_on_ray(b, args.address, args.workers)
        print(f"traced {n} chunk(s) on Ray")
    elif args.cmd == "build":
        shard = parse_shard(args.shard)
        n = b.build(shard=shard)
        left = len(b.missing_chunks(b.plan()))
        print(f"traced {n} chunk(s); {left} chunk(s) of other shards left")
        if shard[1] > 1 or left:
            print(f"when every shard is done: python -m tfloc.sim merge --config {args.config}")
            return 0
    b.merge()
    print(f"dataset: {b.final_dir}")
    return 0


if __name__ == "__main__":
    from tfloc.cli import run_cli
    sys.exit(run_cli(main))
