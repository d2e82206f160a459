"""Export config section (owned by ``tfloc.export``)."""
from __future__ import annotations

from dataclasses import dataclass

from tfloc.config import param


@dataclass
class ExportConfig:
    enabled: bool = param(True)
    model_name: str = param("tfloc", doc="name of the served model: export/<model_name>/<version>")
    version: int = param(1, min=1)
