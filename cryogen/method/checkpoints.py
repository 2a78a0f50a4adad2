"""Training checkpoints and priors (the same file format): writing them atomically, loading them
safely with one-line errors, and deciding whether one may be resumed by a given job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CryogenError
from ..io.files import atomic_output
from .config import RETIRED, TrainConfig
from .patches import Source
from .step import State, new_state, set_lr

CHECKPOINT_FORMAT = 1


def checkpoint_dict(state: State, cfg: TrainConfig, sources: list[Source], tag: str = "") -> dict[str, Any]:
    coarse = state.coarse
    nets = (
        {}
        if coarse is None
        else {
            "g_coarse": coarse.g.state_dict(),
            "g_coarse_ema": coarse.g_ema.state_dict(),
            "opt_coarse": coarse.opt.state_dict(),
        }
    )
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
        **nets,
        "rng": state.generator.get_state(),
        "history": state.history,
        "sources": [str(s.path) for s in sources],
        "tag": tag,
    }


def snapshot_dir(prior: Path) -> Path:
    """Where `train(..., snapshot_every=N)` keeps the prior every N steps (step0000200.pt, ...)."""
    return prior.with_name(prior.stem + "_snapshots")


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
        raise CryogenError(
            f"checkpoint format {ck.get('format')} is not supported by this CryoGEN (format {CHECKPOINT_FORMAT}); retrain",
            p,
        )
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


# settings that may change between a run and its resumption: how long to train
RESUMABLE_CHANGES = ("steps", "time_budget", "checkpoint_every")


def resumable(ck: dict[str, Any], cfg: TrainConfig, sources: list[Source], tag: str) -> str | None:
    """Why a checkpoint must not be resumed with these settings (None: it may be). Only the
    training length may differ: anything else would make the result depend on the history."""
    if not same_sources(ck, sources):
        return f"it was trained on other tile stores ({', '.join(ck.get('sources', []))})"
    if ck.get("tag", "") != tag:
        return f"it was written by another job (tag {ck.get('tag', '')!r}, now {tag!r})"
    old = {k: v for k, v in ck["train"].items() if k not in RETIRED}  # as TrainConfig.from_dict reads it
    new = cfg.to_dict()
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
    if state.coarse is not None:
        state.coarse.g.load_state_dict(ck["g_coarse"])
        state.coarse.g_ema.load_state_dict(ck["g_coarse_ema"])
        state.coarse.opt.load_state_dict(ck["opt_coarse"])
    state.generator.set_state(ck["rng"])
    state.step = ck["step"]
    state.lr_scale = ck["lr_scale"]
    state.rollbacks = ck["rollbacks"]
    state.history = list(ck["history"])
    set_lr(state, cfg)
    return state


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")
