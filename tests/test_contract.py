"""Contract tests over every registered model and method, and the runner on a synthetic
PathSet (no ray tracing): build, train steps, report, save/load, export."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import LEARN_EPOCHS, REPO, make_spec
from synthetic import (ETOILE_SETS, ETOILE_SITE, LEARNABLE_BS, LEARNABLE_SETS, SYNTHETIC_SETS,
                       synthetic_multi_bs_pathset, synthetic_pathset)
from tfloc.run.experiment import load_config
from tfloc.methods import METHODS
from tfloc.models import MODELS, ModelConfig, build_model
from tfloc.utils import code_version


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("conditions, std", [(0, False), (3, True)])
def test_every_model_builds_outputs_and_serialises(tmp_path, name, conditions, std):
    example = getattr(MODELS.get(name), "example_spec", None)   # a model of other inputs
    if example and (conditions or std):
        with pytest.raises(ValueError, match="no condition or sigma head"):
            build_model(ModelConfig(name), make_spec(**example), num_conditions=conditions,
                        position_std=std)
        return
    spec = make_spec(**(example or {"feature_shape": (16, 8, 2), "dims": 3}),
                     mean=[1.0, 2.0, 3.0], std=[2.0, 2.0, 1.0])
    m = build_model(ModelConfig(name), spec, num_conditions=conditions, position_std=std)
    rng = np.random.default_rng(0)
    x = {k: rng.random((4, *shape), np.float32) for k, (shape, _) in spec.model_inputs.items()}
    out = m(x)
    assert out["position"].shape == (4, 3) and out["embedding"].shape[0] == 4
    if conditions:
        assert out["condition_probs"].shape == (4, 3)
        np.testing.assert_allclose(np.sum(out["condition_probs"], -1), 1.0, rtol=1e-5)
    else:
        assert "condition_probs" not in out
    assert ("position_std" in out) == std
    if std:
        assert np.all(out["position_std"].numpy() >= 1e-3 * np.array(spec.target_std) - 1e-9)
    path = str(tmp_path / "m.keras")
    m.save(path)
    again = keras.models.load_model(path)(x)
    for k in out:
        np.testing.assert_allclose(again[k], out[k], atol=1e-5)


@pytest.fixture
def synthetic(monkeypatch):
    """Makes the runner use the synthetic PathSet instead of tracing."""
    import tfloc.sim
    import tfloc.methods.transfer
    ps, multi = synthetic_pathset(bs=LEARNABLE_BS), synthetic_multi_bs_pathset(n_ue=200)
    monkeypatch.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (
        multi if cfg.scene == "campus" else ps, "synthetic", True))
    monkeypatch.setattr(tfloc.methods.transfer, "load_environment", synthetic_environment)
    return ps


def synthetic_environment(ref, cache_dir, sub_array=None, progress=True):
    """A synthetic single-link PathSet per environment name (the transfer methods' sites)."""
    import zlib
    ps = synthetic_pathset(seed=zlib.crc32(ref.name.encode()) % 1000, bs=LEARNABLE_BS)
    ps.meta = {**ps.meta, "environment": ref.name}
    return ps


#: further shrinking for configs on other sites (campus: 288 subcarriers at stride 12, 10 slots)
SITE_SETS = {"ecc": ["data.subcarrier_stride=2", "data.num_delay_taps=8", "data.num_slots=2",
                     "data.fresh_samples_per_epoch=16", "method.ecc.local_epochs=1",
                     "evaluation.evaluators=[position, knn, mean, accumulation]",  # music: tests/test_music.py
                     "model.ecc={encoder_filters: [4], latent_dim: 4, token_dim: 4, lstm_units: 8}"],
             "consistency": ["method.consistency.finetune_epochs=1", "method.consistency.radius_m=1000",
                             *ETOILE_SETS],
             "sector_heads": ETOILE_SETS,
             # two source epochs like the target's (the default 150 are the source stage's cap)
             **{m: [f"method.{m}.source_epochs=2"] for m in ("meml", "dtl")},
             "autoencoder": [*ETOILE_SITE, "method.autoencoder.pretrain_epochs=2"],
             "ensemble": [*ETOILE_SETS, "method.ensemble.members=[{model: {type: resnet, resnet: "
                          "{width: 4}}, seed: 0}, {model: {type: resnet, resnet: {width: 6}}, seed: 1}]"],
             **{m: [f"method.{m}.semi_epochs=2", *ETOILE_SETS]
                for m in ("mean_teacher", "fixmatch", "fixmatch_distance")}}


def _config(name, extra=()):
    extra = [*SITE_SETS.get(name, []), *extra]
    path = os.path.join(REPO, "configs", f"{name}.yaml")
    if not os.path.isfile(path):  # a method without a street-canyon config of its own
        path = os.path.join(REPO, "configs", "hda.yaml")
        extra = [f"method={name}", *extra]
    return load_config(path, [*SYNTHETIC_SETS, *extra])


#: stage epochs of the methods' learning runs beyond training.epochs = LEARN_EPOCHS
LEARN_SETS = {**{m: [f"method.{m}.source_epochs=10"] for m in ("meml", "dtl")},
              # ECC on the 200-UE box: 64 fresh samples an epoch, a larger step, wider codes
              "ecc": ["data.fresh_samples_per_epoch=64", "training.learning_rate=0.003",
                      "model.ecc={encoder_filters: [8], latent_dim: 8, token_dim: 8, lstm_units: 16}"]}
#: a learnt model's mean error is below this share of the training-mean predictor's
LEARN_RATIO = 0.6


#: methods that start from a finished supervised run (the session's synthetic stage 1)
FROM_STAGE1 = ("consistency", "mean_teacher", "fixmatch", "fixmatch_distance")


def _check_consistency(report, run, stage1):
    ss = report["semi_supervised"]
    assert ss["stage1"]["init_from"] == str(stage1 / "model.keras")
    r1, r2 = ss["iterations"]
    n_unl = report["n_unlabelled"]
    assert r1["kept"] == n_unl and r1["kept_fraction"] == 1.0     # r = 1 km keeps everyone
    assert r2["anchors"] == report["n_train_labelled"] + r1["kept"]  # kept UEs join the anchors
    assert {"idw", "kriging"} == set(r1["pseudo_error"])
    assert r1["kept_error"]["n"] == n_unl and r1["kept_error"]["mean_m"] > 0
    assert (run / "tensorboard" / "pseudo_labels").is_dir()


def _check_joint(report, run, stage1):
    pe = report["semi_supervised"]["semi"]["per_epoch"]
    assert len(pe["pseudo_kept"]) == 2 and all(0.0 <= v <= 1.0 for v in pe["pseudo_kept"])
    assert len(pe["pseudo_true_error_m"]) == 2


def _check_autoencoder(report, run, stage1):
    pre = report["autoencoder"]["pretraining"]
    assert pre["epochs"] == 2 and pre["best_val_reconstruction_mse"] > 0
    assert set(report["axis_errors"]) == {"x", "y", "average"}
    assert (run / "models" / "decoder.keras").exists()
    logged = {}   # the training term is logged as itself (a same-named validation metric hid it)
    for ev in (run / "tensorboard" / "pretrain" / "train").glob("events.out.tfevents*"):
        for e in tf.compat.v1.train.summary_iterator(str(ev)):
            for v in e.summary.value:
                logged.setdefault(v.tag, []).append(float(tf.make_ndarray(v.tensor)))
    assert len(logged["epoch_reconstruction_loss"]) == 2 and min(logged["epoch_reconstruction_loss"]) > 0


def _check_ensemble(report, run, stage1):
    test, train = report["ensemble_test"], report["ensemble"]
    assert len(test["members"]) == 2 and len(train["members"]) == 2
    assert sum(m["weight"] for m in train["members"]) == pytest.approx(1.0, abs=1e-3)
    assert report["model"]["mean_m"] == pytest.approx(test["consensus"]["mean_m"])   # served
    assert 0.0 <= test["consensus"]["agreed_share"] <= 1.0


def _check_hda(report, run, stage1):
    """HDA learns its sigmas and logs every loss term."""
    da = report["domain_adaptation"]
    assert da["sigma1"] == report["timings_s"]["sigma1"] and da["sigma2"] == report["timings_s"]["sigma2"]
    assert da["sigma1"] > 0 and da["sigma2"] > 0   # what they learn: test_homoscedastic_weighting_optimum
    assert da["target"].startswith("test realizations") and da["n_target"] == report["n_test"]
    tags = set()
    for ev in (run / "tensorboard" / "train").glob("events.out.tfevents*"):
        for e in tf.compat.v1.train.summary_iterator(str(ev)):
            tags |= {v.tag for v in e.summary.value}
    assert {"epoch_sigma1", "epoch_sigma2", "epoch_position_loss", "epoch_condition_loss",
            "epoch_alignment_loss", "epoch_lambda3", "epoch_weight_l2"} <= tags


#: method-specific checks of the report, after the common ones
CHECKS = {"consistency": _check_consistency, "mean_teacher": _check_joint, "fixmatch": _check_joint,
          "fixmatch_distance": _check_joint, "autoencoder": _check_autoencoder,
          "ensemble": _check_ensemble, "hda": _check_hda}


def _expected_rows(report, cfg):
    """Rows through a training step, from the facts a method reports (None: not derivable)."""
    t, n_lab, n_unl = report["timings_s"], report["n_train_labelled"], report["n_unlabelled"]
    method, o = cfg.method.type, cfg.method.options
    if method in ("supervised", "tl", "rda", "mda", "hda"):
        return t["epochs"] * n_lab
    if method == "sector_heads":
        return t["epochs"] * sum(report["sector_heads"]["training_per_sector"])
    if method == "ensemble":
        return sum(m["epochs"] for m in report["ensemble"]["members"]) * n_lab
    if method == "autoencoder":
        a = report["autoencoder"]
        n_pre = n_unl - max(1, int(round(o.pretrain_val_fraction * n_unl)))
        return a["pretraining"]["epochs"] * n_pre + a["finetune"]["epochs"] * n_lab
    if method in ("mean_teacher", "fixmatch", "fixmatch_distance"):
        return report["semi_supervised"]["semi"]["epochs"] * n_lab * (1 + o.unlabelled_ratio)
    if method == "ecc":
        per_epoch = cfg.data.fresh_samples_per_epoch or n_lab
        return (t.get("local", {}).get("epochs", 0) + t["joint"]["epochs"]) * per_epoch
    if method in ("scratch", "dtl", "meml"):
        src = t.get("source", {})
        return t["target"]["epochs"] * n_lab + src.get("epochs", 0) * src.get("samples", 0)
    return None


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.xdist_group("synthetic_stage1"))
                                    if m in FROM_STAGE1 else m for m in METHODS.names()])
