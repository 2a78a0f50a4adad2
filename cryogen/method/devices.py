"""Which torch device a verb runs on: CUDA when asked for (or seen, with auto), else the CPU."""

from __future__ import annotations

import torch

from ..errors import CryogenError, setting


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CryogenError(f"{setting('device')} cuda was asked for, but no CUDA GPU is available to torch")
    if name not in ("cpu", "cuda"):
        raise CryogenError(f"{setting('device')} must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)
