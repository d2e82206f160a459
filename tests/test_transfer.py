"""Seed 001: the Gaussian output, NLL and CRPS against SciPy, gradual unfreezing, the head swap,
environments, the two-output export, and bad transfer configs (synthetic sites, no tracing)."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, make_spec, run_python
from synthetic import SYNTHETIC_SETS, _upa_response
from test_contract import synthetic  # noqa: F401  (fixture)
from tfloc.config import ConfigError
from tfloc.run.experiment import load_config

TRANSFER_SETS = [s for s in SYNTHETIC_SETS if not s.startswith(("simulation.", "data.realization"))]


def _cfg(method, sets=()):
    return load_config(os.path.join(REPO, "configs", f"{method}.yaml"), [*TRANSFER_SETS, *sets])


# -- the Gaussian output and its losses ---------------------------------------------- #
@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gaussian_output_is_positive_finite_and_serialises(tmp_path, covariance):
    from tfloc.layers import GaussianOutput, num_gaussian_params
    P = num_gaussian_params(2, covariance)
    assert P == (4 if covariance == "diag" else 5)   # seed 001: 2 (MSE) or 4 (NLL) outputs
    inp = keras.Input((P,))
    model = keras.Model(inp, GaussianOutput([10.0, -5.0], [3.0, 2.0], covariance)(inp))
    raw = np.random.default_rng(0).normal(size=(6, P)).astype(np.float32)
    raw[0, 2:] = 1e4                               # huge and tiny log-sigmas stay finite
    raw[1, 2:] = -1e4
    out = [np.asarray(o) for o in model(raw)]
    np.testing.assert_allclose(out[0], raw[:, :2] * [3.0, 2.0] + [10.0, -5.0], rtol=1e-6)
    assert np.all(np.isfinite(out[1])) and np.all(out[1] > 0)
    assert np.all(out[1][1] >= 1e-3 * np.array([3.0, 2.0]) * 0.999)
    if covariance == "full":
        L = out[2]
        assert np.allclose(np.triu(L, 1), 0) and np.all(np.diagonal(L, axis1=1, axis2=2) > 0)
        np.testing.assert_allclose(out[1], np.sqrt(np.diagonal(L @ L.transpose(0, 2, 1),
                                                               axis1=1, axis2=2)), rtol=1e-5)
    path = str(tmp_path / "g.keras")
    model.save(path)
    for a, b in zip(keras.models.load_model(path)(raw), out):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_registered_nll_matches_scipy_multivariate_normal(rng):
    from scipy.stats import multivariate_normal
    from tfloc.losses import LOSSES
    spec = make_spec(dims=2, mean=[5.0, -3.0], std=[4.0, 2.0])
    nll = LOSSES.get("gaussian_nll")(None, spec)
    y, mu = rng.normal(size=(5, 2)) * 4, rng.normal(size=(5, 2)) * 4
    sd = rng.uniform(0.5, 3.0, size=(5, 2))
    got = nll({"position": tf.constant(y, tf.float32)},
              {"position": tf.constant(mu, tf.float32), "position_std": tf.constant(sd, tf.float32)}).numpy()
    s = np.array(spec.target_std)   # the loss works in units of the label spread
    want = [-multivariate_normal((mu[i] - [5, -3]) / s, np.diag((sd[i] / s) ** 2)).logpdf((y[i] - [5, -3]) / s)
            for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # full covariance by its Cholesky factor
    L = np.tril(rng.normal(size=(5, 2, 2)))
    L[:, [0, 1], [0, 1]] = np.abs(L[:, [0, 1], [0, 1]]) + 0.5
    got = nll({"position": tf.constant(y, tf.float32)},
              {"position": tf.constant(mu, tf.float32), "position_std": tf.constant(sd, tf.float32),
               "position_scale_tril": tf.constant(L, tf.float32)}).numpy()
    Ls = L / s[None, :, None]
    want = [-multivariate_normal((mu[i] - [5, -3]) / s, Ls[i] @ Ls[i].T).logpdf((y[i] - [5, -3]) / s)
            for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_crps_loss_matches_the_integral_of_eq7(rng):
    from scipy.integrate import quad
    from scipy.stats import norm
    from tfloc.losses import LOSSES
    spec = make_spec(dims=2, std=[2.0, 0.5])
    crps = LOSSES.get("gaussian_crps")(None, spec)
    y, mu, sd = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.uniform(0.2, 2.0, (3, 2))
    got = crps({"position": tf.constant(y, tf.float32)},
               {"position": tf.constant(mu, tf.float32), "position_std": tf.constant(sd, tf.float32)}).numpy()
    s = np.array(spec.target_std)
    for i in range(3):
        total = 0.0
        for j in range(2):
            F = norm(mu[i, j] / s[j], sd[i, j] / s[j]).cdf
            t = y[i, j] / s[j]
            total += quad(lambda x: F(x) ** 2, t - 60, t)[0] + quad(lambda x: (1 - F(x)) ** 2, t, t + 60)[0]
        assert got[i] == pytest.approx(total, rel=1e-4)


# -- gradual unfreezing -------------------------------------------------------------- #
def test_gradual_unfreezing_trains_the_head_first_then_everything(tmp_path):
    from tfloc.methods.callbacks import GradualUnfreezing
    from tfloc.methods.task import TaskTrainer
    keras.utils.set_random_seed(0)
    phi = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu")], name="phi")
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)], name="head")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, x[:, :1] * 3)).batch(16)

    def loss_fn(batch):
        xb, yb = batch
        v = tf.reduce_mean((head(phi(xb, training=True)) - yb) ** 2)
        return {"loss": v}
    # a validation metric that never improves after the first epoch: each phase lasts `patience`
    trainer = TaskTrainer({"phi": phi, "head": head}, loss_fn, ["loss"],
                          lambda xb, yb: {"m": tf.ones([tf.shape(xb)[0]])}, ["m"])
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((phi.trainable, [w.copy() for w in phi.get_weights()],
                         [w.copy() for w in head.get_weights()],
                         float(trainer.optimizer.learning_rate)))
    phi0, head0 = [w.copy() for w in phi.get_weights()], [w.copy() for w in head.get_weights()]
    gu = GradualUnfreezing([phi], monitor="val_m", patience=2, lr_factor=0.1, final_patience=2)
    trainer.fit(ds, validation_data=ds, epochs=20, callbacks=[Record(), gu], verbose=0)
    # phase 1 (epochs 1-3): phi frozen and unchanged, the head trains
    for trainable, pw, hw, lr in seen[:3]:
        assert not trainable and lr == pytest.approx(1e-2)
        assert all(np.array_equal(a, b) for a, b in zip(pw, phi0))
        assert not all(np.array_equal(a, b) for a, b in zip(hw, head0))
    # phase 2 (from epoch 4): phi trainable and changing, learning rate x 0.1, stops after patience
    assert gu.unfrozen_epoch == 4 and len(seen) == 5
    for trainable, pw, hw, lr in seen[3:]:
        assert trainable and lr == pytest.approx(1e-3)
        assert not all(np.array_equal(a, b) for a, b in zip(pw, phi0))


# -- environments ---------------------------------------------------------------------- #
def test_sub_array_ports_follow_sionnas_port_order():
    from tfloc.data.environments import sub_array_ports
    ports = sub_array_ports((8, 8, 1), (2, 4))
    assert ports.tolist() == [0, 1, 8, 9, 16, 17, 24, 25]
    # the 2 x 4 sub-array of an 8 x 8 UPA's response is the 2 x 4 UPA's response
    big, small = _upa_response(8, 8, 0.4, 0.2), _upa_response(2, 4, 0.4, 0.2)
    np.testing.assert_allclose(big[ports], small, atol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        sub_array_ports((2, 4, 1), (4, 2))


@pytest.mark.parametrize("name, needle", [
    ("nowhere/bs0", "unknown environment 'nowhere/bs0': no site config 'nowhere'"),
    ("campus_ground/bs9", "site 'campus_ground' has views bs0..bs5"),
    ("campus_ground", "site 'campus_ground' has views bs0..bs5"),
    ("street_canyon/bs1", "site 'street_canyon' has views none"),
    ("campus ground", "expected <site config>"),
])
def test_unknown_environments_are_one_line_errors(name, needle):
    from tfloc.data.environments import environment_ref
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        environment_ref(name)


def test_target_splits_fix_the_test_set_and_nest_the_fractions():
    from tfloc.methods.transfer import TargetOptions, target_splits
    a = target_splits(500, TargetOptions(target_fraction=0.2, fold=1), seed=0)
    b = target_splits(500, TargetOptions(target_fraction=1.0, fold=3), seed=0)
    assert np.array_equal(a.test, b.test) and len(a.test) == 100
    assert len(a.train) + len(a.val) == 80 and len(a.val) == 16
    assert set(a.train) | set(a.val) <= set(b.train) | set(b.val)
    assert not (set(a.train) & set(a.val)) and not (set(b.train) | set(b.val)) & set(b.test)
    folds = [set(target_splits(500, TargetOptions(fold=k), 0).val) for k in range(5)]
    assert sum(map(len, folds)) == 400 and len(set().union(*folds)) == 400


# -- the methods ------------------------------------------------------------------------ #
def test_meml_trains_phi_on_every_source_then_swaps_the_head(synthetic, tmp_path):  # noqa: F811
    from tfloc.methods.task import TrainingRun
    from tfloc.run.runner import make_task
    cfg = _cfg("meml", ["method.meml.source_loss=gaussian_nll", "method.meml.target_loss=mse",
                        "method.meml.source_epochs=2"])
    task = make_task(cfg)
    data = task.load_data(progress=False)
    inputs = task.build_inputs(data)
    envs = [int(e) for xb, _ in inputs["source_train"] for e in xb["environment"].numpy()]
    assert sorted(set(envs)) == [0, 1, 2, 3, 4]        # every source through its own head
    models = task.build_models(data.spec)
    facts = task.train(models, inputs, data, TrainingRun(str(tmp_path))).facts
    assert facts["source"]["epochs"] == 2 and facts["target"]["epochs"] >= 1
    phi_source = [w.copy() for w in models["inference"].get_layer("phi").get_weights()]
    # a second run reuses the source stage: phi starts from it, the head is fresh and the
    # target's (MSE: no sigma), while the source heads had a sigma (NLL)
    again = make_task(cfg)
    data = again.load_data(progress=False)
    again.phi_weights = phi_source
    inputs = again.build_inputs(data)
    assert "source_train" not in inputs
    models = again.build_models(data.spec)
    head_before = [w.copy() for w in models["inference"].get_layer("g_target").get_weights()]
    start = {}
    again.train_target = lambda m, i, d, r: (start.setdefault("phi", m["inference"].get_layer("phi").get_weights())
                                             and {"epochs": 0})
    facts = again.train(models, inputs, data, TrainingRun(str(tmp_path / "again"))).facts
    assert facts["source"] == {"reused": True}
    assert all(np.array_equal(a, b) for a, b in zip(start["phi"], phi_source))
    assert "position_std" not in models["inference"].output
    assert all(np.array_equal(a, b) for a, b in zip(models["inference"].get_layer("g_target").get_weights(),
                                                    head_before))


def test_nll_model_serves_position_and_sigma_in_a_fresh_process(synthetic, tmp_path):  # noqa: F811
    from tfloc.run.runner import train_and_evaluate
    cfg = _cfg("meml", ["method.meml.source_epochs=1", "method.meml.target_training=gradual_unfreezing",
                        "model.pooling_cnn.covariance=full"])
    report = train_and_evaluate(cfg, str(tmp_path / "run"))
    cal = report["calibration"]
    assert cal["within_1sigma"]["expected"] == pytest.approx(0.3935, abs=1e-4)
    assert len(cal["reliability"]["observed"]) == 19 and cal["crps_m"] > 0
    assert (tmp_path / "run" / "reliability.png").exists() and (tmp_path / "run" / "sharpness.png").exists()
    assert report["transfer"]["sources"] == [f"campus_ground/bs{k}" for k in range(5)]
    export = tmp_path / "run" / "export" / "meml" / "1"
    code = ("import json, sys, numpy as np, tensorflow as tf\n"
            f"f = tf.saved_model.load({str(export)!r}).signatures['serving_default']\n"
            "out = f(csi=tf.constant(np.random.default_rng(0).normal(size=(4, 1, 8, 16, 2)), tf.float32))\n"
            "print(json.dumps({k: list(v.shape) for k, v in out.items()}),"
            " bool((out['position_std'].numpy() > 0).all()))\n")
    r = run_python(["-c", code], cwd=tmp_path)
    shapes, positive = r.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert json.loads(shapes) == {"position": [4, 2], "position_std": [4, 2],
                                  "position_scale_tril": [4, 2, 2]}
    assert positive == "True"


@pytest.mark.parametrize("method, sets, needle", [
    ("meml", ["method.meml.target=nowhere/bs0"], "unknown environment 'nowhere/bs0'"),
    ("meml", ["method.meml.target=campus_ground/bs0"], "'campus_ground/bs0' is also a source"),
    ("meml", ["method.meml.target_loss=mse", "evaluation.evaluators=[position, calibration]"],
     "'calibration' needs a model with a sigma head"),
    ("meml", ["model=resnet"], "needs the two-part model 'pooling_cnn'"),
    ("meml", ["method.meml.sources=[campus_ground/bs0]"], "at least two source environments"),
    ("dtl", ["method.dtl.sources=[campus_ground/bs0, campus_ground/bs1]"], "one source environment"),
    ("scratch", ["method.scratch.target_fraction=0.01"], "5 folds need at least as many samples"),
    ("scratch", ["method.scratch.fold=5"], "fold: 5 is not one of the 5 folds"),
    ("meml", ["method.meml.sub_array=[4, 4]"], "a 4 x 4 sub-array does not fit"),
])
def test_bad_transfer_configs_fail_before_training(synthetic, tmp_path, method, sets, needle):  # noqa: F811
    from tfloc.run.runner import train_and_evaluate
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        train_and_evaluate(_cfg(method, sets), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_bad_environment_exits_2_with_one_line(tmp_path):
    r = run_python([os.path.join(REPO, "train.py"), "--config", os.path.join(REPO, "configs", "meml.yaml"),
                    "--set", "method.meml.target=campus_ground/bs1"], cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "also a source" in r.stderr
