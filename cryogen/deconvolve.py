"""CTF deconvolution of a tomogram before it is restored: the low frequencies the microscope took away, given back.

Why: the contrast transfer function passes only ~7 % (the amplitude contrast) of a structure's
lowest frequencies and 10-25 % up to a tenth of Nyquist at 1 nm voxels and 3 um defocus: those
frequencies carry the outlines of membranes and filaments. Phase flipping (what most pipelines
do) corrects the CTF's sign, not this loss. Measured on a simulated tube with every imaging effect
of a real tomogram (README, "All of them at once is the real crop"): without the CTF the wedge
fills (top/bottom-to-side ratio 0.95), with it the fill stalls (0.63, as on the real crop), and
deconvolving the input by its known CTF first brings much of it back (README, "CTF
deconvolution in the product").

The filter is IsoNet's kind of Wiener filter, H(k) = C(k) / (C(k)^2 + w), with the CTF C of
`cryogen.sim.ctf` and a constant Wiener term w (1 / SNR: smaller gives back more and amplifies
more noise), up to the CTF's first peak; beyond it H keeps its value there (~1). Below its first
peak the CTF has one sign, so the filter is the same whether or not the images were
phase-flipped. `whole` gives the Wiener filter at every frequency (IsoNet's form), which
needs to know whether the images were phase-flipped (`ctf.phase_flip`); it boosts the noise
around the CTF's zeros by up to 3.5x. Either way the filter leaves the noise far from flat, so
chunk carries the raw tomogram's noise model through the filter (`kernel_transfer`,
`NoiseModel.filtered`) instead of estimating it on the filtered data: estimated flat there, it
was over-estimated below the noise band and g learned to invert the data's sign at 0.25-0.38
cycles/voxel (README). With the model carried through, the default form filled more of the
simulated tube's wedge than the whole filter (README). H is radial in 3-D: by the Fourier slice theorem an image
frequency of every tilt lands at the same |k| in the tomogram's spectrum (one defocus for all
tilts, as the simulator and most pipelines assume). Nothing is normalised: where the CTF passes
fully, H is ~1; where it passes little, up to 1 / (2 sqrt(w)).

Streaming: H's kernel is cut to a radius R (`Deconvolution.kernel_radius`: the low-frequency
boost's extent plus the CTF's delocalisation) by a smooth radial window, so the filtering is an
exact convolution of support R. The volume is then filtered in cubic blocks, each read with a
margin R around it (mirrored beyond the volume's faces, as the tiles are) and convolved by FFT
on its own: the same result as one filter over the whole volume (a test checks it), with memory
that depends on the block and the width, never on the number of z planes. The cut smooths H over
~1 / R cycles per voxel (each shell's mean is kept; a test checks it).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from tqdm import tqdm

from .errors import CryogenError
from .io.mrc import MrcReader, MrcWriter, block_spans, check_finite_block, voxel_size_of
from .model.imaging import frequency_radius
from .sim.ctf import CTF, ctf_curve, electron_wavelength

__all__ = ["BLOCK", "Deconvolution", "deconvolve", "deconvolve_volume"]

log = logging.getLogger(__name__)

#: the edge of the cubic blocks filtered at a time (voxels, before the margin)
BLOCK = 96
#: the kernel's radius (and the blocks' margin) stays within these (voxels); a filter that would
#: need more (fine voxels and high defocus) is smoothed more, with a warning
MIN_RADIUS, MAX_RADIUS = 16, 64


@dataclass(frozen=True)
class Deconvolution:
    """The CTF the tomogram went through and the Wiener term of the filter that undoes it
    (`ctf.phase_flip` does not change the filter: see the module's docstring)."""

    ctf: CTF = field(default_factory=CTF)
    wiener: float = 0.01  # 0.02 before 2026-12-05: 0.01 filled more on both simulated cases (README)
    #: the Wiener filter at every frequency (IsoNet's), not only up to the CTF's first peak: then
    #: `ctf.phase_flip` must say whether the tilt series was phase-flipped
    whole: bool = False

    def __post_init__(self) -> None:
        w = self.wiener
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and 0 < w <= 10):
            raise CryogenError(f"the Wiener term must be a number in (0, 10], not {w!r}")
        if not isinstance(self.whole, bool):
            raise CryogenError(f"whole must be True or False, not {self.whole!r}")

    def first_peak(self) -> float:
        """The spatial frequency (1/A) of the CTF's first maximum, where it first passes ~fully."""
        c = self.ctf
        lam = electron_wavelength(c.voltage_kv)
        # C = sin(chi + asin(ac)) peaks first where chi = pi/2 - asin(ac); chi = pi lam dz k^2 - pi/2 Cs lam^3 k^4
        target = 0.5 * math.pi - math.asin(c.amplitude_contrast)
        a, b = 0.5 * math.pi * c.cs_mm * 1e7 * lam**3, math.pi * lam * c.defocus_um * 1e4
        k2 = target / b if a == 0 else (b - math.sqrt(max(b * b - 4 * a * target, 0.0))) / (2 * a)
        return math.sqrt(k2)

    def transfer(self, k: np.ndarray) -> np.ndarray:
        """H at spatial frequencies `k` (1/A), before its kernel is cut (`kernel`): the Wiener
        filter up to the CTF's first peak, its value there (~1) beyond; or, `whole`, everywhere."""
        k = np.asarray(k, dtype=np.float64)
        c = ctf_curve(k if self.whole else np.minimum(k, self.first_peak()), self.ctf)
        return c / (c * c + self.wiener)

    def kernel_radius(self, voxel_size: float) -> int:
        """The radius (voxels) the kernel is cut at: four periods of the first peak's frequency for
        the low-frequency boost, plus twice the CTF's delocalisation at Nyquist (lambda dz k, the
        distance the CTF moves detail); within MIN_RADIUS..MAX_RADIUS."""
        lam = electron_wavelength(self.ctf.voltage_kv)
        boost = 4.0 / (self.first_peak() * voxel_size)
        delocalisation = lam * self.ctf.defocus_um * 1e4 * (0.5 / voxel_size) / voxel_size
        radius = math.ceil(boost + 2.0 * delocalisation)
        if radius > MAX_RADIUS:
            log.warning(
                "the CTF filter at %g A voxels and %g um defocus would need a %d-voxel kernel; cut at %d (smoother)",
                voxel_size, self.ctf.defocus_um, radius, MAX_RADIUS,
            )  # fmt: skip
        return min(max(radius, MIN_RADIUS), MAX_RADIUS)

    def kernel(self, voxel_size: float) -> np.ndarray:
        """The filter in real space, (2R + 1)^3 voxels centred, R = `kernel_radius`: H's kernel
        times a radial window, flat to R / 2 and falling as cos^2 to zero at R. Cut this way the
        filtering is an exact convolution of support R, so blocks with a margin R give the same
        result as one filter over the whole volume; in Fourier space the cut smooths H over ~1 / R
        cycles per voxel (rounding the kinks of a phase-flipped CTF's zeros)."""
        r_max = self.kernel_radius(voxel_size)
        n = scipy.fft.next_fast_len(4 * r_max, real=True)
        h = np.fft.fftshift(scipy.fft.irfftn(self.transfer(frequency_radius((n, n, n)) / voxel_size), s=(n, n, n)))
        c = n // 2
        h = h[c - r_max : c + r_max + 1, c - r_max : c + r_max + 1, c - r_max : c + r_max + 1]
        d = np.arange(-r_max, r_max + 1, dtype=np.float64)
        r = np.sqrt(d[:, None, None] ** 2 + d[None, :, None] ** 2 + d[None, None, :] ** 2)
        t = np.clip((r - 0.5 * r_max) / (0.5 * r_max), 0.0, 1.0)
        return h * np.cos(0.5 * np.pi * t) ** 2

    def kernel_transfer(self, voxel_size: float) -> Callable[[np.ndarray], np.ndarray]:
        """H as the cut kernel (`kernel`) really applies it: a function of |k| (cycles/voxel), its
        spectrum's mean per radial shell of width 1 / (4R + 2), interpolated. What the noise
        model is carried through (`NoiseModel.filtered`)."""
        k = self.kernel(voxel_size)
        n = 2 * k.shape[0]
        spectrum = _kernel_spectrum(k, (n, n, n)).real  # an even kernel: real
        radius = frequency_radius((n, n, n))
        shell = np.rint(radius * n).astype(np.int64).ravel()
        means = np.bincount(shell, weights=spectrum.ravel()) / np.maximum(np.bincount(shell), 1)
        freqs = np.arange(means.size) / n

        def transfer(radius: np.ndarray) -> np.ndarray:
            return np.interp(radius, freqs, means)

        return transfer

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.ctf), "wiener": self.wiener, "whole": self.whole}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Deconvolution:
        d = dict(d)
        wiener = d.pop("wiener")
        whole = d.pop("whole", False)  # stores written before the option: up to the first peak
        return cls(CTF(**d), wiener, whole)

    def label(self) -> str:
        """One MRC header label (80 characters at most) saying what was done."""
        c = self.ctf
        return (
            f"cryogen deconvolve: {c.defocus_um:g} um, ac {c.amplitude_contrast:g}, "
            f"{c.voltage_kv:g} kV, Cs {c.cs_mm:g}, w {self.wiener:g}"
            + ("" if not self.whole else f", whole{'' if c.phase_flip else ' unflipped'}")
        )[:80]


