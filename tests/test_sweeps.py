"""Contract sweeps, like the method sweep: every registered evaluator runs on a synthetic run
context (or is skipped for a reason it declared), every registered loss gives a finite value
and gradient, and every custom layer survives a Keras config and ``.keras`` round trip."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_spec
from tfloc.evaluation import EVALUATORS, NEEDS, EvalContext, needs_of, write_report
from tfloc.losses import LOSSES, LossConfig, build_loss

N, DIMS, L, NR, NSC, STEPS = 40, 3, 3, 8, 4, 5
#: run needs this synthetic context supplies; the others need real traced data (their
#: evaluators run in the end-to-end tests)
SYNTHESISED = {"fixed_sets", "site", "multi_bs_csi"}


def _features(rng, n):
    return rng.normal(size=(n, L, 1, NR, NSC, 2)).astype(np.float32)   # multi-BS CSI features


def _synthetic_context(rng) -> EvalContext:
    y = rng.uniform(0, 50, size=(N, DIMS))
    pred = y + rng.normal(size=(N, DIMS))
    members = pred[:, None] + rng.normal(size=(N, 3, DIMS))
    logits = rng.normal(size=(N, 3))
    outputs = {"position": pred, "position_std": np.full((N, DIMS), 1.5),
               "condition_probs": np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
               "member_positions": members, "position_weighted": members.mean(1),
               "position_consensus": members.mean(1), "consensus_size": np.full(N, 2.0),
               "position_sequence": pred[:, None] + rng.normal(size=(N, STEPS, DIMS))}
    labels = {"position": y, "condition": rng.integers(0, 3, N)}

    def fixed_set(split):
        n = 60 if split == "train" else 20
        return ({"features": _features(rng, n), "sector": rng.integers(0, 3, n)},
                {"position": rng.uniform(0, 50, size=(n, DIMS)), "condition": rng.integers(0, 3, n)})
    panels = [{"position": [float(25 * k), 0.0, 20.0], "azimuth_deg": 90.0, "downtilt_deg": 10.0}
              for k in range(L)]
    array = {"num_rows": 2, "num_cols": 4, "vertical_spacing": 0.5, "horizontal_spacing": 0.5}
    x = {"features": _features(rng, N), "sector": rng.integers(0, 3, N)}
    return EvalContext(model_name="m", x=x, y=labels, outputs=outputs,
                       class_names=("LOS", "NLOS-static", "NLOS-car"), to_class=np.asarray,
                       fixed_set=fixed_set, knn_neighbors=(1, 3), site=lambda: {"panels": panels,
                                                                                "array": array})


@pytest.mark.parametrize("name", EVALUATORS.names())
def test_every_evaluator_runs_on_a_synthetic_run(name, rng, tmp_path):
    needs = needs_of(name)
    unmet = [n for n in needs.run if n not in SYNTHESISED]
    if unmet:
        pytest.skip(f"'{name}' needs {NEEDS[unmet[0]]}")
    ctx = _synthetic_context(rng)
    assert set(needs.outputs) <= set(ctx.outputs)
    res = EVALUATORS.get(name)(ctx)
    assert res.report or res.curves or res.figures, f"'{name}' returned nothing"
    json.dumps(res.report)                                          # the report stays JSON
    for curve in res.curves.values():
        assert np.asarray(curve).shape == (N,) and np.isfinite(curve).all()
    report = {"n_test": N, **res.report}
    write_report(str(tmp_path), report, res.curves, res.figures, title=name)
    for f in res.figures:
        assert (tmp_path / f).stat().st_size > 0


def test_every_run_need_is_described():
    for name in EVALUATORS.names():
        assert set(needs_of(name).run) <= set(NEEDS), name


def _loss_batch(rng, b=8):
    y = tf.constant(rng.normal(size=(b, 2)) * 10, tf.float32)
    out = {"position": tf.Variable(rng.normal(size=(b, 2)) * 10, dtype=tf.float32),
           "position_std": tf.Variable(rng.uniform(0.5, 2.0, size=(b, 2)), dtype=tf.float32),
           "position_sequence": tf.Variable(rng.normal(size=(b, STEPS, 2)) * 10, dtype=tf.float32)}
    return {"position": y}, out


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_gives_a_finite_value_and_gradient(name, rng):
    spec = make_spec(dims=2, mean=[1.0, -2.0], std=[5.0, 8.0])
    fn = build_loss(LossConfig(name), spec)
    labels, outputs = _loss_batch(rng)
    with tf.GradientTape() as tape:
        value = fn(labels, outputs)
        total = tf.reduce_mean(value)
    assert value.shape == (8,) and np.isfinite(value.numpy()).all()
    grads = tape.gradient(total, list(outputs.values()))
    used = [g for g in grads if g is not None]
    assert used, f"loss '{name}' has no gradient with respect to the outputs"
    assert all(np.isfinite(g.numpy()).all() for g in used)
    assert any(np.abs(g.numpy()).sum() > 0 for g in used)


def _layer_examples(rng):
    """Registered layer -> (constructor kwargs, example inputs)."""
    f = lambda *s: rng.normal(size=s).astype(np.float32)   # noqa: E731
    return {
        "AffineOutput": ({"offset": [1.0, 2.0], "scale": [3.0, 4.0]}, f(4, 2)),
        "CSIFeatures": ({"num_delay_taps": 6, "representation": "adp", "normalization": "antenna",
                         "array_shape": (2, 4, 2)}, f(2, 2, 16, 12, 2)),
        "ChannelMaskedAttention": ({"beta": 5.0}, [f(2, L, 4, 6), np.abs(f(2, L)) + 0.1]),
        "ChannelShuffle": ({"groups": 2}, f(2, 3, 3, 4)),
        "ChannelSplit": ({}, f(2, 3, 3, 4)),
        "CoordinateChannels": ({}, f(2, 3, 5, 2)),
        "EdgePreprocessing": ({}, f(2, 1, NR, NSC, 2)),
        "EnsembleCombine": ({"weights": [0.25, 0.75], "radius_m": 5.0}, f(3, 2, DIMS) * 4),
        "FrequencyEvidenceAccumulation": ({"units": 8, "dims": DIMS, "head_units": (8,)}, f(2, NSC, 6)),
        "GaussianOutput": ({"offset": [1.0, 2.0], "scale": [3.0, 4.0], "covariance": "full"}, f(4, 5)),
        "GradientReversal": ({"scale": 0.5}, f(4, 3)),
        "HomoscedasticWeighting": ({"gamma": 2.0}, [f(4, 2), f(4, 2), np.array([0, 1, 2, 1], np.int32),
                                                    f(4, 3)]),
        "LinkSelect": ({"index": 1}, f(2, L, 4)),
        "RelativeGainDb": ({"scale_db": 10.0}, np.abs(f(2, L)) + 0.1),
        "SectorRouting": ({}, [f(4, 2), f(4, 2), np.array([0, 1, 1, 0], np.int32)]),
        "UniformMidriseQuantizer": ({"bits": 4, "step": 0.25}, f(4, 6)),
    }


def _tfloc_layers() -> dict:
    import tfloc.layers  # noqa: F401  (registers)
    import tfloc.losses  # noqa: F401
    import tfloc.models  # noqa: F401
    out = {}
    for key, obj in keras.saving.get_custom_objects().items():
        if key.startswith("tfloc>") and isinstance(obj, type) and issubclass(obj, keras.layers.Layer):
            out[obj.__name__] = obj
    return out


def test_the_layer_sweep_covers_every_registered_layer(rng):
    assert sorted(_layer_examples(rng)) == sorted(_tfloc_layers())


@pytest.mark.parametrize("name", sorted(_layer_examples(np.random.default_rng(0))))
def test_every_custom_layer_round_trips(name, rng, tmp_path):
    cls = _tfloc_layers()[name]
    kwargs, x = _layer_examples(rng)[name]
    layer = cls(**kwargs, name="under_test")
    xs = x if isinstance(x, list) else [x]
    inputs = [keras.Input(v.shape[1:], dtype=str(v.dtype)) for v in xs]
    single = not isinstance(x, list)
    model = keras.Model(inputs[0] if single else inputs, layer(inputs[0] if single else inputs))
    want = keras.tree.map_structure(np.asarray, model(xs if isinstance(x, list) else xs[0]))
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config            # config round trip
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    got = keras.tree.map_structure(np.asarray, loaded(xs if isinstance(x, list) else xs[0]))
    for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
