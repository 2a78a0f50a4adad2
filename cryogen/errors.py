"""The one exception type the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class CryogenError(Exception):
    """A problem with the user's input or environment, explained in one line.

    `path` names the file the problem is about; the CLI prints "PATH: message".
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{self.path}: {msg}" if self.path else msg
