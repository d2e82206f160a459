"""tfloc: simulation-native CSI positioning in TensorFlow/Keras.

Data flows one way: ``sim`` (Sionna RT) -> ``data`` (CIR -> CSI -> features,
tf.data) -> ``layers``/``models`` -> ``losses``/``metrics`` -> ``methods``
(training recipes) -> ``export``.
"""
__version__ = "0.1.0"
