"""glibc malloc tuning for the network verbs: large blocks reused from the heap, not refaulted."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
if sys.argv[1] == "tuned":
    from cryogen.runtime import tune_malloc
    assert tune_malloc()
for _ in range(20):  # the heap settles after a few blocks (measured: ~7 of the first 10 are new)
    torch.empty(40 << 20, dtype=torch.uint8).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = torch.empty(40 << 20, dtype=torch.uint8)  # 40 MB, above glibc's largest automatic mmap threshold
    a.fill_(1)  # touch every page
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.integration
def test_tuned_malloc_reuses_large_blocks():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    pages = (40 << 20) // 4096
    plain, tuned = _faults("plain"), _faults("tuned")
    assert plain > 8 * pages  # every allocation faulted in anew
    assert tuned < pages, (plain, tuned)  # reused from the heap


def test_network_verbs_tune_and_the_others_do_not(monkeypatch):
    import cryogen.cli.main as cli
    import cryogen.runtime

    calls = []
    monkeypatch.setattr(cryogen.runtime, "tune_malloc", lambda *a: calls.append(1) or True)
    cli.main(["info", "/nonexistent.mrc"])
    assert calls == []
    cli.main(["train", "/nonexistent.zarr", "--out", "/nonexistent/p.pt"])
    assert calls == [1]
