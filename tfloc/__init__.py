"""tfloc: simulation-native CSI positioning in TensorFlow/Keras.

Data flows one way, each floor importing only downward: ``sim`` (Sionna RT) -> ``data``
(CIR -> CSI -> features, tf.data) -> ``layers``/``models`` -> ``losses``/``metrics``/``physics``
-> ``methods`` (training recipes), ``evaluation``, ``export`` -> ``run`` (orchestration:
runner, tuning, distribution, command lines) -> ``studies``.
"""
__version__ = "0.1.0"
