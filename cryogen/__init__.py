"""CryoGEN: unsupervised MAP restoration of cryo-electron tomograms under a learned energy prior.

The public API in one import: `from cryogen import chunk, train, reconstruct, stitch, Wedge`.
Each name is loaded from its module on first use (PEP 562), so `import cryogen` stays light and
verbs that run no network (chunk, stitch, info) never import torch.

Layers, bottom up: `model` (the imaging model: wedge and A, rotations, noise, networks), `io`
(MRC, tile stores, OME-Zarr, atomic files), `tiling` (chunk and stitch), `method` (training,
MAP and Langevin solver, patches), `restore` (reconstruct, its Dask form, one-tomogram runs),
`qc` (geometry and data checks, metrics, figures), `sim` (phantoms and forward models), `bench`
(quality and speed benchmarks), `cli` (one module per verb) and `workflow` (what the Snakemake
rules import: config, sheet, code digests).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "Wedge": "cryogen.model.imaging",
    "NoiseModel": "cryogen.model.noise",
    "NetConfig": "cryogen.model.nets",
    "TransferFunction": "cryogen.model.transfer",
    "read_mrc": "cryogen.io.mrc",
    "read_tilt_angles": "cryogen.io.tilts",
    "TiltAngles": "cryogen.io.tilts",
    "write_mrc": "cryogen.io.mrc",
    "write_ome_zarr": "cryogen.io.ome_zarr",
    "chunk": "cryogen.tiling",
    "stitch": "cryogen.tiling",
    "CTF": "cryogen.sim.ctf",
    "Deconvolution": "cryogen.deconvolve",
    "deconvolve": "cryogen.deconvolve",
    "TrainConfig": "cryogen.method.config",
    "train": "cryogen.method.loop",
    "SolveConfig": "cryogen.method.solver",
    "reconstruct": "cryogen.restore.reconstruct",
    "reconstruct_parallel": "cryogen.restore.parallel",
    "run_one": "cryogen.restore.pipeline",
    "evaluate": "cryogen.qc.metrics",
    "wedge_from_spectrum": "cryogen.qc.geometry",
    "simulate": "cryogen.sim.simulate",
    "simulate_tilt_series": "cryogen.sim.tilt_series",
    "TiltScheme": "cryogen.sim.tilt_series",
    "CryogenError": "cryogen.errors",
}

__all__ = [
    "CTF",
    "CryogenError",
    "Deconvolution",
    "NetConfig",
    "NoiseModel",
    "SolveConfig",
    "TiltAngles",
    "TiltScheme",
    "TrainConfig",
    "TransferFunction",
    "Wedge",
    "__version__",
    "chunk",
    "deconvolve",
    "evaluate",
    "read_mrc",
    "read_tilt_angles",
    "reconstruct",
    "reconstruct_parallel",
    "run_one",
    "simulate",
    "simulate_tilt_series",
    "stitch",
    "train",
    "wedge_from_spectrum",
    "write_mrc",
    "write_ome_zarr",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors; at run time __getattr__ loads
    from .deconvolve import Deconvolution, deconvolve
    from .errors import CryogenError
    from .io.mrc import read_mrc, write_mrc
    from .io.ome_zarr import write_ome_zarr
    from .io.tilts import TiltAngles, read_tilt_angles
    from .method.config import TrainConfig
    from .method.loop import train
    from .method.solver import SolveConfig
    from .model.imaging import Wedge
    from .model.nets import NetConfig
    from .model.noise import NoiseModel
    from .model.transfer import TransferFunction
    from .qc.geometry import wedge_from_spectrum
    from .qc.metrics import evaluate
    from .restore.parallel import reconstruct_parallel
    from .restore.pipeline import run_one
    from .restore.reconstruct import reconstruct
    from .sim.ctf import CTF
    from .sim.simulate import simulate
    from .sim.tilt_series import TiltScheme, simulate_tilt_series
    from .tiling import chunk, stitch


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # loaded once
        return value
    raise AttributeError(f"module 'cryogen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
