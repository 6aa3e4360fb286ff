"""The built-in dataset generator: Kaggle layout, determinism, and the physics a model relies on."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnr.data.manifest import read_manifest
from mnr.data.synth import (
    INSTRUMENTS,
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
from mnr.labels import MIDI_OFFSET, label_to_frequency, label_to_name

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
    # the Kaggle layout, and beside it (never inside train/ or test/) the manifest
    assert sorted(p.name for p in tiny.iterdir()) == [
        "manifest.csv",
        "test",
        "test_truth.txt",
        "train",
    ]
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
    assert sorted(p.name for p in empty.iterdir()) == ["manifest.csv", "train"]  # no empty test


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


def test_the_manifest_names_every_image_and_each_key_gets_every_instrument(
    tmp_path: Path,
) -> None:
    root = generate_dataset(
        tmp_path / "m", per_class=4, test_per_class=2, workers=1, progress=False, labels=LABELS
    )
    manifest = read_manifest(root / "manifest.csv")
    train = _read_truth(root / "train" / "truth.txt")
    test = _read_truth(root / "test_truth.txt")
    assert set(manifest) == {("train", n) for n, _ in train} | {("test", n) for n, _ in test}
    for label in LABELS:  # 4 training images per key: each family plays one
        played = sorted(manifest[("train", n)] for n, lab in train if lab == label)
        assert played == sorted(INSTRUMENTS), (label, played)
    # the CSV also carries the label and its note name, for a person reading it
    lines = (root / "manifest.csv").read_text().splitlines()
    assert lines[0] == "split,file,label,note,instrument"
    truth = dict(train) | dict(test)
    for line in lines[1:]:
        _, name, label, note, _ = line.split(",")
        assert int(label) == truth[name] and note == label_to_name(int(label)), line


def test_only_the_instruments_asked_for_are_played(tmp_path: Path) -> None:
    config = SynthConfig(instruments=("organ",))
    root = generate_dataset(
        tmp_path / "o", per_class=2, test_per_class=0, workers=1, progress=False, labels=[3],
        config=config,
    )  # fmt: skip
    assert set(read_manifest(root / "manifest.csv").values()) == {"organ"}
    with pytest.raises(MnrError, match="banjo"):
        SynthConfig(instruments=("piano", "banjo"))


def _partial_levels(instrument: str, midi: int, seed: int, count: int = 16) -> np.ndarray:
    """Level in dB (0 = the strongest) of harmonics 1..count of a dry note, from the spectrum
    of the whole clip; a stiff string's partials are looked for a little sharp."""
    rng = np.random.default_rng(seed)
    dry, _ = INSTRUMENTS[instrument](midi, rng=rng, config=CLEAN)
    spectrum = np.abs(np.fft.rfft(dry * np.hanning(dry.size)))
    freqs = np.fft.rfftfreq(dry.size, 1.0 / CLEAN.sample_rate)
    f0 = label_to_frequency(midi - MIDI_OFFSET)
    peaks = []
    for n in range(1, count + 1):
        band = (freqs > n * f0 * 0.985) & (freqs < n * f0 * 1.03)
        peaks.append(spectrum[band].max())
    levels = 20 * np.log10(np.maximum(np.array(peaks), 1e-12))
    return levels - levels.max()


def _decay_db(instrument: str, midi: int, seed: int) -> float:
    """How far the dry note falls from 50-150 ms to 250-350 ms after it starts (before any
    damper, which acts from 350 ms on)."""
    dry, _ = INSTRUMENTS[instrument](midi, rng=np.random.default_rng(seed), config=CLEAN)
    sr = CLEAN.sample_rate
    start = int(np.argmax(np.abs(dry) > 0))

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(dry[start + int(a * sr) : start + int(b * sr)] ** 2)))

    return 20 * np.log10(rms(0.05, 0.15) / rms(0.25, 0.35))


def test_instrument_families_differ_where_a_model_must_tell_them_apart() -> None:
    seeds = range(8)
    a2 = 45  # 110 Hz: harmonics 1..16 all lie under 2 kHz
    partials = {
        name: np.median([(_partial_levels(name, a2, s) > -40).sum() for s in seeds])
        for name in INSTRUMENTS
    }
    # partial count: an electric piano's pickup and an organ's drawbars make a few, strings many
    assert partials["epiano"] <= 8 and partials["organ"] <= 7, partials
    assert partials["piano"] >= 12 and partials["harpsichord"] >= 12, partials

    # decay: an organ holds its level while the key is down; struck and plucked strings fall
    decay = {name: np.median([_decay_db(name, a2, s) for s in seeds]) for name in INSTRUMENTS}
    assert abs(decay["organ"]) < 2.0, decay
    assert decay["piano"] > 3.0 and decay["harpsichord"] > 1.0, decay

    # fundamental strength in the lowest octave: a piano's soundboard barely radiates A0's
    # 27.5 Hz, while an electric piano's fundamental is strong on some notes and weak on others
    a0 = 21
    piano_f1 = [_partial_levels("piano", a0, s)[0] for s in seeds]
    assert max(piano_f1) < -10.0, piano_f1
    epiano_f1 = [_partial_levels("epiano", a0, s)[0] for s in range(16)]
    assert max(epiano_f1) > -3.0 and min(epiano_f1) < -8.0, epiano_f1
