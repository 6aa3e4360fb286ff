"""Writing a file so that a reader never sees half of it: the one atomic write in mnr.

The bytes go to a temporary file beside the target (same folder, so same file system) and
replace the target in one `os.replace`; a crash or an error mid-write leaves the previous file
intact and removes the temporary one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`.

    The parent folder is created. `mode` and `open_kwargs` go to `open` (``"w"`` with
    ``newline=""`` for a CSV file). An exception inside the block removes the temporary file and
    leaves `path` as it was.

    >>> with atomic_write("out/table.csv", "w", newline="") as fh:
    ...     fh.write("id,label\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
