"""The built-in dataset generator: Kaggle layout, determinism, and the physics a model relies on."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnr.data.synth import (
    SynthConfig,
    generate_dataset,
    inharmonicity,
    mel_spectrogram_db,
    render_note,
    spectrogram_image,
    synthesize_image,
)
from mnr.data.synth import dataset as synth_dataset
from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, label_to_frequency

LABELS = [10, 40, 70]  # G1, C#4, G6: one per register
HEX_NAME = re.compile(r"^[0-9a-f]{12}\.png$")
# The note alone, nearly: no reverb, no hum, noise 60 dB down, so tests see the string's physics.
CLEAN = SynthConfig(snr_db=(60.0, 60.0), reverb_probability=0.0, hum_probability=0.0)


def _read_truth(path: Path) -> list[tuple[str, int]]:
    data = path.read_bytes()
    assert b"\r" not in data and data.endswith(b"\n"), f"{path}: want LF line endings"
    rows = []
    for line in data.decode("ascii").splitlines():
        name, label = line.split(" ")
        rows.append((name, int(label)))
    return rows


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 2 train images, 1 test image each, rendered in this process."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    returned = generate_dataset(
        out, per_class=2, test_per_class=1, seed=0, workers=1, progress=False, labels=LABELS
    )
    assert returned == out
    return out


def test_layout_is_kaggle(tiny: Path) -> None:
    assert sorted(p.name for p in tiny.iterdir()) == ["test", "test_truth.txt", "train"]
    train = _read_truth(tiny / "train" / "truth.txt")
    test = _read_truth(tiny / "test_truth.txt")
    assert sorted(label for _, label in train) == sorted(LABELS * 2)
    assert sorted(label for _, label in test) == sorted(LABELS)
    assert {name for name, _ in train} == {p.name for p in (tiny / "train").glob("*.png")}
    assert sorted(p.name for p in (tiny / "test").iterdir()) == sorted(name for name, _ in test)
    assert not (tiny / "test" / "truth.txt").exists()
    for name, _ in train + test:
        assert HEX_NAME.match(name), name
    for png in [*(tiny / "train").glob("*.png"), *(tiny / "test").glob("*.png")]:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.mode == "RGBA" and image.size == (520, 394)
            assert (np.asarray(image)[..., 3] == 255).all()


def test_file_names_depend_on_the_seed_not_the_labels(tmp_path: Path, tiny: Path) -> None:
    other = generate_dataset(
        tmp_path / "other", per_class=2, test_per_class=1, workers=1, progress=False,
        labels=[11, 41, 71],
    )  # fmt: skip
    names = [name for name, _ in _read_truth(tiny / "train" / "truth.txt")]
    assert names == [name for name, _ in _read_truth(other / "train" / "truth.txt")]


def test_same_seed_same_bytes_with_any_number_of_workers(tmp_path: Path, tiny: Path) -> None:
    again = generate_dataset(
        tmp_path / "again", per_class=2, test_per_class=1, seed=0, workers=2, progress=False,
        labels=LABELS,
    )  # fmt: skip
    assert _files(again) == _files(tiny)


def test_different_seeds_differ() -> None:
    one = synthesize_image(40, seed=0, split="train", index=0)
    assert np.array_equal(one, synthesize_image(40, seed=0, split="train", index=0))
    assert not np.array_equal(one, synthesize_image(40, seed=1, split="train", index=0))
    assert not np.array_equal(one, synthesize_image(40, seed=0, split="test", index=0))
    assert not np.array_equal(one, synthesize_image(40, seed=0, split="train", index=1))


def test_refuses_bad_arguments_and_a_used_folder(tmp_path: Path) -> None:
    with pytest.raises(MnrError, match="per_class"):
        generate_dataset(tmp_path / "a", per_class=0, progress=False)
    with pytest.raises(MnrError, match="labels"):
        generate_dataset(tmp_path / "a", labels=[88], progress=False)
    with pytest.raises(MnrError, match="split"):
        synthesize_image(0, seed=0, split="valid", index=0)
    used = tmp_path / "used"
    (used / "train").mkdir(parents=True)
    (used / "train" / "x.png").write_bytes(b"")
    with pytest.raises(MnrError, match="not empty"):
        generate_dataset(used, per_class=1, labels=[0], workers=1, progress=False)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)  # an empty train/ is fine
    generate_dataset(empty, per_class=1, test_per_class=0, labels=[0], workers=1, progress=False)
    assert len(_read_truth(empty / "train" / "truth.txt")) == 1
    assert sorted(p.name for p in empty.iterdir()) == ["train"]  # no empty test set


def test_a_failed_run_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(job: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_dataset, "_write_one", broken)
    with pytest.raises(RuntimeError):
        generate_dataset(tmp_path / "out", per_class=1, labels=[0], workers=1, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def _lowest_strong_band(label: int, seed: int) -> int:
    """Mel band of the lowest local peak within 15 dB of the strongest, once the attack is over.

    Frames from 0.45 s on: onsets come by 0.2 s and the hammer's knock and the body's thump
    (not partials of the string) are 50 dB down a quarter second later.
    """
    audio = render_note(label + MIDI_OFFSET, rng=np.random.default_rng(seed), config=CLEAN)
    late = int(0.45 * CLEAN.sample_rate / CLEAN.hop_length)
    power = (10.0 ** (mel_spectrogram_db(audio, config=CLEAN)[:, late:] / 10.0)).mean(axis=1)
    level = 10.0 * np.log10(power / power.max())
    peaks = (level[1:-1] >= level[:-2]) & (level[1:-1] >= level[2:]) & (level[1:-1] > -15.0)
    return int(np.nonzero(peaks)[0][0]) + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lowest_strong_partial_rises_with_the_key(seed: int) -> None:
    bands = [_lowest_strong_band(label, seed) for label in LABELS]
    assert bands[0] < bands[1] < bands[2], bands


def _peak_frequency(spectrum: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> float:
    band = (freqs > lo) & (freqs < hi)
    return float(freqs[band][np.argmax(spectrum[band])])


def test_treble_partials_are_stretched_by_inharmonicity() -> None:
    label = 75  # C7, 2093 Hz: B ~ 9e-3, so partial 2 is ~30 cents sharp of 2 f0
    for seed in range(3):
        audio = render_note(label + MIDI_OFFSET, rng=np.random.default_rng(seed), config=CLEAN)
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
        freqs = np.fft.rfftfreq(audio.size, 1.0 / CLEAN.sample_rate)
        nominal = label_to_frequency(label)
        f1 = _peak_frequency(spectrum, freqs, nominal * 0.97, nominal * 1.03)
        f2 = _peak_frequency(spectrum, freqs, 2 * f1 * 0.995, 2 * f1 * 1.05)
        assert f2 / f1 > 2.005, (seed, f1, f2)  # stiff string: sharp of the harmonic 2 f0


def test_inharmonicity_is_lowest_in_the_low_tenor() -> None:
    assert inharmonicity(21) > inharmonicity(40) < inharmonicity(60) < inharmonicity(108)
    assert 1e-4 < inharmonicity(40) < 3e-4 and 1e-2 < inharmonicity(108) < 5e-2


def test_image_puts_low_frequencies_at_the_bottom() -> None:
    mel_db = np.full((128, 50), -80.0)
    mel_db[0] = 0.0  # only the lowest band is loud
    image = spectrogram_image(mel_db, config=CLEAN)
    assert image.shape == (394, 520, 4) and image.dtype == np.uint8
    brightness = image[..., :3].astype(int).sum(axis=(1, 2))
    assert brightness[-1] > brightness[0]
