#!/usr/bin/env python
"""Throughput benchmarks of tfloc on this machine; writes JSON and prints a table.

    python benchmarks/bench.py [--config configs/etoile_supervised.yaml] [--out FILE]
    python benchmarks/bench.py --scenes [--out FILE]
    python benchmarks/bench.py --ecc [--config configs/ecc.yaml] [--out FILE]
    python benchmarks/bench.py --runs runs/seed000 runs/seed003 [--out FILE]
    python benchmarks/bench.py --serving RUN_DIR [--out FILE]
    python benchmarks/bench.py --training [--out FILE]
    python benchmarks/bench.py --fit-overhead [--doc docs/performance.md]
    python benchmarks/bench.py --rest-decode [--out FILE]
    python benchmarks/bench.py --rest-load RUN_DIR [--out FILE]

Measures: receivers ray traced per second (after JIT warm-up), CSI samples per
second synthesised by the tf.data pipeline against a plain NumPy
implementation of the same math (outputs compared), training samples per
second, and SavedModel latency at batch 1 and 256. ``--scenes`` builds each
scene's default dataset (configs/data/*.yaml) from scratch instead: wall
time, receivers per second, peak memory, cache size, and the samples per
second of its pipeline from cache to batched features. ``--ecc`` measures seed
004's fresh-sample pipeline, its training steps per stage and strategy, and its
split deployment (fronthaul bytes; edge, cloud and composed SavedModels).
``--runs`` collects the training samples/s of finished runs (every method, from
their reports: rows through a training step over the measured training time;
tfloc.methods.task.TrainResult says what counts as a row). ``--serving``
times a finished run's export: p50 / p99 latency and positions/s at batch 1 and 256,
in process and through ``python -m tfloc.serve``'s REST API. ``--training`` profiles the
training steps of the main job (hda), etoile_supervised, meml (source stage) and ecc (stage
II), each before (the settings of before issue 23) and after (today's configs), in one run,
against a large matmul's FLOP/s (benchmarks/train_profile.py; docs/performance.md).
``--fit-overhead`` times what a fit of the same four configs pays besides its steps: one
trace of the training step and one save of the training state (Keras' .weights.h5 against
the .npz the per-epoch backup and the best checkpoint now write). ``--rest-decode`` times how
long decoding a large REST body (100 etoile UEs' CSI as JSON) stalls another thread of the
server, decoded in the request thread against in the server's decoding process.
``--rest-load`` serves a finished run's export with ``python -m tfloc.serve`` and measures 8
clients' p50 / p99 alone and beside a client sending the largest allowed body, and what
becomes of 500 idle connections (benchmarks/rest_load.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # train_profile

import numpy as np  # noqa: E402

from train_profile import times as _times  # noqa: E402


def numpy_csi_features(a, tau, freqs, ta, num_taps):
    """Reference: paths -> CSI -> TA shift -> angle-delay magnitude, sample_max."""
    # h[b, u, k, f] = sum_p a[b, p, u, k] exp(-j 2 pi f tau[b, p])
    h = np.einsum("bpuk,bpf->bukf", a, np.exp(-2j * np.pi * tau[..., None] * freqs))
    h = h * np.exp(-2j * np.pi * ta[:, None, None, None] * freqs)
    ang = np.fft.fftshift(np.fft.fft(h, axis=2), axes=2)
    ad = np.fft.ifft(ang, axis=3)[..., :num_taps]
    x = np.abs(np.transpose(ad, (0, 2, 3, 1)))
    return x / x.max(axis=(1, 2, 3), keepdims=True)


def bench_tracing(cfg, n_warm=64):
    from tfloc.sim import SiteTracer, sector_of, ue_grid
    from tfloc.sim.site import is_indoor
    tr = SiteTracer(cfg.simulation)
    g = cfg.simulation.ue_grid
    grid = ue_grid(g.x_range_m, g.y_range_m, 4.0, g.height_m)
    pos = grid[~is_indoor(tr.scene.mi_scene, grid)]
    sec = sector_of(pos, cfg.simulation.bs_position_m, cfg.simulation.sector_azimuths_deg)
    pos = pos[sec == 0]
    tr.set_sector(0)
    tr.trace(pos[:n_warm])  # JIT warm-up
    bs = cfg.simulation.receivers_per_batch
    n = min(len(pos), 4 * bs)
    t = time.perf_counter()
    for s in range(0, n, bs):
        tr.trace(pos[s:s + bs])
    dt = time.perf_counter() - t
    return {"receivers": int(n), "seconds": dt, "receivers_per_s": n / dt,
            "receivers_per_batch": bs}


_CHILD = """
import resource, runpy, sys
sys.argv = ["tfloc.sim"] + sys.argv[1:]
try:
    runpy.run_module("tfloc.sim", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_build(config_path: str, keep_dir: str | None = None):
    """A default dataset build from scratch in a child process: wall time and peak memory."""
    import subprocess
    with tempfile.TemporaryDirectory() as tmp:
        cache = keep_dir or tmp
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _CHILD, "build", "--config", config_path,
                            "--set", f"runtime.cache_dir={cache}"], capture_output=True, text=True)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f"build failed: {r.stderr[-2000:]}")
        peak_mb = int(r.stdout.split("PEAK_KB")[-1].split()[0]) / 1024  # Linux: KiB
        from tfloc.sim import PathSet
        entry = [d for d in os.listdir(cache) if not d.endswith(".build")][0]
        ps = PathSet.load(os.path.join(cache, entry))
        size_mb = sum(os.path.getsize(os.path.join(cache, entry, f))
                      for f in os.listdir(os.path.join(cache, entry))) / 2**20
    m = ps.meta
    return {"ues": m["n_ue"], "realizations": m.get("n_realizations", 1), "links": ps.num_ue,
            "wall_s": dt, "trace_s": m["trace_s"], "receivers_per_s": m["receivers_per_s"],
            "links_per_s": ps.num_ue / max(m["trace_s"], 1e-9), "peak_rss_mb": peak_mb,
            "cache_mb": size_mb, "conditions": m.get("conditions")}


