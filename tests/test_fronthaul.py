"""Seed 004's fronthaul and fusion layers: values against NumPy, gradients with
GradientTape, bit-exact packing, serialisation."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfloc.layers.fronthaul import (UniformMidriseQuantizer, calibrate_step, pack_codes,
                                    pack_gain, packed_bytes, unpack_codes, unpack_gain)
from tfloc.layers.fusion import (ChannelMaskedAttention, FrequencyEvidenceAccumulation,
                                 accumulation_weights)


def midrise_reference(y, bits, step):
    """Seed 004 eq. 19, case by case (NumPy)."""
    a = (2 ** bits - 1) * step / 2
    return np.where(y > a, a, np.where(y < -a, -a, np.floor(y / step) * step + step / 2))


@pytest.mark.parametrize("bits", [1, 4, 6, 8, 10])
def test_quantizer_matches_eq19_value_by_value(rng, bits):
    step = 0.37 / 2 ** (bits - 2)
    y = rng.normal(scale=0.6, size=(64, 48)).astype(np.float32)
    q = UniformMidriseQuantizer(bits, step)
    out = q(y).numpy()
    np.testing.assert_allclose(out, midrise_reference(y.astype(np.float64), bits, step), atol=1e-6)
    assert len(np.unique(out)) <= 2 ** bits
    codes = q.encode(y).numpy()
    assert codes.min() >= 0 and codes.max() <= 2 ** bits - 1
    np.testing.assert_allclose(q.decode(codes).numpy(), out, atol=1e-6)


def test_quantizer_levels_are_symmetric_and_saturate():
    q = UniformMidriseQuantizer(2, 1.0)
    y = np.array([-9.0, -1.5, -1.0, -0.2, 0.0, 0.2, 1.0, 1.5, 9.0], np.float32)
    np.testing.assert_allclose(q(y), [-1.5, -1.5, -0.5, -0.5, 0.5, 0.5, 1.5, 1.5, 1.5])
    assert q.saturation == pytest.approx(1.5)


def test_quantizer_straight_through_gradient(rng):
    bits, step = 4, 0.1
    a = (2 ** bits - 1) * step / 2
    y = tf.constant(rng.uniform(-1.5, 1.5, size=(200,)).astype(np.float32))
    w = tf.constant(rng.normal(size=(200,)).astype(np.float32))
    q = UniformMidriseQuantizer(bits, step)
    with tf.GradientTape() as tape:
        tape.watch(y)
        loss = tf.reduce_sum(w * q(y))
    grad = tape.gradient(loss, y).numpy()
    np.testing.assert_allclose(grad, np.where(np.abs(y.numpy()) <= a, w.numpy(), 0.0), atol=1e-6)
    assert 0 < (grad == 0).sum() < 200                  # both cases present


def test_quantizer_bypass_is_identity_with_identity_gradient(rng):
    y = tf.constant(rng.normal(size=(5, 7)).astype(np.float32))
    q = UniformMidriseQuantizer(4, 0.1, bypass=True)
    with tf.GradientTape() as tape:
        tape.watch(y)
        out = q(y)
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(tape.gradient(out, y), np.ones((5, 7)))


def test_quantizer_calibration_and_serialisation(tmp_path, rng):
    y = rng.normal(size=(256, 32)).astype(np.float32)
    q = UniformMidriseQuantizer(6)
    step = q.calibrate(y)
    assert step > 0 and float(q.step.numpy()) == pytest.approx(step)
    clone = UniformMidriseQuantizer.from_config(q.get_config())
    np.testing.assert_array_equal(clone(y), q(y))
    model = keras.Sequential([keras.Input((32,)), q])
    model.save(str(tmp_path / "q.keras"))
    loaded = keras.models.load_model(str(tmp_path / "q.keras"))
    np.testing.assert_array_equal(loaded(y), model(y))


def test_calibrated_step_minimises_the_quantisation_error(rng):
    y = rng.normal(size=20000)
    step = calibrate_step(y, 4)

    def mse(s):
        return np.mean((midrise_reference(y, 4, s) - y) ** 2)
    assert mse(step) <= min(mse(step * 0.8), mse(step * 1.25))
    # uniform values on [-1, 1]: the best 4-bit quantizer tiles the interval, Delta = 2 / 16
    assert calibrate_step(rng.uniform(-1, 1, 20000), 4) == pytest.approx(2 / 16, rel=0.05)


@pytest.mark.parametrize("bits", [0, 17, 2.5, True])
def test_quantizer_rejects_bad_bits(bits):
    with pytest.raises(ValueError, match="1..16"):
        UniformMidriseQuantizer(bits, 0.1)


@pytest.mark.parametrize("step", [0.0, -0.1, float("nan")])
def test_quantizer_rejects_bad_step(step):
    with pytest.raises(ValueError, match="Delta"):
        UniformMidriseQuantizer(4, step)


def test_uncalibrated_quantizer_says_so():
    with pytest.raises(tf.errors.InvalidArgumentError, match="calibrate"):
        UniformMidriseQuantizer(4)(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("bits", [4, 6, 8, 10])
def test_packing_round_trip_is_bit_exact(rng, bits):
    d = 768
    codes = rng.integers(0, 2 ** bits, size=(3, 6, d)).astype(np.int32)
    payload = pack_codes(codes, bits).numpy()
    assert payload.dtype == np.uint8 and payload.shape == (3, 6, d * bits // 8)   # exactly D Q bits
    np.testing.assert_array_equal(unpack_codes(payload, bits, d), codes)
    # NumPy reference: each code's Q bits, most significant first, in one stream
    stream = ((codes[..., None] >> np.arange(bits - 1, -1, -1)) & 1).reshape(3, 6, -1)
    np.testing.assert_array_equal(payload, np.packbits(stream.astype(np.uint8), axis=-1))


def test_packing_pads_a_partial_last_byte_with_zeros(rng):
    codes = rng.integers(0, 8, size=(4, 5)).astype(np.int32)        # 15 bits -> 2 bytes
    payload = pack_codes(codes, 3).numpy()
    assert payload.shape == (4, 2) and packed_bytes(5, 3) == 2
    assert np.all(payload[:, -1] & 1 == 0)
    np.testing.assert_array_equal(unpack_codes(payload, 3, 5), codes)


def test_quantizer_codes_through_the_bytes_and_back(rng):
    q = UniformMidriseQuantizer(10, 0.01)
    z = rng.normal(scale=2.0, size=(2, 768)).astype(np.float32)
    back = q.decode(unpack_codes(pack_codes(q.encode(z), 10), 10, 768))
    np.testing.assert_array_equal(back, q(z))


def test_gain_side_information_is_32_bits_big_endian(rng):
    g = rng.lognormal(size=(3, 6)).astype(np.float32)
    b = pack_gain(g).numpy()
    assert b.shape == (3, 6, 4)
    assert b[0, :2].tobytes() == g[0, :2].astype(">f4").tobytes()   # an array keeps its byte order
    np.testing.assert_array_equal(unpack_gain(b), g)


def cma_reference(layer, tokens, gains):
    """Eq. 23-28 in NumPy with the layer's weights."""
    b, L, N, d = tokens.shape
    w = [v.numpy().astype(np.float64) for v in (layer.w_q, layer.w_k, layer.w_v)]
    B = np.concatenate([np.broadcast_to(layer.fusion_token.numpy(), (b, 1, N * d)),
                        tokens.reshape(b, L, N * d)], axis=1)
    m = np.exp(layer.beta * gains) / np.exp(layer.beta * gains).sum(-1, keepdims=True)
    M = np.concatenate([np.ones((b, 1)), m], -1)
    Q, K, V = B @ w[0], B @ w[1], (B @ w[2]) * M[..., None]
    s = Q @ np.swapaxes(K, 1, 2) / np.sqrt(N * d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return (a @ V)[:, 0].reshape(b, N, d)


def test_channel_masked_attention_matches_eq23_28(rng):
    tokens = rng.normal(size=(4, 6, 5, 3)).astype(np.float32)
    gains = rng.uniform(0, 1, size=(4, 6)).astype(np.float32)
    layer = ChannelMaskedAttention(beta=4.0)
    out = layer([tokens, gains]).numpy()
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, cma_reference(layer, tokens, gains), rtol=1e-4, atol=1e-5)


