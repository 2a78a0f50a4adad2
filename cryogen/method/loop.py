"""The training loop: steps until the step count or the time budget, with checkpoints (atomic;
`resume` continues bit-for-bit, RNG included), divergence detection (a non-finite or exploding
loss rolls back to the last good state and halves the learning rates instead of dying), a
warning when D separates real from simulated observations, and training curves (CSV, PNG)."""

from __future__ import annotations

import copy
import csv
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..errors import CryogenError
from ..io.files import atomic_output
from ..io.store import coarse_level
from .checkpoints import (
    checkpoint_dict,
    checkpoint_path,
    load_checkpoint,
    restore_state,
    resumable,
    save_checkpoint,
    snapshot_dir,
)
from .config import TrainConfig
from .devices import pick_device
from .patches import PatchSampler, Source, open_sources
from .step import State, diverged, new_state, set_lr, train_step

log = logging.getLogger(__name__)


SEPARATION_WINDOW = 100
MISMATCH_HINT = (
    "the imaging model (wedge and noise) misses something in this data, so the learned energy (MAP "
    "steps, the std map) says little: check the tilt range and axis given to chunk (and its warnings), "
    "and give even/odd halves for a measured noise model if you have them"
)


def d_separates(history: list[dict[str, float]]) -> bool:
    """Whether D has classified every real and every simulated patch of a batch correctly in at
    least 90 % of the last SEPARATION_WINDOW steps. Data whose wedge or noise does not match the
    imaging model gets there within a hundred steps (and then tends to diverge); healthy runs
    measured on the benchmark phantoms stay below 45 % even after 3000 steps. Worth a warning
    that names the likely cause."""
    recent = history[-SEPARATION_WINDOW:]
    perfect = sum(h["d_acc_real"] == 1.0 and h["d_acc_fake"] == 1.0 for h in recent)
    return len(recent) == SEPARATION_WINDOW and perfect >= 0.9 * SEPARATION_WINDOW


def write_curves(history: list[dict[str, float]], out: Path) -> tuple[Path, Path]:
    """Training curves beside the prior: CSV for reading, PNG for looking."""
    csv_path = out.with_name(out.stem + "_curves.csv")
    png_path = out.with_name(out.stem + "_curves.png")
    if not history:
        return csv_path, png_path
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
        # every column any step logged (a run resumed from older code logs more than its first steps)
        fields = list(dict.fromkeys(k for h in history for k in h))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    from ..qc.curves import plot_curves

    plot_curves(history, png_path)
    return csv_path, png_path


def check_settings(cfg: TrainConfig) -> None:
    """One-line errors for settings no training can run with."""
    if cfg.batch < 1:
        raise CryogenError(f"batch size must be at least 1, not {cfg.batch}")
    if cfg.patch < 1 or cfg.patch % 2**cfg.net.g_depth:
        raise CryogenError(f"patch size {cfg.patch} must be a positive multiple of {2**cfg.net.g_depth}")
    if not cfg.fill_weight > 0:
        raise CryogenError(f"fill_weight must be positive, not {cfg.fill_weight}")


def _initial_state(
    ckpt: Path, cfg: TrainConfig, sources: list[Source], dev: torch.device, resume: bool, tag: str
) -> State:
    """The checkpoint's state when it may be resumed (see `checkpoints.resumable`), else a new one."""
    if resume and ckpt.exists():
        ck = load_checkpoint(ckpt, dev)
        why = resumable(ck, cfg, sources, tag)
        if why:
            log.warning("not resuming from %s: %s; starting afresh", ckpt, why)
        else:
            try:
                state = restore_state(ck, TrainConfig.from_dict(ck["train"]), dev)
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                raise CryogenError(
                    f"checkpoint does not match this CryoGEN ({str(exc).splitlines()[0][:160]}); delete it to start afresh",
                    ckpt,
                ) from None
            log.info("resumed from %s at step %d of %d", ckpt, state.step, cfg.steps)
            return state
    elif resume:
        log.info("no checkpoint %s yet: starting from step 0", ckpt)
    return new_state(cfg, dev)


def _roll_back(
    state: State, good: dict[str, Any], losses: dict[str, float], cfg: TrainConfig, dev: torch.device, out: Path
) -> State:
    """After a divergence: the last good state with half the learning rate and a fresh random
    path; after the ninth, a one-line error that names the likely cause."""
    rollbacks = state.rollbacks + 1
    if rollbacks > 8:
        hint = MISMATCH_HINT if d_separates(state.history) else "lower the learning rates"
        raise CryogenError(f"training diverged {rollbacks} times; {hint}", out)
    log.warning(
        "training diverged at step %d (%s); rolling back to step %d with half the learning rate",
        state.step,
        {k: round(v, 4) for k, v in losses.items()},
        good["step"],
    )
    lr_scale = state.lr_scale * 0.5
    state = restore_state(copy.deepcopy(good), cfg, dev)  # the optimiser would alias its tensors
    state.lr_scale, state.rollbacks = lr_scale, rollbacks
    state.generator.manual_seed(cfg.seed + 1000 * rollbacks)  # a different path this time
    set_lr(state, cfg)
    return state


