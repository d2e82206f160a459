"""Where a training step's time goes, for the shipped configs' real steps.

For one config (and one fit stage of its method) this builds the task, its data and models as
``train.py`` does, captures the trainer and datasets the method hands to ``Task.fit`` (earlier
stages are skipped: random weights run as fast as trained ones), and times, per batch:

- the input pipeline, stage by stage: clean CSI (synthesised once and cached, or drawn fresh
  each epoch), + impairments (TA error, AWGN), + features (the whole ``train`` pipeline);
- the model's forward pass (``training=True``) and forward + backward of its own position
  loss (the inference model alone);
- the method's whole loss (extra losses, the target-domain forward, other models) forward +
  backward, without and with the optimizer update (the compiled train step);
- Keras' ``fit`` over the same batches held in memory: the step plus Keras' per-step work;
- ``fit`` on the real pipeline: what a training epoch achieves.

Each timing is the fastest of its repeats (calls, or epochs of ``fit``): on 2 cores the
least disturbed one; parts are differences of such timings, so a part near zero can come
out slightly negative.

FLOP/s: the FLOPs of the method's loss (every forward pass of the step) are counted from its graph (TF's op statistics: convolutions,
matrix products); a training step is counted as 3x the forward (forward + two backward
products), the usual estimate. The machine's practical peak is a large float32
``tf.linalg.matmul`` timed in the same process.
"""
from __future__ import annotations

import time

import numpy as np


class _Captured(Exception):
    """Raised out of ``Task.fit`` once the profiled stage's trainer is in hand."""


def times(f, n: int, warm: int = 3) -> np.ndarray:
    """Seconds of ``n`` calls of ``f`` after ``warm`` untimed ones."""
    for _ in range(warm):
        f()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return np.asarray(out)


def _best_s(f, n: int) -> float:
    """The fastest of ``n`` timed calls: on 2 shared cores the least disturbed one (medians
    moved by 10-20 % between two measurements of one setting in one run)."""
    return float(np.min(times(f, n)))


def _fit_epoch_s(trainer, ds, epochs: int) -> float:
    """The fastest epoch of ``epochs`` epochs of ``fit`` on ``ds`` (seconds)."""
    import keras
    seconds = []
    clock = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seconds.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.__setitem__(-1, seconds[-1] + time.perf_counter()))
    trainer.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=[clock])
    return min(seconds)


def matmul_peak(n: int = 2048, reps: int = 10, dtype: str = "float32") -> dict:
    """FLOP/s of an n x n matrix product in ``dtype`` (the machine's practical peak)."""
    import tensorflow as tf
    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)
    mm = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b), tf.float32)))
    s = _best_s(lambda: mm().numpy(), reps)
    return {"n": n, "seconds": s, "flops_per_s": 2 * n ** 3 / s}