def bench_scene_pipeline(config_path: str, cache_dir: str, passes: int = 3):
    """Samples/s from the path cache to batched training features (fresh noise each pass)."""
    from tfloc.data.bundle import load_data
    from tfloc.run.experiment import load_config
    cfg = load_config(config_path, [f"runtime.cache_dir={cache_dir}"])
    data = load_data(cfg, progress=False)
    pipe, splits = data.pipeline, data.splits
    ds = pipe.feature_dataset(splits.train, training=True)
    shape = None
    for x, _ in ds.take(1):
        shape = list(x["features"].shape[1:])
    times = []
    for _ in range(passes):  # the first pass also synthesises the cached clean CSI
        t = time.perf_counter()
        n = sum(int(y["position"].shape[0]) for _, y in ds)
        times.append(time.perf_counter() - t)
    return {"train_samples": n, "feature_shape": shape,
            "first_pass_samples_per_s": n / times[0],
            "cached_pass_samples_per_s": n / float(np.median(times[1:]))}


def bench_scenes(names=("etoile", "campus", "street_canyon")):
    out = {}
    for name in names:
        path = os.path.join("configs", "data", f"{name}.yaml")
        print(f"{name}: default build from scratch ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = {"build": bench_build(path, keep_dir=tmp),
                         "pipeline": bench_scene_pipeline(path, tmp)}
    return out


