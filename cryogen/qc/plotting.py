"""Matplotlib for CryoGEN's figures: pyplot on the non-interactive Agg backend (PNG files on
servers and cluster nodes without a display), imported only when a figure is drawn."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """matplotlib.pyplot, on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