def forward_flops(fn, example) -> float:
    """FLOPs of one call of ``fn(example)`` from its graph's op statistics."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder
    concrete = tf.function(fn).get_concrete_function(example)
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(model_analyzer.profile(concrete.graph, options=opts).total_float_ops)


def capture(cfg, stage: str = ""):
    """(task, data, trainer, train_ds, val_ds) of the fit tagged ``stage`` ('' = the first);
    earlier fits are skipped (their trainers compiled, a one-epoch history faked)."""
    import keras
    from tfloc.methods.callbacks import RecordedHistory
    from tfloc.methods.task import TrainingRun
    from tfloc.run.runner import prepare
    from tfloc.utils import set_seed
    set_seed(cfg.runtime.seed)
    task, data = prepare(cfg, progress=False)
    inputs = task.build_inputs(data)
    models = task.make_models(data.spec)
    got = {}

    def fit(trainer, train_ds, val_ds, run, *, tag="", monitor="val_mean_error_m",
            learning_rate=None, **kwargs):
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate or cfg.training.learning_rate),
                        jit_compile=cfg.training.jit_compile)
        if tag == stage or not stage:
            got.update(trainer=trainer, train=train_ds, val=val_ds)
            raise _Captured
        return RecordedHistory({"loss": [0.0], monitor: [0.0]})
    task.fit = fit
    try:
        task.train(models, inputs, data, TrainingRun("/nonexistent"))
    except _Captured:
        pass
    if not got:
        raise ValueError(f"{cfg.method.type}: no fit tagged {stage!r}")
    return task, data, models, got["trainer"], got["train"], got["val"]


def _per_batch(ds, n_batches: int) -> float:
    """Seconds per element of ``ds`` (after its first, which builds the pipeline)."""
    it = iter(ds)
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return (time.perf_counter() - t) / n_batches


def _pipeline_stages(data, train_ds, batches: int) -> dict:
    """Seconds per batch of the clean CSI, + impairments, + features (the whole pipeline)."""
    p, rows = data.pipeline, data.splits.train
    fresh = p.cfg.fresh_samples_per_epoch
    bsz = p.cfg.batch_size
    out = {}
    clean = p._clean_csi(rows, draw_per_epoch=fresh).batch(bsz)
    if not fresh:                        # cached after the first pass: time the cached pass
        for _ in clean:
            pass
    out["clean_csi_s"] = _per_batch(clean.repeat(), batches)
    out["csi_impaired_s"] = _per_batch(p.csi_dataset(rows, training=True).repeat(), batches)
    out["pipeline_s"] = _per_batch(train_ds.repeat(), batches)
    out["samples_per_batch"] = bsz
    return out


def profile_step(cfg, stage: str = "", batches: int = 20) -> dict:
    """The breakdown of one config's training step (module docstring); seconds per step."""
    import tensorflow as tf
    task, data, models, trainer, train_ds, val_ds = capture(cfg, stage)
    # the inference model's own forward / backward (not in stages that train other models)
    net = models["inference"] if stage in ("", "joint") else None
    held = [b for b in train_ds.take(batches)]                 # batches held in memory
    first = held[0]
    # the source batch of a domain-adaptation step, or the batch itself
    source = first["source"] if isinstance(first, dict) and "source" in first else first
    bsz = int(tf.shape(tf.nest.flatten(source[0])[0])[0])
    out = {"config": cfg.name, "stage": stage or "train", "batch_size": bsz,
           "jit_compile": bool(trainer.jit_compile)}
    if stage == "source":   # several environments' pipelines, mixed: the whole only
        out.update(pipeline_s=_per_batch(train_ds.repeat(), batches), samples_per_batch=bsz)
    else:
        out.update(_pipeline_stages(data, train_ds, batches))
    variables = trainer.trainable_variables
    if net is not None:
        fwd = tf.function(lambda x: net(x, training=True), jit_compile=trainer.jit_compile)
        out["forward_s"] = _best_s(lambda: tf.nest.map_structure(np.asarray, fwd(source[0])), batches)

        @tf.function(jit_compile=trainer.jit_compile)
        def fwd_bwd(x, y):
            with tf.GradientTape() as tape:
                o = net(x, training=True)
                loss = tf.reduce_mean(tf.square(tf.cast(o["position"], tf.float32) - y["position"]))
            return tape.gradient(loss, net.trainable_variables)
        out["forward_backward_s"] = _best_s(lambda: [g.numpy() for g in fwd_bwd(*source)
                                                       if g is not None], batches)
        flops = forward_flops(lambda x: net(x, training=True), source[0])
        out["forward_gflop"] = flops / 1e9

    @tf.function(jit_compile=trainer.jit_compile)
    def loss_grads(batch):
        with tf.GradientTape() as tape:
            loss = trainer.loss_fn(batch)["loss"]
        return [g for g in tape.gradient(loss, variables) if g is not None]
    out["step_forward_gflop"] = forward_flops(lambda b: trainer.loss_fn(b)["loss"], first) / 1e9
    out["method_loss_backward_s"] = _best_s(lambda: [g.numpy() for g in loss_grads(first)], batches)
    step = tf.function(trainer.train_step, jit_compile=trainer.jit_compile)
    it = iter(held * 100)
    out["train_step_s"] = _best_s(
        lambda: tf.nest.map_structure(np.asarray, step(next(it))), batches)
    mem = tf.data.Dataset.from_tensors(held[0])
    for b in held[1:]:
        mem = mem.concatenate(tf.data.Dataset.from_tensors(b))
    trainer.fit(mem.take(2), epochs=1, verbose=0, shuffle=False)
    out["fit_in_memory_s"] = _fit_epoch_s(trainer, mem, 4) / len(held)
    steps = int(train_ds.cardinality())
    t = time.perf_counter()
    trainer.fit(train_ds, epochs=1, verbose=0, shuffle=False)
    out["fit_pipeline_first_epoch_s"] = (time.perf_counter() - t) / steps   # fills caches
    out["fit_pipeline_s"] = _fit_epoch_s(trainer, train_ds, 4) / steps
    out["fit_pipeline_steps"] = steps
    rows = out["samples_per_batch"]
    out["samples_per_s"] = rows / out["fit_pipeline_s"]
    out["training_gflop_per_s"] = 3 * out["step_forward_gflop"] / out["train_step_s"]
    return out