def bench_pipeline(pipe, idx, cfg):
    import tensorflow as tf
    from tfloc.data import paths_to_csi, timing_advance_shift, to_real_imag
    d = cfg.data
    sub = pipe.paths.select(idx)
    a, tau = sub.padded(d.max_paths)
    rng = np.random.default_rng(0)
    ta = rng.uniform(-d.ta_max_ns, d.ta_max_ns, len(idx)).astype(np.float32) * 1e-9
    freqs = pipe.frequencies

    def tf_map(a_, t_, ta_):
        h = timing_advance_shift(paths_to_csi(a_, t_, freqs), freqs, ta_)
        return pipe.features(to_real_imag(h))
    ds = (tf.data.Dataset.from_tensor_slices((a, tau, ta)).batch(256)
          .map(tf_map, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    for _ in ds.take(1):
        pass
    def run_tf():
        return np.concatenate([x.numpy() for x in ds])

    def run_np():
        return np.concatenate([
            numpy_csi_features(a[s:s + 256].astype(np.complex128), tau[s:s + 256].astype(np.float64),
                               freqs.numpy().astype(np.float64), ta[s:s + 256].astype(np.float64),
                               d.num_delay_taps)
            for s in range(0, len(idx), 256)])
    # Alternate the two, three passes each: on 2 shared cores single passes vary by ~1.5x.
    times_tf, times_np = [], []
    for _ in range(3):
        t = time.perf_counter()
        out_tf = run_tf()
        times_tf.append(time.perf_counter() - t)
        t = time.perf_counter()
        out_np = run_np()
        times_np.append(time.perf_counter() - t)
    dt_tf, dt_np = float(np.median(times_tf)), float(np.median(times_np))
    max_diff = float(np.abs(out_tf - out_np).max())
    # float32 phases of a few hundred radians (Sionna's exp(-j 2 pi f tau)) against
    # the float64 reference: differences of order 1e-3 on [0, 1] features.
    assert max_diff < 1e-2, f"tf.data and NumPy disagree by {max_diff}"
    n = len(idx)
    return {"samples": n, "tf_data_samples_per_s": n / dt_tf, "numpy_samples_per_s": n / dt_np,
            "speedup_tf_over_numpy": dt_np / dt_tf, "max_abs_difference": max_diff,
            "tf_data_samples_per_s_range": [n / max(times_tf), n / min(times_tf)],
            "numpy_samples_per_s_range": [n / max(times_np), n / min(times_np)]}


def bench_training(cfg, spec, steps=60):
    """Supervised training steps (the TaskTrainer every method uses) on random features."""
    import keras
    import tensorflow as tf
    from tfloc.losses import build_loss
    from tfloc.methods.task import TaskTrainer
    from tfloc.models import build_model
    model = build_model(cfg.model, spec)
    loss = build_loss(cfg.training.loss, spec)
    b = cfg.data.batch_size
    n = b * steps
    rng = np.random.default_rng(0)
    x = {"features": rng.random((n, *spec.feature_shape), np.float32)}
    if spec.num_sectors:
        x["sector"] = rng.integers(0, spec.num_sectors, n).astype(np.int32)
    y = {"position": rng.normal(size=(n, spec.position_dims)).astype(np.float32)}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(b)

    def loss_fn(batch):
        value = tf.reduce_mean(loss(batch[1], model(batch[0], training=True)))
        return {"loss": value}
    trainer = TaskTrainer({"inference": model}, loss_fn, ["loss"], None, [])
    trainer.compile(keras.optimizers.Adam(1e-3))
    trainer.fit(ds.take(3), epochs=1, verbose=0, shuffle=False)
    t = time.perf_counter()
    trainer.fit(ds, epochs=1, verbose=0, shuffle=False)
    dt = time.perf_counter() - t
    return {"model": model.name, "parameters": int(model.count_params()), "batch_size": b,
            "train_samples_per_s": b * steps / dt}, model


def bench_serving(cfg, model, pipe, spec):
    """The SavedModel of a freshly trained model (random weights are as fast as trained)."""
    from tfloc.export import ServingModule
    with tempfile.TemporaryDirectory() as tmp:
        path = ServingModule("bench", model, spec).write(os.path.join(tmp, "bench", "1"))
        return bench_export(path)


def bench_export(path: str, reps=(300, 30), rest: bool = False) -> dict:
    """Latency (p50 / p99) and throughput of an exported model's signature at batch 1 and
    256, on its warm-up requests' CSI (real test CSI for a run's export) tiled to the batch;
    with ``rest`` also through ``python -m tfloc.serve``'s HTTP API on 127.0.0.1."""
    import tensorflow as tf
    from tfloc.export.saved_model import WARMUP_FILE, read_warmup
    size_mb = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) / 2**20
    f = tf.saved_model.load(path).signatures["serving_default"]
    warm = os.path.join(path, "assets.extra", WARMUP_FILE)
    if os.path.isfile(warm):
        base, inputs = max(read_warmup(warm), key=lambda x: len(next(iter(x.values())))), "warm-up requests"
    else:   # an export older than warm-up files: seeded normal CSI of the signature's shapes
        rng = np.random.default_rng(0)
        base = {k: (rng.standard_normal([32, *v.shape[1:]]) if v.dtype.is_floating else
                    np.zeros([32, *v.shape[1:]])).astype(v.dtype.as_numpy_dtype)
                for k, v in f.structured_input_signature[1].items()}
        inputs = "seeded normal values"
    out = {"export": path, "export_size_mb": size_mb, "inputs": inputs}

    def batch_of(b):
        n = len(next(iter(base.values())))
        take = np.arange(b) % n
        return {k: v[take] for k, v in base.items()}

    server = None
    if rest:
        from tfloc.export.rest import Predictor, make_server, serve_forever
        import urllib.request
        server = make_server(Predictor(path, "bench"), port=0)
        serve_forever(server)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/models/bench:predict"
    for batch, n in zip((1, 256), reps):
        x = batch_of(batch)
        xt = {k: tf.constant(v) for k, v in x.items()}
        t = _times(lambda: [v.numpy() for v in f(**xt).values()], n, warm=5)
        out[f"batch{batch}"] = {"p50_ms": 1e3 * float(np.percentile(t, 50)),
                                "p99_ms": 1e3 * float(np.percentile(t, 99)),
                                "positions_per_s": batch / float(np.mean(t)), "requests": n}
        if rest:
            body = json.dumps({"inputs": {k: v.tolist() for k, v in x.items()}}).encode()

            def post():
                req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req) as r:
                    r.read()
            t = _times(post, max(n // 3, 10), warm=5)
            out[f"rest_batch{batch}"] = {"p50_ms": 1e3 * float(np.percentile(t, 50)),
                                         "p99_ms": 1e3 * float(np.percentile(t, 99)),
                                         "positions_per_s": batch / float(np.mean(t)),
                                         "request_kb": len(body) / 1024}
    if server is not None:
        server.shutdown()
    return out


def _export_table(r: dict) -> str:
    rows = []
    for key, what in (("batch1", "signature, batch 1"), ("batch256", "signature, batch 256"),
                      ("rest_batch1", "REST (tfloc.serve), batch 1"),
                      ("rest_batch256", "REST (tfloc.serve), batch 256")):
        if key in r:
            v = r[key]
            rows.append(f"| {what} | {v['p50_ms']:.1f} ms | {v['p99_ms']:.1f} ms | {v['positions_per_s']:.0f} |")
    return ("| SavedModel | p50 latency | p99 latency | positions/s |\n|---|---|---|---|\n"
            + "\n".join(rows) + f"\n\nSavedModel size {r['export_size_mb']:.1f} MB ({r['export']})")


def _write_json(results: dict, out: str | None, prefix: str) -> str:
    """``results`` as JSON at ``out`` (default benchmarks/results/<prefix>-<time>.json)."""
    out = out or os.path.join("benchmarks", "results",
                              f"{prefix}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    return out


def _median_ms(f, n):
    times = _times(f, n)
    return 1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 90))


def bench_ecc(cfg, steps=20, reps=50):
    """Seed 004 (configs/ecc.yaml): the fresh-sample pipeline, stage I and II training steps
    per strategy, and the split deployment (payload bytes, latency and size of each part)."""
    import keras
    import tensorflow as tf
    from tfloc.export import CloudModule, EdgeModule, ServingModule
    from tfloc.losses import build_loss
    from tfloc.run.runner import prepare
    from tfloc.methods.task import position_trainer
    task, data = prepare(cfg, progress=False)
    inputs = task.build_inputs(data)
    out = {"pool": int(len(data.splits.train)), "batch_size": cfg.data.batch_size,
           "fresh_samples_per_epoch": cfg.data.fresh_samples_per_epoch}
    rates = []                                   # one epoch of fresh draws, three times
    for _ in range(3):
        t, n = time.perf_counter(), 0
        for x, _ in inputs["train"]:
            n += int(x["features"].shape[0])
        rates.append(n / (time.perf_counter() - t))
    out["pipeline_samples_per_s"] = float(np.median(rates))
    out["pipeline_samples_per_s_range"] = [min(rates), max(rates)]
    batches = inputs["train"].take(steps).cache()
    for _ in batches:
        pass

    def rate(trainer):
        trainer.compile(keras.optimizers.Adam(1e-3))
        trainer.fit(batches.take(2), epochs=1, verbose=0)
        t = time.perf_counter()
        trainer.fit(batches, epochs=1, verbose=0)
        return cfg.data.batch_size * steps / (time.perf_counter() - t)
    models = task.make_models(data.spec)
    net = models["inference"]
    edges = net.edges
    out["stage1_samples_per_s"] = rate(task.local_trainer(edges, data.spec))
    out["quantizer"] = task.calibrate(edges, batches)
    loss = build_loss(cfg.training.loss, data.spec)
    out["stage2_joint_samples_per_s"] = rate(position_trainer(models, net, loss))
    task.freeze_encoders(edges)
    out["stage2_split_samples_per_s"] = rate(position_trainer(models, models["inference"], loss))
    x, _ = next(iter(batches))
    one = {k: v[:1] for k, v in x.items()}
    with tempfile.TemporaryDirectory() as tmp:
        def load(module):
            path = module.write(os.path.join(tmp, module.name, "1"))
            size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
            return tf.saved_model.load(path).signatures["serving_default"], size / 2**20
        edge, edge_mb = load(EdgeModule("edge0", edges[0]))
        cloud, cloud_mb = load(CloudModule("cloud", net.cloud, edges))
        comp, comp_mb = load(ServingModule("ecc", net, data.spec, outputs=("position",)))
        sent = [edge(csi=tf.constant(one["features"][:, l])) for l in range(len(edges))]
        payload = tf.stack([s["payload"] for s in sent], 1)
        gain = tf.stack([s["gain"] for s in sent], 1)
        out["payload_bytes_per_bs"] = int(sent[0]["payload"].shape[-1] + sent[0]["gain"].shape[-1])
        out["payload_bytes_per_snapshot"] = out["payload_bytes_per_bs"] * len(edges)
        out["csi_bytes_per_bs"] = int(np.prod(one["features"].shape[2:-1])) * 8   # complex64
        for name, f, mb in (("edge", lambda: edge(csi=tf.constant(one["features"][:, 0])), edge_mb),
                            ("cloud", lambda: cloud(payload=payload, gain=gain), cloud_mb),
                            ("composed", lambda: comp(csi=tf.constant(one["features"]),
                                                      bs_positions=tf.constant(one["bs_positions"])), comp_mb)):
            med, p90 = _median_ms(f, reps)
            out[f"{name}_latency_ms_batch1"] = [med, p90]
            out[f"{name}_savedmodel_mb"] = mb
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/etoile_supervised.yaml")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<time>.json)")
    p.add_argument("--scenes", action="store_true", help="per-scene default builds and pipelines")
    p.add_argument("--ecc", action="store_true", help="seed 004's fresh-sample pipeline, training "
                   "steps and split deployment (--config defaults to configs/ecc.yaml)")
    p.add_argument("--serving", metavar="RUN_DIR", help="latency (p50 / p99) and positions/s of a "
                   "finished run's export at batch 1 and 256, in process and through tfloc.serve's REST API")
    p.add_argument("--runs", nargs="+", metavar="ROOT", help="training samples/s of the finished "
                   "runs under these study roots (or run directories)")
    p.add_argument("--training", action="store_true", help="where the four profiled configs' "
                   "training steps spend their time, before and after, and their FLOP/s")
    p.add_argument("--xla", action="store_true", help="with --training: also time each step "
                   "compiled by XLA (training.jit_compile=true)")
    p.add_argument("--fit-overhead", action="store_true", help="what a fit of the four profiled "
                   "configs pays besides its steps: one trace of the step, one save of the training state")
    p.add_argument("--rest-decode", action="store_true", help="how long decoding a large REST "
                   "body stalls the server's other threads, in-thread against its decoding process")
    p.add_argument("--rest-load", metavar="RUN_DIR", help="8 REST clients' p50 / p99 alone and "
                   "beside one sending the largest allowed body; 500 idle connections")
    p.add_argument("--doc", metavar="MD", help="with --training or --fit-overhead: also write the "
                   "tables into this page between its '<!-- bench:training -->' (or "
                   "'<!-- bench:fit -->') markers (docs/performance.md)")
    args = p.parse_args(argv)
    if args.rest_decode:
        return _main_rest_decode(args)
    if args.rest_load:
        return _main_rest_load(args)
    if args.training:
        return _main_training(args)
    if args.fit_overhead:
        return _main_fit_overhead(args)
    if args.runs:
        return _main_runs(args)
    if args.serving:
        return _main_serving(args)
    if args.scenes:
        return _main_scenes(args)
    if args.ecc:
        return _main_ecc(args)
    from tfloc.data.bundle import load_data
    from tfloc.run.experiment import load_config
    cfg = load_config(args.config)
    results = {"config": args.config, "time": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    print("default dataset build ...", flush=True)
    results["build"] = bench_build(args.config)
    print("ray tracing ...", flush=True)
    results["tracing"] = bench_tracing(cfg)
    print("pipeline ...", flush=True)
    data = load_data(cfg, progress=False)
    paths, pipe = data.paths, data.pipeline
    idx = np.flatnonzero(paths.num_paths > 0)[:2048]
    results["pipeline"] = bench_pipeline(pipe, idx, cfg)
    print("training ...", flush=True)
    results["training"], model = bench_training(cfg, data.spec)
    print("serving ...", flush=True)
    results["serving"] = bench_serving(cfg, model, pipe, data.spec)
    out = _write_json(results, args.out, "bench")
    r = results
    bd = r["build"]
    print(f"\n| measure | value |\n|---|---|\n"
          f"| default build from scratch ({bd['ues']} UEs): wall time, peak memory | {bd['wall_s']:.0f} s, {bd['peak_rss_mb']:.0f} MB |\n"
          f"| receivers traced per second (etoile, batch {r['tracing']['receivers_per_batch']}) | {r['tracing']['receivers_per_s']:.0f} |\n"
          f"| CSI samples/s, tf.data pipeline | {r['pipeline']['tf_data_samples_per_s']:.0f} |\n"
          f"| CSI samples/s, NumPy reference | {r['pipeline']['numpy_samples_per_s']:.0f} |\n"
          f"| tf.data / NumPy speed ratio | {r['pipeline']['speedup_tf_over_numpy']:.1f}x |\n"
          f"| training samples/s ({r['training']['model']}, batch {r['training']['batch_size']}) | {r['training']['train_samples_per_s']:.0f} |\n"
          f"| SavedModel latency, batch 1 (p50 / p99) | {r['serving']['batch1']['p50_ms']:.1f} / {r['serving']['batch1']['p99_ms']:.1f} ms |\n"
          f"| SavedModel latency, batch 256 (p50 / p99) | {r['serving']['batch256']['p50_ms']:.1f} / {r['serving']['batch256']['p99_ms']:.1f} ms |\n"
          f"| SavedModel throughput, batch 256 | {r['serving']['batch256']['positions_per_s']:.0f} positions/s |\n"
          f"| SavedModel size | {r['serving']['export_size_mb']:.1f} MB |\n\nwritten to {out}")
    return results


def bench_rest_decode(ues: int = 100, repeats: int = 3) -> dict:
    """The worst stall of a thread that wakes every millisecond while another thread decodes a
    body of ``ues`` etoile UEs' CSI (2 x 32 x 136 complex values each) as JSON: in that thread,
    and handed to the server's decoding process (tfloc.rest_body.BodyDecoder). Median of
    ``repeats``."""
    import threading
    from tfloc.rest_body import BodyDecoder, decode_bytes
    spec = {"csi": ("float32", (None, 2, 32, 136, 2))}
    one = np.random.default_rng(0).normal(size=(2, 32, 136, 2)).round(6).tolist()
    body = json.dumps({"instances": [one] * ues}).encode()

    def worst_stall_ms(fn):
        done, gaps = threading.Event(), []
        worker = threading.Thread(target=lambda: (fn(), done.set()))
        worker.start()
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        worker.join()
        return 1000 * max(gaps)
    decoder = BodyDecoder()
    try:
        out = {"body_mb": len(body) / 2 ** 20, "ues": ues,
               "in_thread_stall_ms": float(np.median([worst_stall_ms(lambda: decode_bytes(body, spec))
                                                      for _ in range(repeats)])),
               "in_process_stall_ms": float(np.median([worst_stall_ms(lambda: decoder.decode(body, spec))
                                                       for _ in range(repeats)]))}
    finally:
        decoder.close()
    return out


def _main_rest_decode(args):
    r = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
         "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, **bench_rest_decode()}
    out = _write_json(r, args.out, "rest_decode")
    print(f"| body | worst stall of another server thread, decoded in the request thread | "
          f"decoded in the decoding process |\n|---|---|---|\n| {r['body_mb']:.0f} MB ({r['ues']} etoile UEs) "
          f"| {r['in_thread_stall_ms']:.0f} ms | {r['in_process_stall_ms']:.0f} ms |\n\nwritten to {out}")
    return r


def _stamped_report(args, name: str, results: dict, table) -> dict:
    """``results`` with the time and machine, written as JSON and printed as ``table(r)``."""
    r = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
         "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, **results}
    out = _write_json(r, args.out, name)
    print(table(r) + f"\n\nwritten to {out}")
    return r


def _main_rest_load(args):
    from rest_load import bench_rest_load, table
    return _stamped_report(args, "rest_load", bench_rest_load(args.rest_load), table)


def _main_serving(args):
    from tfloc.export.rest import find_export
    return _stamped_report(args, "serving", bench_export(find_export(args.serving), rest=True), _export_table)


def _main_runs(args):
    import glob
    from tfloc.studies.common import load_run, training_samples_per_s
    runs = sorted({os.path.dirname(r) for root in args.runs
                   for r in glob.glob(os.path.join(root, "report.json"))
                   + glob.glob(os.path.join(root, "*", "report.json"))})
    if not runs:
        raise SystemExit(f"--runs: no finished run (report.json) under {' '.join(args.runs)}")
    rows = []
    for run in runs:
        rep = load_run(run)
        rate = training_samples_per_s(rep)
        rows.append({"run": run, "method": rep["method"], "model": rep.get("model_name"),
                     "parameters": rep.get("num_parameters"),
                     "training_s": rep.get("timings_s", {}).get("training_s"),
                     "train_samples_per_s": rate})
    results = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "note": "times as the runs measured them; runs that shared the cores are slower",
               "runs": rows}
    out = _write_json(results, args.out, "runs")
    print("| run | method | training [s] | training samples/s |\n|---|---|---|---|")
    for r in rows:
        rate = "-" if r["train_samples_per_s"] is None else f"{r['train_samples_per_s']:.0f}"
        print(f"| {r['run']} | {r['method']} | {r['training_s'] or 0:.0f} | {rate} |")
    print(f"\nwritten to {out}")
    return results


