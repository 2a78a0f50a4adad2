"""The Zarr tile store: overlapping cubic tiles of one tomogram plus everything needed to put
them back (grid, source shape, voxel size, origin, wedge).

Layout: a Zarr group with a 4-D float32 array `tiles` of shape (n_tiles, T, T, T), one chunk per
tile, and the metadata under the group attribute `cryogen`. A reconstruction store has the same
layout (restored tiles in `tiles`, optionally `std`), so `stitch` reads either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import CryogenError
from ..model.imaging import Wedge

FORMAT_VERSION = 1
TILE_ARRAY = "tiles"
#: the store's coarse level: the same (prepared) tomogram binned 2x, a tile store of its own inside
#: this one (`cryogen.tiling`), from which training learns the coarse network
COARSE_LEVEL = "coarse"


@dataclass
class TileMeta:
    """Metadata of a tile store; `starts` are the tile origins along z, y and x (may be negative
    when an axis is thinner than a tile and the tile is padded)."""

    source: str
    source_shape: tuple[int, int, int]
    tile: int
    overlap: int
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    wedge: Wedge
    stats: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    noise: dict[str, Any] | None = None
    deconvolution: dict[str, Any] | None = None  # the CTF deconvolution chunk applied (`cryogen.deconvolve`)
    beads: dict[str, Any] | None = None  # the gold beads chunk subtracted, drawn back by stitch (`cryogen.beads`)
    # each tile's structure, in the data's units squared (`cryogen.model.content`): training draws by it
    content: list[float] | None = None
    kind: str = "tiles"
    format_version: int = FORMAT_VERSION

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(len(s) for s in self.starts)  # type: ignore[return-value]

    @property
    def n_tiles(self) -> int:
        gz, gy, gx = self.grid_shape
        return gz * gy * gx

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["wedge"] = self.wedge.as_dict()
        return json.loads(json.dumps(d))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TileMeta:
        d = dict(d)
        d["wedge"] = Wedge(**d["wedge"])
        d["source_shape"] = tuple(d["source_shape"])
        d["starts"] = tuple(tuple(int(v) for v in s) for s in d["starts"])
        d["voxel_size"] = tuple(d["voxel_size"])
        # stores written before the origin was recorded put the volume at (0, 0, 0)
        d["origin"] = tuple(float(v) for v in d.get("origin", (0.0, 0.0, 0.0)))
        return cls(**d)


def create_store(
    path: str | Path, meta: TileMeta, arrays: tuple[str, ...] = (TILE_ARRAY,), compress: bool = True
) -> zarr.Group:
    """Create a new store at `path` (normally a temporary name) with empty tile arrays.

    `compress` (lz4) makes noisy tiles ~12 % smaller for ~0.6 ms more per 1 MB tile written:
    worth it for the tile store, which training reads many times and which may be kept; not for
    a reconstruction store, written once, read once by stitch, then discarded."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    t = meta.tile
    for name in arrays:
        group.create_array(
            name,
            shape=(meta.n_tiles, t, t, t),
            chunks=(1, t, t, t),
            dtype="float32",
            compressors=BloscCodec(cname="lz4", clevel=1, shuffle="shuffle") if compress else None,
            fill_value=0.0,
        )
    group.attrs["cryogen"] = meta.to_json()
    return group


def open_store(path: str | Path, mode: Literal["r", "r+"] = "r") -> tuple[zarr.Group, TileMeta]:
    """Open a CryoGEN tile store, with a one-line error if it is missing, foreign or corrupt."""
    p = Path(path)
    if not p.exists():
        raise CryogenError("tile store not found", p)
    if not p.is_dir():
        raise CryogenError("is a file, not a Zarr tile store (a folder made by cryogen chunk)", p)
    try:
        group = zarr.open_group(str(p), mode=mode)
        raw = group.attrs.get("cryogen")
    except Exception as exc:  # zarr raises many types for broken stores
        raise CryogenError(
            f"not a readable Zarr store ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", p
        ) from None
    if raw is None:
        raise CryogenError("is a Zarr store but not a CryoGEN tile store (no 'cryogen' attributes)", p)
    if not isinstance(raw, dict):
        raise CryogenError(f"CryoGEN metadata is damaged (a {type(raw).__name__}, not a mapping)", p)
    try:
        meta = TileMeta.from_json(raw)
    except KeyError as exc:
        raise CryogenError(f"CryoGEN metadata is damaged (no {exc})", p) from None
    except (TypeError, ValueError, CryogenError) as exc:
        raise CryogenError(f"CryoGEN metadata is damaged ({exc})", p) from None
    if meta.format_version != FORMAT_VERSION:
        raise CryogenError(
            f"tile store format {meta.format_version} is not supported by this CryoGEN (format {FORMAT_VERSION}); re-run chunk",
            p,
        )
    std = meta.stats.get("std") if meta.stats else None
    if std is not None and not (isinstance(std, (int, float)) and np.isfinite(std) and std > 0):
        raise CryogenError(f"tile statistics are damaged (std {std!r}, must be positive); re-run chunk", p)
    tiles = zarr_array(group, TILE_ARRAY, p)
    expected = (meta.n_tiles, meta.tile, meta.tile, meta.tile)
    if tuple(tiles.shape) != expected:
        raise CryogenError(f"'{TILE_ARRAY}' has shape {tuple(tiles.shape)}, metadata says {expected}", p)
    return group, meta


def coarse_level(path: str | Path) -> Path | None:
    """The coarse level of the tile store at `path`, or None where it has none (chunked before
    it was made, or too small to bin)."""
    level = Path(path) / COARSE_LEVEL
    return level if (level / "zarr.json").exists() or (level / ".zgroup").exists() else None


def zarr_array(group: zarr.Group, name: str, path: str | Path) -> zarr.Array:
    """The array `name` of a Zarr group, with a one-line error naming `path` when it is missing or
    is a group: the one typed way to take an array out of a store (`group[name]` may be either)."""
    try:
        node = group[name]
    except KeyError:
        raise CryogenError(f"store has no '{name}' array", path) from None
    if not isinstance(node, zarr.Array):
        raise CryogenError(f"'{name}' in the store is a group, not an array", path)
    return node


def read_tiles(array: zarr.Array, start: int, stop: int, path: str | Path) -> np.ndarray:
    """Tiles [start:stop] as float32, with a one-line error if the chunks are unreadable."""
    try:
        return np.asarray(array[start:stop], dtype=np.float32)
    except Exception as exc:
        raise CryogenError(
            f"cannot read tiles {start}..{stop - 1} ({type(exc).__name__}); the store is damaged", path
        ) from None