#: the steps profiled: (name, config, fit stage, what counts as one sample)
CASES = (("hda", "configs/hda.yaml", "", "a labelled source sample (+ one target sample)"),
         ("etoile_supervised", "configs/etoile_supervised.yaml", "", "a labelled sample"),
         ("meml", "configs/meml.yaml", "source", "a sample of each of the 5 source environments"),
         ("ecc", "configs/ecc.yaml", "joint", "a snapshot of 6 BSs"))

#: the step as it was before issue 23 (float32, the batch sizes of then), timed in the same run
BEFORE = {"hda": ["training.precision=float32", "data.batch_size=64"],
          "etoile_supervised": ["training.precision=float32", "data.batch_size=16"],
          "meml": ["training.precision=float32", "data.batch_size=64"],
          "ecc": ["training.precision=float32", "data.batch_size=32"]}


def breakdown(r: dict) -> dict:
    """Seconds per step by part (from :func:`profile_step`'s nested timings)."""
    own = r.get("forward_backward_s")
    parts = {"input pipeline, alone (s/batch)": r["pipeline_s"]}
    if "clean_csi_s" in r:
        parts.update({"  clean CSI (cached or fresh draws)": r["clean_csi_s"],
                      "  impairments (TA error, AWGN)": r["csi_impaired_s"] - r["clean_csi_s"],
                      "  features": r["pipeline_s"] - r["csi_impaired_s"]})
    if own is not None:
        parts.update({"model forward": r["forward_s"], "model backward": own - r["forward_s"],
                      "extra losses and forwards (fwd + bwd)": r["method_loss_backward_s"] - own})
    else:
        parts["method loss forward + backward"] = r["method_loss_backward_s"]
    parts.update({"optimizer update and metrics": r["train_step_s"] - r["method_loss_backward_s"],
                  "compiled train step": r["train_step_s"],
                  "Keras fit loop, per step": r["fit_in_memory_s"] - r["train_step_s"],
                  "pipeline running beside the step": r["fit_pipeline_s"] - r["fit_in_memory_s"],
                  "fit on the real pipeline": r["fit_pipeline_s"]})
    return parts


def fit_overhead(cfg, stage: str = "", repeats: int = 5) -> dict:
    """What a fit pays besides its steps, for the trainer of ``stage``: one trace of the
    training step (a fit traced it twice before issue 23's optimizer build, once now:
    tests/test_training_speed.py), and one save of the training state, as Keras'
    ``.weights.h5`` (the per-epoch backup and best checkpoint before) and as
    :func:`tfloc.methods.callbacks.save_state` (now); medians of ``repeats``."""
    import os
    import tempfile
    import tensorflow as tf
    from tfloc.methods.callbacks import load_state, save_state
    task, data, models, trainer, train_ds, val_ds = capture(cfg, stage)
    trainer.optimizer.build(trainer.trainable_variables)
    batch = next(iter(train_ds))
    t = time.perf_counter()
    tf.function(trainer.train_step).get_concrete_function(batch)
    trace_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        h5, npz = os.path.join(tmp, "s.weights.h5"), os.path.join(tmp, "s.npz")
        keras_s = times(lambda: trainer.save_weights(h5, overwrite=True), repeats, warm=1)
        state_s = times(lambda: save_state(trainer, npz), repeats, warm=1)
        load_s = times(lambda: load_state(trainer, npz), repeats, warm=1)
        sizes = os.path.getsize(h5), os.path.getsize(npz)
    return {"trace_s": trace_s, "variables": len(trainer.weights) + len(trainer.optimizer.variables),
            "keras_save_s": float(np.median(keras_s)), "state_save_s": float(np.median(state_s)),
            "state_load_s": float(np.median(load_s)), "keras_mb": sizes[0] / 1e6, "state_mb": sizes[1] / 1e6}


