"""Writing the built-in dataset: every image from its own seed, in the Kaggle layout.

Every image draws from its own generator ``np.random.default_rng([seed, split, label, index])``,
so on a given machine the output is byte-identical whatever the number of worker processes, and
growing ``per_class`` keeps the images that were already there (under new file names).

Beside the Kaggle layout (never inside train/ or test/, so a reader of that layout sees nothing
new) the root holds `manifest.csv`: for every image its split, file, label, note and the
instrument that played it, so that errors can be broken down by instrument.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnr.console import progress as progress_bar
from mnr.data.images import png_bytes
from mnr.data.manifest import MANIFEST_COLUMNS, MANIFEST_FILE, write_manifest
from mnr.data.parallel import process_map
from mnr.data.synth.config import DEFAULT_CONFIG, SynthConfig
from mnr.data.synth.drawing import spectrogram_image
from mnr.data.synth.instruments import render_note
from mnr.data.synth.mel import mel_spectrogram_db
from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, NUM_KEYS, label_to_name

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "SPLITS",
    "TEST_TRUTH_FILE",
    "TRUTH_FILE",
    "generate_dataset",
    "instrument_for",
    "synthesize_image",
]

SPLITS = {"train": 0, "test": 1}  # split name -> the number that seeds its images
TRUTH_FILE = "truth.txt"  # `filename label` per line, inside the train folder (Kaggle layout)
TEST_TRUTH_FILE = "test_truth.txt"  # the test answers, beside (never inside) the test folder
_NAME_STREAM = 0x6E616D65  # seeds the file names, apart from every image's own stream
_NAME_HEX = 12  # hex digits in a file name: 48 random bits


def instrument_for(label: int, index: int, instruments: tuple[str, ...]) -> str:
    """The family that plays sample `index` of class `label`: dealt out in turn, starting one
    further along for each key, so every key gets each family equally often and so does each
    split as a whole, even when a key's image count is not a multiple of the families."""
    return instruments[(int(label) + int(index)) % len(instruments)]


def synthesize_image(
    label: int,
    *,
    seed: int,
    split: str,
    index: int,
    config: SynthConfig = DEFAULT_CONFIG,
    instrument: str | None = None,
) -> np.ndarray:
    """The RGBA image of sample `index` of class `label` in `split` ("train" or "test").

    Its generator is ``np.random.default_rng([seed, split, label, index])``: the image depends
    on nothing else, which is what makes generation reproducible in any order or process.
    `instrument` defaults to `instrument_for(label, index, config.instruments)`.
    """
    if split not in SPLITS:
        raise MnrError(f"split {split!r} unknown: use one of {sorted(SPLITS)}")
    if not 0 <= int(label) < NUM_KEYS:
        raise MnrError(f"label {label} is not a piano key: labels run 0 (A0) .. 87 (C8)")
    if int(seed) < 0 or int(index) < 0:
        raise MnrError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if instrument is None:
        instrument = instrument_for(label, index, config.instruments)
    rng = np.random.default_rng([int(seed), SPLITS[split], int(label), int(index)])
    audio = render_note(int(label) + MIDI_OFFSET, rng=rng, config=config, instrument=instrument)
    return spectrogram_image(mel_spectrogram_db(audio, config=config), config=config)


def _write_one(job: tuple[str, int, str, int, int, SynthConfig, str]) -> None:
    """Render one image and write it; runs in a worker, so it returns nothing to pickle back."""
    path, label, split, index, seed, config, instrument = job
    image = synthesize_image(
        label, seed=seed, split=split, index=index, config=config, instrument=instrument
    )
    Path(path).write_bytes(png_bytes(image, compress_level=config.compress_level))


def file_names(seed: int, count: int) -> list[str]:
    """`count` distinct random hex names from the seed alone: they say nothing of the label (and
    they mark a folder as the generator's: `mnr.data.builtin` checks them before replacing one)."""
    rng = np.random.default_rng([int(seed), _NAME_STREAM])
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = f"{int(rng.integers(0, 16**_NAME_HEX)):0{_NAME_HEX}x}.png"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _check_target(out: Path) -> None:
    for part in ("train", "test"):
        folder = out / part
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise MnrError(
                f"{folder} already exists and is not empty: remove it or choose another folder"
            )
    for name in (TEST_TRUTH_FILE, MANIFEST_FILE):
        if (out / name).exists():
            raise MnrError(f"{out / name} already exists: remove it or choose another folder")


