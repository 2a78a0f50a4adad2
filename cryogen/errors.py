"""The one exception type the CLI turns into a one-line message instead of a traceback, and how
messages name the settings a user can change.

Library messages name a setting through `setting("voxel_size")`, never as a command-line flag: a
Python caller reads `voxel_size`, and the CLI, which runs each verb inside
`settings_named_as_flags()`, makes the same message say `--voxel-size`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_spell: Callable[[str], str] = str


def setting(name: str) -> str:
    """`name` (a library parameter, e.g. "tilt_range") as the user's front end spells it."""
    return _spell(name)


@contextmanager
def settings_named_as_flags() -> Iterator[None]:
    """Within this block, `setting("tilt_range")` reads "--tilt-range" (the CLI runs verbs in it)."""
    global _spell
    before, _spell = _spell, _as_flag
    try:
        yield
    finally:
        _spell = before


def _as_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