def test_every_method_runs_on_synthetic_data(synthetic, tmp_path, method, request):
    from tfloc.run.runner import train_and_evaluate
    stage1 = request.getfixturevalue("synthetic_stage1") if method in FROM_STAGE1 else None
    site = [] if method == "ecc" else LEARNABLE_SETS      # ecc: the multi-BS box
    cfg = _config(method, [f"export.model_name={method}", *site, "runtime.deterministic=true",
                           f"training.epochs={LEARN_EPOCHS}", *LEARN_SETS.get(method, [])] +
                  ([f"method.{method}.init_from={stage1}"] if stage1 else []))
    run = tmp_path / "run"
    report = train_and_evaluate(cfg, str(run))
    # it learns: on a site whose CSI determines the position, the trained model is far
    # better than predicting the training labels' mean (deterministic mode)
    mean_m, trivial_m = report["model"]["mean_m"], report["baselines"]["mean"]["mean_m"]
    print(f"LEARNING {method}: model {mean_m:.2f} m, knn {report['baselines']['knn']['mean_m']:.2f} m, "
          f"training mean {trivial_m:.2f} m")
    assert mean_m < LEARN_RATIO * trivial_m, (method, mean_m, trivial_m)
    dims = cfg.data.position_dims
    assert report["method"] == method and report["model"]["dims"] == dims
    assert {"mean_m", "p50_m", "p67_m", "p80_m", "p90_m", "rmse_m"} <= set(report["model"])
    assert {"knn", "mean"} <= set(report["baselines"]) and report["n_test"] > 0
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["tensorflow"] == tf.__version__
    assert report["code_version"] == code_version()          # the code that trained it
    assert len(report["test_links_sha256"]) == 16
    rows, want = report["timings_s"]["training_rows"], _expected_rows(report, cfg)
    assert rows > 0 and (want is None or rows == want)       # what the method says it trained on
    assert report["timings_s"]["training_rows_per_s"] > 0
    assert (run / "model.keras").exists() and (run / "cdf.png").exists()
    assert json.loads((run / "report.json").read_text())["method"] == method
    export = run / "export" / method / "1"
    meta = json.loads((export / "assets.extra" / "tfloc.json").read_text())
    f = tf.saved_model.load(str(export)).signatures["serving_default"]
    out = f(**{k: tf.constant(np.random.default_rng(0).normal(size=(3, *v["shape"][1:])), v["dtype"])
               for k, v in meta["inputs"].items()})
    assert out["position"].shape == (3, dims)
    assert set(out) == set(meta["outputs"])
    shape = meta["inputs"]["csi"]["shape"]
    if len(shape) == 6:   # several BSs per sample: another BS count is refused, naming the shape
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"must have shape \[batch, {shape[1]}, "):
            f(**{k: tf.constant(np.ones((3, shape[1] - 1, *v["shape"][2:])), v["dtype"])
                 for k, v in meta["inputs"].items()})
    if "condition_probs" in out:
        assert meta["condition_classes"] == ["LOS", "NLOS-static", "NLOS-car"]
        assert report["condition"]["confusion"] and (run / "confusion.png").exists()
    events = {p.parent.name for p in (run / "tensorboard").rglob("events.out.tfevents*")}
    assert {"train", "validation", "eval"} <= events
    assert not list(run.rglob(".tmp*"))
    if method in CHECKS:
        CHECKS[method](report, run, stage1)
    if method == "ecc":     # what a BS sends, from the trained edge model (seed 004 eq. 37-39)
        f, shape = report["fronthaul"], meta["inputs"]["csi"]["shape"]
        assert f["csi_shape"] == shape[2:] and f["bits"] == cfg.model.options.bits
        assert f["eta"] == pytest.approx(f["num_codes"] * f["bits"] / (64 * np.prod(shape[2:5])))
        # stage I stops by its own relative rule, and the report says which rule chose its best epoch
        assert report["timings_s"]["local"]["min_improvement"] == cfg.method.options.local_min_improvement > 0


