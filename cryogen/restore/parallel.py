"""Reconstruction of a tile store with Dask: batches of tiles restored in parallel.

Tiles are independent and every batch is seeded by its first tile, so the work can be split
over any number of workers and still give, bit for bit, the tiles of the serial path
(`cryogen.restore.reconstruct.reconstruct`). The batches are those of the serial path
(`cryogen.restore.reconstruct.prepare`), and every worker writes its tiles into the same partial store
(one Zarr chunk per tile), which is renamed to the output when all are done. A killed job
resumes where it stopped, serial or parallel.

The prior is loaded once per worker, never shipped with the tasks: a `RestorerPlugin` (a Dask
worker plugin) builds one `TileRestorer` on each worker when it is registered, and each task
only names the plugin and the batch of tile indices. The cluster is either a `LocalCluster`
started here (sized by the caller, normally from the Snakemake rule's threads and memory), or
an existing one reached by its scheduler address (for example dask-jobqueue on SLURM); an
existing cluster's workers must see the same file system paths.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import CryogenError, setting
from ..method.solver import SolveConfig
from .partial import finish
from .reconstruct import Network, TileRestorer, context_job, finish_context, prepare, reconstruct

log = logging.getLogger(__name__)

PLUGIN_PREFIX = "cryogen-restorer-"


class RestorerPlugin(WorkerPlugin):
    """Builds one `TileRestorer` per worker (loading the prior once) for one reconstruction job."""

    def __init__(
        self,
        name: str,
        store: str,
        prior: str,
        partial: str,
        cfg: SolveConfig,
        device: str,
        seed: int,
        torch_threads: int | None = 1,
        network: Network = "g",
    ) -> None:
        self.name = name
        self.args = (store, prior, partial, cfg, device, seed, network)
        self.torch_threads = torch_threads
        self.restorer: TileRestorer | None = None

    def setup(self, worker: Any) -> None:
        import torch

        from ..runtime import tune_malloc

        tune_malloc()  # a worker is its own process (see cryogen.runtime)

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        self.restorer = TileRestorer(*self.args)

    def teardown(self, worker: Any) -> None:
        self.restorer = None

    def restore(self, batch: list[int]) -> int:
        if self.restorer is None:  # setup failed or has not run on this worker
            self.setup(None)
        assert self.restorer is not None
        return self.restorer.restore(batch)


def restore_batch(plugin_name: str, batch: list[int]) -> int:
    """Dask task: restore one batch of tiles with this worker's restorer; returns the tile count."""
    plugin = get_worker().plugins[plugin_name]
    if not isinstance(plugin, RestorerPlugin):
        raise CryogenError(f"Dask worker plugin {plugin_name} is a {type(plugin).__name__}, not CryoGEN's restorer")
    return plugin.restore(batch)


def _memory_per_worker(memory_mb: float | None, workers: int) -> str | int:
    if not memory_mb:
        return "auto"
    return int(memory_mb * 1024 * 1024 / workers)


