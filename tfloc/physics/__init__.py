"""The physical limit of positioning from CSI: Fisher information and the position error bound
(Cramér-Rao) of the channel the pipeline synthesises: reference single-UE forms
(:mod:`tfloc.physics.fisher`), the batched bound of a site's traced links
(:mod:`tfloc.physics.bound`), and Sionna RT's array geometry (:mod:`tfloc.physics.array`)."""
from tfloc.physics.bound import (BoundError, BoundSetup, bound_cache_entry, link_efims, mirror_paths,
                                 peb_from_efim, position_efim, reflection_planes, sample_pebs, summarize)
from tfloc.physics.fisher import (SPEED_OF_LIGHT, csi_jacobian, csi_model, fisher_information, free_space_paths,
                                  position_error_bound, position_fim, upa_element_positions)

__all__ = ["SPEED_OF_LIGHT", "BoundError", "BoundSetup", "bound_cache_entry", "csi_jacobian", "csi_model",
           "fisher_information", "free_space_paths", "link_efims", "mirror_paths", "peb_from_efim",
           "position_efim", "position_error_bound", "position_fim", "reflection_planes", "sample_pebs",
           "summarize", "upa_element_positions"]
