"""Export: SavedModels in the TF Serving layout that take raw CSI."""
from tfloc.export.config import ExportConfig
from tfloc.export.saved_model import ExportModule, ServingModule

__all__ = ["ExportConfig", "ExportModule", "ServingModule"]
