"""Atomic outputs: everything is written under a temporary name and renamed on success,
so a crash or a bad input never leaves a file that looks finished.

The temporary is a hidden sibling `.NAME.tmp-HOST-PID`. A process killed with SIGKILL cannot
remove its own, so the next writer of the same output removes those left by dead processes of
its host (a whole tomogram's worth of disk otherwise stays behind after every kill). Failures to
write (read-only or missing folder, full disk, a file where a folder should be) become one-line
`CryogenError`s that name the output, not the temporary.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import CryogenError


def remove_path(path: Path) -> None:
    """Remove a file or a folder (a link as a link) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temporary_name(final: Path) -> Path:
    """The temporary sibling this process writes `final` under."""
    return final.with_name(f".{final.name}.tmp-{_host()}-{os.getpid()}")


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove temporaries of `final` left by killed processes of this host; return them.

    Temporaries of live processes, and of other hosts (whose processes cannot be checked from
    here, on a shared file system), are left alone."""
    prefix = f".{final.name}.tmp-{_host()}-"
    removed = []
    with contextlib.suppress(OSError):
        for p in final.parent.iterdir():
            if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit():
                pid = int(p.name[len(prefix) :])
                if pid != os.getpid() and not _alive(pid):
                    remove_path(p)
                    removed.append(p)
    return removed


def output_of_temporary(path: str | os.PathLike) -> Path | None:
    """The output a temporary (`.NAME.tmp-HOST-PID`) or partial store (`.NAME.partial`) stands
    for, so that errors name what the user asked for; None for any other path."""
    p = Path(os.fsdecode(path))
    m = re.fullmatch(r"\.(.+)\.(?:tmp-[^/]+|partial)", p.name)
    return p.with_name(m.group(1)) if m else None


def _about_output(exc: OSError, tmp: Path, parent: Path) -> bool:
    """Whether an OSError raised while writing is about the output (not about an input)."""
    if exc.filename is None:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes, os.PathLike)) else str(exc.filename)
    return name.startswith(str(tmp)) or Path(name) == parent


def output_error(final: Path, exc: OSError) -> CryogenError:
    """A one-line error naming the output `final` for a failure to write it."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"cannot write: {why.lower()} (disk full or quota exceeded); free some space and rerun"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"cannot write here ({why}); the folder {final.parent} is read-only"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        why = f"cannot write: a file is in the way of the folder {final.parent}"
    else:
        why = f"cannot write ({why})"
    return CryogenError(why, final)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it to `path` if the block succeeds.

    Works for files and directories (Zarr stores). On any exception the temporary is removed
    and `path` is left as it was; an OSError about writing the output becomes a CryogenError
    naming `path`.
    """
    final = Path(path)
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                why = "a file is in the way"
            raise CryogenError(f"cannot create the output folder {parent} ({why})", final) from None
    remove_stale_temporaries(final)
    tmp = temporary_name(final)
    remove_path(tmp)
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            remove_path(final)
        os.replace(tmp, final)
    except OSError as exc:
        remove_path(tmp)
        if _about_output(exc, tmp, parent):
            raise output_error(final, exc) from None
        raise
    except BaseException:
        remove_path(tmp)
        raise
