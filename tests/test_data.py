"""The Kaggle-layout reader, its validation, the decode-once cache and the splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_folder, write_png
from PIL import Image

from mnr.cli import main
from mnr.data import check_folder, kfold_indices, load_images, scan_folder, stratified_split
from mnr.data.folder import parse_truth
from mnr.data.images import decode_png, png_bytes
from mnr.errors import MnrError
from mnr.labels import (
    label_octave,
    label_to_frequency,
    label_to_midi,
    label_to_name,
    midi_to_label,
    name_to_label,
)


def test_label_helpers_round_trip() -> None:
    assert label_to_midi(0) == 21 and label_to_midi(87) == 108
    assert label_to_name(0) == "A0" and label_to_name(39) == "C4" and label_to_name(87) == "C8"
    assert label_to_frequency(0) == pytest.approx(27.5)
    assert label_to_frequency(87) == pytest.approx(4186.01, abs=0.01)
    assert name_to_label("C#4") == name_to_label("Db4") == 40
    assert all(name_to_label(label_to_name(label)) == label for label in range(88))
    assert all(midi_to_label(label_to_midi(label)) == label for label in range(88))
    assert label_octave(2) == 0 and label_octave(3) == 1
    with pytest.raises(MnrError):
        label_to_name(88)


def test_truth_accepts_crlf_bom_blank_lines_and_trailing_spaces(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    (tmp_path / "truth.txt").write_bytes(b"\xef\xbb\xbfa.png 3\r\n\r\n  b.png\t87   \r\n\n")
    image_set = scan_folder(tmp_path)
    assert image_set.filenames == ["a.png", "b.png"]
    assert image_set.labels == [3, 87]
    assert image_set.lines == [1, 3]
    assert image_set.problems == []


def test_unlabelled_folder_lists_pngs_sorted(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "c.PNG"):
        write_png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    image_set = scan_folder(tmp_path)
    assert not image_set.labelled
    assert image_set.filenames == ["a.png", "b.png", "c.PNG"]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"a.png", "found 1 field"),
        (b"a.png 3 extra", "found 3 field"),
        (b"a.png three", "not an integer"),
        (b"a.png -1", "out of range"),
        (b"a.png 88", "out of range"),
        (b"../a.png 3", "outside the data folder"),
        (b"/etc/passwd 3", "outside the data folder"),
        (b"C:\\x.png 3", "outside the data folder"),
        (b"\xff\xfe.png 3", "not UTF-8"),
        (b"missing.png 3", "missing"),
    ],
)
def test_each_bad_truth_line_is_reported_with_its_line(
    tmp_path: Path, line: bytes, fragment: str
) -> None:
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "ok.png")
    (tmp_path / "truth.txt").write_bytes(b"ok.png 1\n" + line + b"\n")
    image_set = scan_folder(tmp_path)
    errors = image_set.errors
    assert len(errors) == 1, errors
    assert errors[0].line == 2
    assert fragment in errors[0].message
    assert str(errors[0]).startswith(f"{tmp_path / 'truth.txt'}:2: error:")


def test_duplicate_names_point_at_the_first_line(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "truth.txt").write_text("a.png 1\na.png 2\n")
    entries, problems = parse_truth(tmp_path / "truth.txt")
    assert [e[0] for e in entries] == ["a.png"]
    assert problems[0].line == 2 and "first listed on line 1" in problems[0].message


def test_symlink_outside_the_folder_is_refused(tmp_path: Path) -> None:
    outside = write_png(tmp_path / "outside" / "secret.png")
    folder = tmp_path / "data"
    folder.mkdir()
    os.symlink(outside, folder / "link.png")
    (folder / "truth.txt").write_text("link.png 4\n")
    errors = scan_folder(folder).errors
    assert "outside the data folder" in errors[0].message


def test_empty_sets_are_errors(tmp_path: Path) -> None:
    (tmp_path / "truth.txt").write_text("\n\n")
    assert "empty" in scan_folder(tmp_path).errors[0].message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty" in scan_folder(empty).errors[0].message


def test_unlisted_png_is_a_warning_not_an_error(tmp_path: Path) -> None:
    write_folder(tmp_path, [1, 2])
    write_png(tmp_path / "stray.png")
    image_set = scan_folder(tmp_path)
    assert image_set.errors == []
    assert "not listed" in image_set.warnings[0].message


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "P", "LA", "I;16"])
def test_every_png_mode_becomes_three_channel_uint8(tmp_path: Path, mode: str) -> None:
    path = write_png(tmp_path / "x.png", mode=mode, size=(52, 40))
    array = decode_png(path, size=None)
    assert array.shape == (3, 40, 52) and array.dtype == np.uint8
    resized = decode_png(path, size=(16, 24))
    assert resized.shape == (3, 16, 24)


def test_resize_keeps_one_mel_band_per_row_and_averages_time(tmp_path: Path) -> None:
    """A Kaggle-shaped render (128 bands stretched to 394 rows) comes back band for band at 128
    rows, not blended with its neighbours; along time the columns are averaged."""
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 256, size=(128, 3), dtype=np.uint8)
    band_of_row = np.arange(394) * 128 // 394  # nearest-neighbour stretch, as the synthesiser draws
    rgb = np.repeat(bands[band_of_row][:, None, :], 520, axis=1)
    rgb[:, ::2] = rgb[:, ::2] // 2  # alternate columns darker: time must be averaged, not sampled
    Image.fromarray(rgb, "RGB").save(tmp_path / "render.png")
    array = decode_png(tmp_path / "render.png", size=(128, 16))
    expected = (bands.astype(int) + bands // 2) / 2  # the mean of a full and a halved column
    assert np.abs(array.transpose(1, 2, 0) - expected[:, None, :]).max() <= 1


def test_rgba_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent: compositing would give black or white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert decode_png(tmp_path / "t.png", size=None)[0].min() == 200


def test_sixteen_bit_scales_to_eight(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    assert decode_png(tmp_path / "w.png", size=None).min() == 255


def _broken_files(folder: Path) -> dict[str, str]:
    """Broken images and the message fragment each must produce."""
    good = write_png(folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not a png\n")
    # A valid PNG header (IHDR) that claims 100000 x 100000 pixels.
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )
    (folder / "bomb.png").write_bytes(bomb)
    return {
        "truncated.png": "truncated",
        "empty.png": "empty",
        "text.png": "not a PNG",
        "bomb.png": "large",
    }


def test_broken_images_each_named_with_their_line(tmp_path: Path) -> None:
    expected = _broken_files(tmp_path)
    names = ["good.png", *expected]
    (tmp_path / "truth.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    report = check_folder(tmp_path, workers=1, progress=False)
    assert not report.ok
    by_name = {p.message.split(":")[0]: p for p in report.errors}
    assert set(by_name) == set(expected)
    for name, fragment in expected.items():
        assert fragment in by_name[name].message, by_name[name]
        assert by_name[name].line == names.index(name) + 1


def test_data_check_cli_names_every_problem_and_exits_nonzero(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "d", [1, 2, 3])
    good = (folder / "img000.png").read_bytes()
    (folder / "img001.png").write_bytes(good[:100])  # corrupt
    (folder / "truth.txt").write_text(
        "img000.png 1\nimg001.png 2\nimg002.png 99\nghost.png 4\nimg000.png 5\n"
    )
    result = CliRunner().invoke(main, ["data", "check", str(folder), "--workers", "1"])
    assert result.exit_code == 1, result.output
    out = result.output
    assert "truth.txt:2: error: img001.png: the PNG is truncated" in out
    assert "truth.txt:3: error: label 99 is out of range" in out
    assert "truth.txt:4: error: listed file 'ghost.png' is missing" in out
    assert "truth.txt:5: error: duplicate filename 'img000.png'" in out


def test_data_check_cli_reports_counts_sizes_and_modes(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "d", [0, 0, 39])
    result = CliRunner().invoke(main, ["data", "check", str(folder), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "0/A0=2" in result.output and "39/C4=1" in result.output
    assert "per octave: 0=2, 4=1" in result.output
    assert "52x40=3" in result.output and "RGBA=3" in result.output
    assert "no errors" in result.output


def test_cli_error_has_no_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "mnr: error:" in result.output and "Traceback" not in result.output


def test_cache_hit_miss_and_invalidation(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "d", [1, 2, 3, 4])
    cache = tmp_path / "cache"
    first = load_images(
        scan_folder(folder), size=(16, 20), cache_dir=cache, workers=1, progress=False
    )
    assert not first.from_cache and first.images.shape == (4, 3, 16, 20)
    second = load_images(
        scan_folder(folder), size=(16, 20), cache_dir=cache, workers=1, progress=False
    )
    assert second.from_cache and np.array_equal(first.images, second.images)
    # another input size is another cache entry
    assert not load_images(
        scan_folder(folder), size=(8, 8), cache_dir=cache, workers=1, progress=False
    ).from_cache
    # a changed file invalidates
    write_png(folder / "img002.png", seed=99)
    os.utime(folder / "img002.png", ns=(1, 1))
    third = load_images(
        scan_folder(folder), size=(16, 20), cache_dir=cache, workers=1, progress=False
    )
    assert not third.from_cache and not np.array_equal(third.images[2], first.images[2])
    # an added file invalidates
    write_png(folder / "extra.png", seed=5)
    with open(folder / "truth.txt", "a") as fh:
        fh.write("extra.png 7\n")
    assert not load_images(
        scan_folder(folder), size=(16, 20), cache_dir=cache, workers=1, progress=False
    ).from_cache


def test_corrupt_cache_is_rebuilt_not_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = write_folder(tmp_path / "d", [1, 2])
    cache = tmp_path / "cache"
    first = load_images(
        scan_folder(folder), size=(16, 16), cache_dir=cache, workers=1, progress=False
    )
    array_file = cache / f"{first.key}.npy"
    raw = bytearray(array_file.read_bytes())
    raw[-10] ^= 0xFF  # one flipped bit in the pixels: the header still parses
    array_file.write_bytes(bytes(raw))
    capsys.readouterr()
    again = load_images(
        scan_folder(folder), size=(16, 16), cache_dir=cache, workers=1, progress=False
    )
    assert not again.from_cache and np.array_equal(again.images, first.images)
    assert f"mnr: image cache {array_file} is unusable" in capsys.readouterr().err
    array_file.write_bytes(b"garbage")
    load_images(scan_folder(folder), size=(16, 16), cache_dir=cache, workers=1, progress=False)
    assert "rebuilding it" in capsys.readouterr().err


def test_parallel_decode_matches_serial(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "d", list(range(40)))
    serial = load_images(
        scan_folder(folder), size=(12, 12), use_cache=False, workers=1, progress=False
    )
    parallel = load_images(
        scan_folder(folder), size=(12, 12), use_cache=False, workers=2, progress=False
    )
    assert np.array_equal(serial.images, parallel.images)


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    labels = np.repeat(np.arange(10), [2, 3, 4, 5, 6, 10, 10, 10, 10, 30])
    train, val = stratified_split(labels, val_fraction=0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    for label in range(10):
        count = (labels == label).sum()
        in_val = (labels[val] == label).sum()
        assert 1 <= in_val < count
        assert abs(in_val - count * 0.2) <= 1
    again = stratified_split(labels, val_fraction=0.2, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(stratified_split(labels, val_fraction=0.2, seed=4)[1], val)


def test_kfold_covers_every_index_once() -> None:
    labels = np.repeat(np.arange(5), 7)
    folds = kfold_indices(labels, folds=5, seed=0)
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen.tolist()) == list(range(len(labels)))
    for train, val in folds:
        assert len(np.intersect1d(train, val)) == 0
        assert set(np.unique(labels[val])) == set(range(5))


@pytest.mark.parametrize(
    ("shape", "mode"), [((7, 5, 4), "RGBA"), ((7, 5, 3), "RGB"), ((7, 5), "L"), ((3, 7, 5), "RGB")]
)
def test_png_bytes_round_trips(tmp_path: Path, shape: tuple[int, ...], mode: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    expected = image.transpose(1, 2, 0) if shape[0] == 3 else image  # 3 x H x W is channels first
    expected[3] = expected[2]  # a repeated row takes the other filter (a view: `image` follows)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(image))
    with Image.open(path) as decoded:
        assert decoded.mode == mode
        assert np.array_equal(np.asarray(decoded), expected)


def test_a_builtin_set_from_an_older_generator_is_made_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnr.data.synth as synth
    from mnr.data import builtin
    from mnr.data.synth.dataset import file_names

    root = tmp_path / "builtin"
    (root / "train").mkdir(parents=True)
    old = file_names(0, 1)[0]  # the generator's own name for the built-in seed's first image
    (root / "train" / "truth.txt").write_text(f"{old} 0\n")  # a finished set, but no version
    (root / "train" / old).write_bytes(b"x")
    monkeypatch.setenv("MNR_DATA_DIR", str(root))
    made: list[Path] = []

    def fake_generate(out: Path, **_: object) -> Path:
        made.append(out)
        (out / "train").mkdir()
        (out / "train" / "truth.txt").write_text("new.png 0\n")
        return out

    monkeypatch.setattr(synth, "generate_dataset", fake_generate)
    assert builtin.builtin_dataset(progress=False) == root and made == [root]
    assert not (root / "train" / old).exists()
    assert (root / ".generator").read_text().strip() == builtin.GENERATOR_VERSION
    assert builtin.builtin_dataset(progress=False) == root and made == [root]  # current: kept


def test_a_folder_mnr_did_not_generate_is_never_deleted_for_the_builtin_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnr.data import builtin

    root = tmp_path / "mine"
    (root / "train").mkdir(parents=True)
    (root / "train" / "truth.txt").write_text("my_note.png 3\n")
    (root / "train" / "my_note.png").write_bytes(b"x")
    monkeypatch.setenv("MNR_DATA_DIR", str(root))
    with pytest.raises(MnrError, match="did not write"):
        builtin.builtin_dataset(progress=False)
    assert (root / "train" / "my_note.png").exists()
