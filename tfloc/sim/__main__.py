"""``python -m tfloc.sim {build,merge,inspect,bound} ...``: the dataset tool.

An entry point, not part of the simulation floor: the tool lives in :mod:`tfloc.run.dataset`
(it reads experiment configs and runs the bound), and nothing imports this module.
"""
import sys

from tfloc.run.cli import run_cli


def main(argv=None):
    from tfloc.run.dataset import main as dataset_main   # after run_cli has quieted TensorFlow
    return dataset_main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
