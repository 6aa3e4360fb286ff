"""The one exception type for errors a user can cause.

Anything a user can fix (a malformed truth.txt, an unknown model name, a bad option, an
unreachable tracking server) is raised as `MnrError` with a message that names the file, line or
option and says what to do. The CLI prints the message and exits non-zero without a traceback;
anything else is a bug in mnr and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["MnrError"]


class MnrError(Exception):
    """An error the user can fix; its message says what went wrong and what to do."""
