"""The Kaggle layout: a folder of PNGs, labelled by `truth.txt` or unlabelled (the test set).

`truth.txt` holds one `filename label` per line, whitespace separated, label 0..87. mnr accepts
what editors and Windows produce (CRLF, a UTF-8 BOM, blank lines, trailing spaces) and reports
everything else as a `Problem` with its file and line. Reading never stops at the first problem:
`scan_folder` collects them all, so one run of `mnr data check` shows a user every fix to make.

No path listed in `truth.txt` is opened unless it resolves inside the data folder: `../x.png`,
absolute paths and symlinks that point outside are refused, so a truth file cannot make mnr read
arbitrary files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath

from mnr.errors import MnrError
from mnr.labels import NUM_KEYS

__all__ = [
    "TRUTH_FILE",
    "ImageSet",
    "Problem",
    "parse_truth",
    "raise_for_problems",
    "scan_folder",
]

TRUTH_FILE = "truth.txt"
_BOM = b"\xef\xbb\xbf"
_MAX_REPORTED = 200  # problems printed in one error message; the rest are counted


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data folder, located by file and (where there is one) line."""

    path: str
    message: str
    line: int | None = None
    severity: str = "error"  # "error" stops training; "warning" is reported only

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class ImageSet:
    """The files of one folder in a stable order, with their labels when the folder has them.

    `filenames` are relative to `root` as written in truth.txt (or sorted PNG names for an
    unlabelled folder); `lines` gives each one's line in truth.txt for error messages.
    """

    root: Path
    filenames: list[str]
    labels: list[int] | None = None
    truth_path: Path | None = None
    lines: list[int] | None = None
    problems: list[Problem] = field(default_factory=list)
    # (size, mtime_ns) of each file, when the scan that listed them had them; else read once
    stats: list[tuple[int, int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.filenames)

    @cached_property
    def signature(self) -> bytes:
        """Each file's name, size and modification time, one line each: what the decode and
        layout caches are keyed on. Each file is stat'ed once, by the scan or here."""
        stats = self.stats
        if stats is None:
            stats = [_size_and_mtime(os.stat(self.root / name)) for name in self.filenames]
        return "".join(
            f"\n{name}\t{size}\t{mtime}"
            for name, (size, mtime) in zip(self.filenames, stats, strict=True)
        ).encode()

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def path(self, index: int) -> Path:
        return self.root / self.filenames[index]

    def problem_for(self, index: int, message: str) -> Problem:
        """A problem with image `index`, located at its truth.txt line when it has one."""
        if self.truth_path is not None and self.lines is not None:
            return Problem(
                str(self.truth_path), f"{self.filenames[index]}: {message}", self.lines[index]
            )
        return Problem(str(self.path(index)), message)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def _escapes(name: str) -> bool:
    """True for names that are absolute or climb out of the folder, on any OS's spelling."""
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.drive or ".." in pure.parts:
            return True
    return False


def parse_truth(path: Path) -> tuple[list[tuple[str, int, int]], list[Problem]]:
    """Parse a truth file into (filename, label, line) entries and the problems found.

    Lines are decoded one by one, so a stray non-UTF-8 byte costs one line, not the file.
    """
    shown = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [Problem(shown, f"cannot read the truth file ({exc.strerror or exc})")]
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    entries: list[tuple[str, int, int]] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            problems.append(
                Problem(shown, "line is not UTF-8 text; re-save the file as UTF-8", number)
            )
            continue
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2:
            problems.append(
                Problem(
                    shown,
                    f"expected 'filename label', found {len(fields)} field(s): {text[:80]!r}",
                    number,
                )
            )
            continue
        name, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            problems.append(
                Problem(
                    shown, f"label {label_text!r} is not an integer (0..{NUM_KEYS - 1})", number
                )
            )
            continue
        if not 0 <= label < NUM_KEYS:
            problems.append(
                Problem(
                    shown,
                    f"label {label} is out of range: piano keys are 0..{NUM_KEYS - 1}",
                    number,
                )
            )
            continue
        if _escapes(name):
            problems.append(
                Problem(
                    shown,
                    f"{name!r} points outside the data folder; list names relative to it",
                    number,
                )
            )
            continue
        if any(ord(char) < 32 or ord(char) == 127 for char in name):  # a NUL would crash os calls
            problems.append(
                Problem(
                    shown, f"{name!r} contains a control character; list plain file names", number
                )
            )
            continue
        if name in first_line:
            problems.append(
                Problem(
                    shown,
                    f"duplicate filename {name!r} (first listed on line {first_line[name]})",
                    number,
                )
            )
            continue
        first_line[name] = number
        entries.append((name, label, number))
    return entries, problems


def _inside(root_real: str, candidate: Path) -> bool:
    real = os.path.realpath(candidate)
    return real == root_real or real.startswith(root_real + os.sep)


def _png_names(root: Path) -> list[str]:
    return sorted(
        p.name for p in root.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")
    )


def scan_folder(root: str | os.PathLike, *, truth: str | os.PathLike | None = None) -> ImageSet:
    """Read a data folder in the Kaggle layout without decoding any image.

    With `truth` (or a `truth.txt` inside `root`) the folder is labelled; otherwise it is an
    unlabelled folder of PNGs. Every problem found is recorded on the returned set; call
    `raise_for_problems` to stop on errors.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MnrError(
            f"{root}: no such data folder; pass a folder of PNGs (with truth.txt to train)"
        )
    root_real = os.path.realpath(root)
    truth_path = Path(truth).expanduser() if truth is not None else root / TRUTH_FILE
    if truth is None and not truth_path.exists():
        names = _png_names(root)
        image_set = ImageSet(root=root, filenames=[], problems=[])
        for name in names:
            if _inside(root_real, root / name):
                image_set.filenames.append(name)
            else:
                image_set.problems.append(
                    Problem(str(root / name), "symlink points outside the data folder")
                )
        if not names:
            image_set.problems.append(Problem(str(root), "no PNG files found (the set is empty)"))
        return image_set
    if not truth_path.is_file():
        raise MnrError(f"{truth_path}: truth file not found")
    if truth is None and not _inside(
        root_real, truth_path
    ):  # never read (and echo) a file elsewhere
        raise MnrError(
            f"{truth_path} is a link that points outside the data folder; copy the real file into {root}"
        )

    entries, problems = parse_truth(truth_path)
    shown = str(truth_path)
    filenames: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    stats: list[tuple[int, int]] = []
    for name, label, number in entries:
        candidate = root / name
        if not _inside(root_real, candidate):
            problems.append(
                Problem(shown, f"{name!r} is a link that points outside the data folder", number)
            )
            continue
        try:
            found = os.stat(candidate)
        except FileNotFoundError:
            found = None
        except OSError as exc:  # e.g. a name longer than the file system allows
            problems.append(
                Problem(
                    shown, f"listed file {name[:80]!r} cannot be looked up ({exc.strerror})", number
                )
            )
            continue
        if found is None or not stat.S_ISREG(found.st_mode):
            problems.append(Problem(shown, f"listed file {name!r} is missing from {root}", number))
            continue
        filenames.append(name)
        labels.append(label)
        lines.append(number)
        stats.append(_size_and_mtime(found))
    if not entries and not any(p.severity == "error" for p in problems):
        problems.append(Problem(shown, "no labelled images listed (the set is empty)"))
    listed = {name for name, _, _ in entries}
    for name in _png_names(root):
        if name not in listed:
            problems.append(
                Problem(
                    str(root / name), f"PNG is not listed in {truth_path.name}", severity="warning"
                )
            )
    return ImageSet(
        root=root,
        filenames=filenames,
        labels=labels,
        truth_path=truth_path,
        lines=lines,
        problems=problems,
        stats=stats,
    )


def _size_and_mtime(result: os.stat_result) -> tuple[int, int]:
    return result.st_size, result.st_mtime_ns


def raise_for_problems(problems: Iterable[Problem], *, what: str) -> None:
    """Raise one `MnrError` listing every error (warnings are not errors); no-op when clean."""
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        return
    shown = "\n".join(f"  {p}" for p in errors[:_MAX_REPORTED])
    more = f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
    raise MnrError(
        f"{what}: {len(errors)} problem(s) in the data; fix them (see `mnr data check`):\n{shown}{more}"
    )