def _main_training(args):
    from train_profile import run_all, table
    results = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               **run_all(xla=args.xla)}
    return _report(results, table(results), args, "training")


def _report(results: dict, text: str, args, name: str, gap: str = ""):
    """Writes ``results`` as JSON, prints the table ``text`` and, with ``--doc``, puts it
    between the page's ``bench:<name>`` markers; returns ``results``."""
    out = _write_json(results, args.out, name)
    print(text + f"\n\nwritten to {out}")
    if args.doc:
        _write_between_markers(args.doc, f"bench:{name}",
                               f"Measured {results['time']} ({results['machine']['cpus']} CPUs, "
                               f"{results['machine']['platform']}); raw numbers: {out}\n{gap}{text}\n")
    return results


def _main_fit_overhead(args):
    from train_profile import CASES, fit_overhead, fit_overhead_table
    from tfloc.run.experiment import load_config
    results = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "fit_overhead": {name: fit_overhead(load_config(path), stage)
                                for name, path, stage, _ in CASES}}
    return _report(results, fit_overhead_table(results), args, "fit", gap="\n")


def _write_between_markers(path: str, marker: str, text: str):
    """Replaces what lies between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path``."""
    with open(path) as fh:
        page = fh.read()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in page or end not in page:
        raise SystemExit(f"--doc: {path} has no {start} ... {end} markers")
    head, rest = page.split(start, 1)
    page = head + start + "\n" + text + end + rest.split(end, 1)[1]
    with open(path, "w") as fh:
        fh.write(page)


