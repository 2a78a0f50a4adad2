"""The noise spectrum of a tomogram without halves, shell by shell, from its quietest blocks.

Why: the flat estimate (`noise_estimate.estimate_from_data`: one level measured at 0.4-0.5
cycles/voxel, assumed at every |k|) is right for white noise, but a weighted back-projection's
noise is not white: its filter (a ramp with a taper, IMOD's radial filter, SIRT-like weighting)
shapes it, typically rising from k = 0 and falling again towards Nyquist. On a real tomogram
(README: the *M. pneumoniae* cell) the flat level was 0.13-0.2 x the noise at 0.1-0.2
cycles/voxel and 2.2 x it at Nyquist, and the restoration kept the middle frequencies' noise and
inverted the finest detail.

How: back-projection noise is spread over the whole reconstructed volume (every ray crosses it),
the specimen is not (ice, vacuum above and below the slab, gaps between cells). So the volume is
cut into blocks of BLOCK^3 (`block_spectra`: each block's mean power per shell over the measured
region); blocks whose power in the noise band (0.4-0.5) is far from the median are set aside
(`live_blocks`: padding, a reconstruction's empty margins, beads); of the rest, the
QUIET_FRACTION with the least power at 0.05-0.25 cycles/voxel (where specimen power is) are
averaged (`quiet_blocks`): the noise's shape, and the directions of its power (each |k| alone:
the interpolation of back-projection damps the noise across the tilt axis near Nyquist only). Its level is the volume's own (`shaped_noise`): the
quiet blocks may lie where fewer tilts reach (the field of view's edges) and hold less noise, so
the shape is raised to the noise band's power of the volume the model is for, measured on blocks
of the same size (a steep spectrum is sampled alike on both). The result is never above that
volume's own spectrum, and below RISING_BELOW it is made non-decreasing in |k| (the running
minimum from above): back-projection noise does not rise towards k = 0 (the ramp removes it
there), the specimen's power does, so the quietest blocks' low shells are mostly specimen and
are capped by the noise found above them.

Measured (quality log, 2026-12-07 evening), data-alone estimate over the true noise per shell at
0.1 / 0.15 / 0.2 / 0.3 / 0.45 cycles/voxel: the *M. pneumoniae* WBP (against its even/odd
halves) 0.46 / 0.63 / 0.89 / 1.07 / 1.07 (flat: 0.14 / 0.16 / 0.21 / 0.51 / 1.78); a tilt-series
phantom 2.0 / 1.4 / 1.2 / 1.0 / 1.0 (flat 2.2 / 1.5 / 1.2 / 1.0 / 1.0); the ideal model about 1.

The blocks are read across the whole tomogram (at most MAX_BLOCKS, spread evenly, one slab of
rows at a time), so memory does not depend on its size. Fewer than MIN_BLOCKS usable blocks
(small crops and tiles) give no profile: the flat estimate stands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .imaging import Wedge, frequency_radius, rfft_weights, wedge_mask

BLOCK = 32  # edge of the blocks, voxels: 16 shells to Nyquist, enough coefficients at 0.05
MIN_BLOCKS = 27  # usable blocks needed (a 96^3 volume has 27)
MAX_BLOCKS = 512  # blocks measured at most, spread over the volume
QUIET_FRACTION = 0.2  # share of the usable blocks averaged: the quietest
SPECIMEN_BAND = (0.05, 0.25)  # where a block's power says how much specimen it holds
NOISE_BAND = (0.4, 0.5)  # where blocks' power is the noise's: equal in all live blocks
LIVE_RANGE = (0.5, 2.0)  # a block's noise-band power over the median's, to be used
RISING_BELOW = 0.2  # cycles/voxel: below it the noise profile is non-decreasing in |k|


def _starts(n: int, count: int) -> list[int]:
    """`count` evenly spread starts of non-overlapping BLOCK-long spans in [0, n)."""
    if count <= 1:
        return [(n - BLOCK) // 2]
    return [round(i * (n - BLOCK) / (count - 1)) for i in range(count)]


def block_grid(shape: tuple[int, int, int]) -> list[list[int]]:
    """The blocks' starts along each axis: as many as fit, thinned evenly to MAX_BLOCKS in all."""
    fits = [n // BLOCK for n in shape]
    if min(fits) < 1:
        return [[], [], []]
    scale = min(1.0, (MAX_BLOCKS / math.prod(fits)) ** (1.0 / 3.0))
    counts = [max(1, int(f * scale)) for f in fits]
    return [_starts(n, c) for n, c in zip(shape, counts, strict=True)]


def volume_blocks(volume: np.ndarray) -> Iterator[np.ndarray]:
    """The blocks of an in-memory volume (see `block_grid`)."""
    zs, ys, xs = block_grid(volume.shape)
    for z in zs:
        for y in ys:
            for x in xs:
                yield volume[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK]


def file_blocks(path: str | Path) -> Iterator[np.ndarray]:
    """The blocks of an MRC tomogram, read one slab of BLOCK planes x BLOCK rows at a time."""
    from ..io.mrc import MrcReader, check_finite_block

    with MrcReader(path) as reader:
        zs, ys, xs = block_grid(reader.shape)
        for z in zs:
            for y in ys:
                slab = reader.read_block(z, z + BLOCK, y, y + BLOCK)
                check_finite_block(slab, path, z)
                for x in xs:
                    yield slab[:, :, x : x + BLOCK]


def block_spectra(
    blocks: Iterable[np.ndarray], wedge: Wedge, shell_edges: np.ndarray, periodic: bool = False
) -> np.ndarray:
    """Each block's mean power per shell (`shell_edges`, cycles/voxel) over its measured region,
    (n_blocks, n_shells); shells the BLOCK^3 grid has no coefficients in are interpolated from
    their neighbours. Plain (the periodogram): unbiased for noise, for the volume's own level.
    `periodic`: of each block's periodic component (`_block_power`), for the noise's shape."""
    shape3 = (BLOCK, BLOCK, BLOCK)
    radius = frequency_radius(shape3)
    select = wedge_mask(shape3, wedge) & (radius > 0)
    n_shells = len(shell_edges) - 1
    shell = np.clip(np.searchsorted(shell_edges, radius[select], side="right") - 1, 0, n_shells - 1)
    w = np.broadcast_to(rfft_weights(BLOCK), radius.shape)[select]
    counts = np.bincount(shell, weights=w, minlength=n_shells)
    full = counts > 0
    centres = 0.5 * (shell_edges[:-1] + shell_edges[1:])
    rows = []
    for block in blocks:
        means = np.bincount(shell, weights=_block_power(block, periodic)[select] * w, minlength=n_shells)
        rows.append(np.interp(centres, centres[full], means[full] / counts[full]))
    return np.array(rows).reshape(len(rows), n_shells)


def mean_block_power(blocks: Iterable[np.ndarray], chosen: np.ndarray) -> np.ndarray:
    """The mean 3-D power (periodic components, (BLOCK, BLOCK, BLOCK // 2 + 1)) of the blocks at
    the indices `chosen` of `blocks`, for the noise's directions; a second pass over the blocks
    rather than every block's spectrum kept from the first, so memory stays one block's."""
    wanted = {int(i) for i in chosen}
    total = np.zeros((BLOCK, BLOCK, BLOCK // 2 + 1))
    for i, block in enumerate(blocks):
        if i in wanted:
            total += _block_power(block, periodic=True)
    return total / max(1, len(wanted))


def _block_power(block: np.ndarray, periodic: bool) -> np.ndarray:
    """One block's power spectrum (rfft layout) after removing its mean. Periodic: of its periodic
    component (`noise_estimate._periodic_power`): a block cuts through structure, and the jumps
    across its faces put a cross of power on the k axes (along the tilt axis too) that the periodic
    component does not have; it loses 3-5 % of white noise's power above 0.2 cycles/voxel, which
    the level, taken from plain spectra, makes up."""
    from .noise_estimate import _periodic_power, _power

    b = block.astype(np.float64)
    return _periodic_power(b - b.mean()) if periodic else _power(b - b.mean())


def _bands(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        (centres >= SPECIMEN_BAND[0]) & (centres <= SPECIMEN_BAND[1]),
        (centres >= NOISE_BAND[0]) & (centres <= NOISE_BAND[1]),
    )


def live_blocks(spectra: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Which blocks of `spectra` (`block_spectra`) are live: their power in NOISE_BAND within
    LIVE_RANGE of the blocks' median (not padding, a reconstruction's empty margin, or a bead)."""
    _, noise = _bands(centres)
    level = spectra[:, noise].mean(axis=1)
    median = float(np.median(level)) if len(level) else 0.0
    if median <= 0:
        return np.zeros(len(spectra), bool)
    return (level >= LIVE_RANGE[0] * median) & (level <= LIVE_RANGE[1] * median)


def quiet_blocks(spectra: np.ndarray, centres: np.ndarray) -> np.ndarray | None:
    """The indices of the quietest live blocks among `spectra` (`block_spectra`; see the module
    docstring), whose mean is the noise's shape; None with fewer than MIN_BLOCKS live blocks."""
    specimen, noise = _bands(centres)
    live = live_blocks(spectra, centres)
    if live.sum() < MIN_BLOCKS or not specimen.any() or not noise.any():
        return None
    quiet = np.flatnonzero(live)[np.argsort(spectra[live][:, specimen].mean(axis=1))]
    return quiet[: max(MIN_BLOCKS // 3, int(QUIET_FRACTION * live.sum()))]


def shaped_noise(quiet: np.ndarray, own: np.ndarray, data_psd: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The noise PSD per shell: the `quiet` profile raised to the level of the volume the model is
    for, the median over NOISE_BAND's shells of `own` (the mean over that volume's live blocks of
    `block_spectra`: the same grid as the quiet blocks', so a steep spectrum is sampled alike)
    over `quiet` (the quiet blocks' own level is lower where fewer tilts reach them, e.g. at the
    field of view's edges); never above `data_psd`, the volume's own shell spectrum (noise cannot
    hold more power than the data); non-decreasing in |k| below RISING_BELOW."""
    _, band = _bands(centres)
    level = float(np.median(own[band] / quiet[band]))
    noise = np.minimum(level * quiet, data_psd)
    for i in np.flatnonzero(centres < RISING_BELOW)[::-1]:
        noise[i] = min(noise[i], noise[i + 1])
    return noise
