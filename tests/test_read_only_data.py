"""mnr never writes inside the data folder, which Kaggle mounts read-only (`/kaggle/input/...`).

Training, `mnr data check`, `mnr tune`, `mnr cv`, `mnr predict` and `mnr evaluate` run on a
copy of the tiny dataset while a Python audit hook records every file opened for writing and
every folder made, renamed, replaced or removed. The folder is also made read-only with chmod,
which stops writes for a normal user but not for root (as CI often runs), hence the hook; the
decode workers are other processes, which the hook does not see, hence the snapshot of the tree
before and after.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY, cli_overrides, tiny_config, train

from mnr.cli import main

# open() flags that mean a write
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# audit events whose first argument (and the second, for renames) is a path being changed
_CHANGES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.truncate",
            "os.chmod", "os.symlink", "os.link", "shutil.rmtree", "shutil.move"}  # fmt: skip

# (event, path) of every write while `_watching` is set; the hook stays installed (audit hooks
# cannot be removed) but records nothing outside the test
_writes: list[tuple[str, str]] = []
_watching: list[bool] = []


def _hook(event: str, args: tuple) -> None:
    """Record a write: an open for writing (by mode or flags) or a change to the tree."""
    if not _watching:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing and isinstance(path, str | bytes | os.PathLike):
            _writes.append((event, os.fsdecode(path)))
    elif event in _CHANGES:
        for path in args[:2]:
            if isinstance(path, str | bytes | os.PathLike):
                _writes.append((event, os.fsdecode(path)))


sys.addaudithook(_hook)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in [root, *root.rglob("*")]
    }


@pytest.fixture
def read_only_data(synth_root: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the tiny dataset with every file and folder made read-only, as on Kaggle."""
    root = Path(shutil.copytree(synth_root, tmp_path / "input" / "data"))
    paths = [root, *root.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield root
    for path in paths:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow  # six commands end to end, about 25 s
def test_nothing_is_written_inside_the_data_folder(read_only_data: Path, isolated: Path) -> None:
    before = _tree(read_only_data)
    _watching.append(True)
    try:
        result = train(tiny_config(read_only_data, "tracking.log_model=true", epochs=1))
        assert result.status == "FINISHED" and result.model_uri
        runner = CliRunner()
        data, tiny = str(read_only_data), cli_overrides(*TINY, "train.batch_size=8")
        for args in (
            ["data", "check", str(read_only_data / "train")],
            ["tune", "--model", "bn_cnn", "--data", data, "--trials", "1", "--epochs", "1", *tiny],
            ["cv", "--model", "bn_cnn", "--data", data, "--folds", "2", "--epochs", "1", *tiny],
            ["predict", result.model_uri, str(read_only_data / "test"), "--workers", "2"],
            ["evaluate", result.model_uri, str(read_only_data / "test"),
             "--truth", str(read_only_data / "test_truth.txt"), "--workers", "2"],
        ):  # fmt: skip
            outcome = runner.invoke(main, args)
            assert outcome.exit_code == 0, (args, outcome.output)
    finally:
        _watching.clear()
    inside = [
        (event, path)
        for event, path in _writes
        if Path(os.path.realpath(path)).is_relative_to(read_only_data.resolve())
    ]
    assert not inside, inside
    assert any(Path(path).is_relative_to(isolated) for _, path in _writes)  # the hook saw writes
    assert _tree(read_only_data) == before
    assert (isolated / "output.csv").is_file() and (isolated / "layout_preview.png").is_file()
