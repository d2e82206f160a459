"""Issue 23's training settings: bfloat16 compute with float32 outputs, and the
"not converged" flag of a fit whose best epoch is its last."""
import logging

import keras
import numpy as np
import pytest

from tfloc.methods.task import convergence
from tfloc.models import ModelConfig, build_model
from tfloc.run.cli import summary_lines
from tfloc.utils import dtype_policy

from conftest import make_spec


@pytest.mark.parametrize("model", ["semantic_cnn", "resnet", "pooling_cnn", "ae_mlp"])
def test_mixed_bfloat16_models_compute_in_bfloat16_and_answer_in_float32(tmp_path, model):
    spec = make_spec((16, 8, 2), mean=[150.0, -120.0], std=[40.0, 30.0])
    cfg = ModelConfig(model)
    with dtype_policy("mixed_bfloat16"):
        m = build_model(cfg, spec, num_conditions=2) if model == "semantic_cnn" else build_model(cfg, spec)
    assert keras.config.dtype_policy().name == "float32"       # the policy does not leak
    layers = list(m._flatten_layers())
    assert all(l.compute_dtype == "bfloat16" for l in layers if isinstance(l, keras.layers.Conv2D))
    assert any(l.compute_dtype == "bfloat16" for l in layers if isinstance(l, keras.layers.Dense))
    assert all(v.dtype == "float32" for v in m.weights)          # variables stay float32
    x = {"features": np.random.default_rng(0).normal(size=(4, 16, 8, 2)).astype(np.float32)}
    out = m(x)
    # every output, the embedding too: multi-worker predict all-gathers them, and bfloat16
    # cannot be all-gathered (nor fed by most serving clients)
    assert {"embedding", "position"} <= set(out) and {k: v.dtype.name for k, v in out.items()} == {
        k: "float32" for k in out}
    # near the labels' mean (150 m) bfloat16 would keep steps of 1 m; float32 outputs do not
    with dtype_policy("mixed_bfloat16"):
        pos = m(x)["position"].numpy()
    assert np.any(np.abs(pos - np.round(pos)) > 1e-3)
    path = str(tmp_path / "m.keras")
    m.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x)["position"], out["position"], atol=1e-4)


def test_mixed_bfloat16_ecc_keeps_the_fronthaul_and_the_cloud_in_float32():
    from tfloc.models.ecc import build_ecc
    spec = make_spec(**build_ecc.example_spec, mean=[1.0, 2.0, 3.0], std=[2.0, 2.0, 1.0])
    with dtype_policy("mixed_bfloat16"):
        m = build_model(ModelConfig("ecc"), spec)
    edge = m.edges[0]
    convs = [l for l in edge.get_layer("edge0_encoder").layers if isinstance(l, keras.layers.Conv2D)]
    assert {l.compute_dtype for l in convs[:-1]} == {"bfloat16"}          # the encoder's work
    assert convs[-1].name == "edge0_encoder_latent" and convs[-1].compute_dtype == "float32"
    for name in ("edge0_preprocess", "edge0_quantizer"):
        assert edge.get_layer(name).compute_dtype == "float32"
    assert {l.compute_dtype for l in m.cloud.layers} == {"float32"}
    assert {l.compute_dtype for l in m.layers if l not in m.edges} == {"float32"}
    rng = np.random.default_rng(0)
    x = {k: rng.normal(size=(2, *shape)).astype(np.float32) for k, (shape, _) in spec.model_inputs.items()}
    out = m(x)
    assert out["position"].dtype == "float32" and edge(x["features"][:, 0])["latent"].dtype == "float32"


def test_a_fit_whose_best_epoch_is_its_last_is_not_converged(caplog):
    with caplog.at_level(logging.WARNING, logger="tfloc"):
        c = convergence({"val_mean_error_m": [5.0, 4.0, 3.0]}, "val_mean_error_m", 3, "train")
    assert c == {"epochs": 3, "epoch_cap": 3, "best_epoch": 3, "monitor": "val_mean_error_m",
                 "converged": False}
    assert "stage train: not converged" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfloc"):
        c = convergence({"val_mean_error_m": [5.0, 3.0, 4.0, 4.5]}, "val_mean_error_m", 100)
    assert c["converged"] and c["best_epoch"] == 2 and c["epochs"] == 4 and not caplog.text
    report = {"n_test": 1, "convergence": {
        "source": {"epochs": 30, "epoch_cap": 30, "best_epoch": 30, "converged": False},
        "target": {"epochs": 12, "epoch_cap": 100, "best_epoch": 4, "converged": True}}}
    lines = summary_lines(report)
    assert "not converged: stage source's best epoch is its last (30 of 30, cap 30)" in lines
    assert "stage target" not in lines


