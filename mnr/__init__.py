"""mnr: Music Note Recognition.

Train, tune, track and serve CNNs that name the piano key (0 = A0 ... 87 = C8) sounding in a
mel-spectrogram image laid out like the Kaggle task "Music Scale Recognition by CNN".

From Python (a notebook, a script), the commands are functions (`mnr.api`)::

    import mnr

    result = mnr.train(model="baseline_cnn", epochs=3)
    model = mnr.load(result.model_uri)
    model.predict("path/to/test")  # a DataFrame like output.csv
"""

from __future__ import annotations

from mnr.api import LoadedModel, check, cv, load, lr_find, train, tune
from mnr.errors import MnrError

__version__ = "0.1.0"
__all__ = [
    "LoadedModel",
    "MnrError",
    "__version__",
    "check",
    "cv",
    "load",
    "lr_find",
    "train",
    "tune",
]
