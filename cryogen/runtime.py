"""Process-wide settings that the networks' speed on the CPU depends on.

glibc's malloc serves blocks above its mmap threshold (at most 32 MB, however it adapts) with a
fresh mmap and returns them with munmap when freed. A 3-D network's activations on a batch of
tiles are just above that (4 x 8 channels x 64^3 float32 = 33.5 MB), so every layer of every
batch faulted in fresh pages from the kernel: measured on 2 cores, g(y) took 47 ms per 64^3 tile,
a third of it in the kernel, and 28 ms with the threshold raised so the blocks are reused from
the heap. What is freed is kept for reuse, up to the trim threshold, instead of being handed back at
once: a network's process peaks ~15 % higher (reconstruct 529 MB against 469 at 17 Mvoxel), still
flat in the tomogram's size. Verbs that run no network keep glibc's defaults (cryogen.cli.main).

CPU threads: a process uses the CPUs it is given, not every core of the node. Two torch processes
sharing 2 cores with a thread per core each slowed one training from ~3 to 0.2 steps/s (OpenMP
threads spinning against each other). `resolve_threads` picks the count, first found wins:
`--threads N` (every verb), OMP_NUM_THREADS (Snakemake's rules set it to the rule's threads),
SLURM_CPUS_PER_TASK, then the CPUs of the process's affinity mask (os.sched_getaffinity: SLURM's
cgroup cpuset, taskset), never more than that mask holds. `use_threads` applies it once at start-up
(cryogen.cli.main), before any torch work: torch's intra- and inter-op threads and the variables
that size the thread pools of libraries loaded later and of child processes (Dask workers).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import CryogenError, setting

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap; this much free memory may stay at its top
MALLOC_THRESHOLD = 256 << 20


@functools.lru_cache(maxsize=1)
def tune_malloc(threshold: int = MALLOC_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where the C library
    is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))


#: the variables that size OpenMP, MKL and OpenBLAS thread pools, set for what loads or starts later
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Threads:
    """How many CPU threads to use, and why (for the log line)."""

    count: int
    source: str


def cpus_given() -> int:
    """The CPUs this process may run on: its affinity mask (a SLURM job's cpuset, taskset), or
    every core where the platform has no affinity (macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _positive(name: str, value: str) -> int:
    # OpenMP allows a list for nested levels ("4,2"): the first is this process's
    try:
        n = int(value.split(",")[0].strip())
    except ValueError:
        n = 0
    if n < 1:
        raise CryogenError(f"{name} must be a positive whole number of CPU threads, not {value!r}")
    return n


def resolve_threads(
    option: int | None = None, environ: Mapping[str, str] | None = None, given: int | None = None
) -> Threads:
    """The CPU threads to use: `option` (--threads), else OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK
    from `environ` (default os.environ), else `given` (default: `cpus_given()`); never more than
    `given`, since more threads than CPUs only compete for them."""
    environ = os.environ if environ is None else environ
    given = cpus_given() if given is None else given
    if option is not None:
        if option < 1:
            raise CryogenError(f"{setting('threads')} must be at least 1, not {option}")
        wanted, source = option, f"{setting('threads')} {option}"
    else:
        for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
            value = environ.get(name, "").strip()
            if value:
                wanted, source = _positive(name, value), f"{name}={value}"
                break
        else:
            return Threads(given, f"{_cpus(given)} this process may use")
    if wanted > given:
        return Threads(given, f"{source}, capped at {_cpus(given)} this process may use")
    return Threads(wanted, source)


def _cpus(n: int) -> str:
    return "the 1 CPU" if n == 1 else f"the {n} CPUs"


_interop_set = False


def use_threads(threads: Threads) -> None:
    """Make this process (torch, if loaded; the thread pools of libraries loaded later) and the
    processes it starts use `threads.count` CPU threads. torch's inter-op pool can be sized only
    once per process, before it is used: later calls (the CLI run again in-process) leave it."""
    global _interop_set
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads.count)
    torch = sys.modules.get("torch")
    if torch is None:
        return  # torch reads OMP_NUM_THREADS when it is imported
    torch.set_num_threads(threads.count)
    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(threads.count)
        except RuntimeError:  # inter-op work has already run in this process
            log.debug("torch's inter-op threads were already in use; left at %d", torch.get_num_interop_threads())


def threads_in_use(threads: Threads) -> str:
    """The log line a verb says: the threads torch really runs with (once loaded), and why."""
    torch = sys.modules.get("torch")
    n = torch.get_num_threads() if torch is not None else threads.count
    return f"using {n} CPU thread{'' if n == 1 else 's'} ({threads.source})"
