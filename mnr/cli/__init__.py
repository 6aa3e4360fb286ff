"""The `mnr` command line: click commands that parse, call and print; nothing else lives here.

`base` holds the group and what the commands share; each other module adds its commands to it
when imported: `data` (synth, check), `models` (models, register, promote, predict, evaluate),
`training` (train, cv, tune) and `lr_find` (lr-find).
"""

from __future__ import annotations

from mnr.cli import data, lr_find, models, training  # noqa: F401 - importing them adds their commands
from mnr.cli.base import main

__all__ = ["main"]
