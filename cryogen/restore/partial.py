"""The partial reconstruction store of one job: `.NAME.partial` beside the output, a tile store
(restored tiles in `tiles`, optionally `std`) with a per-tile `done` flag and the job's
fingerprint. A killed run (serial or Dask) resumes from it when the fingerprint matches; it is
discarded when it holds no finished tile, and renamed to the output only when every tile is done.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import CryogenError
from ..io.store import TILE_ARRAY, TileMeta, create_store, zarr_array

DONE_ARRAY = "done"
#: what a job keeps in its partial store only while it runs: the context fill's volume
#: (`cryogen.restore.context`, an MRC file), removed when the store is renamed to the output
CONTEXT = "context.mrc"


def file_digest(path: str | Path) -> str:
    """A short digest of a file's bytes (the prior), for the job's fingerprint."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def partial_path(out: Path) -> Path:
    """Where the partial store of output `out` lives: hidden, beside it."""
    return out.with_name(f".{out.name}.partial")


def open_partial(partial: Path, meta: TileMeta, want_std: bool, fingerprint: dict[str, Any], batch: int) -> zarr.Group:
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
    group = create_store(partial, meta, arrays, compress=False)
    # one chunk of flags per batch: a batch (of any worker) writes exactly its own, in one call
    group.create_array(
        DONE_ARRAY, shape=(meta.n_tiles,), chunks=(max(1, min(batch, meta.n_tiles)),), dtype="bool", fill_value=False
    )
    group.attrs["job"] = fingerprint
    return group


def discard_if_empty(partial: Path) -> bool:
    """Remove a partial store in which no tile is done (it holds no work worth resuming);
    return whether it was removed."""
    try:
        empty = not np.asarray(zarr_array(zarr.open_group(str(partial), mode="r"), DONE_ARRAY, partial)[:]).any()
    except Exception:  # unreadable: nothing in it can be resumed either
        empty = True
    if empty:
        shutil.rmtree(partial, ignore_errors=True)
    return empty


def finish(partial: Path, out: Path) -> None:
    """Rename a complete partial store to its final name."""
    group = zarr.open_group(str(partial), mode="r")
    if not np.asarray(zarr_array(group, DONE_ARRAY, partial)[:]).all():
        raise CryogenError("reconstruction is incomplete", partial)
    (partial / CONTEXT).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
