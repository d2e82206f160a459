"""Output heads shared by every backbone: named dict outputs from a feature vector."""
from __future__ import annotations

import keras

from tfloc.layers import AffineOutput

#: the output layers compute in float32 whatever the model's precision (training.precision):
#: positions in metres need more than bfloat16's 8 significant bits
OUTPUT_DTYPE = "float32"


def float32_output(x, name: str):
    """``x`` cast to :data:`OUTPUT_DTYPE`: every served output, the embedding too, is float32
    (bfloat16 tensors cannot be all-gathered across workers nor fed by most serving clients)."""
    return keras.layers.Activation("linear", name=name, dtype=OUTPUT_DTYPE)(x)


def _mlp(x, units, batch_norm: bool, bn_momentum: float, dropout: float, name: str):
    L = keras.layers
    for i, u in enumerate(units):
        x = L.Dense(u, use_bias=not batch_norm, name=f"{name}_dense{i + 1}")(x)
        if batch_norm:
            x = L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i + 1}")(x)
        x = L.ReLU(name=f"{name}_relu{i + 1}")(x)
        if dropout:
            x = L.Dropout(dropout, name=f"{name}_dropout{i + 1}")(x)
    return x


def output_heads(embedding, spec, *, num_conditions: int = 0, position_std: bool = False,
                 units=(128,), batch_norm: bool = False, bn_momentum: float = 0.9,
                 dropout: float = 0.0, side=None) -> dict:
    """The outputs every model returns, from its shared features ``embedding`` [b, E].

    A coordinate head (MLP ``units``, then linear to ``spec.position_dims``
    standardised coordinates, mapped to metres by the training labels' mean and
    spread) and, with ``num_conditions > 0``, a condition head (MLP, then
    ``num_conditions`` logits and their softmax). With ``position_std`` the
    coordinate head also gives a per-sample, per-axis standard deviation
    (softplus, floored at 1e-3 of the label spread). ``side`` [b, k] (e.g. the
    sector one-hot) joins the embedding at the heads' input.

    Output: {"embedding": [b, E], "position": [b, dims] metres, "position_std":
    [b, dims] metres (with position_std), "condition_logits", "condition_probs":
    [b, C] (with conditions)}.
    """
    L = keras.layers
    if not spec.target_mean:
        raise ValueError("the spec has no target statistics: call spec.with_targets(train positions)")
    h = L.Concatenate(name="with_side")([embedding, side]) if side is not None else embedding
    x = _mlp(h, units, batch_norm, bn_momentum, dropout, "coord")
    x = L.Dense(spec.position_dims, name="coord_out", dtype=OUTPUT_DTYPE)(x)
    out = {"embedding": float32_output(embedding, "embedding_out"),
           "position": AffineOutput(spec.target_mean, spec.target_std, name="position",
                                    dtype=OUTPUT_DTYPE)(x)}
    if position_std:
        s = L.Dense(spec.position_dims, activation="softplus", name="coord_std_out",
                    dtype=OUTPUT_DTYPE)(
            _mlp(h, units[-1:], batch_norm, bn_momentum, dropout, "coord_std") if units else h)
        # metres: (softplus + 1e-3) * spread, the floor keeps the likelihood finite
        out["position_std"] = AffineOutput([1e-3 * v for v in spec.target_std], spec.target_std,
                                           name="position_std", dtype=OUTPUT_DTYPE)(s)
    if num_conditions:
        c = _mlp(h, units, batch_norm, bn_momentum, dropout, "cond")
        logits = L.Dense(num_conditions, name="condition_logits", dtype=OUTPUT_DTYPE)(c)
        out["condition_logits"] = logits
        out["condition_probs"] = L.Softmax(name="condition_probs", dtype=OUTPUT_DTYPE)(logits)
    return out


def model_inputs(spec) -> dict:
    """keras.Input per named model input of ``spec`` (``features``, ``sector``, ...)."""
    return {name: keras.Input(shape=shape, dtype=dtype, name=name)
            for name, (shape, dtype) in spec.model_inputs.items()}


def single_link_inputs(spec, model_name: str):
    """(inputs, features) of a model that takes one CSI per sample; ValueError otherwise."""
    if spec.links != 1:
        raise ValueError(f"{model_name} takes one CSI per sample; this dataset has {spec.links} links")
    inputs = model_inputs(spec)
    return inputs, inputs["features"]


def sector_onehot(inputs: dict, num_sectors: int):
    """The ``sector`` input as a one-hot [b, num_sectors] (None without sectors)."""
    if not num_sectors or "sector" not in inputs:
        return None
    L = keras.layers
    return L.CategoryEncoding(num_sectors, output_mode="one_hot", name="sector_onehot")(
        L.Reshape((1,), name="sector_column")(inputs["sector"]))


def with_sector_heads(backbone, spec, units=(128,), name: str | None = None):
    """Seed 000's decoupled mapping heads: ``backbone``'s shared features feed one
    coordinate head per sector, and each sample takes the head of its serving sector.

    Input: the backbone's inputs (``sector`` among them). Output: {"embedding",
    "position": [b, dims] metres (the serving sector's head)}.
    """
    from tfloc.layers import SectorRouting
    L = keras.layers
    if not spec.num_sectors or "sector" not in backbone.input:
        raise ValueError("sector heads need the serving sector among the model inputs")
    emb = backbone.output["embedding"]
    heads = []
    for k in range(spec.num_sectors):
        h = _mlp(emb, units, False, 0.9, 0.0, f"sector{k}")
        h = L.Dense(spec.position_dims, name=f"sector{k}_out", dtype=OUTPUT_DTYPE)(h)
        heads.append(AffineOutput(spec.target_mean, spec.target_std, name=f"sector{k}_position",
                                  dtype=OUTPUT_DTYPE)(h))
    pos = SectorRouting(name="position", dtype=OUTPUT_DTYPE)([*heads, backbone.input["sector"]])
    return keras.Model(backbone.input, {"embedding": emb, "position": pos},
                       name=name or f"{backbone.name}_sector_heads")
