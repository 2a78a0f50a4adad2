"""The training curves of a prior (PNG beside it, next to the CSV that `train` writes): the losses
and D's accuracy against the step. Kept apart from the report figures (`cryogen.qc.figures`) so
that the training stage's code digest does not depend on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.files import atomic_output
from .plotting import pyplot


def plot_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Losses and D's accuracy against the training step."""
    plt = pyplot()
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    # terms weighted 0 are not computed (logged as 0): left out
    shown = [k for k in ("loss_denoise", "loss_cycle", "loss_fit") if any(h.get(k, 0) > 0 for h in history)]
    for key in shown:
        axes[0].plot(steps, [h[key] for h in history], label=key, lw=0.8)
    if shown:
        axes[0].set_yscale("log")
    axes[0].set_title("g: turned recorrupted pairs (denoise), proxy cycle, fit")
    for key in ("loss_d", "loss_adv"):
        if any(h.get(key, 0) != 0 for h in history):
            axes[1].plot(steps, [h[key] for h in history], label=key, lw=0.8)
    axes[1].set_title("adversarial losses")
    for key in ("d_acc_real", "d_acc_fake"):
        vals = np.array([h[key] for h in history])
        k = max(1, len(vals) // 50)
        axes[2].plot(steps, np.convolve(vals, np.ones(k) / k, mode="same"), label=key, lw=0.8)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("D accuracy (smoothed)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
