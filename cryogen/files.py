"""Atomic outputs: everything is written under a temporary name and renamed on success,
so a crash or a bad input never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it to `path` if the block succeeds.

    Works for files and directories (Zarr stores). On any exception the temporary is removed
    and `path` is left as it was.
    """
    final = Path(path)
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{final.name}.tmp-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
