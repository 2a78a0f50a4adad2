"""What the microscope does to each 2-D projection: the contrast transfer function and radiation damage.

Both are radial transfer functions on the images of a tilt series, applied in one Fourier pass
per image (`filter_images`). The CTF is that of a weak-phase object with amplitude contrast,
signed so that density stays positive at low frequency (as after the usual contrast inversion of
a tomogram); phase flipping, as most reconstruction pipelines do, keeps its modulus, so the sign
reversals between Thon rings are corrected but the zeros and the low-frequency loss remain.
Radiation damage follows the critical-exposure curve of Grant & Grigorieff (2015, 300 kV): an
image taken after an accumulated dose N (e/A^2) keeps exp(-N / (2 Ne(k))) of its amplitude at
spatial frequency k.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..errors import CryogenError

__all__ = ["CTF", "ctf_curve", "dose_attenuation", "electron_wavelength", "filter_images", "frequency_grid"]


def _number(name: str, value: object, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """`value` as a float in [low, high) (or (low, high) with `low_open`), else a one-line error."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not ok or v < low or v >= high or (low_open and v == low):
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if math.isfinite(high) else "")
        raise CryogenError(f"{name} must be a finite number {bounds}, not {value!r}")
    return v


@dataclass(frozen=True)
class CTF:
    """Microscope optics for the CTF of every projection; one defocus per image.

    A tilted image really has a defocus gradient across the tilt axis (about ±1 µm over a
    typical field at 60°); a single defocus keeps the model simple and is what many
    reconstruction pipelines correct for anyway.
    """

    defocus_um: float = 3.0  # underfocus, positive
    amplitude_contrast: float = 0.07
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    phase_flip: bool = True  # corrected by phase flipping, as most pipelines do

    def __post_init__(self) -> None:
        object.__setattr__(self, "defocus_um", _number("defocus (µm)", self.defocus_um, 0.0, low_open=True))
        object.__setattr__(self, "amplitude_contrast", _number("amplitude contrast", self.amplitude_contrast, 0.0, 1.0))
        object.__setattr__(self, "voltage_kv", _number("voltage (kV)", self.voltage_kv, 0.0, low_open=True))
        object.__setattr__(self, "cs_mm", _number("spherical aberration Cs (mm)", self.cs_mm, 0.0))
        if not isinstance(self.phase_flip, bool):
            raise CryogenError(f"phase_flip must be True or False, not {self.phase_flip!r}")


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in angstrom (0.0197 A at 300 kV)."""
    v = voltage_kv * 1e3
    return 12.2643 / math.sqrt(v * (1.0 + 0.97848e-6 * v))


def ctf_curve(k: np.ndarray, ctf: CTF) -> np.ndarray:
    """The CTF at spatial frequencies `k` (1/A): +1 is perfect transfer; |CTF| with phase flipping."""
    lam = electron_wavelength(ctf.voltage_kv)
    dz = ctf.defocus_um * 1e4
    cs = ctf.cs_mm * 1e7
    k2 = np.asarray(k, dtype=np.float64) ** 2
    chi = np.pi * lam * dz * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    a = ctf.amplitude_contrast
    out = math.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi)
    return np.abs(out) if ctf.phase_flip else out


def dose_attenuation(k: np.ndarray, dose: np.ndarray | float) -> np.ndarray:
    """Amplitude kept at frequencies `k` (1/A) after accumulated `dose` (e/A^2), broadcast together."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore"):
        critical = np.where(k > 0, 0.245 * k**-1.665 + 2.81, np.inf)  # Grant & Grigorieff, 300 kV
    return np.exp(-np.asarray(dose, dtype=np.float64) / (2.0 * critical))


def frequency_grid(shape: tuple[int, int], pixel_size: float) -> np.ndarray:
    """|k| in 1/A for the rfft2 layout of (ny, nu) images with square pixels of `pixel_size` A."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    ku = np.fft.rfftfreq(shape[1])[None, :]
    return np.sqrt(ky**2 + ku**2) / pixel_size


def filter_images(images: np.ndarray, transfer: Callable[[np.ndarray], np.ndarray], pixel_size: float) -> np.ndarray:
    """Apply a radial transfer to each (y, u) image of a (tilt, y, u) stack; float32.

    `transfer(k)` takes |k| (1/A) of shape (Ly, Lu // 2 + 1) and returns that shape or one per
    image, (tilt, Ly, Lu // 2 + 1). Images are mirror-extended by half their size first, so the
    filter does not wrap one edge of the field onto the other.
    """
    _, ny, nu = images.shape
    py, pu = ny // 2, nu // 2
    padded = np.pad(images, ((0, 0), (py, py), (pu, pu)), mode="symmetric")
    size = padded.shape[1:]
    h = np.asarray(transfer(frequency_grid(size, pixel_size)))
    spectrum = scipy.fft.rfft2(padded, workers=2)
    spectrum *= h.astype(np.complex64)
    out = scipy.fft.irfft2(spectrum, s=size, workers=2)[:, py : py + ny, pu : pu + nu]
    return np.ascontiguousarray(out, dtype=np.float32)