def _flat_fit(tmp_path, **kw):
    """A fit whose validation error never changes (the trained weight cannot move the
    output, so Adam's step is zero): the epochs it runs are those its schedule allows."""
    import os
    import tensorflow as tf
    from tfloc.methods.task import TrainingRun, position_trainer
    from tfloc.methods.supervised import SupervisedTask
    from tfloc.run.experiment import load_config
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "etoile_supervised.yaml"),
                      ["runtime.verbose=0", "training.precision=float32", "training.jit_compile=false"])
    x_in = keras.Input((3,), name="features")
    w = keras.layers.Dense(2, name="w")(x_in)
    position = keras.layers.Lambda(lambda t: 0.0 * t + 1.0, name="position")(w)
    net = keras.Model({"features": x_in}, {"position": position})
    xs = np.ones((8, 3), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(({"features": xs}, {"position": np.zeros((8, 2), np.float32)})).batch(4)
    trainer = position_trainer({"inference": net}, net,
                               lambda y, out: tf.reduce_mean(tf.square(out["position"] - y["position"])))
    run = TrainingRun(str(tmp_path))
    SupervisedTask(cfg).fit(trainer, ds, ds, run, epochs=10, tag="flat", **kw)
    return run.convergence["flat"]


def test_a_stage_patience_and_start_epoch_replace_the_configs_patience(tmp_path):
    # training.early_stopping_patience (20) lets a flat fit run to its cap of 10 ...
    assert _flat_fit(tmp_path / "a")["epochs"] == 10
    # ... a stage's own patience of 2 ends it at epoch 3 (best 1, then two without gain) ...
    assert _flat_fit(tmp_path / "b", patience=2)["epochs"] == 3
    # ... and counted from epoch 4 (after a 3-epoch ramp-up) at epoch 6
    assert _flat_fit(tmp_path / "c", patience=2, start_from_epoch=3)["epochs"] == 6


def test_a_best_epoch_before_early_stopping_starts_counting_is_the_one_kept(tmp_path):
    """Training pulls the output away from the validation labels, so epoch 1 is the best; early
    stopping that starts counting at epoch 4 would keep epoch 4, the best checkpoint keeps 1."""
    import os
    import tensorflow as tf
    from tfloc.methods.task import TrainingRun, position_trainer
    from tfloc.methods.supervised import SupervisedTask
    from tfloc.run.experiment import load_config
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "etoile_supervised.yaml"),
                      ["runtime.verbose=0", "training.precision=float32", "training.learning_rate=0.01"])
    x_in = keras.Input((3,), name="features")
    out = keras.layers.Dense(2, kernel_initializer="zeros", name="position")(x_in)
    net = keras.Model({"features": x_in}, {"position": out})
    xs = np.ones((8, 3), np.float32)
    ds = lambda v: tf.data.Dataset.from_tensor_slices(   # noqa: E731
        ({"features": xs}, {"position": np.full((8, 2), v, np.float32)})).batch(4)
    trainer = position_trainer({"inference": net}, net,
                               lambda y, o: tf.reduce_mean(tf.square(o["position"] - y["position"])))
    run = TrainingRun(str(tmp_path))
    h = SupervisedTask(cfg).fit(trainer, ds(1.0), ds(-1.0), run, epochs=10, tag="away",
                                patience=1, start_from_epoch=3).history["val_mean_error_m"]
    assert np.argmin(h) == 0 and len(h) == 5 and run.convergence["away"]["best_epoch"] == 1
    kept = float(np.mean(np.linalg.norm(net(xs)["position"].numpy() + 1.0, axis=-1)))
    assert kept == pytest.approx(h[0], rel=1e-5)


def test_best_epoch_under_a_relative_improvement_rule():
    from tfloc.methods.callbacks import best_epoch, improves
    creep = [10.0, 9.0, 8.95, 8.9, 8.85, 8.8, 8.75]
    assert best_epoch(creep) == 6                       # plain minimum
    assert best_epoch(creep, 0.02) == 5                 # 8.8 is the first 2 % below 9.0
    assert best_epoch(creep, 0.05) == 1                 # nothing is 5 % below 9.0
    assert best_epoch([np.nan, 3.0, 2.0]) == 2 and best_epoch([-1.0, -1.005, -1.02], 0.01) == 2
    assert improves(1.0, np.inf, 0.5) and not improves(0.99, 1.0, 0.02) and improves(-1.03, -1.0, 0.02)


