"""Paper studies: each runs a list of experiments and writes docs/results/seedNNN.md.

``python -m tfloc.studies.seed002 [--seeds N] [--only GROUP ...] [--pages-only]``
"""
