"""The model registry: ``model.type`` in a config names one of these builders."""
from tfloc.registry import Registry

#: name -> builder(cfg_section, input_shape, output_dim, target_offset, target_scale)
MODELS: Registry = Registry("model")