def reconstruct_parallel(
    store: str | Path,
    prior: str | Path,
    out: str | Path,
    cfg: SolveConfig = SolveConfig(),
    device: str = "auto",
    batch: int = 4,
    seed: int = 0,
    workers: int = 2,
    memory_mb: float | None = None,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> Path:
    """Restore every tile of `store` into `out` with Dask; the result equals `reconstruct()`'s.

    Without `scheduler_address`, a LocalCluster of `workers` processes with one thread each is
    started (torch limited to one thread per worker) and `memory_mb` is shared among them.
    With it, the tasks run on that cluster's workers (their thread settings are left alone).
    """
    label = str(store)
    store, prior, out = Path(store).resolve(), Path(prior).resolve(), Path(out).resolve()
    if workers < 1:
        raise CryogenError(f"{setting('workers')} must be at least 1, not {workers}")
    partial, batches = prepare(store, prior, out, cfg, batch, seed, device, progress, context=False)
    if not batches:
        finish(partial, out)
        return out
    if scheduler_address is None and min(workers, len(batches)) == 1:
        # one batch left (a small tomogram, or a resumed run): starting a cluster costs more
        # (~6 s measured) than it saves; the serial path gives the same result
        _say(f"reconstruct {label}: {len(batches)} batch left, restored in this process (no Dask cluster)", progress)
        return reconstruct(store, prior, out, cfg, device=device, batch=batch, seed=seed, progress=progress)
    workers = workers if scheduler_address else min(workers, len(batches))  # no idle worker processes
    t0 = time.monotonic()
    client, cluster, torch_threads, where = _connect(scheduler_address, workers, memory_mb)
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        # the context fill's coarse level first, on the same workers (as the serial path's
        # prepare() restores it): its tiles are then those of a serial run with their threads
        job = context_job(store, prior, partial, cfg)
        if job is not None:
            level, recon, only_g = job
            if not recon.exists():
                level_partial, level_batches = prepare(level, prior, recon, only_g, batch, seed, network="coarse")
                _say(
                    f"reconstruct {label}: the coarse level for the context fill, {len(level_batches)} batches",
                    progress,
                )
                run = (str(level), str(prior), str(level_partial), only_g, device, seed, torch_threads, "coarse")
                _run(client, level_batches, run, f"{label} (coarse level)", progress, scheduler_address is not None)
                finish(level_partial, recon)
            finish_context(partial)
        _say(
            f"reconstruct {label}: {sum(len(b) for b in batches)} tiles in {len(batches)} batches on a {where} ({n_workers} workers)",
            progress,
        )
        run = (str(store), str(prior), str(partial), cfg, device, seed, torch_threads, "g")
        _run(client, batches, run, label, progress, scheduler_address is not None)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    finish(partial, out)
    _say(f"reconstruct {label}: done in {time.monotonic() - t0:.1f} s", progress)
    return out


def _run(client: Client, batches: list[list[int]], args: tuple, label: str, progress: bool, shared: bool) -> None:
    """Restore `batches` on the cluster's workers with a `RestorerPlugin` built from `args`
    (registered for this run, and unregistered after it on a `shared` cluster)."""
    name = PLUGIN_PREFIX + uuid.uuid4().hex[:12]
    client.register_plugin(RestorerPlugin(name, *args), name=name)
    futures = [
        client.submit(restore_batch, name, b, key=f"{name}-batch-{b[0]}", pure=False, retries=2) for b in batches
    ]
    _wait(futures, sum(len(b) for b in batches), label, time.monotonic(), progress)
    if shared:
        client.unregister_worker_plugin(name)


def _connect(
    scheduler_address: str | None, workers: int, memory_mb: float | None
) -> tuple[Client, LocalCluster | None, int | None, str]:
    """A client of the cluster at `scheduler_address` (its workers' threads left alone), or of a
    new LocalCluster of `workers` single-threaded processes sharing `memory_mb`; with the local
    cluster (to close), the torch threads per worker (None: leave them) and words for the log."""
    if scheduler_address:
        try:
            client = Client(scheduler_address, timeout="60s")
        except OSError as exc:
            raise CryogenError(f"cannot reach the Dask scheduler at {scheduler_address} ({exc})") from None
        return client, None, None, f"Dask cluster at {scheduler_address}"
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=_memory_per_worker(memory_mb, workers),
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )
    where = f"local Dask cluster of {workers} worker processes" + (
        f", {memory_mb / workers:.0f} MB each" if memory_mb else ""
    )
    return Client(cluster), cluster, 1, where


def _wait(futures: list[Any], total: int, label: str, t0: float, progress: bool) -> None:
    """Wait for every batch, saying how far the work is at most every 5 s (and at the end)."""
    done, last = 0, 0.0
    for fut in as_completed(futures):
        done += fut.result()
        now = time.monotonic()
        if done == total or now - last >= 5.0:
            last = now
            rate = done / max(now - t0, 1e-9)
            _say(f"reconstruct {label}: {done}/{total} tiles ({100 * done / total:.0f}%, {rate:.2f} tiles/s)", progress)


def _say(message: str, progress: bool) -> None:
    log.info(message)
    if progress:
        print(message, file=sys.stderr, flush=True)
