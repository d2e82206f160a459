"""Label-scarce methods (seed 000): augmented views, pseudo-label plumbing, interpolators,
the new backbones and layers, init_from, and the consistency diagnostics."""
import os

import keras
import numpy as np
import pytest

from conftest import REPO, make_spec
from synthetic import ETOILE_SETS, ETOILE_SITE, SYNTHETIC_SETS, synthetic_pathset
from tfloc.config import ConfigError
from tfloc.data import CSIPipeline
from tfloc.data.config import AugmentConfig, DataConfig
from tfloc.run.experiment import load_config


def _pipe(**data):
    cfg = DataConfig(num_subcarriers=16, num_delay_taps=16, batch_size=8, **data)
    return CSIPipeline(synthetic_pathset(n_ue=20, n_realizations=1), cfg, seed=3, array_shape=(2, 4, 1))


def test_views_blank_subcarriers_and_drop_ports_per_sample():
    pipe = _pipe(snr_db=[200.0, 200.0], ta_max_ns=0.0)   # no noise, no TA: only the masks act
    views = {"clean": AugmentConfig(snr_db=[200.0, 200.0], ta_max_ns=0.0),
             "sc": AugmentConfig(snr_db=[200.0, 200.0], ta_max_ns=0.0, subcarrier_mask_fraction=0.5),
             "ant": AugmentConfig(snr_db=[200.0, 200.0], ta_max_ns=0.0, antenna_dropout=0.5)}
    x, _ = next(iter(pipe.csi_dataset(np.arange(8), training=False, views=views)))
    clean, sc, ant = (x["csi"][k].numpy() for k in ("clean", "sc", "ant"))   # [b, ue, bs, sc, 2]
    plain, _ = next(iter(pipe.csi_dataset(np.arange(8), training=False)))
    np.testing.assert_allclose(clean, plain["csi"].numpy(), rtol=1e-5, atol=1e-7)
    sc_zero = np.all(sc == 0, axis=(1, 2, 4))                       # [b, subcarriers]
    assert 0.2 < sc_zero.mean() < 0.8
    kept = ~sc_zero[:, None, None, :, None] & np.ones_like(sc, bool)
    np.testing.assert_allclose(sc[kept], clean[kept], rtol=1e-5, atol=1e-9)   # the rest untouched
    port_zero = np.all(ant == 0, axis=(1, 3, 4))                    # [b, ports]
    assert 0.2 < port_zero.mean() < 0.8
    assert len({tuple(r) for r in port_zero}) > 1                   # drawn per sample


def test_views_differ_and_are_fixed_on_evaluation_sets():
    pipe = _pipe()
    views = {"weak": AugmentConfig(), "strong": AugmentConfig(snr_db=[0.0, 0.0], ta_max_ns=20.0)}
    ds = pipe.feature_dataset(np.arange(8), training=False, views=views)
    (x1, _), (x2, _) = next(iter(ds)), next(iter(ds))
    assert set(x1["features"]) == {"weak", "strong"}
    assert not np.allclose(x1["features"]["weak"], x1["features"]["strong"])
    np.testing.assert_array_equal(x1["features"]["strong"], x2["features"]["strong"])


def test_position_overrides_replace_labels_and_check_shape():
    pipe = _pipe()
    fake = np.arange(16, dtype=np.float32).reshape(8, 2)
    _, y = next(iter(pipe.feature_dataset(np.arange(8), training=False, positions=fake)))
    np.testing.assert_array_equal(y["position"], fake)
    with pytest.raises(ValueError, match=r"positions: expected \[8, 2\]"):
        pipe.feature_dataset(np.arange(8), training=False, positions=fake[:5])


def test_interpolators_idw_exact_at_anchors_and_kriging_recovers_a_smooth_map(rng):
    from tfloc.methods.semisupervised import INTERPOLATORS, ConsistencyOptions
    opts = ConsistencyOptions()
    feats = rng.normal(size=(300, 6))
    pos = np.stack([3 * feats[:, 0] + feats[:, 1], np.sin(feats[:, 2])], 1) * 10
    got = INTERPOLATORS.get("idw")(feats, pos, feats[:5], opts, rng)
    np.testing.assert_allclose(got, pos[:5], atol=1e-9)
    query = rng.normal(size=(100, 6))
    truth = np.stack([3 * query[:, 0] + query[:, 1], np.sin(query[:, 2])], 1) * 10
    gp = INTERPOLATORS.get("kriging")(feats, pos, query, opts, rng)
    idw = INTERPOLATORS.get("idw")(feats, pos, query, opts, rng)
    err = lambda p: np.mean(np.linalg.norm(p - truth, axis=1))   # noqa: E731
    assert err(gp) < 0.25 * err(idw)             # a global smooth fit beats a local average here
    assert {"idw", "kriging", "knn_mean"} <= set(INTERPOLATORS.names())


