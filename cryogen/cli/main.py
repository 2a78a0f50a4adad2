"""The `cryogen` command line: assembles the verbs (one module each: its arguments and its run
function), dispatches, sets up logging, and turns library errors into one-line messages.

Every user-facing problem is a `CryogenError` and is printed as one line naming the file and the
problem, with a non-zero exit and no traceback (set CRYOGEN_DEBUG=1 to see one). Heavy imports
(torch) happen inside the verbs that need them, so `chunk`, `stitch` and `info` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from .. import __version__
from ..errors import CryogenError, settings_named_as_flags
from ..runtime import resolve_threads, threads_in_use, use_threads
from . import (
    backproject,
    benchmark,
    chunk,
    convert,
    copick,
    deconvolve,
    evaluate,
    export,
    info,
    reconstruct,
    report,
    run,
    simulate,
    stitch,
    train,
)
from .common import EPILOG, VerbParser

#: in the order `cryogen --help` lists them
VERBS = (
    simulate,
    evaluate,
    convert,
    backproject,
    deconvolve,
    chunk,
    stitch,
    export,
    copick,
    train,
    reconstruct,
    run,
    benchmark,
    report,
    info,
)

# verbs that run the networks; the others (chunk, stitch, export, ...) keep glibc's defaults,
# which return freed memory at once and keep their peaks lower (measured: chunk 1.7x its 1x peak
# at 16x with the tuning, 1.47x without)
NETWORK_VERBS = ("train", "reconstruct", "run", "benchmark")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryogen",
        description="CryoGEN restores cryo-electron tomograms: it removes noise and fills the missing wedge "
        "with a prior learned from the data itself, without any ground truth.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"cryogen {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=VerbParser)
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


class _StageHandler(logging.StreamHandler):
    """Writes the stage's messages; a `preface` (the CPU threads in use) goes out with the first of
    them, or with `say_preface` at the end, so that bad input still gets a one-line error."""

    preface: Callable[[], str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.say_preface()
        super().emit(record)

    def say_preface(self) -> None:
        if self.preface is not None:
            preface, self.preface = self.preface, None
            super().emit(logging.makeLogRecord({"msg": preface(), "levelno": logging.INFO, "levelname": "INFO"}))


@contextlib.contextmanager
def _stage_logging(verb: str) -> Iterator[_StageHandler]:
    """What the stages log (progress milestones, resumes, warnings about the data) goes to stderr,
    one line each, prefixed like the errors; the handler lives only as long as the verb runs."""

    class _Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            return f"cryogen {verb}: {level}{record.getMessage()}"

    handler = _StageHandler(sys.stderr)
    handler.setFormatter(_Format())
    logger = logging.getLogger("cryogen")
    old_level = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError: about the output a temporary stands for, the file it names, or
    (without a file name: a full disk, mostly) what the verb writes."""
    from ..io.files import output_error, output_of_temporary

    output = output_of_temporary(exc.filename) if exc.filename else None
    if output is not None:
        return str(output_error(output, exc))
    target = exc.filename or getattr(args, "output", None) or getattr(args, "out", None)
    where = f"{os.fsdecode(target)}: " if target else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        what = f"cannot write: {what.lower()} (disk full)"
    return f"{where}{what}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    if args.verb in NETWORK_VERBS:
        from ..runtime import tune_malloc

        tune_malloc()  # before torch allocates: 1.7x faster networks on the CPU (see cryogen.runtime)
    prefix = f"cryogen {args.verb}: error:"
    with _stage_logging(args.verb) as stage, settings_named_as_flags():
        try:
            threads = resolve_threads(args.threads)
            use_threads(threads)  # before any torch work (see cryogen.runtime)
            args.cpu_threads = threads.count
            if args.verb in NETWORK_VERBS:
                stage.preface = lambda: threads_in_use(threads)
            func(args)
            stage.say_preface()
        except CryogenError as exc:
            print(f"{prefix} {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{prefix} interrupted", file=sys.stderr)
            return 130
        except OSError as exc:
            if os.environ.get("CRYOGEN_DEBUG"):
                raise
            print(f"{prefix} {_os_error(exc, args)}", file=sys.stderr)
            return 1
        except Exception as exc:  # a bug, not bad input: still one line unless debugging
            if os.environ.get("CRYOGEN_DEBUG"):
                raise
            print(
                f"{prefix} unexpected {type(exc).__name__}: {exc} (set CRYOGEN_DEBUG=1 for a traceback)",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
