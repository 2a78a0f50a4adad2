"""Report figures of one tomogram, before and after restoration (PNG, matplotlib's Agg backend).

- `plot_slices`: the central XY, XZ and YZ slices of each volume (rows: before, after, and the
  truth when there is one), each row with its own contrast (1st to 99th percentile).
- `plot_spectra`: the power spectrum in the plane that shows the missing wedge, (kz, kx) for
  tilt axis y or (kz, ky) for tilt axis x, with the tilt limits drawn: before restoration the
  wedge is empty (only noise-free zeros there), after it holds what the prior filled in.

Volumes are read plane block by plane block with `MrcReader.read_block` in one streaming pass,
so memory stays at a few planes whatever the tomogram's size. The spectrum is the average of
the 2-D power spectra of up to `n_planes` planes perpendicular to the tilt axis (the wedge does
not depend on the coordinate along the tilt axis, so every such plane shows it).

- `truth_free_measures`: what real data can be judged by without a truth (the summary's
  "measures", and the figure's subtitle when there is no truth): the missing wedge's fill before
  and after, and the restored volume's consistency with the data in the measured region, on the
  central crop (`io.mrc.read_central_crop`: bounded memory on any tomogram).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CryogenError
from ..io.files import atomic_output
from ..io.mrc import MrcReader, read_central_crop
from ..model.imaging import Wedge
from .geometry import CROP
from .isotropy import data_consistency, wedge_fill
from .plotting import pyplot

BLOCK_BYTES = 64 << 20  # bytes of voxels read at once


@dataclass
class Sections:
    """What the figures need from one volume: three central slices and the wedge planes."""

    xy: np.ndarray  # (ny, nx) at z = nz // 2
    xz: np.ndarray  # (nz, nx) at y = ny // 2
    yz: np.ndarray  # (nz, ny) at x = nx // 2
    planes: np.ndarray  # (k, nz, n) planes perpendicular to the tilt axis
    shape: tuple[int, int, int]
    voxel_size: float


def read_sections(path: str | Path, tilt_axis: str = "y", n_planes: int = 16) -> Sections:
    """Central slices and up to `n_planes` planes perpendicular to the tilt axis, in one pass."""
    with MrcReader(path) as r:
        nz, ny, nx = r.shape
        along = ny if tilt_axis == "y" else nx
        picks = np.unique(np.linspace(0, along - 1, min(n_planes, along)).round().astype(int))
        xz = np.empty((nz, nx), np.float32)
        yz = np.empty((nz, ny), np.float32)
        planes = np.empty((len(picks), nz, nx if tilt_axis == "y" else ny), np.float32)
        xy = None
        step = max(1, BLOCK_BYTES // max(1, ny * nx * 4))
        for z0 in range(0, nz, step):
            z1 = min(nz, z0 + step)
            block = r.read_block(z0, z1)
            xz[z0:z1] = block[:, ny // 2, :]
            yz[z0:z1] = block[:, :, nx // 2]
            if z0 <= nz // 2 < z1:
                xy = block[nz // 2 - z0].copy()
            if tilt_axis == "y":
                planes[:, z0:z1, :] = block[:, picks, :].transpose(1, 0, 2)
            else:
                planes[:, z0:z1, :] = block[:, :, picks].transpose(2, 0, 1)
        assert xy is not None
        return Sections(xy, xz, yz, planes, (nz, ny, nx), r.info.isotropic_voxel_size)


def power_spectrum(planes: np.ndarray) -> np.ndarray:
    """Mean 2-D power spectrum of the planes (Hann-windowed, mean removed), DC-centred."""
    k, h, w = planes.shape
    win = np.outer(np.hanning(h) if h > 2 else np.ones(h), np.hanning(w) if w > 2 else np.ones(w))
    total = np.zeros((h, w))
    for p in planes:
        p = p.astype(np.float64)
        total += np.abs(np.fft.fft2((p - p.mean()) * win)) ** 2
    return np.fft.fftshift(total / max(k, 1))


def _limits(images: list[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([im.ravel() for im in images])
    lo, hi = np.percentile(values, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def plot_slices(volumes: list[tuple[str, Sections]], path: str | Path, title: str = "") -> None:
    """Rows of central XY, XZ and YZ slices, one row per (label, sections)."""
    plt = pyplot()
    nz, ny, nx = volumes[0][1].shape
    widths = [nx, nx, ny]
    fig_w = 12.0
    row_h = fig_w * max(ny, nz) / sum(widths) + 0.6
    fig, axes = plt.subplots(
        len(volumes),
        3,
        figsize=(fig_w, row_h * len(volumes) + 0.6),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for row, (label, s) in enumerate(volumes):
        lo, hi = _limits([s.xy, s.xz, s.yz])
        for col, (name, im) in enumerate(
            ((f"XY (z = {nz // 2})", s.xy), (f"XZ (y = {ny // 2})", s.xz), (f"YZ (x = {nx // 2})", s.yz))
        ):
            ax = axes[row, col]
            ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            ax.set_title(f"{label}: {name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or "central slices", fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def plot_spectra(
    volumes: list[tuple[str, Sections]],
    path: str | Path,
    tilt_range: tuple[float, float],
    tilt_axis: str = "y",
    title: str = "",
) -> None:
    """log10 power spectra in the plane of the missing wedge, with the tilt limits drawn."""
    plt = pyplot()
    spectra = [(label, np.log10(power_spectrum(s.planes) + 1e-12)) for label, s in volumes]
    finite = np.concatenate([sp.ravel() for _, sp in spectra])
    lo, hi = np.percentile(finite, [5, 99.9])
    fig, axes = plt.subplots(1, len(spectra), figsize=(4.2 * len(spectra) + 0.8, 4.4), squeeze=False)
    inplane = "kx" if tilt_axis == "y" else "ky"
    im = None
    for i, (ax, (label, sp)) in enumerate(zip(axes[0], spectra, strict=False)):
        im = ax.imshow(
            sp, cmap="magma", vmin=lo, vmax=hi, origin="lower", extent=(-0.5, 0.5, -0.5, 0.5), interpolation="nearest"
        )
        k = np.array([-0.5, 0.5])
        for t in tilt_range:
            ax.plot(k, np.tan(math.radians(t)) * k, "--", color="cyan", lw=0.8)
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(-0.5, 0.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(f"{inplane} (cycles/voxel)")
        if i == 0:
            ax.set_ylabel("kz (cycles/voxel)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="log10 power")
    fig.suptitle(
        title
        or f"power spectrum ({inplane}, kz), tilt axis {tilt_axis}; dashed: tilt limits {tilt_range[0]:g}, {tilt_range[1]:g} deg",
        fontsize=9,
    )
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _metrics_against(
    truth: str | Path, before: str | Path, after: str | Path, tilt_range: tuple[float, float], tilt_axis: str
) -> dict[str, dict]:
    """`metrics.evaluate` of the volumes before and after restoration against the truth (read
    whole, one at a time besides the truth)."""
    from ..io.mrc import read_mrc
    from ..model.imaging import Wedge
    from .metrics import evaluate

    wedge = Wedge(tilt_range[0], tilt_range[1], tilt_axis)
    t, tinfo = read_mrc(truth)
    metrics = {}
    for label, vol in (("before", before), ("after", after)):
        v, _ = read_mrc(vol)
        metrics[label] = evaluate(v, t, wedge, voxel_size=tinfo.isotropic_voxel_size or None)
        del v
    return metrics


def truth_free_measures(before: str | Path, after: str | Path, wedge: Wedge, crop: int = CROP) -> dict:
    """The measures that need no truth, on the central crop (at most `crop` voxels per axis) of
    both volumes: "wedge_fill" before and after (the missing wedge's power relative to the measured
    region's at the same |k|, `qc.isotropy.wedge_fill`; None where the crop has no coefficient in
    its band) and "consistency" (the FSC of the re-wedged result with the input over the measured
    region: its mean up to 0.25 cycles/voxel, its minimum up to Nyquist and where it falls below
    0.5). What a user of real data has to judge a restoration by: did the wedge fill, and does
    the result still agree with what the microscope measured. Both are per shell of |k|, so a
    radial filter of the input (the CTF deconvolution of `defocus` rows, restored in place of the
    raw tomogram the report is given) changes them little (the second real crop at 3 um:
    consistency 0.971 against the raw input, 0.968 against the deconvolved one)."""
    with MrcReader(before) as rb, MrcReader(after) as ra:
        b, a = read_central_crop(rb, crop), read_central_crop(ra, crop)
        voxel = rb.info.isotropic_voxel_size or None

    def fill(volume: np.ndarray) -> float | None:
        try:
            return wedge_fill(volume, wedge)
        except CryogenError:  # a crop too small to hold the band
            return None

    cons = data_consistency(a, b, wedge, voxel)
    return {
        "crop_zyx": list(b.shape),
        "wedge_fill": {"before": fill(b), "after": fill(a)},
        "consistency": cons.mean,
        "consistency_min": cons.minimum,
        "consistency_fsc_0.5_angstrom": cons.fsc_05_angstrom,
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def measures_line(measures: dict) -> str:
    """`truth_free_measures` in one line, for the figure's title and the terminal."""
    fill = measures["wedge_fill"]
    return (
        f"wedge fill {_fmt(fill['before'])} -> {_fmt(fill['after'])}, consistency with the data "
        f"{measures['consistency']:.3f} (lowest shell {measures['consistency_min']:.3f}; "
        f"central {' x '.join(map(str, measures['crop_zyx']))})"
    )


