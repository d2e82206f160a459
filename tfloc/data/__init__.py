"""Data: CIR -> CSI synthesis, impairments, angle-delay features, tf.data pipelines."""
from tfloc.data.csi import (add_awgn, from_real_imag, paths_to_csi, subcarrier_frequencies,
                            timing_advance_shift, to_real_imag)
from tfloc.data.features import angle_delay_features
from tfloc.data.pipeline import CSIPipeline, Splits, dataset_to_numpy, make_splits
from tfloc.data import transforms

__all__ = ["add_awgn", "from_real_imag", "paths_to_csi", "subcarrier_frequencies",
           "timing_advance_shift", "to_real_imag", "angle_delay_features", "CSIPipeline",
           "Splits", "dataset_to_numpy", "make_splits", "transforms"]
