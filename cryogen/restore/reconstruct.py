"""Per-tile MAP reconstruction of a tile store under a trained prior.

Tiles are independent: each batch is normalised with its tomogram's statistics, warm-started
with g(y), refined by K MAP steps and, if asked, sampled for the uncertainty (`TileRestorer`,
which the Dask path runs on its workers too). Work goes into the job's partial store
(`cryogen.restore.partial`: `.NAME.partial` beside the output, a per-tile `done` flag), so a
killed run resumes where it stopped; the store is renamed to its final name only when every tile
is done. Batches are fixed runs of tiles, each seeded by its first tile, so the result does not
depend on how the work is split or resumed. Where the two-scale fill has the coarse network,
the store's coarse level is restored first, into the same partial store (`cryogen.restore.context`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import zarr
from tqdm import tqdm

from ..errors import CryogenError
from ..io.files import output_error
from ..io.store import COARSE_LEVEL, TILE_ARRAY, TileMeta, coarse_level, open_store, read_tiles, zarr_array
from ..method.checkpoints import load_checkpoint
from ..method.config import TrainConfig
from ..method.devices import pick_device
from ..method.patches import normalised_noise
from ..method.solver import (
    COARSE_CUTOFF_G,
    CoarseInput,
    SolveConfig,
    coarse_fill,
    in_wedge_with_gains,
    map_denoiser,
    map_estimate,
    posterior_std,
    warm_start,
    warm_start_padded,
    wedge_signal_gains,
    with_low_wedge,
)
from ..model.nets import build, place
from ..tiling import stitch
from .context import ContextVolume, tile_inside, tile_start
from .partial import CONTEXT, DONE_ARRAY, discard_if_empty, file_digest, finish, open_partial, partial_path

#: which of a prior's networks restores a store: g (the tiles) or the coarse network (the coarse
#: level, for the context fill)
Network = Literal["g", "coarse"]

log = logging.getLogger(__name__)


class Prior(NamedTuple):
    """A trained prior's networks, in eval mode, gradients off, and how it was trained."""

    g: torch.nn.Module  # EMA weights
    d: torch.nn.Module
    cfg: TrainConfig
    coarse: torch.nn.Module | None  # the coarse network's EMA weights; None for priors trained without it


def load_prior(path: str | Path, device: torch.device) -> Prior:
    """The networks of a prior checkpoint (`Prior`)."""
    ck = load_checkpoint(path, device)
    cfg = TrainConfig.from_dict(ck["train"])
    g, d = build(cfg.net)
    coarse = build(cfg.net)[0] if cfg.coarse else None
    try:
        g.load_state_dict(ck["g_ema"])
        d.load_state_dict(ck["d"])
        if coarse is not None:
            coarse.load_state_dict(ck["g_coarse_ema"])
    except (RuntimeError, KeyError) as exc:
        raise CryogenError(
            f"checkpoint does not match this CryoGEN's networks ({str(exc).splitlines()[0]})", path
        ) from None
    nets = [place(net, device).eval().requires_grad_(False) for net in (g, d, coarse) if net is not None]
    return Prior(nets[0], nets[1], cfg, nets[2] if coarse is not None else None)


def _batches(indices: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(indices), size):
        yield indices[i : i + size]