def report_figures(
    before: str | Path,
    after: str | Path,
    slices_png: str | Path,
    spectra_png: str | Path,
    tilt_range: tuple[float, float] = (-60.0, 60.0),
    tilt_axis: str = "y",
    truth: str | Path | None = None,
    summary_json: str | Path | None = None,
    name: str = "",
    crop: int = CROP,
) -> dict:
    """Write the slices and spectra figures of one tomogram and, if asked, a JSON summary (shape,
    voxel size, tilt, the truth-free measures on the central `crop`, and with a truth cc / FSC /
    wedge recovery before and after)."""
    vols = [("before", read_sections(before, tilt_axis)), ("after", read_sections(after, tilt_axis))]
    if vols[0][1].shape != vols[1][1].shape:
        raise CryogenError(f"shape {vols[1][1].shape} differs from the input's {vols[0][1].shape} ({before})", after)
    summary: dict = {
        "name": name,
        "before": str(before),
        "after": str(after),
        "shape_zyx": list(vols[0][1].shape),
        "voxel_size_angstrom": vols[0][1].voxel_size,
        "tilt": {"tilt_min": tilt_range[0], "tilt_max": tilt_range[1], "tilt_axis": tilt_axis},
        "truth": None if truth is None else str(truth),
        "metrics": None,
        "measures": truth_free_measures(before, after, Wedge(tilt_range[0], tilt_range[1], tilt_axis), crop),
    }
    if truth is not None:
        vols.append(("truth", read_sections(truth, tilt_axis)))
        if vols[2][1].shape != vols[0][1].shape:
            raise CryogenError(
                f"shape {vols[2][1].shape} differs from the input's {vols[0][1].shape} ({before})", truth
            )
        if summary_json is not None:  # whole volumes: meant for simulated (small) data
            summary["metrics"] = _metrics_against(truth, before, after, tilt_range, tilt_axis)
    head = f"{name}: " if name else ""
    shape = " x ".join(str(n) for n in vols[0][1].shape)
    subtitle = f"{head}{shape} voxels (z, y, x), {vols[0][1].voxel_size:g} A/voxel"

    if summary["metrics"]:
        b, a = summary["metrics"]["before"], summary["metrics"]["after"]
        subtitle += f"\ncc with truth {_fmt(b['cc'])} -> {_fmt(a['cc'])}, wedge recovery {_fmt(b['wedge_recovery'])} -> {_fmt(a['wedge_recovery'])}"
    else:
        subtitle += "\n" + measures_line(summary["measures"])
    plot_slices(vols, slices_png, title=subtitle)
    plot_spectra(
        vols,
        spectra_png,
        tilt_range,
        tilt_axis,
        title=f"{head}log10 power in the (k_inplane, kz) plane; dashed: tilt limits {tilt_range[0]:g}, {tilt_range[1]:g} deg",
    )
    if summary_json is not None:
        with atomic_output(summary_json) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
