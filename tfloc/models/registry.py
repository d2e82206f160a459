"""The model registry: ``model.type`` in a config names one of these builders.

A builder is ``build(options, spec, *, num_conditions=0, position_std=False, name=None)``
where ``options`` is its registered option dataclass and ``spec`` a
:class:`tfloc.data.spec.DataSpec`. Every model takes the named inputs of
``spec.model_inputs`` and returns a dict: ``position`` [b, dims] in metres,
``embedding`` [b, E] (the shared features), and with ``num_conditions > 0``
``condition_logits`` / ``condition_probs`` [b, C], with ``position_std``
``position_std`` [b, dims] in metres (a per-sample aleatoric sigma per axis).
"""
from tfloc.config import OneOf
from tfloc.registry import Registry

MODELS: Registry = Registry("model")


class ModelConfig(OneOf):
    """``model: {type: resnet, resnet: {depth: 34}}``."""
    registry = MODELS
    default = "resnet"
