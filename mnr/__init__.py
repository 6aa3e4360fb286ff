"""mnr: Music Note Recognition.

Train, tune, track and serve CNNs that name the piano key (0 = A0 ... 87 = C8) sounding in a
mel-spectrogram image laid out like the Kaggle task "Music Scale Recognition by CNN".
"""

from __future__ import annotations

from mnr.errors import MnrError

__version__ = "0.1.0"
__all__ = ["MnrError", "__version__"]