def test_channel_shuffle_and_split_match_numpy_and_serialise(rng, tmp_path):
    from tfloc.layers import ChannelShuffle, ChannelSplit
    x = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    want = x.reshape(2, 3, 4, 2, 3).transpose(0, 1, 2, 4, 3).reshape(2, 3, 4, 6)
    np.testing.assert_array_equal(ChannelShuffle(2)(x).numpy(), want)
    a, b = ChannelSplit()(x)
    np.testing.assert_array_equal(a, x[..., :3])
    np.testing.assert_array_equal(b, x[..., 3:])
    inp = keras.Input((3, 4, 6))
    m = keras.Model(inp, ChannelShuffle(3)(keras.layers.Concatenate()(list(ChannelSplit()(inp)))))
    m.save(str(tmp_path / "m.keras"))
    np.testing.assert_array_equal(keras.models.load_model(str(tmp_path / "m.keras"))(x), m(x))
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        ChannelShuffle(4)(x)


@pytest.mark.parametrize("kind", ["mobilenet_v2", "shufflenet_v2"])
def test_mobile_models_keep_their_name(kind):
    """The name an ensemble gives a member (or the default) survives the block loop."""
    from tfloc.models import ModelConfig, build_model
    mc = ModelConfig(kind)
    assert build_model(mc, make_spec(feature_shape=(16, 32, 2))).name == kind
    assert build_model(mc, make_spec(feature_shape=(16, 32, 2)), name="member2").name == "member2"


@pytest.mark.parametrize("depth, blocks", [(50, 16), (101, 33)])
def test_bottleneck_resnets_have_the_papers_blocks(depth, blocks):
    from tfloc.models import ModelConfig, build_model
    mc = ModelConfig("resnet")
    mc.options.depth, mc.options.width = depth, 8
    m = build_model(mc, make_spec(feature_shape=(16, 32, 2)))
    assert sum(l.name.endswith("_add") for l in m.layers) == blocks
    assert m.get_layer("stage4_block1_conv3").filters == 4 * 8 * 8   # expansion 4 at the last stage


def test_model_flops_matches_a_hand_count():
    from tfloc.evaluation.cost import model_flops
    inp = keras.Input((8, 8, 3), name="features")
    m = keras.Model({"features": inp}, keras.layers.Dense(5, use_bias=False)(
        keras.layers.Flatten()(keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp))))
    conv = 2 * 8 * 8 * 3 * 3 * 3 * 4
    dense = 2 * (8 * 8 * 4) * 5
    assert model_flops(m) == conv + dense


def _synthetic_cfg(method, tmp_path, extra=()):
    path = os.path.join(REPO, "configs", f"{method}.yaml")
    site = ETOILE_SITE if method == "autoencoder" else ETOILE_SETS
    return load_config(path, [*SYNTHETIC_SETS, *site, "export.enabled=false",
                              "evaluation.evaluators=[position]", *extra])


@pytest.fixture
def synthetic(monkeypatch):
    import tfloc.sim
    ps = synthetic_pathset()
    monkeypatch.setattr(tfloc.sim, "load_or_trace", lambda cfg, cache, progress=True: (ps, "synthetic", True))
    return ps


def test_init_from_another_model_or_other_labels_is_refused(synthetic, synthetic_stage1, tmp_path):
    stage1 = synthetic_stage1
    from tfloc.run.runner import train_and_evaluate
    for i, (extra, needle) in enumerate([(["model.resnet.width=12"], "not the configured"),
                                         (["runtime.seed=8"], "trained on other labels")]):
        cfg = _synthetic_cfg("mean_teacher", tmp_path, [f"method.mean_teacher.init_from={stage1}", *extra])
        with pytest.raises(ConfigError, match=needle):
            train_and_evaluate(cfg, str(tmp_path / f"bad{i}"))


