"""The shipped experiment configs, one YAML per experiment.

This folder is installed as the package `mnr.experiments` (pyproject.toml maps it), so that a
wheel carries the configs and `mnr train --model bn_cnn` finds `bn_cnn.yaml` wherever mnr is
installed; `mnr.config` reads them through `importlib.resources`.
"""