def fit_overhead_table(results: dict) -> str:
    """Markdown of :func:`fit_overhead` per case."""
    lines = ["| config | one trace of the step [s] (a fit: 2 traces before, 1 now) | variables saved "
             "(model + optimizer) | one state save, Keras .weights.h5 [s] (before) | save_state .npz [s] "
             "(now) | ratio | load_state [s] | size [MB] |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results["fit_overhead"].items():
        lines.append(f"| {name} | {r['trace_s']:.1f} | {r['variables']} | {r['keras_save_s']:.3f} | "
                     f"{r['state_save_s']:.3f} | {r['keras_save_s'] / r['state_save_s']:.1f}x | "
                     f"{r['state_load_s']:.3f} | {r['state_mb']:.1f} |")
    return "\n".join(lines)


def run_all(cases=CASES, load=None, xla: bool = False) -> dict:
    """Every case before and after (and, with ``xla``, after with the step compiled by XLA),
    and the matmul peaks, in one process."""
    from tfloc.run.experiment import load_config
    load = load or load_config
    out = {"matmul": matmul_peak(), "matmul_bfloat16": matmul_peak(dtype="bfloat16"), "cases": {}}
    for name, path, stage, unit in cases:
        row = {"config": path, "stage": stage or "train", "sample": unit}
        variants = [("before", BEFORE[name]), ("after", [])]
        if xla:
            variants.append(("after_xla", ["training.jit_compile=true"]))
        for when, sets in variants:
            r = profile_step(load(path, sets), stage)
            r["percent_of_matmul_peak"] = 100 * r["training_gflop_per_s"] * 1e9 / out["matmul"]["flops_per_s"]
            r["breakdown_s"] = breakdown(r)
            row[when] = r
        row["speedup"] = row["after"]["samples_per_s"] / row["before"]["samples_per_s"]
        out["cases"][name] = row
    return out


def table(results: dict) -> str:
    """Markdown: the breakdown per case (ms per step), then samples/s, ratio and FLOP/s."""
    peak = results["matmul"]["flops_per_s"] / 1e9
    lines = []
    for name, row in results["cases"].items():
        b, a = row["before"], row["after"]
        lines += [f"\n**{name}** ({row['config']}, stage {row['stage']}; a sample is {row['sample']}); "
                  f"batch {b['batch_size']} -> {a['batch_size']}\n",
                  "| part | before [ms] | after [ms] |", "|---|---|---|"]
        for part in b["breakdown_s"]:
            lines.append(f"| {part} | {1e3 * b['breakdown_s'][part]:.1f} | "
                         f"{1e3 * a['breakdown_s'].get(part, float('nan')):.1f} |")
    bf = results["matmul_bfloat16"]["flops_per_s"] / 1e9
    if any("after_xla" in row for row in results["cases"].values()):
        lines += ["", "| config | samples/s after | after, step compiled by XLA (training.jit_compile) |",
                  "|---|---|---|"]
        lines += [f"| {name} | {row['after']['samples_per_s']:.0f} | {row['after_xla']['samples_per_s']:.0f} |"
                  for name, row in results["cases"].items() if "after_xla" in row]
    lines += ["", f"| config | samples/s before | after | ratio | GFLOP/s of the step after "
              f"(% of the float32 matmul peak, {peak:.0f} GFLOP/s; of bfloat16's, {bf:.0f}) |",
              "|---|---|---|---|---|"]
    for name, row in results["cases"].items():
        a = row["after"]
        lines.append(f"| {name} | {row['before']['samples_per_s']:.0f} | {a['samples_per_s']:.0f} | "
                     f"{row['speedup']:.2f}x | {a['training_gflop_per_s']:.0f} "
                     f"({a['percent_of_matmul_peak']:.0f} %; {100 * a['training_gflop_per_s'] / bf:.0f} %) |")
    return "\n".join(lines)
