"""Losses, chosen by registered name (``training.loss``)."""
import keras

from tfloc.registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("mse")
def mse():
    """Mean squared position error [m^2]."""
    return keras.losses.MeanSquaredError(name="mse")


@LOSSES.register("huber")
def huber():
    """Huber loss with a 1 m knee: MSE near the target, L1 on outliers."""
    return keras.losses.Huber(delta=1.0, name="huber")


def build_loss(name: str):
    return LOSSES.get(name)()


__all__ = ["LOSSES", "build_loss"]
