"""Export: SavedModels in the TF Serving layout that take raw CSI."""
from tfloc.export.saved_model import export_saved_model, serving_model

__all__ = ["export_saved_model", "serving_model"]
