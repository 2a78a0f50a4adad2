"""One training step of the prior (E-step, M-step, D-step) and the state it updates.

- M-step, by default: g learns from the data themselves, with recorrupted pairs turned about the
  tilt axis (`recorrupted_loss`): denoising in the measured region, and wedge filling where the
  turned data measured what the input's wedge lacks. Unbiased for the clean signal because the
  two noises are independent; no simulated candidate enters, so nothing in it can look unreal.
  The input's own wedge is first filled with g(y) (`TrainConfig.refine`, IsoNet's refinement), so
  the turned input is measured as fully as the data g restores.
- Options (TrainConfig weights, 0 by default, measured to keep the wedge empty on the real crop):
  the proxy's cycle, a posterior candidate x rotated and re-observed (A R x + n) mapped back to
  R x; an adversarial term (D on A R g(y) + n); g(y) towards the candidates (fit_weight).
- E-step (only when the cycle or the fit uses it): a few Langevin steps on the posterior
  U(x) = ||A(x - y)||^2/2sigma^2 + lambda N E(x), started at g(y).
- D-step: real y against A R g(y) + n, non-saturating logistic loss: the energy that MAP and the
  E-step use, and the separation diagnostic (does g's output, re-observed, look real?). g(y) is
  first brought to the data's signal power per shell (`signal_power`): a posterior mean is
  smoother than the signal, and D told the real crop by that blur alone. R is one
  of the 8 cube rotations that keep the tilt axis, and every other real patch is turned 180
  degrees about it (`half_turned`): with all 24 rotations and the data as they lie, D told the
  real crop by its filaments' orientation (all parallel, and a rotation shows them otherwise),
  not by the imaging model (`cryogen.qc.cues`; README, Quality).

Batches are (B, P, P, P) patches of one tomogram, so one wedge and one noise model per step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model.imaging import FFT_DIMS, apply_wedge, mask_tensor, observe, tilt_axis_dims
from ..model.nets import Discriminator, UNet3d, build, place
from ..model.rotations import (
    cylinder_support,
    inverse,
    random_cube_indices,
    random_tilt_axis_cube_indices,
    rotate,
    rotate_interp,
    tilt_axis_matrices,
)
from ..model.signal_power import matched_to_signal
from .config import TrainConfig
from .patches import Sampler
from .posterior import langevin


@dataclass
class CoarseNet:
    """The coarse network (`TrainConfig.coarse`): a second g, trained beside g on the tile stores'
    coarse levels (the tomograms binned 2x) with the same loss, whose output the two-scale fill
    takes the wedge's low frequencies from (`solver.coarse_fill`)."""

    g: UNet3d
    g_ema: UNet3d
    opt: torch.optim.Optimizer


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
    coarse: CoarseNet | None = None


def _adam(net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.99))


def new_state(cfg: TrainConfig, device: torch.device) -> State:
    torch.manual_seed(cfg.seed)
    g, d = build(cfg.net)
    g, d = place(g, device), place(d, device)
    g_ema = copy.deepcopy(g).requires_grad_(False)
    state = State(g, g_ema, d, _adam(g, cfg.lr_g), _adam(d, cfg.lr_d), torch.Generator().manual_seed(cfg.seed))
    if cfg.coarse:  # built after g and D, so that their start does not depend on it
        gc = place(build(cfg.net)[0], device)
        state.coarse = CoarseNet(gc, copy.deepcopy(gc).requires_grad_(False), _adam(gc, cfg.lr_g))
    return state


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """g's learning rate, as a fraction of lr_g, at `progress` (0 to 1) through the run: a cosine
    from 1 down to cfg.lr_final (1: constant)."""
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))


def set_lr(state: State, cfg: TrainConfig, progress: float = 0.0) -> None:
    g_opts = [state.opt_g] + ([state.coarse.opt] if state.coarse is not None else [])
    for group in (group for opt in g_opts for group in opt.param_groups):
        group["lr"] = cfg.lr_g * state.lr_scale * lr_factor(cfg, progress)
    for group in state.opt_d.param_groups:
        group["lr"] = cfg.lr_d * state.lr_scale