def test_homoscedastic_weighting_optimum(rng):
    """HDA's learnt weights reach their closed-form optimum: for a fixed batch, minimising
    N(r; 0, sigma1^2) NLL + exp(-s2) CE + s2 over (s1, s2) gives sigma1^2 = mean r^2 and
    sigma2^2 = exp(s2) = mean CE (seed 002 eq. 15-16)."""
    from tfloc.losses import HomoscedasticWeighting
    y = rng.normal(size=(256, 2)).astype(np.float32)
    mu = (y + 0.3 * rng.normal(size=(256, 2))).astype(np.float32)
    labels = rng.integers(0, 3, 256).astype(np.int32)
    logits = rng.normal(size=(256, 3)).astype(np.float32)
    layer = HomoscedasticWeighting(gamma=0.0)
    layer.build(None)
    opt = keras.optimizers.Adam(0.05)
    opt.build(layer.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(layer([y, mu, labels, logits]))
        opt.apply(tape.gradient(loss, layer.trainable_variables), layer.trainable_variables)
    for _ in range(800):
        step()
    s1, s2 = (float(v) for v in layer.sigmas)
    ce = -np.log(np.exp(logits)[np.arange(256), labels] / np.exp(logits).sum(1))
    assert s1 ** 2 == pytest.approx(np.mean((y - mu) ** 2), rel=0.02)
    assert s2 ** 2 == pytest.approx(ce.mean(), rel=0.02)


def test_evaluate_run_rescoring_matches(synthetic, tmp_path):
    from tfloc.run.runner import evaluate_run, train_and_evaluate
    first = train_and_evaluate(_config("dcnn"), str(tmp_path / "run"))
    again = evaluate_run(str(tmp_path / "run"))
    assert again["model"]["mean_m"] == pytest.approx(first["model"]["mean_m"], rel=1e-4)
    assert again["timings_s"] == first["timings_s"]


@pytest.mark.parametrize("sets, needle", [
    (["simulation.cars.num_realizations=0", "data.split_by=random"],
     "method.hda.num_conditions: 3 classes need NLOS-by-car labels"),
    (["method.hda.target=unlabelled"], "method.hda.target: 'unlabelled' needs an unlabelled block"),
    (["method.hda.num_conditions=4"], "method.hda.num_conditions: 4 is not one of [0, 2, 3]"),
    (["method.hda.weighting=uncertainty", "method.hda.num_conditions=0"],
     "weighting: 'uncertainty' balances two tasks"),
])
def test_bad_semantic_configs_fail_before_tracing(synthetic, tmp_path, sets, needle):
    from tfloc.config import ConfigError
    from tfloc.run.runner import train_and_evaluate
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        train_and_evaluate(load_config(os.path.join(REPO, "configs", "hda.yaml"),
                                       [*SYNTHETIC_SETS, *sets]), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_empty_target_split_is_an_error_and_leaves_no_run(synthetic, tmp_path):
    from tfloc.config import ConfigError
    from tfloc.run.runner import train_and_evaluate
    cfg = _config("hda", ["method.hda.target=unlabelled", "data.realization_splits=[3, 1, 2, 0]"])
    with pytest.raises(ConfigError, match="the target split .'unlabelled'. is empty"):
        train_and_evaluate(cfg, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_supervised_gaussian_nll_serves_position_std(synthetic, tmp_path):
    from tfloc.run.runner import train_and_evaluate
    cfg = _config("dcnn", ["training.loss=gaussian_nll"])
    report = train_and_evaluate(cfg, str(tmp_path / "run"))
    cal = report["calibration"]
    assert 0 <= cal["within_1sigma"]["observed"] <= 1 and cal["crps_m"] > 0
    f = tf.saved_model.load(str(tmp_path / "run" / "export" / "dcnn" / "1")).signatures["serving_default"]
    out = f(csi=tf.random.normal([2, 1, 8, 16, 2]))
    assert set(out) == {"position", "position_std"} and np.all(out["position_std"].numpy() > 0)
    loaded = keras.models.load_model(tmp_path / "run" / "model.keras")   # safe mode: no Lambda
    assert "position_std" in loaded.output


@pytest.mark.parametrize("sets, needle", [
    (["data.fresh_samples_per_epoch=1000"], "1000 fresh samples per epoch need a training pool"),
    (["model.ecc.bits=17"], "model.ecc.bits"),
    (["data.representation=stabilized"], "data.representation: method 'ecc' takes the CSI"),
    (["model.type=resnet"], "method 'ecc' needs the model 'ecc'"),
])
def test_bad_ecc_configs_are_one_line_errors(synthetic, tmp_path, sets, needle):
    from tfloc.config import ConfigError
    from tfloc.run.runner import train_and_evaluate
    with pytest.raises(ConfigError, match=needle):
        train_and_evaluate(_config("ecc", sets), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("strategy", ["raw_csi", "local_split"])
def test_ecc_strategies_keep_their_fronthaul(synthetic, tmp_path, strategy):
    """raw_csi never quantizes (lossless reference: no edge/cloud split is exported);
    local_split trains the cloud on frozen, quantizing encoders."""
    from tfloc.layers import UniformMidriseQuantizer
    from tfloc.run.runner import train_and_evaluate
    run = tmp_path / "run"
    export = "true" if strategy == "raw_csi" else "false"   # the split's export: test_every_method
    report = train_and_evaluate(_config("ecc", [f"method.ecc.strategy={strategy}",
                                                f"export.enabled={export}",
                                                "evaluation.evaluators=[position]"]), str(run))
    assert report["timings_s"]["strategy"] == strategy
    model = keras.saving.load_model(run / "model.keras")
    quantizers = [l for e in model.layers if isinstance(e, keras.Model) for l in e.layers
                  if isinstance(l, UniformMidriseQuantizer)]
    assert quantizers and all(q.bypass == (strategy == "raw_csi") for q in quantizers)
    if strategy == "raw_csi":
        assert {p.name for p in (run / "export").iterdir()} == {"ecc"}
    else:
        assert "local" in report["timings_s"] and "quantizer" in report["timings_s"]


def test_trajectory_is_scored_in_time_order_without_dead_snapshots(monkeypatch):
    """The runner orders a traced trajectory by time, drops snapshots no BS hears, and the
    'trajectory' evaluator reports and draws it."""
    import dataclasses
    import tfloc.evaluation.trajectory as evaluation_trajectory
    import tfloc.sim.trajectory as trajectory
    from tfloc.evaluation.trajectory import trajectory_set
    cfg = _config("ecc", ["evaluation.evaluators=[position, trajectory]",
                          "evaluation.trajectory.snapshots=10"])
    pos = trajectory.spiral(cfg.evaluation.trajectory)
    ps = synthetic_multi_bs_pathset(n_ue=8)
    src = np.array([9, 0, 4, 2, 7, 1, 5, 3])              # traced out of time order; 6, 8 indoor
    dead = np.flatnonzero(ps.ue_id == 2)                   # UE 2 (snapshot 4): no BS hears it
    keep = np.ones(len(ps.tau), bool)
    for r in dead:
        keep[ps.offsets[r]:ps.offsets[r + 1]] = False
    counts = np.diff(ps.offsets)
    counts[dead] = 0
    ps = dataclasses.replace(
        ps, positions=np.repeat(pos[src], 6, axis=0), offsets=np.concatenate([[0], np.cumsum(counts)]),
        **{k: getattr(ps, k)[keep] for k in ("a", "tau", "theta_t", "phi_t", "theta_r", "phi_r")},
        meta={**ps.meta, "source": src.tolist(), "n_indoor_excluded": 2})
    monkeypatch.setattr(evaluation_trajectory, "load_or_trace_trajectory", lambda *a, **k: ps)

    def stub(x):   # a model that estimates the origin
        return {"position": np.zeros((len(x["features"]), 3))}
    tr = trajectory_set(cfg, stub)
    assert tr["time"].tolist() == [0, 1, 2, 3, 5, 7, 9]
    np.testing.assert_allclose(tr["y"]["position"], pos[[0, 1, 2, 3, 5, 7, 9]], atol=1e-5)
    assert tr["x"]["features"].shape[:2] == (7, 6) and (tr["n_no_path"], tr["n_indoor"]) == (1, 2)
    assert tr["config"]["snapshots"] == 10

    from tfloc.evaluation import EVALUATORS, EvalContext
    ctx = EvalContext(model_name="m", x={}, y={}, outputs={}, config=cfg, predict=stub,
                      site=lambda: {"panels": [{"position": [0.0, 0.0, 20.0]}]})
    res = EVALUATORS.get("trajectory")(ctx)
    t = res.report["trajectory"]
    assert (t["n"], t["snapshots"], t["n_indoor_dropped"], t["n_no_path_dropped"]) == (7, 10, 2, 1)
    np.testing.assert_allclose(t["mean_m"], np.linalg.norm(pos[[0, 1, 2, 3, 5, 7, 9]], axis=1).mean(),
                               rtol=1e-5)                        # the stub estimates the origin
    assert list(res.figures) == ["trajectory.png"]
    with pytest.raises(ValueError, match="needs the runner's traced trajectory"):
        EVALUATORS.get("trajectory")(EvalContext(model_name="m", x={}, y={}, outputs={}))
