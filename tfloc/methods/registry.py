"""The training-recipe registry: ``method`` in a config names one of these tasks."""
from tfloc.config import OneOf
from tfloc.registry import Registry

METHODS: Registry = Registry("method")


class MethodConfig(OneOf):
    """``method: {type: hda, hda: {num_conditions: 3}}`` or just ``method: supervised``."""
    registry = METHODS
    default = "supervised"

