"""Training the prior: D (the energy) and g (amortised MAP), EM-style, with no ground truth.

Each step draws a batch of observed patches y from one tomogram and does:

- E-step: a few Langevin steps on the posterior U(x) = ||A(x - y)||^2/2sigma^2 + lambda N E(x),
  started at g(y): candidates that fit the data and that D finds plausible.
- M-step: the proxy's self-consistency: a posterior candidate x, rotated and re-observed
  (A R x + n, with noise from the tomogram's noise model), must be mapped back to R x. Because R
  moves the wedge, this teaches g to fill it. Denoising comes from recorrupted pairs of the real
  data (y + a n -> y - n / a, compared in the measured subspace), unbiased for the clean signal
  because the two noises are independent. Plus a small adversarial term (D on A R g(y) + n), and
  optionally (fit_weight) g(y) towards the candidates themselves.
- D-step: real y against A R g(y) + n, non-saturating logistic loss.

Stabilisation: spectral normalisation in D, EMA weights for g (used for all targets and for
reconstruction), checkpoints (atomic; `resume` continues bit-for-bit, RNG included), and
divergence detection: a non-finite or exploding loss rolls back to the last good state and
halves the learning rates instead of dying.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import __version__
from .data import PatchSampler, Source, open_sources
from .errors import CryogenError
from .files import atomic_output
from .imaging import apply_wedge, observe
from .nets import Discriminator, NetConfig, UNet3d, build, place
from .rotations import random_cube_indices, rotate
from .solve import langevin

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    steps: int = 2000
    time_budget: float | None = None  # seconds; training stops at whichever comes first
    batch: int = 4
    patch: int = 32
    lr_g: float = 1e-3
    lr_d: float = 2e-4
    prior_weight: float = 0.01  # lambda of the E-step's posterior (see SolveConfig)
    langevin_steps: int = 1
    langevin_step: float = 0.05
    fit_weight: float = 0.0  # g(y) towards the E-step samples: measured to pull g back towards the noisy y
    cycle_weight: float = 1.0
    denoise_weight: float = 1.0
    recorrupt: float = 1.0  # alpha of the recorrupted pairs y + alpha n / y - n / alpha (1: measured best of 0.5, 1)
    adv_weight: float = 0.02
    ema: float = 0.99
    checkpoint_every: int = 50
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)
    fail_at_step: int | None = None  # test hook: inject a NaN loss once, at this step

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["net"] = self.net.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["net"] = NetConfig(**d["net"])
        return cls(**d)


@dataclass
class State:
    g: UNet3d
    g_ema: UNet3d
    d: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    lr_scale: float = 1.0
    rollbacks: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CryogenError("--device cuda was asked for, but no CUDA GPU is available to torch")
    if name not in ("cpu", "cuda"):
        raise CryogenError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def new_state(cfg: TrainConfig, device: torch.device) -> State:
    torch.manual_seed(cfg.seed)
    g, d = build(cfg.net)
    g, d = place(g, device), place(d, device)
    g_ema = copy.deepcopy(g).requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(0.5, 0.99))
    return State(g, g_ema, d, opt_g, opt_d, torch.Generator().manual_seed(cfg.seed))


def _set_lr(state: State, cfg: TrainConfig) -> None:
    for group in state.opt_g.param_groups:
        group["lr"] = cfg.lr_g * state.lr_scale
    for group in state.opt_d.param_groups:
        group["lr"] = cfg.lr_d * state.lr_scale


def recorrupted_loss(g: torch.nn.Module, y: torch.Tensor, wedge, noise, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Denoising without clean targets (recorrupted-to-recorrupted): with n fresh noise of the
    data's own spectrum, y + alpha n and y - n / alpha carry independent noise, so regressing the
    second on the first is unbiased for the clean signal. Compared in the measured subspace only:
    the target holds nothing inside the missing wedge, which the cycle loss teaches g to fill."""
    n = noise.sample(tuple(y.shape), wedge, generator=generator, device=y.device)
    return apply_wedge(g(y + alpha * n) - (y - n / alpha), wedge).pow(2).mean()


