"""Data: CIR -> CSI synthesis, impairments, angle-delay features, tf.data pipelines."""
from tfloc.data.csi import (add_awgn, from_real_imag, paths_to_csi, subcarrier_frequencies,
                            timing_advance_shift, to_real_imag)
from tfloc.data.features import csi_features, feature_shape
from tfloc.data.pipeline import CSIPipeline, Splits, dataset_to_numpy, make_splits
from tfloc.data import transforms

__all__ = ["add_awgn", "from_real_imag", "paths_to_csi", "subcarrier_frequencies",
           "timing_advance_shift", "to_real_imag", "csi_features", "feature_shape", "CSIPipeline",
           "Splits", "dataset_to_numpy", "make_splits", "transforms"]
