"""One training step of the prior (E-step, M-step, D-step) and the state it updates.

- E-step: a few Langevin steps on the posterior U(x) = ||A(x - y)||^2/2sigma^2 + lambda N E(x),
  started at g(y): candidates that fit the data and that D finds plausible.
- M-step: the proxy's self-consistency: a posterior candidate x, rotated and re-observed
  (A R x + n, with noise from the tomogram's noise model), must be mapped back to R x. Because R
  moves the wedge, this teaches g to fill it. Denoising comes from recorrupted pairs of the real
  data (y + a n -> y - n / a, compared in the measured subspace), unbiased for the clean signal
  because the two noises are independent. Plus a small adversarial term (D on A R g(y) + n), and
  optionally (fit_weight) g(y) towards the candidates themselves.
- D-step: real y against A R g(y) + n, non-saturating logistic loss.

Batches are (B, P, P, P) patches of one tomogram, so one wedge and one noise model per step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model.imaging import apply_wedge, observe
from ..model.nets import Discriminator, UNet3d, build, place
from ..model.rotations import random_cube_indices, rotate
from .config import TrainConfig
from .patches import Sampler
from .solver import langevin


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


def new_state(cfg: TrainConfig, device: torch.device) -> State:
    torch.manual_seed(cfg.seed)
    g, d = build(cfg.net)
    g, d = place(g, device), place(d, device)
    g_ema = copy.deepcopy(g).requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(0.5, 0.99))
    return State(g, g_ema, d, opt_g, opt_d, torch.Generator().manual_seed(cfg.seed))


def set_lr(state: State, cfg: TrainConfig) -> None:
    for group in state.opt_g.param_groups:
        group["lr"] = cfg.lr_g * state.lr_scale
    for group in state.opt_d.param_groups:
        group["lr"] = cfg.lr_d * state.lr_scale


def recorrupted_loss(
    g: torch.nn.Module, y: torch.Tensor, wedge, noise, alpha: float, generator: torch.Generator
) -> torch.Tensor:
    """Denoising without clean targets (recorrupted-to-recorrupted) on patches y, (B, P, P, P):
    with n fresh noise of the data's own spectrum, y + alpha n and y - n / alpha carry independent
    noise, so regressing the second on the first is unbiased for the clean signal. Compared in the
    measured subspace only: the target holds nothing inside the missing wedge, which the cycle
    loss teaches g to fill."""
    n = noise.sample(tuple(y.shape), wedge, generator=generator, device=y.device)
    return apply_wedge(g(y + alpha * n) - (y - n / alpha), wedge).pow(2).mean()


def train_step(state: State, sampler: Sampler, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
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
        cfg.fit_weight * loss_fit
        + cfg.cycle_weight * loss_cycle
        + cfg.denoise_weight * loss_denoise
        + cfg.adv_weight * loss_adv
    )
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
        for pe, p in zip(g_ema.parameters(), g.parameters(), strict=False):
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


def diverged(losses: dict[str, float], history: list[dict[str, float]]) -> bool:
    if not all(math.isfinite(v) for v in losses.values()):
        return True
    recent = [h["loss_g"] for h in history[-50:]]
    if len(recent) >= 20:
        typical = sorted(recent)[len(recent) // 2]
        if losses["loss_g"] > 50 * max(typical, 1e-3):
            return True
    return losses["loss_d"] > 20
