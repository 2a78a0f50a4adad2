"""Streaming MRC input and output.

Tomograms are read block by block with plain file reads (not a memory map, whose touched pages
would count against the job's memory) and written block by block to a temporary file that is
renamed when complete. Every problem with a file becomes a one-line `CryogenError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import mrcfile
import numpy as np
from mrcfile import utils as mrcutils
from mrcfile.dtypes import HEADER_DTYPE

from ..errors import CryogenError, setting
from .files import atomic_output

HEADER_BYTES = 1024
#: MRC modes that hold real numbers: int8, int16, float32, uint16, float16.
REAL_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
COMPLEX_MODES = {3: "complex int16", 4: "complex float32"}
#: IMOD marks its headers with this stamp at byte 152; bit 0 of the flags at byte 156 set means
#: mode-0 bytes are signed. IMOD writes unsigned bytes by default (and only those before 4.2.23),
#: so a stamped mode-0 file without the bit holds uint8, not the MRC2014 int8.
IMOD_STAMP = 1146047817
IMOD_SIGNED_BYTES = 1


@dataclass
class MrcInfo:
    """What the pipeline needs from an MRC header; voxel size in angstrom, (z, y, x) order."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    mode: int
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]  # (x, y, z) in angstrom, as in the header
    labels: list[str] = field(default_factory=list)
    header_stats: tuple[float, float, float] | None = None  # dmin, dmax, dmean if the header has them

    @property
    def isotropic_voxel_size(self) -> float:
        return float(self.voxel_size[2])


def _fail(path: Path, problem: str) -> CryogenError:
    return CryogenError(problem, path)


def _imod_unsigned_bytes(header: np.recarray) -> bool:
    """True when an IMOD-stamped header says its mode-0 bytes are unsigned (see IMOD_STAMP)."""
    int32 = np.dtype(np.int32).newbyteorder(header.mode.dtype.byteorder)  # the header's byte order
    extra = bytes(header.extra2)  # header bytes 112..195; the stamp is at 152, the flags at 156
    stamp, flags = np.frombuffer(extra[40:48], dtype=int32)
    return int(stamp) == IMOD_STAMP and not int(flags) & IMOD_SIGNED_BYTES


def _raw_header(p: Path) -> tuple[Any, int]:
    """The MRC header of `p` (mrcfile's record array) and the file's size, with a one-line
    error when the file is missing, empty, too short or not MRC."""
    if not p.exists():
        raise _fail(p, "file not found")
    if p.is_dir():
        raise _fail(p, "is a directory, not an MRC file")
    size = p.stat().st_size
    if size == 0:
        raise _fail(p, "file is empty")
    if size < HEADER_BYTES:
        raise _fail(p, f"not an MRC file: only {size} bytes, shorter than an MRC header")
    try:
        with mrcfile.open(p, header_only=True, permissive=False) as m:
            return m.header.copy(), size
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        from .tiff import is_tiff  # here: tiff writes through this module

        if is_tiff(p):
            raise _fail(p, "a TIFF stack, not MRC: convert it first (cryogen convert IN.tif OUT.mrc)") from None
        raise _fail(p, f"not a readable MRC file ({first})") from None