def test_channel_masked_attention_gates_weak_links(rng):
    tokens = rng.normal(size=(2, 3, 4, 2)).astype(np.float32)
    layer = ChannelMaskedAttention(beta=50.0)
    strong_first = np.array([[1.0, 0.0, 0.0]] * 2, np.float32)
    gate = layer.gate(strong_first).numpy()
    np.testing.assert_allclose(gate[:, :2], 1.0, atol=1e-6)
    assert np.all(gate[:, 2:] < 1e-20)                  # the weak BSs' values are switched off
    plain = ChannelMaskedAttention(use_gain_mask=False)
    plain([tokens, strong_first])
    np.testing.assert_allclose(plain([tokens, strong_first]), plain([tokens, 1 - strong_first]))


def test_frequency_evidence_accumulation_is_causal_in_frequency(rng):
    layer = FrequencyEvidenceAccumulation(units=16, dims=3, head_units=(8,))
    v = rng.normal(size=(2, 10, 4)).astype(np.float32)
    out = layer(v).numpy()
    assert out.shape == (2, 10, 3)
    w = v.copy()
    w[:, 6:] += 1.0                                      # later subcarriers change ...
    out2 = layer(w).numpy()
    np.testing.assert_allclose(out2[:, :6], out[:, :6], atol=1e-6)   # ... earlier estimates do not
    assert not np.allclose(out2[:, 6:], out[:, 6:])