def _creeping_fit(tmp_path, **kw):
    """Training pulls the output slowly toward the validation labels (about 8 % less
    error per epoch): the error falls every epoch, by little."""
    import os
    import tensorflow as tf
    from tfloc.methods.callbacks import load_state
    from tfloc.methods.task import TrainingRun, position_trainer
    from tfloc.methods.supervised import SupervisedTask
    from tfloc.run.experiment import load_config
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "etoile_supervised.yaml"),
                      ["runtime.verbose=0", "training.precision=float32", "training.learning_rate=0.01",
                       "training.jit_compile=false"])
    x_in = keras.Input((3,), name="features")
    out = keras.layers.Dense(2, kernel_initializer="zeros", name="position")(x_in)
    net = keras.Model({"features": x_in}, {"position": out})
    xs = np.ones((8, 3), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(
        ({"features": xs}, {"position": np.ones((8, 2), np.float32)})).batch(4)
    trainer = position_trainer({"inference": net}, net,
                               lambda y, o: tf.reduce_mean(tf.square(o["position"] - y["position"])))
    run = TrainingRun(str(tmp_path))
    task = SupervisedTask(cfg)
    h = task.fit(trainer, ds, ds, run, epochs=10, tag="creep", patience=2, **kw)
    error = lambda: float(np.mean(np.linalg.norm(net(xs)["position"].numpy() - 1.0, axis=-1)))  # noqa: E731
    kept = error()
    load_state(trainer, str(tmp_path / "checkpoints" / "best-creep.npz"))
    return run.convergence["creep"], task.history_facts(h), h.history["val_mean_error_m"], kept, error()


def test_a_relative_min_improvement_ends_a_creeping_fit_and_keeps_its_best_epoch(tmp_path):
    conv, facts, h, kept, _ = _creeping_fit(tmp_path / "plain")
    assert conv["epochs"] == 10 and conv["best_epoch"] == 10 and not conv["converged"]
    assert np.all(np.diff(h) < 0) and np.all(np.diff(h) > -0.2 * np.array(h[:-1]))
    conv, facts, h, kept, checkpoint = _creeping_fit(tmp_path / "relative", min_improvement=0.2)
    # no epoch is 20 % below epoch 1 within the patience of 2: stop at 3, best 1 ...
    assert conv["epochs"] == 3 and conv["best_epoch"] == 1 and conv["converged"]
    assert facts["best_epoch"] == 1 and facts["min_improvement"] == 0.2
    assert facts["best_val_mean_error_m"] == pytest.approx(h[0])
    # ... and the model kept, and the best checkpoint, are epoch 1's, not the lower epoch 3's
    assert kept == pytest.approx(h[0], rel=1e-5) and kept > h[2]
    assert checkpoint == pytest.approx(h[0], rel=1e-5)


def test_a_fit_traces_its_training_step_once(tmp_path):
    """The optimizer is built before the step is traced: its slot variables, created in the
    first trace, would make tf.function trace a whole step twice (seconds per fit for
    ResNet-18), and the epoch's last, partial batch must not trace it again either."""
    import os
    import tensorflow as tf
    from tfloc.methods.task import TrainingRun, position_trainer
    from tfloc.methods.supervised import SupervisedTask
    from tfloc.run.experiment import load_config
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "etoile_supervised.yaml"),
                      ["runtime.verbose=0", "training.precision=float32"])
    x_in = keras.Input((3,), name="features")
    net = keras.Model({"features": x_in}, {"position": keras.layers.Dense(2, name="position")(x_in)})
    ds = tf.data.Dataset.from_tensor_slices(({"features": np.ones((10, 3), np.float32)},
                                             {"position": np.ones((10, 2), np.float32)})).batch(4)
    traces = []

    def loss(y, o):
        traces.append(1)          # Python runs once per trace of the step
        return tf.reduce_mean(tf.square(o["position"] - y["position"]))
    trainer = position_trainer({"inference": net}, net, loss)
    SupervisedTask(cfg).fit(trainer, ds, ds, TrainingRun(str(tmp_path)), epochs=3, tag="t")
    assert len(traces) == 1


def test_a_backup_state_round_trips_weights_and_optimizer_and_refuses_another_model(tmp_path):
    """The per-epoch backup (tfloc.methods.callbacks.save_state) restores every weight and the
    optimizer's step, learning rate and moments; a file of another network is a ValueError."""
    import tensorflow as tf
    from tfloc.methods.callbacks import load_state, save_state
    from tfloc.methods.task import position_trainer

    def trainer(units=4):
        x_in = keras.Input((3,), name="features")
        h = keras.layers.BatchNormalization()(keras.layers.Dense(units)(x_in))
        net = keras.Model({"features": x_in}, {"position": keras.layers.Dense(2)(h)})
        t = position_trainer({"inference": net}, net,
                             lambda y, o: tf.reduce_mean(tf.square(o["position"] - y["position"])))
        t.compile(optimizer=keras.optimizers.Adam(0.01))
        return t
    ds = tf.data.Dataset.from_tensor_slices(({"features": np.random.default_rng(0).normal(size=(8, 3))
                                              .astype(np.float32)}, {"position": np.ones((8, 2), np.float32)})).batch(4)
    a = trainer()
    a.fit(ds, epochs=2, verbose=0)
    a.optimizer.learning_rate.assign(0.003)
    save_state(a, str(tmp_path / "s.npz"))
    b = trainer()
    b.optimizer.build(b.trainable_variables)
    load_state(b, str(tmp_path / "s.npz"))
    for va, vb in zip([*a.weights, *a.optimizer.variables], [*b.weights, *b.optimizer.variables]):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    assert int(b.optimizer.iterations.numpy()) == 4 and float(b.optimizer.learning_rate.numpy()) == pytest.approx(0.003)
    c = trainer(units=5)
    c.optimizer.build(c.trainable_variables)
    with pytest.raises(ValueError, match="has shape"):
        load_state(c, str(tmp_path / "s.npz"))
