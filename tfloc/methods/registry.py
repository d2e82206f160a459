"""The training-recipe registry: ``method`` in a config names one of these tasks."""
from tfloc.registry import Registry

METHODS: Registry = Registry("method")
