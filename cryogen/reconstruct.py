"""Per-tile MAP reconstruction of a tile store under a trained prior.

Tiles are independent: each batch is normalised with its tomogram's statistics, warm-started
with g(y), refined by K MAP steps and, if asked, sampled for the uncertainty. Work goes into
`.NAME.partial` beside the output with a per-tile `done` flag, so a killed run resumes where it
stopped; the store is renamed to its final name only when every tile is done.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import zarr
from tqdm import tqdm

from .data import normalised_noise
from .errors import CryogenError
from .nets import NetConfig, build
from .solve import SolveConfig, map_estimate, posterior_std
from .store import TILE_ARRAY, TileMeta, create_store, open_store, read_tiles
from .train import TrainConfig, load_checkpoint, pick_device

DONE_ARRAY = "done"


def load_prior(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, TrainConfig]:
    """g (EMA weights) and D from a prior checkpoint, in eval mode, gradients off."""
    ck = load_checkpoint(path, device)
    cfg = TrainConfig.from_dict(ck["train"])
    g, d = build(cfg.net)
    try:
        g.load_state_dict(ck["g_ema"])
        d.load_state_dict(ck["d"])
    except RuntimeError as exc:
        raise CryogenError(f"checkpoint does not match this CryoGEN's networks ({str(exc).splitlines()[0]})", path) from None
    g, d = g.to(device).eval(), d.to(device).eval()
    g.requires_grad_(False)
    d.requires_grad_(False)
    return g, d, cfg


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _open_partial(partial: Path, meta: TileMeta, want_std: bool, fingerprint: dict[str, Any]) -> zarr.Group:
    """Reuse a partial store from an interrupted run of the same job, else start afresh."""
    if partial.exists():
        try:
            group = zarr.open_group(str(partial), mode="r+")
            if group.attrs.get("job") == fingerprint and DONE_ARRAY in group:
                return group
        except Exception:
            pass
        shutil.rmtree(partial)
    meta = TileMeta.from_json(meta.to_json())
    meta.kind = "recon"
    arrays = (TILE_ARRAY, "std") if want_std else (TILE_ARRAY,)
    group = create_store(partial, meta, arrays)
    group.create_array(DONE_ARRAY, shape=(meta.n_tiles,), chunks=(1,), dtype="bool", fill_value=False)
    group.attrs["job"] = fingerprint
    return group


def _batches(indices: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(indices), size):
        yield indices[i : i + size]


def reconstruct(
    store: str | Path,
    prior: str | Path,
    out: str | Path,
    cfg: SolveConfig = SolveConfig(),
    device: str = "auto",
    batch: int = 4,
    seed: int = 0,
    progress: bool = True,
    tile_indices: list[int] | None = None,
) -> Path:
    """Restore every tile of `store` into a reconstruction store at `out` (renamed when complete)."""
    out = Path(out)
    dev = pick_device(device)
    group, meta = open_store(store)
    g, d, tcfg = load_prior(prior, dev)
    if meta.tile % (2 ** tcfg.net.g_depth):
        raise CryogenError(f"tile size {meta.tile} is not a multiple of {2 ** tcfg.net.g_depth}, which the prior's network needs", store)
    tiles = group[TILE_ARRAY]
    probe = read_tiles(tiles, 0, 1, store)
    noise = normalised_noise(meta, probe)
    mean, std = meta.stats["mean"], meta.stats["std"]
    fingerprint = {"store": str(Path(store).resolve()), "prior": file_digest(prior), "solve": cfg.__dict__, "seed": seed}
    partial = _partial_path(out)
    rgroup = _open_partial(partial, meta, cfg.samples > 0, fingerprint)
    done = rgroup[DONE_ARRAY]
    done_flags = np.asarray(done[:])
    todo = [i for i in (tile_indices or range(meta.n_tiles)) if not done_flags[i]]
    bar = tqdm(total=meta.n_tiles, initial=meta.n_tiles - len(todo), desc=f"reconstruct {Path(store).name}", unit="tile", disable=not progress, mininterval=2)
    for idx in _batches(todo, batch):
        # one generator per tile batch, seeded by its first tile: results do not depend on the
        # order or the split of the work (serial, resumed or parallel)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + idx[0])
        y = torch.from_numpy(np.stack([read_tiles(tiles, i, i + 1, store)[0] for i in idx]))
        y = ((y - mean) / std).to(dev)
        with torch.no_grad():
            x0 = g(y)
        x, _ = map_estimate(x0, y, d, meta.wedge, noise, cfg, gen)
        result = (x * std + mean).cpu().numpy()
        for j, i in enumerate(idx):
            rgroup[TILE_ARRAY][i] = result[j]
        if cfg.samples > 0:
            s = (posterior_std(x, y, d, meta.wedge, noise, cfg, gen) * std).cpu().numpy()
            for j, i in enumerate(idx):
                rgroup["std"][i] = s[j]
        for i in idx:
            done[i] = True
        bar.update(len(idx))
    bar.close()
    if tile_indices is None:
        finish(partial, out)
    return partial if tile_indices is not None else out


def finish(partial: Path, out: Path) -> None:
    """Rename a complete partial store to its final name."""
    group = zarr.open_group(str(partial), mode="r")
    if not np.asarray(group[DONE_ARRAY][:]).all():
        raise CryogenError("reconstruction is incomplete", partial)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