def test_axis_error_metrics_by_hand():
    from tfloc.metrics import axis_error_metrics
    true = np.array([[0.0, 0.0], [10.0, 4.0], [20.0, 8.0]])
    pred = true + np.array([[1.0, 0.0], [-2.0, 2.0], [2.0, -2.0]])
    m = axis_error_metrics(pred, true)
    approx = lambda v: pytest.approx(v, rel=1e-4)   # noqa: E731 (reports keep 5 decimals)
    assert m["x"]["mae_m"] == approx(5 / 3) and m["y"]["mae_m"] == approx(4 / 3)
    assert m["x"]["rmse_m"] == approx(np.sqrt(9 / 3)) and m["y"]["rmse_m"] == approx(np.sqrt(8 / 3))
    assert m["x"]["nmae"] == approx(5 / 3 / 20) and m["y"]["nrmse"] == approx(np.sqrt(8 / 3) / 8)
    assert m["average"]["mae_m"] == approx(1.5)


@pytest.mark.parametrize("kind", ["ae_mlp", "ae_cnn"])
def test_decoders_mirror_their_encoders(kind, rng):
    from tfloc.models import ModelConfig, build_model
    from tfloc.models.autoencoder import build_decoder
    spec = make_spec(feature_shape=(16, 32, 2))
    mc = ModelConfig(kind)
    net = build_model(mc, spec)
    enc = net.get_layer("encoder")
    dec = build_decoder(enc, mc.options, spec.feature_shape)
    x = rng.random((3, 16, 32, 2), np.float32)
    assert dec(enc(x)).shape == (3, 16, 32, 2)
    if kind == "ae_mlp":
        assert [l.units for l in enc.layers if hasattr(l, "units")] == [256, 128, 64, 32]
    else:
        with pytest.raises(ValueError, match="must divide by 4"):
            build_model(mc, make_spec(feature_shape=(10, 32, 2)))


def test_autoencoder_from_scratch_needs_no_unlabelled_pool(synthetic, tmp_path):
    from tfloc.run.runner import train_and_evaluate
    scratch = train_and_evaluate(_synthetic_cfg("autoencoder", tmp_path, [
        "method.autoencoder.pretrain=false", "data.labelled_fraction=0.75"]), str(tmp_path / "scratch"))
    assert "pretraining" not in scratch["autoencoder"] and scratch["n_unlabelled"] == 0


def test_autoencoder_needs_an_encoder_model():
    from tfloc.run.runner import make_task
    cfg = load_config(os.path.join(REPO, "configs", "autoencoder.yaml"), ["model=resnet"])
    with pytest.raises(ConfigError, match="method 'autoencoder' needs model.type ae_mlp or ae_cnn"):
        make_task(cfg)


def _fake_run(path, method, options, report):
    import json
    import yaml
    os.makedirs(path)
    with open(os.path.join(path, "report.json"), "w") as fh:
        json.dump({"method": method, "n_train_labelled": 100, "n_unlabelled": 1000, **report}, fh)
    with open(os.path.join(path, "config.yaml"), "w") as fh:
        yaml.safe_dump({"method": {"type": method, method: options}}, fh)
    return path


def test_training_samples_per_s_is_what_the_method_reported(tmp_path):
    """What benchmarks/bench.py --runs reports: the rows a method trained on over their time
    (each method's count: test_contract.py's method sweep)."""
    from tfloc.studies.common import load_run, training_samples_per_s as rate
    run = _fake_run(str(tmp_path / "a"), "supervised", {}, {"timings_s": {
        "training_s": 10.0, "training_rows": 500, "training_rows_s": 10.0, "training_rows_per_s": 50.0}})
    assert rate(load_run(run)) == 50.0
    assert rate(load_run(_fake_run(str(tmp_path / "b"), "supervised", {}, {"timings_s": {}}))) is None


def test_bench_runs_collects_finished_runs(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench", os.path.join(REPO, "benchmarks", "bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _fake_run(str(tmp_path / "study" / "00-a"), "supervised", {}, {"timings_s": {
        "training_s": 4.0, "epochs": 2, "training_rows": 200, "training_rows_s": 4.0, "training_rows_per_s": 50.0}})
    os.makedirs(tmp_path / "study" / "01-unfinished")
    res = bench.main(["--runs", str(tmp_path / "study"), "--out", str(tmp_path / "r.json")])
    assert [r["train_samples_per_s"] for r in res["runs"]] == [50.0]
    assert os.path.isfile(tmp_path / "r.json") and "| supervised | 4 | 50 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no finished run"):
        bench.main(["--runs", str(tmp_path / "nowhere")])