def train_step(state: State, sampler: PatchSampler, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """One E/M/D step; returns the losses."""
    gen = state.generator
    y, src = sampler.sample(cfg.batch, gen)
    y = y.to(device)
    wedge, noise = src.meta.wedge, src.noise
    g, g_ema, d = state.g, state.g_ema, state.d

    # E-step: Langevin candidates from the posterior, started at the EMA network's estimate
    with torch.no_grad():
        x_ema = g_ema(y)
    d.requires_grad_(False)
    x_e = langevin(x_ema, y, d, wedge, noise, cfg.prior_weight, cfg.langevin_steps, cfg.langevin_step, gen)

    # M-step
    rot = random_cube_indices(cfg.batch, gen)
    y_proxy = observe(x_e, wedge, noise, rot, gen)
    x_g = g(y)
    loss_fit = F.mse_loss(x_g, x_e)
    loss_cycle = F.mse_loss(g(y_proxy), rotate(x_e, rot))
    loss_denoise = recorrupted_loss(g, y, wedge, noise, cfg.recorrupt, gen) if cfg.denoise_weight else x_g.new_zeros(())
    rot_adv = random_cube_indices(cfg.batch, gen)
    fake = observe(x_g, wedge, noise, rot_adv, gen)
    loss_adv = F.softplus(-d(fake)).mean()
    loss_g = (
        cfg.fit_weight * loss_fit + cfg.cycle_weight * loss_cycle + cfg.denoise_weight * loss_denoise + cfg.adv_weight * loss_adv
    )
    if cfg.fail_at_step is not None and state.step == cfg.fail_at_step and state.rollbacks == 0:
        loss_g = loss_g * float("nan")
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()

    # D-step
    d.requires_grad_(True)
    score_real = d(y)
    score_fake = d(fake.detach())
    loss_d = F.softplus(-score_real).mean() + F.softplus(score_fake).mean()
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()

    with torch.no_grad():
        for pe, p in zip(g_ema.parameters(), g.parameters()):
            pe.lerp_(p, 1.0 - cfg.ema)
    state.step += 1
    return {
        "step": state.step,
        "loss_g": loss_g.item(),
        "loss_fit": loss_fit.item(),
        "loss_cycle": loss_cycle.item(),
        "loss_denoise": loss_denoise.item(),
        "loss_adv": loss_adv.item(),
        "loss_d": loss_d.item(),
        "d_acc_real": float((score_real > 0).float().mean()),
        "d_acc_fake": float((score_fake < 0).float().mean()),
        "lr_scale": state.lr_scale,
    }


SEPARATION_WINDOW = 100
MISMATCH_HINT = ("the imaging model (wedge and noise) misses something in this data, so the learned energy says "
                 "little and training may diverge: check the tilt range and axis given to chunk (and its warnings), "
                 "and give even/odd halves for a measured noise model if you have them")


def d_separates(history: list[dict[str, float]]) -> bool:
    """Whether D has classified every real and every simulated patch of a batch correctly in at
    least 90 % of the last SEPARATION_WINDOW steps. Data whose wedge or noise does not match the
    imaging model gets there within a hundred steps (and then tends to diverge); healthy runs
    measured on the benchmark phantoms stay below 45 % even after 3000 steps. Worth a warning
    that names the likely cause."""
    recent = history[-SEPARATION_WINDOW:]
    perfect = sum(h["d_acc_real"] == 1.0 and h["d_acc_fake"] == 1.0 for h in recent)
    return len(recent) == SEPARATION_WINDOW and perfect >= 0.9 * SEPARATION_WINDOW


def _diverged(losses: dict[str, float], history: list[dict[str, float]]) -> bool:
    if not all(math.isfinite(v) for v in losses.values()):
        return True
    recent = [h["loss_g"] for h in history[-50:]]
    if len(recent) >= 20:
        typical = sorted(recent)[len(recent) // 2]
        if losses["loss_g"] > 50 * max(typical, 1e-3):
            return True
    return losses["loss_d"] > 20


def checkpoint_dict(state: State, cfg: TrainConfig, sources: list[Source], tag: str = "") -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "cryogen-prior",
        "cryogen_version": __version__,
        "train": cfg.to_dict(),
        "step": state.step,
        "lr_scale": state.lr_scale,
        "rollbacks": state.rollbacks,
        "g": state.g.state_dict(),
        "g_ema": state.g_ema.state_dict(),
        "d": state.d.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "rng": state.generator.get_state(),
        "history": state.history,
        "sources": [str(s.path) for s in sources],
        "tag": tag,
    }


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a prior or training checkpoint, with a one-line error if it is corrupt or foreign.

    Loaded with `weights_only=True`: a checkpoint holds only tensors, numbers, strings, lists and
    dicts, so a file that needs arbitrary unpickling is not ours (and must not run code)."""
    p = Path(path)
    if not p.exists():
        raise CryogenError("prior checkpoint not found", p)
    if p.is_dir():
        raise CryogenError("is a directory, not a prior checkpoint", p)
    if p.stat().st_size == 0:
        raise CryogenError("checkpoint file is empty; delete it (and train again)", p)
    try:
        ck = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # torch's own messages run to paragraphs: the type says enough
        raise CryogenError(
            f"not a readable checkpoint ({type(exc).__name__}): it is truncated, corrupt or not a CryoGEN prior; "
            "delete it (and train again)",
            p,
        ) from None
    if not isinstance(ck, dict) or ck.get("kind") != "cryogen-prior":
        kind = ck.get("kind") if isinstance(ck, dict) else type(ck).__name__
        raise CryogenError(f"not a CryoGEN prior checkpoint (kind {kind!r}, expected 'cryogen-prior')", p)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise CryogenError(f"checkpoint format {ck.get('format')} is not supported by this CryoGEN (format {CHECKPOINT_FORMAT}); retrain", p)
    missing = [k for k in ("train", "step", "g", "g_ema", "d") if k not in ck]
    if missing:
        raise CryogenError(f"checkpoint is incomplete (no {', '.join(missing)})", p)
    try:
        TrainConfig.from_dict(ck["train"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CryogenError(f"checkpoint's training settings do not match this CryoGEN ({exc})", p) from None
    return ck


def same_sources(ck: dict[str, Any], sources: list[Source]) -> bool:
    """Whether a checkpoint was trained on these tile stores (resolved paths, in order), so that
    --resume never continues a prior trained on other data."""
    def norm(paths: list[str]) -> list[str]:
        return [str(Path(x).resolve()) for x in paths]

    return norm(list(ck.get("sources", []))) == norm([str(s.path) for s in sources])


# settings that may change between a run and its resumption: how long to train, and test hooks
RESUMABLE_CHANGES = ("steps", "time_budget", "checkpoint_every", "fail_at_step")


def resumable(ck: dict[str, Any], cfg: TrainConfig, sources: list[Source], tag: str) -> str | None:
    """Why a checkpoint must not be resumed with these settings (None: it may be). Only the
    training length may differ: anything else would make the result depend on the history."""
    if not same_sources(ck, sources):
        return f"it was trained on other tile stores ({', '.join(ck.get('sources', []))})"
    if ck.get("tag", "") != tag:
        return f"it was written by another job (tag {ck.get('tag', '')!r}, now {tag!r})"
    old, new = dict(ck["train"]), cfg.to_dict()
    changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        return f"its settings differ ({', '.join(changed)})"
    return None


def restore_state(ck: dict[str, Any], cfg: TrainConfig, device: torch.device) -> State:
    state = new_state(cfg, device)
    state.g.load_state_dict(ck["g"])
    state.g_ema.load_state_dict(ck["g_ema"])
    state.d.load_state_dict(ck["d"])
    state.opt_g.load_state_dict(ck["opt_g"])
    state.opt_d.load_state_dict(ck["opt_d"])
    state.generator.set_state(ck["rng"])
    state.step = ck["step"]
    state.lr_scale = ck["lr_scale"]
    state.rollbacks = ck["rollbacks"]
    state.history = list(ck["history"])
    _set_lr(state, cfg)
    return state


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def write_curves(history: list[dict[str, float]], out: Path) -> tuple[Path, Path]:
    """Training curves beside the prior: CSV for reading, PNG for looking."""
    csv_path = out.with_name(out.stem + "_curves.csv")
    png_path = out.with_name(out.stem + "_curves.png")
    if not history:
        return csv_path, png_path
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0].keys()))
        writer.writeheader()
        writer.writerows(history)
    from .report import plot_curves

    plot_curves(history, png_path)
    return csv_path, png_path


def train(
    stores: list[str | Path],
    out: str | Path,
    cfg: TrainConfig,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    tag: str = "",
) -> dict[str, Any]:
    """Train a prior on the tiles of one or more stores and write it to `out` (atomically).

    With `resume`, continue from OUT.ckpt if it was written with the same sources, settings
    (the number of steps and the time budget aside) and `tag` (a workflow passes its code
    version, so new code never continues an old run); otherwise start afresh."""
    out = Path(out)
    dev = pick_device(device)
    sources = open_sources(list(stores))
    if cfg.batch < 1:
        raise CryogenError(f"--batch must be at least 1, not {cfg.batch}")
    if cfg.patch < 1 or cfg.patch % 2 ** cfg.net.g_depth:
        raise CryogenError(f"patch size {cfg.patch} must be a positive multiple of {2 ** cfg.net.g_depth}")
    sampler = PatchSampler(sources, cfg.patch)
    ckpt = checkpoint_path(out)
    state = None
    if resume and ckpt.exists():
        ck = load_checkpoint(ckpt, dev)
        why = resumable(ck, cfg, sources, tag)
        if why:
            log.warning("not resuming from %s: %s; starting afresh", ckpt, why)
        else:
            try:
                state = restore_state(ck, TrainConfig.from_dict(ck["train"]), dev)
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                raise CryogenError(f"checkpoint does not match this CryoGEN ({str(exc).splitlines()[0][:160]}); delete it to start afresh", ckpt) from None
            log.info("resumed from %s at step %d of %d", ckpt, state.step, cfg.steps)
    elif resume:
        log.info("no checkpoint %s yet: starting from step 0", ckpt)
    if state is None:
        state = new_state(cfg, dev)
    good = copy.deepcopy(checkpoint_dict(state, cfg, sources, tag))
    start = time.monotonic()
    warned = False
    bar = tqdm(total=cfg.steps, initial=state.step, desc="train", unit="step", disable=not progress, mininterval=2)
    while state.step < cfg.steps:
        if cfg.time_budget is not None and time.monotonic() - start > cfg.time_budget:
            log.info("time budget reached at step %d", state.step)
            break
        losses = train_step(state, sampler, cfg, dev)
        if _diverged(losses, state.history):
            state.rollbacks += 1
            if state.rollbacks > 8:
                hint = MISMATCH_HINT if d_separates(state.history) else "lower the learning rates"
                raise CryogenError(f"training diverged {state.rollbacks} times; {hint}", out)
            log.warning("training diverged at step %d (%s); rolling back to step %d with half the learning rate", state.step, {k: round(v, 4) for k, v in losses.items()}, good["step"])
            lr_scale, rollbacks = state.lr_scale * 0.5, state.rollbacks
            state = restore_state(copy.deepcopy(good), cfg, dev)  # the optimiser would alias its tensors
            state.lr_scale, state.rollbacks = lr_scale, rollbacks
            state.generator.manual_seed(cfg.seed + 1000 * rollbacks)  # a different path this time
            _set_lr(state, cfg)
            bar.n = state.step
            continue
        losses["time_s"] = time.monotonic() - start
        state.history.append(losses)
        if not warned and d_separates(state.history):
            warned = True
            log.warning("from step %d the discriminator tells every real tile from its simulated observations: %s",
                        state.step - SEPARATION_WINDOW, MISMATCH_HINT)
        bar.update(1)
        bar.set_postfix(g=f"{losses['loss_g']:.3f}", d=f"{losses['loss_d']:.3f}", refresh=False)
        if state.step % cfg.checkpoint_every == 0:
            good = copy.deepcopy(checkpoint_dict(state, cfg, sources, tag))
            save_checkpoint(ckpt, good)
    bar.close()
    final = checkpoint_dict(state, cfg, sources, tag)
    save_checkpoint(ckpt, final)
    save_checkpoint(out, final)
    write_curves(state.history, out)
    return final
