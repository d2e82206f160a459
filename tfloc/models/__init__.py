"""Positioning networks, chosen by registered name (``model.type``)."""
from tfloc.models.registry import MODELS
from tfloc.models import resnet  # noqa: F401  (registers "resnet")


def build_model(model_cfg, input_shape, **kwargs):
    """Builds ``MODELS[model_cfg.type]`` with its own config section."""
    builder = MODELS.get(model_cfg.type)
    return builder(getattr(model_cfg, model_cfg.type), input_shape, **kwargs)


__all__ = ["MODELS", "build_model"]
