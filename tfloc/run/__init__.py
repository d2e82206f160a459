"""The application floor: orchestration on top of the recipes (:mod:`tfloc.methods`),
evaluation and export.

- :mod:`tfloc.run.experiment`: the experiment config root (every section, YAML, ``--set``)
- :mod:`tfloc.run.runner`: one run end to end (check -> trace -> task hooks -> evaluate -> export)
- :mod:`tfloc.run.tuning`: keras-tuner searches (``train.py --tune``)
- :mod:`tfloc.run.distribute`: tf.distribute strategies and worker roles
- :mod:`tfloc.run.cli`, :mod:`tfloc.run.dataset`, :mod:`tfloc.run.bound`: the command lines
  (``train.py``, ``evaluate.py``, ``python -m tfloc.sim``)

``from tfloc.run import train_and_evaluate, evaluate_run, load_config`` works; the modules
load on first use, so a command line can quiet TensorFlow before TensorFlow is imported.
"""
__all__ = ["evaluate_run", "load_config", "train_and_evaluate"]


def __getattr__(name):
    if name in ("train_and_evaluate", "evaluate_run"):
        import tfloc.run.runner as runner
        return getattr(runner, name)
    if name == "load_config":
        import tfloc.run.experiment as experiment
        return experiment.load_config
    raise AttributeError(f"module 'tfloc.run' has no attribute {name!r}")
