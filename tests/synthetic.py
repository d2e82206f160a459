"""A small synthetic PathSet (no ray tracing): one BS with a uniform planar array, UEs on
two sidewalks, a LOS path (when not blocked) and a ground reflection, in several
realizations with per-link propagation conditions. For fast runner and contract tests."""
import numpy as np

from tfloc.sim.paths import LOS, NLOS_CAR, NLOS_STATIC, PathSet

C = 299_792_458.0


def _upa_response(rows, cols, azimuth, elevation):
    """Steering vector [rows * cols] (half-wavelength spacing), Sionna's column-major port order."""
    m = np.arange(cols)[:, None] * np.sin(azimuth) * np.cos(elevation)
    n = np.arange(rows)[None, :] * np.sin(elevation)
    return np.exp(1j * np.pi * (m + n)).reshape(-1)


def synthetic_pathset(n_ue=40, n_realizations=6, rows=2, cols=4, seed=0, bs=(0.0, -8.0, 5.0)):
    rng = np.random.default_rng(seed)
    x = np.linspace(-30, 30, n_ue // 2)
    pos = np.concatenate([np.stack([x, np.full_like(x, y), np.full_like(x, 1.0)], 1)
                          for y in (-7.0, 8.0)]).astype(np.float32)
    bs = np.asarray(bs)
    rows_out = {k: [] for k in ("positions", "los", "condition", "ue_id", "realization")}
    a_all, tau_all, counts = [], [], []
    for r in range(n_realizations):
        for i, p in enumerate(pos):
            d = p - bs
            dist = np.linalg.norm(d)
            az, el = np.arctan2(d[0], d[1]), np.arcsin(d[2] / dist)
            cond = rng.choice([LOS, NLOS_STATIC, NLOS_CAR], p=[0.6, 0.2, 0.2]) if p[1] > 0 else LOS
            mirror = p * np.array([1, 1, -1])             # ground reflection
            dm = mirror - bs
            paths = [(_upa_response(rows, cols, np.arctan2(dm[0], dm[1]),
                                    np.arcsin(dm[2] / np.linalg.norm(dm))) * 0.3 / np.linalg.norm(dm),
                      np.linalg.norm(dm) / C)]
            if cond == LOS:
                paths.insert(0, (_upa_response(rows, cols, az, el) / dist, dist / C))
            for a, t in paths:
                a_all.append(a[None, :].astype(np.complex64))
                tau_all.append(t)
            counts.append(len(paths))
            rows_out["positions"].append(p)
            rows_out["los"].append(cond == LOS)
            rows_out["condition"].append(cond)
            rows_out["ue_id"].append(i)
            rows_out["realization"].append(r)
    n = len(counts)
    zeros = np.zeros(len(tau_all), np.float32)
    return PathSet(positions=np.array(rows_out["positions"], np.float32),
                   sector=np.zeros(n, np.int8), los=np.array(rows_out["los"]),
                   offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   a=np.stack(a_all), tau=np.array(tau_all, np.float32),
                   theta_t=zeros, phi_t=zeros, theta_r=zeros, phi_r=zeros,
                   ue_id=np.array(rows_out["ue_id"], np.int32),
                   realization=np.array(rows_out["realization"], np.int16),
                   condition=np.array(rows_out["condition"], np.int8),
                   meta={"scene": "synthetic", "site": "single_bs", "bs_positions": [list(bs)]})


def synthetic_multi_bs_pathset(n_ue=60, n_bs=6, rows=2, cols=4, seed=0):
    """UEs in a 60 m x 60 m x 10 m box seen by ``n_bs`` BSs around it, as tfloc.sim
    lays out a multi-BS PathSet (the L links of a UE in consecutive rows): a LOS path
    and a ground reflection per link."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform([0, 0, 1], [60, 60, 10], size=(n_ue, 3)).astype(np.float32)
    ang = 2 * np.pi * np.arange(n_bs) / n_bs
    bss = np.stack([30 + 50 * np.cos(ang), 30 + 50 * np.sin(ang), np.full(n_bs, 20.0)], 1)
    a_all, tau_all, out = [], [], {k: [] for k in ("positions", "sector", "ue_id")}
    for i, p in enumerate(pos):
        for b, bs in enumerate(bss):
            for q in (p, p * np.array([1, 1, -1])):            # LOS, ground reflection
                d = q - bs
                dist = np.linalg.norm(d)
                amp = 1.0 if q is p else 0.3
                a_all.append((amp / dist * _upa_response(rows, cols, np.arctan2(d[0], d[1]),
                                                         np.arcsin(d[2] / dist)))[None].astype(np.complex64))
                tau_all.append(dist / C)
            out["positions"].append(p)
            out["sector"].append(b)
            out["ue_id"].append(i)
    n = n_ue * n_bs
    zeros = np.zeros(len(tau_all), np.float32)
    return PathSet(positions=np.array(out["positions"], np.float32), sector=np.array(out["sector"], np.int8),
                   los=np.ones(n, bool), offsets=np.arange(0, 2 * n + 1, 2).astype(np.int64),
                   a=np.stack(a_all), tau=np.array(tau_all, np.float32),
                   theta_t=zeros, phi_t=zeros, theta_r=zeros, phi_r=zeros,
                   ue_id=np.array(out["ue_id"], np.int32), realization=np.zeros(n, np.int16),
                   condition=np.full(n, LOS, np.int8),
                   meta={"scene": "synthetic", "site": "multi_bs", "bs_positions": bss.tolist()})


#: overrides that shrink a street-canyon experiment to the synthetic PathSet
#: the etoile-based configs on the synthetic set (one UE port, a small ResNet)
ETOILE_SITE = ["simulation.ue_array={num_rows: 1, num_cols: 1, pattern: iso, polarization: V}"]
ETOILE_SETS = [*ETOILE_SITE, "model.resnet.width=8"]

#: a BS 25 m behind the south sidewalk, 6 m up: every UE is in front of the array (the
#: default's BS, 1 m behind the south sidewalk, sees that sidewalk end-fire, where x and -x
#: give the same CSI), so position is a function of the CSI (up to NLOS draws and noise)
LEARNABLE_BS = (0.0, -25.0, 6.0)
#: with 32 subcarriers (50 MHz: 6 m delay bins) and enough epochs a network learns the site
#: (tests/test_contract.py: every method beats the training-mean predictor)
LEARNABLE_SETS = ["data.num_subcarriers=32", "data.num_delay_taps=32"]

SYNTHETIC_SETS = ["simulation.bs_array={num_rows: 2, num_cols: 4, pattern: iso, polarization: V}",
                  "simulation.cars.num_realizations=6", "data.realization_splits=[3, 1, 2]",
                  "data.num_subcarriers=16", "data.num_delay_taps=16", "data.batch_size=16",
                  "training.epochs=2", "runtime.verbose=0"]