def coarse_sampler(cfg: TrainConfig, stores: list[str | Path]) -> tuple[TrainConfig, PatchSampler | None]:
    """The coarse network's batches, from the stores' coarse levels; where a store has none
    (chunked before they were made, or too thin to bin), training goes on without the coarse
    network (and says so), and its settings record that."""
    if not cfg.coarse:
        return cfg, None
    levels = [coarse_level(p) for p in stores]
    missing = [Path(p).name for p, level in zip(stores, levels, strict=True) if level is None]
    if missing:
        log.warning(
            "no coarse level in %s (chunked before it was made, or too thin): training without the coarse "
            "network; re-run chunk to have it",
            ", ".join(missing),
        )
        return replace(cfg, coarse=False), None
    return cfg, PatchSampler(open_sources([level for level in levels if level is not None]), cfg.patch)


def run_progress(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """How far through its run training is (0 to 1): by steps, or by the time budget when that
    is the nearer end. The learning-rate schedule follows it."""
    done = step / max(cfg.steps, 1)
    if cfg.time_budget:
        done = max(done, elapsed / cfg.time_budget)
    return min(done, 1.0)


class _Progress:
    """Training's progress bar: steps done against the step count, or, with a time budget,
    seconds spent against the budget (a budgeted run's step count is a bound it rarely reaches:
    counting steps against it showed 10^9 steps and an ETA of 100,000 hours)."""

    def __init__(self, cfg: TrainConfig, step: int, enabled: bool) -> None:
        self.budget = cfg.time_budget
        if self.budget is None:
            self.bar = tqdm(
                total=cfg.steps, initial=step, desc="train", unit="step", disable=not enabled, mininterval=2
            )
        else:
            self.bar = tqdm(
                total=self.whole_seconds(),
                desc="train",
                unit="s",
                disable=not enabled,
                mininterval=2,
                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s of the budget [{elapsed}<{remaining}{postfix}]",
            )

    def whole_seconds(self) -> int:
        """The budget in whole seconds: the bar's total."""
        return round(self.budget or 0)

    def update(self, step: int, elapsed: float, losses: dict[str, float]) -> None:
        """Show `step` after `elapsed` seconds of this run, with its losses."""
        # the bar's total is the budget in whole seconds: never past it (tqdm warns, shows -00:00)
        self.bar.n = step if self.budget is None else min(elapsed, self.whole_seconds())
        shown: dict[str, object] = {} if self.budget is None else {"step": step}
        shown.update(g=f"{losses['loss_g']:.3f}", d=f"{losses['loss_d']:.3f}")
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(0)  # redraw when mininterval has passed

    def close(self) -> None:
        self.bar.close()


def train(
    stores: list[str | Path],
    out: str | Path,
    cfg: TrainConfig,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    tag: str = "",
    snapshot_every: int = 0,
) -> dict[str, Any]:
    """Train a prior on the tiles of one or more stores and write it to `out` (atomically).

    With `resume`, continue from OUT.ckpt if it was written with the same sources, settings
    (the number of steps and the time budget aside) and `tag` (a workflow passes its code
    version, so new code never continues an old run); otherwise start afresh. With
    `snapshot_every`, every that many steps the prior as it stands is also kept, as a prior file
    of its own in `snapshot_dir(out)`: learning curves measure the result against the step."""
    out = Path(out)
    dev = pick_device(device)
    sources = open_sources(list(stores))
    check_settings(cfg)
    sampler = PatchSampler(sources, cfg.patch)
    cfg, coarse = coarse_sampler(cfg, stores)
    ckpt = checkpoint_path(out)
    state = _initial_state(ckpt, cfg, sources, dev, resume, tag)
    good = copy.deepcopy(checkpoint_dict(state, cfg, sources, tag))
    start = time.monotonic()
    warned = False
    bar = _Progress(cfg, state.step, progress)
    try:  # the bar ends its line, also when a step fails (a damaged tile): the error then reads alone
        while state.step < cfg.steps:
            if cfg.time_budget is not None and time.monotonic() - start > cfg.time_budget:
                log.info("time budget reached at step %d", state.step)
                break
            if cfg.lr_final != 1.0:
                set_lr(state, cfg, run_progress(cfg, state.step, time.monotonic() - start))
            losses = train_step(state, sampler, cfg, dev, coarse)
            if diverged(losses, state.history):
                state = _roll_back(state, good, losses, cfg, dev, out)
                continue
            losses["time_s"] = time.monotonic() - start
            state.history.append(losses)
            if not warned and d_separates(state.history):
                warned = True
                log.warning(
                    "from step %d the discriminator tells every real tile from its simulated observations: %s",
                    state.step - SEPARATION_WINDOW,
                    MISMATCH_HINT,
                )
            bar.update(state.step, losses["time_s"], losses)
            if state.step % cfg.checkpoint_every == 0:
                good = copy.deepcopy(checkpoint_dict(state, cfg, sources, tag))
                save_checkpoint(ckpt, good)
            if snapshot_every and state.step % snapshot_every == 0:
                save_checkpoint(
                    snapshot_dir(out) / f"step{state.step:07d}.pt", checkpoint_dict(state, cfg, sources, tag)
                )
    finally:
        bar.close()
    final = checkpoint_dict(state, cfg, sources, tag)
    save_checkpoint(ckpt, final)
    save_checkpoint(out, final)
    write_curves(state.history, out)
    return final