class TileRestorer:
    """Everything one worker needs to restore tiles of one store: the prior (loaded once), the
    normalisation and noise model, and the partial output store. Tiles are independent, so any
    number of restorers (threads, processes, Dask workers) can share one partial store."""

    def __init__(
        self,
        store: str | Path,
        prior: str | Path,
        partial: str | Path,
        cfg: SolveConfig,
        device: str = "auto",
        seed: int = 0,
        network: Network = "g",
    ) -> None:
        self.store = Path(store)
        self.dev = pick_device(device)
        group, self.meta = open_store(store)
        self.g, self.d, _, coarse = load_prior(prior, self.dev)  # checked against the tiles by prepare()
        # the two-scale fill's network and band: the coarse network, seen from this store's tiles, where
        # the prior has one and the store its coarse level; else g itself, below COARSE_CUTOFF_G
        level = coarse_level(store) if network == "g" else None
        self.fill_net: torch.nn.Module = self.g
        self.fill_cutoff = min(cfg.coarse_cutoff, COARSE_CUTOFF_G)
        # the MAP steps' denoiser: g, or the two-scale denoiser where the coarse network fills
        self.denoiser: torch.nn.Module = self.g
        # the fill's band from the restored coarse level, where prepare() made it
        self.context: ContextVolume | None = None
        if network == "coarse":  # the coarse level itself, restored by the coarse network alone
            if coarse is None:
                raise CryogenError("the prior has no coarse network to restore a coarse level with", prior)
            self.g = self.fill_net = self.denoiser = coarse
        elif coarse is not None and level is not None:
            self.fill_net = CoarseInput(coarse, self.meta.stats, open_store(level)[1].stats)
            self.fill_cutoff = cfg.coarse_cutoff
            self.denoiser = map_denoiser(self.g, self.fill_net, self.meta.wedge, cfg)
            if cfg.context_fill and (Path(partial) / CONTEXT).exists():
                self.context = ContextVolume(Path(partial) / CONTEXT, self.meta)
        self.tiles = zarr_array(group, TILE_ARRAY, store)
        self.noise = normalised_noise(self.meta, read_tiles(self.tiles, 0, 1, store))
        # what the networks see of the tiles' missing wedge: its signal, not its noise (the gains
        # measured on up to 8 tiles spread over the store: every restorer of it finds the same)
        self.wedge_gains: torch.Tensor | None = None
        if cfg.wedge_wiener:
            n = self.tiles.shape[0]
            picked = [self.load([int(i)]) for i in sorted(set(np.linspace(0, n - 1, min(n, 8)).astype(int)))]
            self.wedge_gains = wedge_signal_gains(torch.cat(picked).to(self.dev), self.meta.wedge, self.noise)
        self.cfg, self.seed, self.network = cfg, seed, network
        out = zarr.open_group(str(partial), mode="r+")
        # opened once: looking an array up in a group re-reads its metadata (~ms per batch)
        self.out = {name: zarr_array(out, name, partial) for name in (TILE_ARRAY, "std", DONE_ARRAY) if name in out}

    def restore(self, idx: list[int]) -> int:
        """Restore tiles `idx` (one batch) into the partial store and mark them done."""
        return self.save(idx, self.compute(idx, self.load(idx)))

    def load(self, idx: list[int]) -> torch.Tensor:
        """The tiles of a batch, normalised, on the CPU (so the next batch can be read while
        this one is computed)."""
        mean, std = self.meta.stats["mean"], self.meta.stats["std"]
        y = torch.from_numpy(read_tiles(self.tiles, idx[0], idx[-1] + 1, self.store))  # batches are runs of tiles
        return (y - mean) / std

    def compute(self, idx: list[int], y: torch.Tensor) -> dict[str, np.ndarray]:
        """The restored tiles of a batch, (B, T, T, T) from the normalised tiles y of the same shape
        (and their std when sampling), in the data's units."""
        mean, std = self.meta.stats["mean"], self.meta.stats["std"]
        # one generator per batch, seeded by its first tile: results do not depend on the order
        # or the split of the work (serial, resumed or parallel)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + idx[0])
        y = y.to(self.dev)
        if self.network == "coarse":
            return {TILE_ARRAY: (self._inside_only(idx, y) * std + mean).cpu().numpy()}
        seen = y if self.wedge_gains is None else in_wedge_with_gains(y, self.wedge_gains, self.meta.wedge)
        with torch.inference_mode():
            x0 = warm_start(self.g, seen, self.meta.wedge, self.cfg.flips)
        x0 = x0.clone()  # out of inference mode: the MAP steps and samples take gradients
        with torch.no_grad():  # not inference mode: the wedge masks it caches serve gradients later
            if self.context is not None:
                x0 = with_low_wedge(x0, self.context.tiles(idx).to(self.dev), self.meta.wedge, self.fill_cutoff)
            else:
                x0 = coarse_fill(self.fill_net, seen, x0, self.meta.wedge, self.fill_cutoff, self.cfg.flips)
        if self.cfg.map_steps == 0 and self.cfg.samples == 0:
            return {TILE_ARRAY: (x0 * std + mean).cpu().numpy()}
        x, _ = map_estimate(x0, y, self.d, self.meta.wedge, self.noise, self.cfg, gen, self.denoiser)
        result = {TILE_ARRAY: (x * std + mean).cpu().numpy()}
        if self.cfg.samples > 0:
            result["std"] = (
                (posterior_std(x, y, self.d, self.meta.wedge, self.noise, self.cfg, gen) * std).cpu().numpy()
            )
        return result

    def _inside_only(self, idx: list[int], y: torch.Tensor) -> torch.Tensor:
        """The context fill's pass (`network` "coarse"): g(y) over the flips, through the Wiener
        gains, of each tile's part inside the volume only (padded by reflection to what g needs),
        zero beyond, which blending never reads. A coarse level is often thinner than a tile (a
        44-plane crop bins to 22), and the chunk's mirrored copies of the slab would show g more
        specimen than there is: on the real crop the tube's roundness fell 0.924 -> 0.886 with them."""
        out = torch.zeros_like(y)
        for b, index in enumerate(idx):
            starts = tile_start(self.meta, index)
            part = tuple(
                slice(i0 - s, i1 - s) for (i0, i1), s in zip(tile_inside(self.meta, index), starts, strict=True)
            )
            t = y[b][part][None]
            if self.wedge_gains is not None:
                t = in_wedge_with_gains(t, self.wedge_gains, self.meta.wedge)
            with torch.inference_mode():
                out[b][part] = warm_start_padded(self.g, t, self.meta.wedge, self.cfg.flips)[0]
        return out

    def save(self, idx: list[int], result: dict[str, np.ndarray]) -> int:
        """Write a batch's tiles, then mark them done (a kill in between only redoes the batch)."""
        run = slice(idx[0], idx[-1] + 1)  # batches are runs of tiles: one Zarr call writes them all
        for name, tiles in result.items():
            self.out[name][run] = tiles
        self.out[DONE_ARRAY][run] = True
        return len(idx)