class MrcReader:
    """Validated, streaming access to a 3-D MRC volume (also IMOD .rec). A subclass with `stack`
    True reads an image stack (a tilt series) instead: a space-group-0 stack is then what is
    wanted, and the voxel size is the images' pixel (a stack's z is no length)."""

    stack = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.info, self._offset = self._read_header()
        self._file = open(self.path, "rb")  # noqa: SIM115 -- held open for streaming; closed by close()/__exit__

    def _read_header(self) -> tuple[MrcInfo, int]:
        """The volume's description and the byte offset of its voxels, after checking that the
        header describes a real-valued 3-D volume in (x, y, z) order that the file holds whole."""
        p = self.path
        h, size = _raw_header(p)
        mode = int(h.mode)
        what = "stack of images" if self.stack else "tomogram"
        if mode in COMPLEX_MODES:
            raise _fail(p, f"MRC mode {mode} ({COMPLEX_MODES[mode]}) holds complex numbers, not a real-valued {what}")
        if mode not in REAL_MODES:
            raise _fail(
                p, f"unsupported MRC mode {mode}; supported: " + ", ".join(f"{k} ({v})" for k, v in REAL_MODES.items())
            )
        nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
        if min(nx, ny, nz) < 1:
            raise _fail(p, f"invalid dimensions {nz} x {ny} x {nx} in the header")
        if nz == 1:
            if self.stack:
                raise _fail(p, f"holds one {ny} x {nx} image, not a tilt series (a stack of images)")
            raise _fail(p, f"is a 2-D image ({ny} x {nx}), not a 3-D tomogram")
        if int(h.ispg) == 0 and int(h.mz) == 1 and not self.stack:
            raise _fail(p, f"is a stack of {nz} 2-D images (space group 0), not a 3-D tomogram")
        if (int(h.mapc), int(h.mapr), int(h.maps)) not in ((1, 2, 3), (0, 0, 0)):
            raise _fail(
                p,
                f"axis order (mapc, mapr, maps) = ({h.mapc}, {h.mapr}, {h.maps}) is not supported; expected (1, 2, 3)",
            )
        dtype = mrcutils.data_dtype_from_header(h)
        if mode == 0 and _imod_unsigned_bytes(h):
            dtype = np.dtype(np.uint8)
        offset = HEADER_BYTES + int(h.nsymbt)
        need = offset + nx * ny * nz * dtype.itemsize
        if size < need:
            raise _fail(
                p,
                f"truncated MRC: header promises {need} bytes ({nz} x {ny} x {nx} {REAL_MODES[mode]}), file has {size}",
            )

        def vs(cell: float, n: int) -> float:
            return float(cell) / n if n > 0 else 0.0

        voxel = (vs(h.cella.z, int(h.mz)), vs(h.cella.y, int(h.my)), vs(h.cella.x, int(h.mx)))
        if self.stack:
            voxel = (voxel[2],) * 3  # the images' pixel; the z of a stack is no length
        labels = [bytes(h.label[i]).decode("ascii", "replace").rstrip() for i in range(min(int(h.nlabl), 10))]
        stats = None
        if float(h.dmax) >= float(h.dmin):
            stats = (float(h.dmin), float(h.dmax), float(h.dmean))
        info = MrcInfo(
            shape=(nz, ny, nx),
            dtype=dtype,
            mode=mode,
            voxel_size=voxel,
            origin=(float(h.origin.x), float(h.origin.y), float(h.origin.z)),
            labels=labels,
            header_stats=stats,
        )
        return info, offset

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.info.shape

    def read_block(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        """Voxels [z0:z1, y0:y1, :] as float32, read with one seek per z plane (or one in all)."""
        nz, ny, nx = self.info.shape
        y1 = ny if y1 is None else y1
        if not (0 <= z0 < z1 <= nz and 0 <= y0 < y1 <= ny):
            raise ValueError(f"block [{z0}:{z1}, {y0}:{y1}] outside volume {self.info.shape}")
        item = self.info.dtype.itemsize
        rows = y1 - y0
        out = np.empty((z1 - z0, rows, nx), dtype=self.info.dtype)
        f = self._file
        if rows == ny:
            f.seek(self._offset + z0 * ny * nx * item)
            self._readinto(out)
        else:
            for i, z in enumerate(range(z0, z1)):
                f.seek(self._offset + (z * ny + y0) * nx * item)
                self._readinto(out[i])
        return out.astype(np.float32, copy=False) if out.dtype != np.float32 else out

    def _readinto(self, buf: np.ndarray) -> None:
        view = buf.data.cast("B")  # buf is C-contiguous: a whole array or one plane of it
        got = self._file.readinto(view)
        if got != view.nbytes:
            raise _fail(self.path, "file ended early while reading voxel data (truncated?)")

    def read_all(self) -> np.ndarray:
        """The whole volume as float32; only for volumes known to be small (tests, metrics)."""
        return self.read_block(0, self.info.shape[0])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MrcReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_mrc(path: str | Path, check_finite: bool = True) -> tuple[np.ndarray, MrcInfo]:
    """Read a whole (small) MRC volume as float32, rejecting NaN/Inf voxels."""
    with MrcReader(path) as r:
        data = r.read_all()
        if check_finite:
            check_finite_block(data, r.path, 0)
        return data, r.info


def block_spans(n: int, block: int) -> list[tuple[int, int]]:
    """[start, stop) spans of at most `block` covering 0..n: the blocks a volume is streamed in."""
    return [(a, min(a + block, n)) for a in range(0, n, block)]


def check_finite_block(block: np.ndarray, path: str | Path, z0: int) -> None:
    """Raise a one-line error naming the file and the first z plane with NaN or Inf voxels."""
    if not np.isfinite(block).all():
        bad = np.argwhere(~np.isfinite(block))[0]
        kind = "NaN" if np.isnan(block[tuple(bad)]) else "Inf"
        raise CryogenError(
            f"contains {kind} voxels (first at z={z0 + int(bad[0])}, y={int(bad[1])}, x={int(bad[2])})", path
        )


def read_central_crop(reader: MrcReader, crop: int) -> np.ndarray:
    """The central crop (at most `crop` voxels per axis) as float32, one z plane at a time, so
    only the crop is ever in memory however large the tomogram."""
    shape = reader.shape
    lo = [(n - min(n, crop)) // 2 for n in shape]
    hi = [a + min(n, crop) for a, n in zip(lo, shape, strict=True)]
    out = np.empty(tuple(b - a for a, b in zip(lo, hi, strict=True)), dtype=np.float32)
    for i, z in enumerate(range(lo[0], hi[0])):
        out[i] = reader.read_block(z, z + 1, lo[1], hi[1])[0, :, lo[2] : hi[2]]
    return out


class RunningStats:
    """Count, mean, std, min and max of a volume seen block by block, in float64 one plane at a
    time (a float64 copy of a whole block would cost more memory than the block itself)."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.min = np.inf
        self.max = -np.inf

    def update(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        for plane in block.reshape(-1, *block.shape[-2:]):
            p = plane.astype(np.float64)
            self.total += float(p.sum())
            self.total_sq += float(np.vdot(p, p))
        self.count += block.size
        self.min = min(self.min, float(block.min()))
        self.max = max(self.max, float(block.max()))

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.total_sq / max(self.count, 1) - self.mean**2, 0.0)))


def _label_bytes(text: str) -> bytes:
    return text.encode("ascii", "replace")[:80].ljust(80)


class MrcWriter:
    """Write a float32 MRC volume block by block; the file appears under its name only on success.

    Header statistics (min, max, mean, rms) are accumulated from the blocks, so the whole volume
    is never in memory. Use as a context manager; blocks are [z0:z1, y0:y1, all x].
    """

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, int, int],
        voxel_size: float | tuple[float, float, float],
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        labels: list[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        vs = voxel_size if isinstance(voxel_size, tuple) else (voxel_size,) * 3
        self.voxel_size = tuple(float(v) for v in vs)
        self.origin = origin
        self.labels = (labels or [])[-10:]
        self.stats = RunningStats()

    def __enter__(self) -> MrcWriter:
        self._atomic = atomic_output(self.path)
        self._tmp = self._atomic.__enter__()
        nz, ny, nx = self.shape
        self._file = open(self._tmp, "wb")
        self._file.write(b"\0" * HEADER_BYTES)
        self._file.truncate(HEADER_BYTES + nz * ny * nx * 4)
        return self

    def write_block(self, z0: int, y0: int, block: np.ndarray) -> None:
        nz, ny, nx = self.shape
        block = np.ascontiguousarray(block, dtype=np.float32)
        bz, by, bx = block.shape
        if bx != nx or z0 + bz > nz or y0 + by > ny:
            raise ValueError(f"block {block.shape} at z={z0}, y={y0} does not fit {self.shape}")
        self.stats.update(block)
        f = self._file
        if by == ny:
            f.seek(HEADER_BYTES + z0 * ny * nx * 4)
            f.write(block.tobytes())
        else:
            for i in range(bz):
                f.seek(HEADER_BYTES + ((z0 + i) * ny + y0) * nx * 4)
                f.write(block[i].tobytes())

    def _header(self) -> bytes:
        nz, ny, nx = self.shape
        h = np.zeros((), dtype=HEADER_DTYPE).view(np.recarray)
        h.nx, h.ny, h.nz = nx, ny, nz
        h.mode = 2
        h.mx, h.my, h.mz = nx, ny, nz
        h.cella.x, h.cella.y, h.cella.z = nx * self.voxel_size[2], ny * self.voxel_size[1], nz * self.voxel_size[0]
        h.cellb.alpha = h.cellb.beta = h.cellb.gamma = 90.0
        h.mapc, h.mapr, h.maps = 1, 2, 3
        h.ispg = 1
        h.origin.x, h.origin.y, h.origin.z = self.origin
        h.map = b"MAP "
        h.machst = mrcutils.machine_stamp_from_byte_order(HEADER_DTYPE["mode"].byteorder)
        h.nversion = 20141
        st = self.stats
        h.dmin, h.dmax, h.dmean, h.rms = st.min, st.max, st.mean, st.std
        labels = self.labels
        h.nlabl = len(labels)
        for i, text in enumerate(labels):
            h.label[i] = _label_bytes(text)
        return h.tobytes()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                if self.stats.count != int(np.prod(self.shape)):
                    raise RuntimeError(f"{self.path}: wrote {self.stats.count} of {int(np.prod(self.shape))} voxels")
                self._file.seek(0)
                self._file.write(self._header())
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
        except BaseException as err:
            self._file.close()
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def write_mrc(
    path: str | Path,
    data: np.ndarray,
    voxel_size: float | tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    labels: list[str] | None = None,
) -> None:
    """Write a whole (small) volume; the streaming writer in one call."""
    with MrcWriter(path, data.shape, voxel_size, origin, labels) as w:
        w.write_block(0, 0, data)


def voxel_size_of(
    header: tuple[float, float, float], given: float | None, path: str | Path
) -> tuple[float, float, float]:
    """The voxel size (z, y, x) in angstrom: `given` when there is one, else the header's (which
    must be known: not 0)."""
    if given is not None:
        if not (given > 0 and np.isfinite(given)):
            raise CryogenError(f"voxel size must be positive, not {given}")
        return (float(given),) * 3
    if min(header) <= 0:
        raise CryogenError(f"voxel size in the header is 0 (unknown); give it with {setting('voxel_size')}", path)
    return header
