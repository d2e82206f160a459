"""MUSIC + least-squares triangulation (seed 004's model-based baseline) on synthetic LOS."""
import numpy as np
import pytest

from tfloc.evaluation.music import music_direction, music_position, triangulate
from tfloc.physics.array import direction, planar_array_positions, rotation_matrix, steering

C = 299_792_458.0


def synthetic_los_csi(ue, bs, rot, pos_wl, freqs, fc, slots=4, snr_db=None, rng=None):
    """LOS-only CSI [slots, subcarriers, N] at one BS: delay |ue - bs| / c, plane-wave
    response from the direction of the UE (in the array's local frame)."""
    d = ue - bs
    k_local = rot.T @ (d / np.linalg.norm(d))
    a = steering(pos_wl, k_local)                                        # [N]
    tau = np.linalg.norm(d) / C
    h = np.exp(-2j * np.pi * (fc + freqs) * tau)[:, None] * a[None]      # [Nsc, N]
    h = np.repeat(h[None], slots, axis=0)
    if snr_db is not None:
        s = 10 ** (-snr_db / 20) / np.sqrt(2)
        h = h + s * (rng.normal(size=h.shape) + 1j * rng.normal(size=h.shape))
    return h


def test_rotation_matches_sionna_convention():
    r = rotation_matrix(np.pi / 2, 0.0, 0.0)
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)       # yaw turns x to y
    r = rotation_matrix(0.0, np.radians(10), 0.0)
    assert (r @ [1, 0, 0])[2] < 0                                          # pitch tilts down
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)


def test_triangulation_recovers_the_crossing_point(rng):
    p = np.array([10.0, -4.0, 2.0])
    s = rng.uniform(-50, 50, size=(4, 3))
    assert np.allclose(triangulate(s, p - s), p)


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_music_finds_the_los_direction(rng, snr_db):
    pos = planar_array_positions(2, 4)
    rot = rotation_matrix(np.radians(30), np.radians(10), 0.0)
    bs, ue = np.array([0.0, 0.0, 25.0]), np.array([60.0, 55.0, 1.5])
    freqs = np.arange(24) * 720e3
    h = synthetic_los_csi(ue, bs, rot, pos, freqs, 3.5e9, snr_db=snr_db, rng=rng)
    k = music_direction(h, pos, rot)
    truth = (ue - bs) / np.linalg.norm(ue - bs)
    err = np.degrees(np.arccos(np.clip(k @ truth, -1, 1)))
    assert err < (1e-3 if snr_db is None else 0.5)


def test_music_and_triangulation_position_six_bs_to_centimetres(rng):
    """Six BSs around a UE, LOS only, noise-free: the 3D position to a centimetre."""
    pos = planar_array_positions(2, 4)
    ue = np.array([110.0, 140.0, 12.0])
    bss, rots, csis = [], [], []
    for i, ang in enumerate(np.radians(np.arange(6) * 60.0 + 15.0)):
        bs = ue + np.array([90 * np.cos(ang), 120 * np.sin(ang), 25.0 - 12.0 + 3 * i])
        facing = np.arctan2(*(ue - bs)[[1, 0]])                            # boresight at the UE
        rot = rotation_matrix(facing + np.radians(rng.uniform(-20, 20)), np.radians(8), 0.0)
        bss.append(bs)
        rots.append(rot)
        csis.append(synthetic_los_csi(ue, bs, rot, pos, np.arange(24) * 720e3, 3.5e9))
    est = music_position(np.stack(csis), np.stack(bss), np.stack(rots), pos)
    assert np.linalg.norm(est - ue) < 0.01


def test_planar_array_order_and_direction_helpers():
    pos = planar_array_positions(2, 4)
    assert pos.shape == (8, 3) and np.allclose(pos[:, 0], 0) and np.allclose(pos.mean(0), 0)
    assert pos[0, 2] > pos[1, 2] and pos[0, 1] == pos[1, 1]                # column by column, top first
    np.testing.assert_allclose(np.linalg.norm(direction([0.3, 1.0], [0.7, 2.0]), axis=-1), 1.0)


def test_music_evaluator_positions_synthetic_six_bs_samples(rng):
    """The evaluator on multi-BS CSI features [n, L, T, Nr, Nsc, 2] with the site's panels."""
    from tfloc.evaluation import EvalContext, run_evaluators
    arr = {"num_rows": 2, "num_cols": 4, "vertical_spacing": 0.5, "horizontal_spacing": 0.5}
    pos = planar_array_positions(2, 4)
    ues = rng.uniform([60, 60, 1], [140, 140, 20], size=(3, 3))
    panels, feats = [], np.zeros((3, 6, 2, 8, 24, 2), np.float32)
    for l, ang in enumerate(np.radians(np.arange(6) * 60.0)):
        bs = [100 + 150 * np.cos(ang), 100 + 150 * np.sin(ang), 40.0]
        az = np.degrees(np.arctan2(-np.sin(ang), -np.cos(ang)))             # facing the centre
        panels.append({"position": bs, "azimuth_deg": az, "downtilt_deg": 10.0})
        rot = rotation_matrix(np.radians(az), np.radians(10.0), 0.0)
        for i, ue in enumerate(ues):
            h = synthetic_los_csi(ue, np.array(bs), rot, pos, np.arange(24) * 720e3, 3.5e9, slots=2)
            h = np.transpose(h, (0, 2, 1)) * 1e-4                           # [T, Nr, Nsc]
            feats[i, l] = np.stack([h.real, h.imag], -1)
    ctx = EvalContext(model_name="m", x={"features": feats}, y={"position": ues},
                      outputs={"position": ues}, site=lambda: {"panels": panels, "array": arr})
    res = run_evaluators(["music"], ctx)
    assert res.report["baselines"]["music"]["mean_m"] < 0.05
    assert "MUSIC + LS" in res.curves
    with pytest.raises(ValueError, match="needs multi-BS CSI features"):
        run_evaluators(["music"], EvalContext(model_name="m", x={"features": feats[:, 0]},
                                              y={"position": ues}, outputs={}, site=lambda: {}))