def generate_dataset(
    out: str | Path,
    *,
    per_class: int = 32,
    test_per_class: int = 10,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    config: SynthConfig | None = None,
    labels: Sequence[int] | None = None,
) -> Path:
    """Write a synthetic dataset in the Kaggle layout and return its root `out`.

    Layout: ``out/train/*.png`` with ``out/train/truth.txt``, ``out/test/*.png`` with the
    answers in ``out/test_truth.txt``; each line is ``filename label`` (label 0..87); and
    ``out/manifest.csv``, which instrument played each image (`MANIFEST_COLUMNS`). File
    names are random hex from the seed, so neither a name nor the sorted order hints at a
    label. Everything is written into ``out/.partial-*`` first and moved into place at the end
    (train/ last, since its truth.txt marks a finished set), so an interrupted or failed run
    leaves no half-written dataset behind.

    Args:
        out: dataset root; created if missing. Refused if ``train/`` or ``test/`` in it holds
            files, or ``test_truth.txt`` exists.
        per_class, test_per_class: images per class in train and test; with 0 test images
            no test/ or test_truth.txt is written.
        seed: the whole set is a function of it (and of `config` and `labels`).
        workers: processes; None means one per core this process may use, 1 renders in this
            process. Workers are spawned, so a script calling this needs the usual
            ``if __name__ == "__main__":`` guard.
        progress: show a tqdm bar.
        config: rendering settings (`config.instruments`: the families played, each key
            getting each equally often); None means `SynthConfig()`.
        labels: generate only these classes (tests use a handful); None means all 88.

    Example::

        generate_dataset("/tmp/tiny", per_class=2, test_per_class=1, labels=[10, 40, 70])
    """
    config = config or DEFAULT_CONFIG
    if int(per_class) < 1:
        raise MnrError(f"per_class must be >= 1, got {per_class}")
    if int(test_per_class) < 0:
        raise MnrError(f"test_per_class must be >= 0, got {test_per_class}")
    if int(seed) < 0:
        raise MnrError(f"seed must be >= 0, got {seed}")
    if workers is not None and int(workers) < 1:
        raise MnrError(f"workers must be >= 1, got {workers}")
    classes = list(range(NUM_KEYS)) if labels is None else sorted({int(x) for x in labels})
    if not classes or not all(0 <= c < NUM_KEYS for c in classes):
        raise MnrError(f"labels must be a non-empty list of keys 0..87, got {labels!r}")

    out = Path(out).expanduser()
    _check_target(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".partial-{uuid.uuid4().hex[:8]}"
    counts = {"train": int(per_class), "test": int(test_per_class)}
    samples = [(s, c, i) for s in SPLITS for c in classes for i in range(counts[s])]
    names = file_names(seed, len(samples))
    instruments = config.instruments  # checked when the config was made
    jobs: list[tuple[str, int, str, int, int, SynthConfig, str]] = []
    truth: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    manifest: list[tuple[str, str, int, str, str]] = []
    for (split, label, index), name in zip(samples, names, strict=True):
        instrument = instrument_for(label, index, instruments)
        jobs.append(
            (str(partial / split / name), label, split, index, int(seed), config, instrument)
        )
        truth[split].append((name, label))
        manifest.append((split, name, label, label_to_name(label), instrument))

    truth_files = {"train": partial / "train" / TRUTH_FILE, "test": partial / TEST_TRUTH_FILE}
    splits = [split for split in SPLITS if counts[split] > 0]  # no empty test set
    try:
        for split in splits:
            (partial / split).mkdir(parents=True)
        with progress_bar(total=len(jobs), desc="synth", disable=not progress) as bar:
            for _ in process_map(_write_one, jobs, workers=workers, ordered=False, fresh=True):
                bar.update()
        for split in splits:
            lines = "".join(f"{name} {label}\n" for name, label in sorted(truth[split]))
            truth_files[split].write_bytes(lines.encode("ascii"))
        write_manifest(partial / MANIFEST_FILE, manifest)
        _check_target(out)  # someone may have written there meanwhile
        parts = ["test", TEST_TRUTH_FILE] if counts["test"] else []
        parts.append(MANIFEST_FILE)
        for part in [*parts, "train"]:  # train/truth.txt last: it marks a finished set
            target = out / part
            if target.is_dir():
                target.rmdir()  # empty, checked above
            os.replace(partial / part, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out