def _main_ecc(args):
    from tfloc.run.experiment import load_config
    config = "configs/ecc.yaml" if args.config == "configs/etoile_supervised.yaml" else args.config
    r = bench_ecc(load_config(config))
    results = {"config": config, "time": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "ecc": r}
    out = _write_json(results, args.out, "ecc")
    lo, hi = r["pipeline_samples_per_s_range"]
    print(f"\n| measure ({config}, pool {r['pool']}, batch {r['batch_size']}) | value |\n|---|---|\n"
          f"| fresh-sample pipeline (6 BSs x T slots of CSI synthesised per draw), samples/s, median of 3 (range) "
          f"| {r['pipeline_samples_per_s']:.0f} ({lo:.0f}-{hi:.0f}) |\n"
          f"| stage I training samples/s (six autoencoders, eq. 22) | {r['stage1_samples_per_s']:.0f} |\n"
          f"| stage II training samples/s, local + joint (encoders trained) | {r['stage2_joint_samples_per_s']:.0f} |\n"
          f"| stage II training samples/s, local + split (encoders frozen) | {r['stage2_split_samples_per_s']:.0f} |\n"
          f"| fronthaul payload per BS / per snapshot (Q = {r['quantizer']['bits']}; lossless CSI per BS) "
          f"| {r['payload_bytes_per_bs']} / {r['payload_bytes_per_snapshot']} B ({r['csi_bytes_per_bs']} B) |\n"
          + "".join(f"| {n} SavedModel latency, batch 1 (median / p90) and size | "
                    f"{r[f'{n}_latency_ms_batch1'][0]:.1f} / {r[f'{n}_latency_ms_batch1'][1]:.1f} ms, "
                    f"{r[f'{n}_savedmodel_mb']:.1f} MB |\n" for n in ("edge", "cloud", "composed"))
          + f"\nwritten to {out}")
    return results


def _main_scenes(args):
    results = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "scenes": bench_scenes()}
    out = _write_json(results, args.out, "scenes")
    print("\n| scene | UEs x realizations | links | build wall | receivers/s | links/s | peak memory "
          "| cache | pipeline samples/s (first / cached pass) |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in results["scenes"].items():
        b, q = r["build"], r["pipeline"]
        print(f"| {name} | {b['ues']} x {b['realizations']} | {b['links']} | {b['wall_s']:.0f} s "
              f"| {b['receivers_per_s']:.0f} | {b['links_per_s']:.0f} | {b['peak_rss_mb']:.0f} MB "
              f"| {b['cache_mb']:.1f} MB | {q['first_pass_samples_per_s']:.0f} / "
              f"{q['cached_pass_samples_per_s']:.0f} |")
    print(f"\nwritten to {out}")
    return results


if __name__ == "__main__":
    main()
