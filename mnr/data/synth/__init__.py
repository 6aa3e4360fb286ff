"""The built-in dataset: synthetic piano notes rendered as mel-spectrogram PNGs in the Kaggle layout.

A fresh machine has no Kaggle data, yet every command (train, tune, the tests) needs a labelled
set. This package synthesises one in four steps, a module each:

- `instruments`: the families played (`piano`, `electric`, `plucked`, `organ`: one module each)
  and `render_note`, a note of one of them put in a room (`sound`);
- `mel`: its log-mel spectrogram, as librosa computes it;
- `drawing`: the spectrogram drawn as an image;
- `dataset`: thousands of them written in the Kaggle layout, each image from its own seed.

The spectrogram follows librosa's defaults where the Kaggle images seem to (centred Hann-window
STFT, power to dB with ``ref=max, top_db=80``, the magma colour map, low frequencies at the
bottom), and departs where the task needs it (see `SynthConfig`).

Example::

    from mnr.data.synth import generate_dataset
    if __name__ == "__main__":  # workers are spawned processes, which re-import __main__
        root = generate_dataset("/tmp/synth", per_class=32, test_per_class=10, seed=0)
        # root/train/*.png, root/train/truth.txt, root/test/*.png, root/test_truth.txt
"""

from __future__ import annotations

from mnr.data.synth.config import DEFAULT_CONFIG, SynthConfig
from mnr.data.synth.dataset import (
    MANIFEST_FILE,
    SPLITS,
    TEST_TRUTH_FILE,
    TRUTH_FILE,
    generate_dataset,
    synthesize_image,
)
from mnr.data.synth.drawing import spectrogram_image
from mnr.data.synth.instruments import INSTRUMENTS, render_note
from mnr.data.synth.mel import mel_spectrogram_db
from mnr.data.synth.piano import inharmonicity

__all__ = [
    "DEFAULT_CONFIG",
    "INSTRUMENTS",
    "MANIFEST_FILE",
    "SPLITS",
    "TEST_TRUTH_FILE",
    "TRUTH_FILE",
    "SynthConfig",
    "generate_dataset",
    "inharmonicity",
    "mel_spectrogram_db",
    "render_note",
    "spectrogram_image",
    "synthesize_image",
]
