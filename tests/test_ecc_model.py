"""Seed 004's ECC network: shapes, the frequency-aligned latent, saving."""
import keras
import numpy as np
import pytest

from conftest import make_spec


@pytest.fixture
def ecc_cfg():
    from tfloc.models.ecc import ECCConfig
    return ECCConfig(encoder_filters=[4, 8], latent_dim=6, token_dim=5, lstm_units=8,
                     head_units=[4], bits=6)


@pytest.mark.parametrize("rows", [80, 20, 6])
def test_encoder_keeps_one_token_per_subcarrier_and_decoder_mirrors(ecc_cfg, rng, rows):
    from tfloc.models.ecc import build_decoder, build_encoder
    enc = build_encoder(ecc_cfg, (rows, 24, 2))
    dec = build_decoder(ecc_cfg, (rows, 24, 2))
    x = rng.normal(size=(2, rows, 24, 2)).astype(np.float32)
    z = enc(x)
    assert z.shape == (2, 24, 6)
    assert dec(z).shape == (2, rows, 24, 2)
    # frequency alignment: token n sees subcarriers n-k..n+k only (k = receptive half-width)
    x2 = x.copy()
    x2[:, :, -1] += 5.0
    changed = np.abs(enc(x2).numpy() - z.numpy()).max(axis=(0, 2)) > 1e-6
    assert changed[-1] and not changed[0]


@pytest.mark.parametrize("fusion", ["cma", "transformer"])
def test_edge_and_cloud_compose_and_save(ecc_cfg, rng, tmp_path, fusion):
    from tfloc.models.ecc import build_cloud, build_edge
    ecc_cfg.fusion = fusion
    spec = make_spec(dims=3, mean=[100.0, 150.0, 10.0], std=[60.0, 80.0, 8.0])
    edge = build_edge(ecc_cfg, (4, 8, 24, 2))
    csi = rng.normal(size=(3, 4, 8, 24, 2)).astype(np.float32) * 1e-3
    out = edge(csi)
    assert out["latent"].shape == (3, 24, 6) and out["gain"].shape == (3,)
    np.testing.assert_array_equal(out["latent"], out["latent_continuous"])     # bypassed (Stage I)
    q = edge.get_layer("edge_quantizer")
    q.calibrate(out["latent_continuous"].numpy())
    q.set_bypass(False)
    zq = edge(csi)["latent"].numpy()
    assert len(np.unique(zq)) <= 2 ** 6
    cloud = build_cloud(ecc_cfg, spec, num_bs=6, num_subcarriers=24, latent_dim=6)
    lat = np.repeat(zq[:, None], 6, axis=1)
    gains = rng.uniform(1e-6, 1e-3, size=(3, 6)).astype(np.float32)
    res = cloud({"latents": lat, "gains": gains})
    assert res["position"].shape == (3, 3) and res["position_sequence"].shape == (3, 24, 3)
    np.testing.assert_allclose(res["position"], res["position_sequence"][:, -1])
    for m, x in ((edge, csi), (cloud, {"latents": lat, "gains": gains})):
        path = str(tmp_path / f"{m.name}.keras")
        m.save(path)
        loaded = keras.models.load_model(path)
        a, b = m(x), loaded(x)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_fronthaul_ratio_matches_seed004_table2():
    from tfloc.export.fronthaul import fronthaul_bits
    for q, eta in ((10, 6.25), (8, 5.00), (6, 3.75), (4, 2.50)):
        info = fronthaul_bits(24 * 32, q, (10, 8, 24))
        assert 100 * info["eta"] == pytest.approx(eta)
        assert info["payload_bytes"] == 768 * q // 8 + 4


def test_edge_bytes_cloud_equals_the_composed_model_in_a_fresh_process(ecc_cfg, rng, tmp_path):
    """Six edges write bytes, the cloud reads them: the positions of edge -> cloud end to end."""
    import subprocess
    import sys
    from conftest import REPO
    from tfloc.export.fronthaul import CloudModule, EdgeModule
    from tfloc.models.ecc import build_cloud, build_edge
    spec = make_spec(dims=3, mean=[100.0, 150.0, 10.0], std=[60.0, 80.0, 8.0])
    csi = (rng.normal(size=(5, 6, 4, 8, 24, 2)) * 10 ** rng.uniform(-6, -3, size=(5, 6, 1, 1, 1, 1))
           ).astype(np.float32)
    edges = [build_edge(ecc_cfg, (4, 8, 24, 2), name=f"edge{l}") for l in range(6)]
    for l, e in enumerate(edges):
        q = e.get_layer(f"edge{l}_quantizer")
        q.calibrate(e(csi[:, l])["latent_continuous"].numpy())
        q.set_bypass(False)
    cloud = build_cloud(ecc_cfg, spec, num_bs=6, num_subcarriers=24, latent_dim=6)
    outs = [e(csi[:, l]) for l, e in enumerate(edges)]
    ref = cloud({"latents": np.stack([o["latent"] for o in outs], 1),
                 "gains": np.stack([o["gain"] for o in outs], 1)})["position"].numpy()
    for l, e in enumerate(edges):
        EdgeModule(f"edge{l}", e).write(str(tmp_path / f"edge{l}"))
    CloudModule("cloud", cloud, edges).write(str(tmp_path / "cloud"))
    np.save(tmp_path / "csi.npy", csi)
    code = f"""
import numpy as np, tensorflow as tf
csi = np.load(r"{tmp_path / 'csi.npy'}")
payload, gain = [], []
for l in range(6):
    out = tf.saved_model.load(r"{tmp_path}/edge" + str(l)).signatures["serving_default"](csi=tf.constant(csi[:, l]))
    payload.append(out["payload"].numpy()); gain.append(out["gain"].numpy())
payload, gain = np.stack(payload, 1), np.stack(gain, 1)
assert payload.dtype == np.uint8 and payload.shape == (5, 6, 24 * 6 * 6 // 8), payload.shape
pos = tf.saved_model.load(r"{tmp_path / 'cloud'}").signatures["serving_default"](
    payload=tf.constant(payload), gain=tf.constant(gain))["position"].numpy()
np.save(r"{tmp_path / 'pos.npy'}", pos)
# empty batches get empty results of the right inner shape, edge and cloud alike
e0 = tf.saved_model.load(r"{tmp_path}/edge0").signatures["serving_default"](csi=tf.zeros([0, 4, 8, 24, 2]))
assert e0["payload"].shape == (0, 108) and e0["gain"].shape == (0, 4), e0
c0 = tf.saved_model.load(r"{tmp_path / 'cloud'}").signatures["serving_default"](
    payload=tf.zeros([0, 6, 108], tf.uint8), gain=tf.zeros([0, 6, 4], tf.uint8))["position"]
assert c0.shape == (0, 3), c0.shape
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "pos.npy"), ref, rtol=1e-5, atol=1e-3)


def test_edge_export_refuses_an_uncalibrated_quantizer(ecc_cfg):
    from tfloc.export.fronthaul import EdgeModule
    from tfloc.models.ecc import build_edge
    with pytest.raises(ValueError, match="bypassed or not calibrated"):
        EdgeModule("edge", build_edge(ecc_cfg, (4, 8, 24, 2)))
