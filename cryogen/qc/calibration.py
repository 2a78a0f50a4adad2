"""Calibration of the uncertainty map: does the per-voxel std say how far the estimate is from
the truth? Needs a truth, so it is measured on phantoms (`cryogen benchmark`).

For a calibrated Gaussian posterior, 68 % of voxels lie within one std of the truth and 95 %
within two, and |error| grows with std. The z profile (the mean of each plane along the beam,
on the kz axis that no tilt series measures and no method can recover) is left out of the error,
as in `cryogen.qc.metrics`' `_no_z_profile` diagnostics: it would count as error everywhere,
whatever the std says.
"""

from __future__ import annotations

import numpy as np

from ..model.imaging import as_volume

__all__ = ["calibration"]


def calibration(estimate: np.ndarray, std: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Coverage of the truth by `estimate` ± 1 and ± 2 `std`, and corr(|error|, std); all (Z, Y, X).

    Returns `within_1sd` and `within_2sd` (fractions of voxels; ideal 0.68 and 0.95) and
    `err_std_corr` (Pearson correlation of |error| with std; 0 when std is constant).
    """
    x = as_volume(estimate, "estimate").astype(np.float64)
    s = as_volume(std, "std").astype(np.float64)
    t = as_volume(truth, "truth").astype(np.float64)
    if not x.shape == s.shape == t.shape:
        raise ValueError(f"estimate, std and truth differ in shape: {x.shape}, {s.shape}, {t.shape}")
    err = (x - x.mean(axis=(1, 2), keepdims=True)) - (t - t.mean(axis=(1, 2), keepdims=True))
    a = np.abs(err)
    s = np.maximum(s, 0.0)
    corr = 0.0
    if a.std() > 0 and s.std() > 0:
        corr = float(np.corrcoef(a.ravel(), s.ravel())[0, 1])
    return {
        "within_1sd": float(np.mean(a <= s)),
        "within_2sd": float(np.mean(a <= 2 * s)),
        "err_std_corr": corr,
    }
