"""Positioning networks, chosen by registered name (``model.type``)."""
from tfloc.models.registry import MODELS, ModelConfig
from tfloc.models import autoencoder, ecc, mobile, pooling_cnn, resnet, semantic_cnn  # noqa: F401  (register them)


def build_model(model_cfg: ModelConfig, spec, *, num_conditions: int = 0,
                position_std: bool = False, name: str | None = None):
    """Builds ``MODELS[model_cfg.type]`` with its own options and the data spec."""
    return MODELS.get(model_cfg.type)(model_cfg.options, spec, num_conditions=num_conditions,
                                      position_std=position_std, name=name)


__all__ = ["MODELS", "ModelConfig", "build_model"]
