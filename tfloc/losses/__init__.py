"""Losses, chosen by registered name (``training.loss``), and the seed-002 loss terms.

A registered loss is a factory ``(options, spec) -> fn(labels, outputs) -> [b]``
(per-sample values): ``labels`` and ``outputs`` are the dicts of named tensors
the pipeline and the models produce. Positions are compared in units of the
training labels' spread (``spec.target_std``), so loss weights mean the same on
every site.
"""
from __future__ import annotations

from dataclasses import dataclass

from tfloc.config import OneOf, param
from tfloc.registry import Registry
from tfloc.losses.alignment import (coral, global_alignment, lambda_ramp, local_alignment, mmd,
                                    multilinear_map, batch_distribution, symmetric_kl, weight_l2)
from tfloc.losses.classification import focal_cross_entropy
from tfloc.losses.regression import (accumulated_squared_error, negative_cosine_similarity,
                                    position_huber, standardized_squared_error)
from tfloc.losses.uncertainty import (HomoscedasticWeighting, gaussian_crps, gaussian_nll,
                                     gaussian_nll_tril)

LOSSES: Registry = Registry("loss")


class LossConfig(OneOf):
    """``training.loss: {type: huber, huber: {delta: 0.5}}`` or just ``mse``."""
    registry = LOSSES
    default = "mse"


@LOSSES.register("mse")
def _mse(options, spec):
    """Squared position error in units of the label spread, summed over axes (seed 002 eq. 8)."""
    return lambda labels, outputs: standardized_squared_error(
        labels["position"], outputs["position"], spec.target_std)


@LOSSES.register("gaussian_nll")
def _gaussian_nll(options, spec):
    """Gaussian negative log-likelihood with the model's per-sample ``position_std``
    (aleatoric uncertainty; TFP's MultivariateNormalDiag), in units of the label spread.
    A method that uses it builds its model with a ``position_std`` head."""
    import tensorflow as tf
    mean = tf.constant(spec.target_mean, tf.float32)
    std = tf.constant(spec.target_std, tf.float32)

    def loss(labels, outputs):
        y, mu = (labels["position"] - mean) / std, (outputs["position"] - mean) / std
        if "position_scale_tril" in outputs:   # full covariance: L in units of the spread
            return gaussian_nll_tril(y, mu, outputs["position_scale_tril"] / std[:, None])
        return gaussian_nll(y, mu, outputs["position_std"] / std)
    return loss


@LOSSES.register("gaussian_crps")
def _gaussian_crps(options, spec):
    """CRPS of the predicted Gaussian per axis (seed 001 eq. 9), summed over axes, in units
    of the label spread: a proper scoring rule that, unlike the NLL, grows only linearly
    with a wrong sigma (needs the ``position_std`` head)."""
    import tensorflow as tf
    std = tf.constant(spec.target_std, tf.float32)
    return lambda labels, outputs: tf.reduce_sum(gaussian_crps(
        labels["position"] / std, outputs["position"] / std, outputs["position_std"] / std), axis=-1)


@LOSSES.register("accumulated_mse")
def _accumulated_mse(options, spec):
    """Seed 004 eq. 34: the squared errors of the estimates after each subcarrier, later ones
    weighted more (w_i = 2 i / (N (N + 1))); needs the model's ``position_sequence``."""
    return lambda labels, outputs: accumulated_squared_error(
        labels["position"], outputs["position_sequence"], spec.target_std)


#: losses that need the model's ``position_std`` output
UNCERTAINTY_LOSSES = ("gaussian_nll", "gaussian_crps")


@dataclass
class HuberOptions:
    delta: float = param(1.0, min=1e-6, doc="knee, in units of the label spread")


@LOSSES.register("huber", config=HuberOptions)
def _huber(options, spec):
    """Huber loss of the standardised position error: MSE near the target, L1 on outliers."""
    return lambda labels, outputs: position_huber(labels["position"], outputs["position"],
                                                  spec.target_std, options.delta)


def build_loss(loss_cfg: LossConfig, spec):
    """The per-sample loss function chosen by ``loss_cfg``."""
    return LOSSES.get(loss_cfg.type)(loss_cfg.options, spec)


__all__ = ["LOSSES", "LossConfig", "build_loss", "standardized_squared_error", "position_huber",
           "focal_cross_entropy", "batch_distribution", "symmetric_kl", "multilinear_map",
           "local_alignment", "global_alignment", "lambda_ramp", "weight_l2", "mmd", "coral",
           "gaussian_nll", "gaussian_nll_tril", "gaussian_crps", "HomoscedasticWeighting", "UNCERTAINTY_LOSSES"]