def _kernel_spectrum(kernel: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The rfftn of a centred (2R + 1)^3 `kernel` zero-padded to `size`, its centre at the origin."""
    r = (kernel.shape[0] - 1) // 2
    full = np.zeros(size, dtype=np.float64)
    full[: kernel.shape[0], : kernel.shape[1], : kernel.shape[2]] = kernel
    return scipy.fft.rfftn(np.roll(full, (-r, -r, -r), axis=(0, 1, 2)))


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices beyond [0, n) reflected back, edge voxel repeated (numpy's 'symmetric' padding)."""
    j = np.mod(index, 2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)


class _BlockFilter:
    """Convolves (block + 2 margin)-sized pieces with the compact kernel by FFT, one kernel
    spectrum per FFT size; the margin is the kernel's radius, so the centre is exact."""

    def __init__(self, deconv: Deconvolution, voxel_size: float) -> None:
        self.kernel = deconv.kernel(voxel_size)
        self.margin = (self.kernel.shape[0] - 1) // 2
        self._h: dict[tuple[int, ...], np.ndarray] = {}

    def _spectrum(self, size: tuple[int, ...]) -> np.ndarray:
        if size not in self._h:
            self._h[size] = _kernel_spectrum(self.kernel, size).astype(np.complex64)
        return self._h[size]

    def __call__(self, piece: np.ndarray) -> np.ndarray:
        """The filtered centre of `piece` (its margin cut off)."""
        size = tuple(scipy.fft.next_fast_len(s, real=True) for s in piece.shape)
        spectrum = scipy.fft.rfftn(piece, s=size, workers=-1)
        spectrum *= self._spectrum(size)
        out = scipy.fft.irfftn(spectrum, s=size, workers=-1)
        m = self.margin
        nz, ny, nx = piece.shape
        return out[m : nz - m, m : ny - m, m : nx - m].astype(np.float32)


#: reads voxels [z0:z1, y0:y1, :] of the volume being filtered
Reader = Callable[[int, int, int, int], np.ndarray]


def _filter_slab(
    read: Reader, shape: tuple[int, int, int], z: tuple[int, int], y: tuple[int, int], filt: _BlockFilter, block: int
) -> np.ndarray:
    """Voxels [z0:z1, y0:y1, :] filtered: read once with the margin, then filtered x block by x block."""
    nz, ny, nx = shape
    m = filt.margin
    zi = _mirror(np.arange(z[0] - m, z[1] + m), nz)
    yi = _mirror(np.arange(y[0] - m, y[1] + m), ny)
    z_lo, z_hi, y_lo, y_hi = int(zi.min()), int(zi.max()) + 1, int(yi.min()), int(yi.max()) + 1
    slab = read(z_lo, z_hi, y_lo, y_hi)[np.ix_(zi - z_lo, yi - y_lo)]
    out = np.empty((z[1] - z[0], y[1] - y[0], nx), dtype=np.float32)
    for x0, x1 in block_spans(nx, block):
        xi = _mirror(np.arange(x0 - m, x1 + m), nx)
        out[:, :, x0:x1] = filt(slab[:, :, xi].astype(np.float64))
    return out


def deconvolve_volume(volume: np.ndarray, deconv: Deconvolution, voxel_size: float, block: int = BLOCK) -> np.ndarray:
    """`volume` (z, y, x) filtered block by block as `deconvolve` does a file; float32."""
    shape = volume.shape
    filt = _BlockFilter(deconv, voxel_size)

    def read(z0: int, z1: int, y0: int, y1: int) -> np.ndarray:
        return np.asarray(volume[z0:z1, y0:y1], dtype=np.float32)

    out = np.empty(shape, dtype=np.float32)
    for z in block_spans(shape[0], block):
        for y in block_spans(shape[1], block):
            out[z[0] : z[1], y[0] : y[1]] = _filter_slab(read, shape, z, y, filt, block)
    return out


def deconvolve(
    in_path: str | Path,
    out_path: str | Path,
    deconv: Deconvolution,
    voxel_size: float | None = None,
    block: int = BLOCK,
    progress: bool = True,
) -> int:
    """Write `in_path` (MRC) deconvolved by `deconv` to `out_path` (renamed when complete), streamed
    block by block; the header's voxel size, origin and labels are kept (a label is added).
    `voxel_size` (A) overrides the header's. Returns the margin used (voxels)."""
    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.resolve() == out_path.resolve():
        raise CryogenError("the output must be a different file from the input", out_path)
    with MrcReader(in_path) as reader:
        info = reader.info
        vsize = voxel_size_of(info.voxel_size, voxel_size, in_path)
        filt = _BlockFilter(deconv, vsize[2])
        shape = info.shape

        def read(z0: int, z1: int, y0: int, y1: int) -> np.ndarray:
            piece = reader.read_block(z0, z1, y0, y1)
            check_finite_block(piece, in_path, z0)
            return piece

        pieces = [(z, y) for z in block_spans(shape[0], block) for y in block_spans(shape[1], block)]
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(MrcWriter(out_path, shape, vsize, info.origin, [*info.labels, deconv.label()]))
            for z, y in tqdm(
                pieces, desc=f"deconvolve {in_path.name}", unit="block", disable=not progress, mininterval=2
            ):
                writer.write_block(z[0], y[0], _filter_slab(read, shape, z, y, filt, block))
    return filt.margin