def recorrupted_loss(
    g: torch.nn.Module,
    y: torch.Tensor,
    wedge,
    noise,
    alpha: float,
    generator: torch.Generator,
    turns: torch.Tensor | None = None,
    fill_weight: float = 1.0,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoising without clean targets (recorrupted-to-recorrupted) on patches y, (B, P, P, P):
    with n fresh noise of the data's own spectrum, y + alpha n and y - n / alpha carry independent
    noise, so regressing the second on the first is unbiased for the clean signal. Compared in the
    measured subspace only: the target holds nothing inside the missing wedge.

    With `turns` (B,), whole degrees, both are first turned about the tilt axis and the input is
    re-wedged: A T (y + alpha n) -> T (y - n / alpha), compared where the turned data were
    measured (inside the cylinder the turn keeps). Part of that region lies in the input's missing
    wedge, so the real data, with their real noise, teach g to fill the wedge, and the turns
    between the cube's quarter turns keep enough of the input measured to infer it from (at a
    quarter turn of a +-60 degree range only 60 of its 120 degrees remain). Input and target are
    interpolated alike, so g learns no sharpening. `fill_weight` w makes the errors inside the
    input's missing wedge (where g fills) cost w times those in its measured region (where it
    denoises): the loss is L_measured + w L_wedge.

    With `fill`, g's current estimate g(y) (no gradient), the input's own missing wedge is first
    filled from it (IsoNet's refinement): the turned, re-wedged input then holds the whole
    measured region, as the data g restores do, not only the part the turn left measured (on
    average ~60 % of it). No target leaks in: the fill lies where the data measured nothing, and
    the loss compares only where the turned data were measured."""
    n = noise.sample(tuple(y.shape), wedge, generator=generator, device=y.device)
    source, target = y + alpha * n, y - n / alpha
    if turns is None:
        return apply_wedge(g(source) - target, wedge).pow(2).mean()
    if fill is not None:
        source = source + fill - apply_wedge(fill, wedge)
    mats = tilt_axis_matrices(turns, wedge.tilt_axis)
    source = apply_wedge(rotate_interp(source, mats, padding="reflection"), wedge)
    target = rotate_interp(target, mats, padding="reflection")
    nz, ny, nx = y.shape[-3:]
    inside = cylinder_support((nz, ny, nx), wedge.tilt_axis, y.device)
    diff = torch.fft.rfftn((g(source) - target) * inside, dim=FFT_DIMS)
    masks = torch.stack([mask_tensor(y.shape, wedge, y.device, float(t)) for t in turns.tolist()])
    if fill_weight != 1.0:  # the part of the turned data that lies in the input's missing wedge
        measured = mask_tensor(y.shape, wedge, y.device)
        masks = masks * (1.0 + (math.sqrt(fill_weight) - 1.0) * (1.0 - measured))
    return torch.fft.irfftn(diff * masks, s=y.shape[-3:], dim=FFT_DIMS).pow(2).mean()


def half_turned(y: torch.Tensor, tilt_axis: str) -> torch.Tensor:
    """The batch with every other patch turned 180 degrees about the tilt axis (the beam and the
    in-plane axis flipped: the same wedge, the same noise statistics, a proper rotation)."""
    _, inplane = tilt_axis_dims(tilt_axis)
    out = y.clone()
    out[1::2] = torch.flip(y[1::2], (-3, inplane))
    return out


def random_turns(n: int, max_turn: float, generator: torch.Generator) -> torch.Tensor:
    """n turns about the tilt axis, whole degrees drawn uniformly from [-max_turn, max_turn]."""
    return torch.randint(-int(max_turn), int(max_turn) + 1, (n,), generator=generator).float()


def _update_ema(g_ema: torch.nn.Module, g: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(g_ema.parameters(), g.parameters(), strict=False):
            pe.lerp_(p, 1.0 - decay)


def coarse_step(
    net: CoarseNet, sampler: Sampler, cfg: TrainConfig, generator: torch.Generator, device: torch.device
) -> float:
    """One step of the coarse network on a batch of the coarse levels: g's own M-step (the
    recorrupted, turned and refined loss), nothing else (no D: the energy is g's). Returns its loss."""
    y, src = sampler.sample(cfg.batch, generator)
    y = y.to(device)
    turns = random_turns(cfg.batch, cfg.denoise_turn, generator) if cfg.denoise_turn else None
    fill = None
    if cfg.refine and turns is not None:
        with torch.no_grad():
            fill = net.g(y)
    loss = recorrupted_loss(net.g, y, src.meta.wedge, src.noise, cfg.recorrupt, generator, turns, cfg.fill_weight, fill)
    net.opt.zero_grad(set_to_none=True)
    loss.backward()
    net.opt.step()
    _update_ema(net.g_ema, net.g, cfg.ema)
    return loss.item()


def train_step(
    state: State, sampler: Sampler, cfg: TrainConfig, device: torch.device, coarse: Sampler | None = None
) -> dict[str, float]:
    """One E/M/D step, and one step of the coarse network on batches from `coarse` where the state
    has one; returns the losses."""
    gen = state.generator
    y, src = sampler.sample(cfg.batch, gen)
    y = y.to(device)
    wedge, noise = src.meta.wedge, src.noise
    g, g_ema, d = state.g, state.g_ema, state.d

    zero = y.new_zeros(())
    loss_fit = loss_cycle = loss_denoise = loss_adv = zero
    # E-step: Langevin candidates from the posterior, started at the EMA network's estimate
    # (only the fit and cycle terms use them; with both off the step skips them)
    if cfg.fit_weight or cfg.cycle_weight:
        with torch.no_grad():
            x_ema = g_ema(y)
        d.requires_grad_(False)
        x_e = langevin(x_ema, y, d, wedge, noise, cfg.prior_weight, cfg.langevin_steps, cfg.langevin_step, gen)

    # D trains on every step while g trains against it, else every d_every-th step: it then only
    # serves the energy (MAP, the std map) and the separation check, and g(y) for its fake costs
    # a forward pass of g (with D's own passes, a quarter of a step)
    # (a function of the step alone, so a resumed run trains D on the same steps as an uninterrupted one)
    train_d = bool(cfg.adv_weight) or state.step % max(cfg.d_every, 1) == 0 or not state.history
    refine = bool(cfg.refine and cfg.denoise_weight and cfg.denoise_turn)
    # M-step
    with torch.set_grad_enabled(bool(cfg.fit_weight or cfg.adv_weight)):
        x_g = g(y) if cfg.fit_weight or train_d or refine else None  # also D's fake and the refinement's fill
    if cfg.fit_weight:
        assert x_g is not None
        loss_fit = F.mse_loss(x_g, x_e)
    if cfg.cycle_weight:
        rot = random_cube_indices(cfg.batch, gen)
        y_proxy = observe(x_e, wedge, noise, rot, gen)
        if cfg.cycle_measured:  # only where the rotated candidate holds what the data measured
            loss_cycle = apply_wedge(rotate(g(y_proxy), inverse(rot)) - x_e, wedge).pow(2).mean()
        else:
            loss_cycle = F.mse_loss(g(y_proxy), rotate(x_e, rot))
    if cfg.denoise_weight:
        turns = random_turns(cfg.batch, cfg.denoise_turn, gen) if cfg.denoise_turn else None
        fill = x_g.detach() if refine and x_g is not None else None
        loss_denoise = recorrupted_loss(g, y, wedge, noise, cfg.recorrupt, gen, turns, cfg.fill_weight, fill)
    fake = None
    if train_d:  # always when adv_weight
        assert x_g is not None
        rot_adv = random_tilt_axis_cube_indices(cfg.batch, wedge.tilt_axis, gen)
        d.requires_grad_(False)
        fake = observe(matched_to_signal(x_g, y, wedge, noise), wedge, noise, rot_adv, gen)
    if cfg.adv_weight:
        loss_adv = F.softplus(-d(fake)).mean()
    loss_g = (
        cfg.fit_weight * loss_fit
        + cfg.cycle_weight * loss_cycle
        + cfg.denoise_weight * loss_denoise
        + cfg.adv_weight * loss_adv
    )
    state.opt_g.zero_grad(set_to_none=True)
    if loss_g.requires_grad:  # every g term weighted 0: D alone trains
        loss_g.backward()
        state.opt_g.step()

    # D-step (on other steps the history's last figures of D are carried: one row per step)
    if train_d:
        assert fake is not None
        d.requires_grad_(True)
        score_real = d(half_turned(y, wedge.tilt_axis))
        score_fake = d(fake.detach())
        loss_d = F.softplus(-score_real).mean() + F.softplus(score_fake).mean()
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()
        d_figures = {
            "loss_d": loss_d.item(),
            "d_acc_real": float((score_real > 0).float().mean()),
            "d_acc_fake": float((score_fake < 0).float().mean()),
        }
    else:
        d_figures = {key: state.history[-1][key] for key in ("loss_d", "d_acc_real", "d_acc_fake")}

    _update_ema(g_ema, g, cfg.ema)
    coarse_figures = {}
    if state.coarse is not None:
        if coarse is None:
            raise ValueError("the state has a coarse network but no coarse batches were given")
        coarse_figures["loss_coarse"] = coarse_step(state.coarse, coarse, cfg, gen, device)
    state.step += 1
    return {
        "step": state.step,
        "loss_g": loss_g.item(),
        "loss_fit": loss_fit.item(),
        "loss_cycle": loss_cycle.item(),
        "loss_denoise": loss_denoise.item(),
        "loss_adv": loss_adv.item(),
        **d_figures,
        **coarse_figures,
        "lr_scale": state.lr_scale,
        "lr_g": state.opt_g.param_groups[0]["lr"],
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