def test_accumulation_weights_eq34():
    w = accumulation_weights(24)
    assert w.sum() == pytest.approx(1.0) and np.all(np.diff(w) > 0)
    assert w[-1] == pytest.approx(2 / 25) and w[0] == pytest.approx(2 / (24 * 25))


def test_fusion_layers_serialise(tmp_path, rng):
    tokens = keras.Input((6, 5, 3))
    gains = keras.Input((6,))
    fused = ChannelMaskedAttention(beta=3.0, name="cma")([tokens, gains])
    out = FrequencyEvidenceAccumulation(units=8, dims=3, head_units=(4,), name="fea")(fused)
    model = keras.Model([tokens, gains], out)
    x = [rng.normal(size=(2, 6, 5, 3)).astype(np.float32), rng.uniform(size=(2, 6)).astype(np.float32)]
    model.save(str(tmp_path / "f.keras"))
    loaded = keras.models.load_model(str(tmp_path / "f.keras"))
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    for layer in (model.get_layer("cma"), model.get_layer("fea")):
        assert layer.__class__.from_config(layer.get_config()).get_config() == layer.get_config()


def test_edge_preprocessing_matches_the_transforms(rng, tmp_path):
    from tfloc.data import transforms as T
    from tfloc.layers.fronthaul import EdgePreprocessing
    csi = rng.normal(size=(3, 4, 8, 6, 2)).astype(np.float32) * 1e-4
    x, g = EdgePreprocessing()(csi)
    assert x.shape == (3, 32, 6, 2) and g.shape == (3,)
    h = csi[..., 0] + 1j * csi[..., 1]
    np.testing.assert_allclose(g, np.sqrt((np.abs(h) ** 2).sum(axis=(1, 2, 3))), rtol=1e-5)
    hb, _ = T.gain_normalize(tf.constant(h.astype(np.complex64)))
    np.testing.assert_allclose(x, T.stack_and_reshape(T.phase_stabilize(hb)), atol=1e-6)
    np.testing.assert_allclose(np.sum(x.numpy() ** 2, axis=(1, 2, 3)), 1.0, rtol=1e-4)  # eq. 8


def test_relative_gain_db():
    from tfloc.layers.fusion import RelativeGainDb
    g = np.array([[1e-3, 1e-4, 1e-5]], np.float32)
    np.testing.assert_allclose(RelativeGainDb(10.0)(g), [[0.0, -2.0, -4.0]], atol=1e-5)
    np.testing.assert_allclose(RelativeGainDb(10.0)(g * 7.0), [[0.0, -2.0, -4.0]], atol=1e-5)


def test_accumulated_loss_eq34_against_numpy(rng):
    from tfloc.losses import accumulated_squared_error
    y = rng.normal(size=(4, 3)) * 10
    seq = rng.normal(size=(4, 24, 3)) * 10
    scale = [2.0, 3.0, 0.5]
    w = 2 * np.arange(1, 25) / (24 * 25)
    ref = (w * (((seq - y[:, None]) / scale) ** 2).sum(-1)).sum(-1)
    np.testing.assert_allclose(accumulated_squared_error(y, seq, scale), ref, rtol=1e-5)
    # all steps equal the label: zero; only the last step right: the others still cost
    assert np.allclose(accumulated_squared_error(y, np.repeat(y[:, None], 24, 1), scale), 0)


def test_negative_cosine_similarity_eq22(rng):
    from tfloc.losses import negative_cosine_similarity
    h = rng.normal(size=(3, 8, 6)) + 1j * rng.normal(size=(3, 8, 6))
    g = rng.normal(size=(3, 8, 6)) + 1j * rng.normal(size=(3, 8, 6))

    def ri(z):
        return np.stack([z.real, z.imag], -1).astype(np.float32)
    ref = -np.abs(np.sum(np.conj(h) * g, axis=(1, 2))) / (
        np.linalg.norm(h.reshape(3, -1), axis=1) * np.linalg.norm(g.reshape(3, -1), axis=1))
    np.testing.assert_allclose(negative_cosine_similarity(ri(h), ri(g)), ref, rtol=1e-4)
    # a common phase and scale of the reconstruction cost nothing: -1
    np.testing.assert_allclose(negative_cosine_similarity(ri(h), ri(2.5 * np.exp(1j) * h)), -1.0,
                               rtol=1e-5)


def test_negative_cosine_has_finite_gradients_for_a_dead_link():
    """A BS without paths sends all-zero CSI: the loss must not turn the gradients into NaN."""
    from tfloc.losses import negative_cosine_similarity
    x = tf.zeros((2, 4, 3, 2))
    y = tf.Variable(tf.random.normal((2, 4, 3, 2), seed=1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(negative_cosine_similarity(x, y)) + tf.reduce_sum(
            negative_cosine_similarity(y, tf.zeros_like(y)))
    assert np.all(np.isfinite(tape.gradient(loss, y).numpy()))