def prepare(
    store: str | Path,
    prior: str | Path,
    out: str | Path,
    cfg: SolveConfig,
    batch: int,
    seed: int,
    device: str = "auto",
    progress: bool = False,
    network: Network = "g",
    context: bool = True,
) -> tuple[Path, list[list[int]]]:
    """Open (or resume) the partial store for `out`; return it and the batches still to do.
    With `context`, where the tiles' fill takes the context fill, restore the store's coarse level
    into it first, here (`context_job`; once: a resumed run finds it; the Dask path runs it on
    its cluster instead).

    Batches are fixed by the tile grid and the batch size, not by what is left, so a resumed or
    parallel run processes exactly the batches (and draws exactly the noise) of a serial one.
    """
    if batch < 1:
        raise CryogenError(f"batch size must be at least 1, not {batch}")
    _, meta = open_store(store)
    check_prior(prior, meta, store, warn=network == "g")  # a bad prior must fail before any partial store is made
    fingerprint = {
        "store": str(Path(store).resolve()),
        "prior": file_digest(prior),
        "solve": cfg.__dict__,
        "seed": seed,
        "batch": batch,
        "network": network,
    }
    partial = partial_path(Path(out))
    existed = partial.exists()
    try:
        rgroup = open_partial(partial, meta, cfg.samples > 0, fingerprint, batch)
    except OSError as exc:  # read-only folder, full disk, a file in the way
        if not existed:
            shutil.rmtree(partial, ignore_errors=True)
        raise output_error(Path(out), exc) from None
    done = np.asarray(zarr_array(rgroup, DONE_ARRAY, partial)[:])
    batches = [b for b in _batches(list(range(meta.n_tiles)), batch) if not done[b].all()]
    if network == "g" and context and batches:
        recon = partial / COARSE_LEVEL  # where context_job restores the coarse level
        try:
            job = context_job(store, prior, partial, cfg)
            if job is not None:
                level, recon, only_g = job
                if not recon.exists():  # else restored before a kill, and only its blending is left
                    reconstruct(level, prior, recon, only_g, device, batch, seed, progress, network="coarse")
                finish_context(partial)
        except (OSError, CryogenError) as exc:
            # no tile done yet: leave no fresh partial store behind, unless the coarse pass kept work
            if not existed and not any(p.exists() for p in (recon, partial_path(recon))):
                shutil.rmtree(partial, ignore_errors=True)
            if isinstance(exc, OSError):
                raise output_error(Path(out), exc) from None
            raise
    if done.any():
        log.info(
            "resuming %s: %d of %d tiles already done in %s, %d to restore",
            out,
            int(done.sum()),
            meta.n_tiles,
            partial,
            sum(len(b) for b in batches),
        )
    return partial, batches


def context_job(
    store: str | Path, prior: str | Path, partial: Path, cfg: SolveConfig
) -> tuple[Path, Path, SolveConfig] | None:
    """What the context fill (`cryogen.restore.context`) still needs: the store's coarse level,
    where its reconstruction goes (inside `partial`, resumable like any) and how it is restored
    (the coarse network's g(y) over the flips through its own Wiener gains; no fill, no MAP
    steps); None where the fill takes no context (off, or no coarse network or level) or its
    volume is already made. `finish_context` then blends it."""
    if not cfg.context_fill or cfg.coarse_cutoff <= 0 or (partial / CONTEXT).exists():
        return None
    level = coarse_level(store)
    if level is None or load_prior(prior, torch.device("cpu")).coarse is None:
        return None
    group = open_store(store)[0]
    read_tiles(zarr_array(group, TILE_ARRAY, store), 0, 1, store)  # damaged tiles fail before the coarse pass
    return level, partial / COARSE_LEVEL, replace(cfg, map_steps=0, samples=0, coarse_cutoff=0.0)


def finish_context(partial: Path) -> None:
    """Blend the restored coarse level in `partial` into the context volume (stitch's blending,
    streamed, written atomically), then drop its tiles."""
    stitch(partial / COARSE_LEVEL, partial / CONTEXT, progress=False)
    shutil.rmtree(partial / COARSE_LEVEL)


