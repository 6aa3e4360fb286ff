"""Bad input never gives a traceback or a read outside the data folder: each case through the CLI.

Every broken image and malformed truth.txt line goes through both `mnr data check` and
`mnr train --data`: exit non-zero, the message names the file and line, no traceback, and a
PNG planted outside the folder is never opened. PNG modes that are merely unusual (16-bit,
grayscale, palette) train. Property-based tests (hypothesis) cover the truth.txt parser and the
image decoder on inputs nobody thought of. Library-level cases are in test_data.py.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, cli_overrides, write_folder, write_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnr.cli import main
from mnr.data import decode_png, parse_truth, scan_folder
from mnr.data.folder import Problem
from mnr.errors import MnrError
from mnr.labels import NUM_KEYS

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["--epochs", "1", "--batch-size", "4", *cli_overrides(*TINY, "data.workers=1")]

# ------------------------------------------------------------------ audit: what gets opened
_opened: list[str] | None = None  # while a list, every path the process opens is appended


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(
    _audit
)  # audit hooks cannot be removed; this one records only inside `opened_paths`


class opened_paths:  # noqa: N801 - used like a function
    """Collect the real paths of every file opened in this process while the block runs."""

    def __enter__(self) -> set[str]:
        global _opened
        _opened = []
        self.paths: set[str] = set()
        return self.paths

    def __exit__(self, *exc) -> None:
        global _opened
        self.paths.update(os.path.realpath(p) for p in _opened or [])
        _opened = None


# -------------------------------------------------------------------------- the bad inputs
def _bomb_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG signature and IHDR that claim width x height pixels, followed by nothing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def _image(name: str, make: Callable[[Path], None]) -> Callable[[Path, Path], bytes]:
    def build(folder: Path, outside: Path) -> bytes:
        make(folder / name)
        return f"{name} 40".encode()

    return build


def _line(line: bytes) -> Callable[[Path, Path], bytes]:
    return lambda folder, outside: line


def _symlink(folder: Path, outside: Path) -> bytes:
    os.symlink(outside, folder / "link.png")
    return b"link.png 40"


def _dir_symlink(folder: Path, outside: Path) -> bytes:
    os.symlink(outside.parent, folder / "elsewhere")
    return f"elsewhere/{outside.name} 40".encode()


def _truncated(path: Path) -> None:
    good = write_png(path).read_bytes()
    path.write_bytes(good[: len(good) // 2])


CASES: dict[str, tuple[Callable[[Path, Path], bytes], str]] = {
    # id: (adds the bad thing as line 3 of truth.txt, what the message says)
    "truncated_png": (_image("cut.png", _truncated), "cut.png: the PNG is truncated or corrupt"),
    "zero_bytes": (
        _image("empty.png", lambda p: p.write_bytes(b"")),
        "empty.png: the file is empty (0 bytes)",
    ),
    "text_named_png": (
        _image("notes.png", lambda p: p.write_text("C4 E4 G4\n")),
        "notes.png: not a PNG file",
    ),
    "decompression_bomb": (
        _image("bomb.png", lambda p: p.write_bytes(_bomb_bytes())),
        "decompression bomb",
    ),
    "bomb_just_over": (
        _image("big.png", lambda p: p.write_bytes(_bomb_bytes(8000, 5001))),
        "8000 x 5001",
    ),
    "missing_field": (_line(b"lonely.png"), "expected 'filename label', found 1 field(s)"),
    "extra_field": (_line(b"img000.png 3 4"), "expected 'filename label', found 3 field(s)"),
    "negative_label": (_line(b"neg.png -1"), "label -1 is out of range"),
    "label_too_high": (_line(b"high.png 88"), "label 88 is out of range"),
    "non_numeric_label": (_line(b"word.png C4"), "label 'C4' is not an integer"),
    "float_label": (_line(b"float.png 3.0"), "label '3.0' is not an integer"),
    "non_utf8": (_line(b"caf\xe9.png 3"), "line is not UTF-8 text"),
    "nul_byte": (_line(b"a\x00.png 3"), "contains a control character"),
    "name_too_long": (_line(b"n" * 300 + b".png 3"), "cannot be looked up (File name too long)"),
    "dotdot": (_line(b"../outside/secret.png 40"), "points outside the data folder"),
    "absolute": (
        lambda folder, outside: f"{outside} 40".encode(),
        "points outside the data folder",
    ),
    "windows_path": (_line(b"..\\outside\\secret.png 40"), "points outside the data folder"),
    "symlink_outside": (_symlink, "'link.png' is a link that points outside the data folder"),
    "dir_symlink_outside": (_dir_symlink, "is a link that points outside the data folder"),
    "missing_file": (_line(b"ghost.png 3"), "listed file 'ghost.png' is missing"),
}


def bad_folder(tmp_path: Path, case: str) -> tuple[Path, Path, str]:
    """Two good images (lines 1-2), then the bad case on line 3; a real PNG waits outside."""
    outside = write_png(tmp_path / "outside" / "secret.png", seed=9)
    folder = write_folder(tmp_path / "data", [5, 44])
    build, fragment = CASES[case]
    bad_line = build(folder, outside)
    (folder / "truth.txt").write_bytes(b"img000.png 5\nimg001.png 44\n" + bad_line + b"\n")
    return folder, outside, fragment


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_named_by_file_and_line_in_data_check(tmp_path: Path, case: str) -> None:
    folder, outside, fragment = bad_folder(tmp_path, case)
    with opened_paths() as opened:
        result = CliRunner().invoke(main, ["data", "check", str(folder), "--workers", "1"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{folder / 'truth.txt'}:3: error: " in result.output and fragment in result.output, (
        result.output
    )
    assert "1 error(s)" in result.output and "Traceback" not in result.output
    assert str(outside) not in opened and str(folder / "img000.png") in opened


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_stops_train_before_any_run(tmp_path: Path, isolated: Path, case: str) -> None:
    folder, outside, fragment = bad_folder(tmp_path, case)
    with opened_paths() as opened:
        result = CliRunner().invoke(main, ["train", "--data", str(folder), *TRAIN])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "mnr: error: " in result.output and "1 problem(s) in the data" in result.output
    assert f"{folder / 'truth.txt'}:3: error: " in result.output and fragment in result.output, (
        result.output
    )
    assert str(outside) not in opened
    assert not (isolated / "checkpoints").exists() and not (isolated / "mlflow.db").exists()


def test_truth_file_that_links_outside_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = tmp_path / "data"
    write_png(folder / "a.png")
    os.symlink(secret, folder / "truth.txt")
    with opened_paths() as opened:
        check = CliRunner().invoke(main, ["data", "check", str(folder), "--workers", "1"])
        train = CliRunner().invoke(main, ["train", "--data", str(folder), *TRAIN])
    for result in (check, train):
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert "truth.txt" in result.output and "outside the data folder" in result.output
        assert "root:x" not in result.output
    assert str(secret) not in opened


def test_test_truth_that_links_outside_is_not_read(tmp_path: Path, synth_root: Path) -> None:
    root = tmp_path / "dataset"
    shutil.copytree(synth_root, root)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "test_truth.txt").unlink()
    os.symlink(secret, root / "test_truth.txt")
    with opened_paths() as opened:
        result = CliRunner().invoke(main, ["train", "--data", str(root), *TRAIN])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert (
        "test_truth.txt" in result.output
        and "outside" in result.output
        and "root:x" not in result.output
    )
    assert str(secret) not in opened


def test_unlabelled_folder_symlink_outside_is_refused(tmp_path: Path) -> None:
    outside = write_png(tmp_path / "outside" / "secret.png")
    folder = tmp_path / "pngs"
    write_png(folder / "a.png")
    os.symlink(outside, folder / "b.png")
    with opened_paths() as opened:
        result = CliRunner().invoke(main, ["data", "check", str(folder), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert f"{folder / 'b.png'}: error: symlink points outside the data folder" in result.output
    assert str(outside) not in opened


# --------------------------------------------------------------- unusual modes that work
def test_sixteen_bit_grayscale_and_palette_pngs_train(tmp_path: Path, empty_store: Path) -> None:
    folder = tmp_path / "modes"
    folder.mkdir()
    modes = ["I;16", "L", "P", "LA", "1", "RGB"]
    lines = []
    for index in range(18):
        name, label = f"m{index:02d}.png", [5, 44, 80][index % 3]
        write_png(folder / name, mode=modes[index % len(modes)], seed=index)
        lines.append(f"{name} {label}")
    (folder / "truth.txt").write_text("\n".join(lines) + "\n")
    check = CliRunner().invoke(main, ["data", "check", str(folder), "--workers", "1"])
    assert check.exit_code == 0, check.output
    assert all(f"{mode}=3" in check.output for mode in modes), check.output
    train = CliRunner().invoke(main, ["train", "--data", str(folder), *TRAIN])
    assert train.exit_code == 0, train.output
    assert "FINISHED" in train.output


# ------------------------------------------------------------------- real processes too
@pytest.mark.slow
def test_every_bad_input_at_once_in_real_processes(tmp_path: Path, isolated: Path) -> None:
    """One folder holding every bad case: two real `mnr` processes, no traceback on stderr."""
    outside = write_png(tmp_path / "outside" / "secret.png", seed=9)
    folder = write_folder(tmp_path / "data", [5, 44])
    lines = [b"img000.png 5", b"img001.png 44"]
    for case in sorted(CASES):
        if case not in ("symlink_outside", "dir_symlink_outside"):  # one link name each
            lines.append(CASES[case][0](folder, outside))
    lines += [_symlink(folder, outside), _dir_symlink(folder, outside)]
    (folder / "truth.txt").write_bytes(b"\n".join(lines) + b"\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    for args, code in (
        (["data", "check", str(folder)], 1),
        (["train", "--data", str(folder), *TRAIN], 2),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "mnr", *args],
            cwd=isolated,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=300,
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        text = done.stdout + done.stderr
        assert f"{folder / 'truth.txt'}:{len(lines)}: error:" in text
        if args[0] == "data":  # training stops at the truth.txt errors, before decoding any image
            for _, fragment in CASES.values():
                assert fragment in text, fragment


# ------------------------------------------------------------------ property-based tests
NAME_CHARS = st.characters(categories=["L", "N"]) | st.sampled_from("._-")
names = st.text(NAME_CHARS, min_size=1, max_size=24).filter(lambda n: n not in (".", ".."))
tokens = st.one_of(
    names,
    st.integers(-200, 200).map(str),
    st.sampled_from(
        [
            "../x.png",
            "/abs.png",
            "C:\\x.png",
            "a\\..\\b",
            "\x00",
            "\ufeff",
            "3.5",
            "1e3",
            "+4",
            "٣",
            "y" * 300,
        ]
    ),
    st.text(max_size=12),
)
line_bytes = st.one_of(
    st.lists(tokens, max_size=4).map(lambda t: " ".join(t).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)
FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check_result(entries: list, problems: list, data: bytes) -> None:
    assert all(isinstance(p, Problem) and p.severity in ("error", "warning") for p in problems)
    total_lines = data.count(b"\n") + 1
    seen = set()
    for name, label, line in entries:
        assert isinstance(name, str) and name and name not in seen
        assert 0 <= label < NUM_KEYS and 1 <= line <= total_lines
        assert not name.startswith(("/", "\\")) and ".." not in name.replace("\\", "/").split("/")
        assert "\x00" not in name
        seen.add(name)


@FAST
@given(data=st.one_of(st.binary(max_size=600), st.lists(line_bytes, max_size=12).map(b"\n".join)))
def test_truth_parser_never_raises(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "truth.txt"
    path.write_bytes(data)
    entries, problems = parse_truth(path)
    _check_result(entries, problems, data)


@FAST
@given(data=st.lists(line_bytes, min_size=1, max_size=8).map(b"\n".join))
def test_scanning_a_folder_with_any_truth_file_never_raises(tmp_path: Path, data: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        folder = Path(tmp)
        (folder / "truth.txt").write_bytes(data)
        (folder / "x.png").write_bytes(b"")
        image_set = scan_folder(
            folder
        )  # MnrError is allowed only for a missing folder or truth file
        assert len(image_set.filenames) == len(image_set.labels) == len(image_set.lines)
        assert all(
            os.path.realpath(image_set.path(i)).startswith(os.path.realpath(folder))
            for i in range(len(image_set))
        )


@FAST
@given(
    rows=st.dictionaries(names, st.integers(0, NUM_KEYS - 1), min_size=1, max_size=20),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    separator=st.sampled_from([b" ", b"\t", b"   ", b" \t "]),
    bom=st.booleans(),
    padding=st.sampled_from([b"", b" ", b"\t", b" \t"]),
    blank_every=st.integers(0, 4),
)
def test_valid_truth_files_round_trip(
    tmp_path: Path,
    rows: dict,
    newline: bytes,
    separator: bytes,
    bom: bool,
    padding: bytes,
    blank_every: int,
) -> None:
    lines = []
    for index, (name, label) in enumerate(rows.items()):
        if blank_every and index % blank_every == 0:
            lines.append(padding)
        lines.append(padding + name.encode() + separator + str(label).encode() + padding)
    data = (b"\xef\xbb\xbf" if bom else b"") + newline.join(lines) + newline
    path = tmp_path / "truth.txt"
    path.write_bytes(data)
    entries, problems = parse_truth(path)
    assert problems == []
    assert [(name, label) for name, label, _ in entries] == list(rows.items())


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


VALID_PNG = _png(np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3))


@st.composite
def mutated_png(draw) -> bytes:
    data = bytearray(VALID_PNG)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: VALID_PNG[:16] + b),
        mutated_png(),
    )
)
def test_any_bytes_decode_to_an_image_or_an_mnr_error(data: bytes) -> None:
    try:
        array = decode_png(data, size=(8, 12), name="fuzz.png")
    except MnrError as exc:
        assert str(exc).startswith("fuzz.png: ")
        return
    assert array.shape == (3, 8, 12) and array.dtype == np.uint8


@settings(max_examples=120, deadline=None)
@given(
    mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    size=st.one_of(st.none(), st.tuples(st.integers(1, 40), st.integers(1, 40))),
    seed=st.integers(0, 2**16),
)
def test_any_mode_and_size_decodes_to_three_channel_uint8(
    mode: str, width: int, height: int, size, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        data = _png(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        data = _png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode)
    array = decode_png(data, size=size)
    expected = size if size is not None else (height, width)
    assert array.shape == (3, *expected) and array.dtype == np.uint8 and array.flags.c_contiguous
    if mode in ("1", "L", "I;16"):
        assert (array[0] == array[1]).all() and (array[1] == array[2]).all()  # gray stays gray
    if size is None and mode in ("RGB", "RGBA"):
        assert (
            array.transpose(1, 2, 0) == np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        ).all()
