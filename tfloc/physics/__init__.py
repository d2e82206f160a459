"""The physical limit of positioning from CSI: Fisher information and the position error bound
(Cramér-Rao) of the channel the pipeline synthesises: reference single-UE forms
(:mod:`tfloc.physics.fisher`), the batched bound of a site's traced links
(:mod:`tfloc.physics.bound`; the cache-entry tool is :mod:`tfloc.run.bound`), and Sionna RT's array geometry (:mod:`tfloc.physics.array`)."""
from tfloc.physics.bound import (BoundError, BoundSetup, link_efims, mirror_paths,
                                 peb_from_efim, position_efim, reflection_planes, sample_pebs, summarize)
from tfloc.physics.fisher import (SPEED_OF_LIGHT, csi_jacobian, csi_model, fisher_information, free_space_paths,
                                  position_error_bound, position_fim, upa_element_positions)

__all__ = ["SPEED_OF_LIGHT", "BoundError", "BoundSetup", "csi_jacobian", "csi_model",
           "fisher_information", "free_space_paths", "link_efims", "mirror_paths", "peb_from_efim",
           "position_efim", "position_error_bound", "position_fim", "reflection_planes", "sample_pebs",
           "summarize", "upa_element_positions"]