def check_prior(prior: str | Path, meta: TileMeta, store: str | Path, warn: bool = True) -> None:
    """Fail with one line if `prior` is not a usable prior for the tiles of `store`; say so where
    the two-scale fill cannot use the coarse network (unless not `warn`)."""
    tcfg, coarse = load_prior(prior, torch.device("cpu"))[2:]
    if meta.tile % (2**tcfg.net.g_depth):
        raise CryogenError(
            f"tile size {meta.tile} is not a multiple of {2**tcfg.net.g_depth}, which the prior's network needs", store
        )
    why = "" if coarse is not None else f"{prior} was trained without a coarse network"
    if coarse is not None and coarse_level(store) is None:
        why = f"{store} has no coarse level (chunked before it was made, or too thin)"
    if why and warn:
        log.warning(
            "%s: the two-scale fill uses g below %g cycles/voxel instead (re-run chunk and train to have it)",
            why,
            COARSE_CUTOFF_G,
        )


def reconstruct(
    store: str | Path,
    prior: str | Path,
    out: str | Path,
    cfg: SolveConfig = SolveConfig(),
    device: str = "auto",
    batch: int = 4,
    seed: int = 0,
    progress: bool = True,
    max_batches: int | None = None,
    overlap: bool | None = None,
    network: Network = "g",
) -> Path:
    """Restore every tile of `store` into a reconstruction store at `out` (renamed when complete).

    `max_batches` stops early (as a kill would), leaving the partial store for a later resume.
    `overlap` reads and writes in background threads during compute (default: on a GPU only).
    `network` "coarse" restores a coarse level with the coarse network (the context fill's).
    """
    out = Path(out)
    partial, batches = prepare(store, prior, out, cfg, batch, seed, device, progress, network)
    try:
        restorer = TileRestorer(store, prior, partial, cfg, device, seed, network)
    except BaseException:  # e.g. unreadable tiles: leave no empty partial store behind
        discard_if_empty(partial)
        raise
    n = restorer.meta.n_tiles
    left = sum(len(b) for b in batches)
    log.info(
        "restoring %d of %d tiles of %s into %s (%d batches of up to %d)", left, n, store, out, len(batches), batch
    )
    bar = tqdm(
        total=n,
        initial=n - left,
        desc=f"reconstruct {Path(store).name}",
        unit="tile",
        disable=not progress,
        mininterval=2,
    )
    stop_early = max_batches is not None and max_batches < len(batches)
    if stop_early:
        batches = batches[:max_batches]
    finished = [n - left]  # tiles done, counted here: a disabled progress bar counts nothing

    def done(k: int) -> None:
        finished[0] += k
        bar.update(k)

    try:
        restore_all(restorer, batches, done, restorer.dev.type == "cuda" if overlap is None else overlap)
    except OSError as exc:  # a full disk, mostly: what is done stays in the partial store
        if discard_if_empty(partial):
            raise output_error(out, exc) from None
        raise CryogenError(
            f"cannot write: {(exc.strerror or str(exc)).lower()}; the {finished[0]} tiles done so far are kept in {partial} "
            "and a rerun continues from them",
            out,
        ) from None
    finally:
        bar.close()
    if stop_early:
        return partial
    finish(partial, out)
    log.info("restored %d tiles into %s", n, out)
    return out


def restore_all(restorer: TileRestorer, batches: list[list[int]], done: Callable[[int], Any], overlap: bool) -> None:
    """Restore `batches` in order; `done(n)` is called after each batch is written, and an error
    of any stage is raised after the batches before it are written.

    With `overlap`, the next batch is read and the last one written in background threads while
    this one is computed. That pays when the networks run on a GPU and the CPU would otherwise
    wait; on the CPU, torch already keeps every core busy and the threads only compete with it
    (measured on 2 cores: no faster, and 15 % more peak memory from the threads' malloc arenas),
    so the CPU path reads, computes and writes in turn."""
    if not overlap:
        for idx in batches:
            done(restorer.save(idx, restorer.compute(idx, restorer.load(idx))))
        return
    if not batches:
        return
    with (
        ThreadPoolExecutor(1, thread_name_prefix="cryogen-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="cryogen-write") as writer,
    ):
        loading: Future = reader.submit(restorer.load, batches[0])
        writing: Future | None = None
        for k, idx in enumerate(batches):
            y = loading.result()
            if k + 1 < len(batches):
                loading = reader.submit(restorer.load, batches[k + 1])
            result = restorer.compute(idx, y)
            if writing is not None:
                done(writing.result())
            writing = writer.submit(restorer.save, idx, result)
        if writing is not None:  # always, as there is a batch
            done(writing.result())
