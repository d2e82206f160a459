"""The physical limit of positioning from CSI: Fisher information and the position error
bound (Cramér-Rao) of the channel the pipeline synthesises (:mod:`tfloc.physics.fisher`)."""
from tfloc.physics.fisher import (SPEED_OF_LIGHT, csi_jacobian, csi_model, fisher_information, free_space_paths,
                                  position_error_bound, position_fim, upa_element_positions)

__all__ = ["SPEED_OF_LIGHT", "csi_jacobian", "csi_model", "fisher_information", "free_space_paths",
           "position_error_bound", "position_fim", "upa_element_positions"]
