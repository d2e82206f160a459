import keras
import numpy as np
import pytest
import tensorflow as tf

from tfloc.layers import AffineOutput, CSIFeatures
from tfloc.models import MODELS, ModelConfig, build_model

from conftest import make_spec


def _roundtrip(layer, x, tmp_path):
    clone = layer.__class__.from_config(layer.get_config())
    np.testing.assert_allclose(clone(x), layer(x), atol=1e-6)
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_angle_delay_transform_roundtrip(tmp_path, rng):
    x = rng.normal(size=(3, 2, 8, 20, 2)).astype(np.float32)
    layer = CSIFeatures(10, "real_imag", "sample_power")
    assert layer(x).shape == (3, 8, 10, 4)
    assert layer.compute_output_shape((3, 2, 8, 20, 2)) == (3, 8, 10, 4)
    _roundtrip(layer, x, tmp_path)


@pytest.mark.parametrize("form", ["adp", "sample_covariance", "stabilized", "real_csi"])
def test_csi_features_layer_every_form_roundtrip(tmp_path, rng, form):
    x = rng.normal(size=(2, 2, 16, 12, 2)).astype(np.float32)
    layer = CSIFeatures(6, form, "antenna", array_shape=(2, 4, 2))
    y = layer(x)
    assert tuple(y.shape) == layer.compute_output_shape((2, 2, 16, 12, 2))
    _roundtrip(layer, x, tmp_path)


def test_affine_output_roundtrip(tmp_path):
    layer = AffineOutput([10.0, -5.0], [2.0, 3.0])
    x = np.array([[1.0, 1.0], [0.0, -1.0]], np.float32)
    np.testing.assert_allclose(layer(x), [[12.0, -2.0], [10.0, -8.0]])
    _roundtrip(layer, x, tmp_path)


@pytest.mark.parametrize("depth", [18, 34])
def test_resnet_shapes_and_save(tmp_path, depth):
    cfg = ModelConfig("resnet")
    cfg.resnet.depth, cfg.resnet.width = depth, 8
    m = build_model(cfg, make_spec((32, 16, 2), mean=[100.0, -100.0], std=[50.0, 50.0]))
    x = np.random.default_rng(0).normal(size=(4, 32, 16, 2)).astype(np.float32)
    y = m({"features": x})["position"]
    assert y.shape == (4, 2)
    n_convs = sum(isinstance(l, keras.layers.Conv2D) and "proj" not in l.name for l in m.layers)
    assert n_convs == depth - 1  # ResNet-N: N-1 convolutions + the dense head
    path = str(tmp_path / "r.keras")
    m.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)({"features": x})["position"], y, atol=1e-5)


def test_resnet_with_sector_input_uses_it():
    cfg = ModelConfig("resnet")
    cfg.resnet.width = 8
    m = build_model(cfg, make_spec((16, 8, 2), num_sectors=3))
    x = np.random.default_rng(0).normal(size=(2, 16, 8, 2)).astype(np.float32)
    y0 = m({"features": x, "sector": np.array([0, 0], np.int32)})["position"]
    y1 = m({"features": x, "sector": np.array([1, 2], np.int32)})["position"]
    assert y0.shape == (2, 2) and not np.allclose(y0, y1)


def test_model_registry_lists_resnet():
    assert "resnet" in MODELS.names()
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        MODELS.get("nope")


def test_transform_under_tf_function_and_xla(rng):
    layer = CSIFeatures(6)
    x = tf.constant(rng.normal(size=(2, 2, 8, 12, 2)).astype(np.float32))
    eager = layer(x)
    np.testing.assert_allclose(tf.function(layer)(x), eager, atol=1e-5)
    np.testing.assert_allclose(tf.function(layer, jit_compile=True)(x), eager, atol=1e-5)


def test_csi_features_keep_leading_dimensions(rng):
    """One CSI per BS: [b, L, ue, bs, sc, 2] -> [b, L, H, W, C], each link as alone."""
    x = rng.normal(size=(3, 4, 2, 8, 12, 2)).astype(np.float32)
    layer = CSIFeatures(6, "magnitude", "sample_max")
    y = layer(x).numpy()
    assert y.shape == (3, 4, 8, 6, 2) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y[1, 2], layer(x[1:2, 2])[0], atol=1e-6)


def test_serving_module_with_bs_positions(tmp_path, rng):
    """A multi-BS spec serves csi [b, L, ...] and bs_positions [b, L, 3] by name."""
    from conftest import make_spec
    from tfloc.export import ServingModule
    spec = make_spec((8, 6, 2), dims=3, links=3, csi_shape=(2, 8, 12, 2))
    feats = keras.Input((3, 8, 6, 2), name="features")
    bsp = keras.Input((3, 3), name="bs_positions")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(feats), keras.layers.Flatten()(bsp)])
    model = keras.Model({"features": feats, "bs_positions": bsp},
                        {"position": keras.layers.Dense(3, name="position")(h)})
    path = ServingModule("multi", model, spec).write(str(tmp_path / "multi" / "1"))
    f = tf.saved_model.load(path).signatures["serving_default"]
    assert set(f.structured_input_signature[1]) == {"csi", "bs_positions"}
    csi = rng.normal(size=(2, 3, 2, 8, 12, 2)).astype(np.float32)
    pos = rng.normal(size=(2, 3, 3)).astype(np.float32)
    out = f(csi=tf.constant(csi), bs_positions=tf.constant(pos))["position"]
    want = model({"features": CSIFeatures(6)(csi), "bs_positions": tf.constant(pos)})["position"]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="'bs_positions' contains NaN"):
        f(csi=tf.constant(csi), bs_positions=tf.constant(np.full((2, 3, 3), np.nan, np.float32)))
