"""Export: SavedModels in the TF Serving layout that take raw CSI."""
from tfloc.export.config import ExportConfig
from tfloc.export.fronthaul import CloudModule, EdgeModule, fronthaul_bits
from tfloc.export.saved_model import ExportModule, ServingModule

__all__ = ["CloudModule", "EdgeModule", "ExportConfig", "ExportModule", "ServingModule", "fronthaul_bits"]
