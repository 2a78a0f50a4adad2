"""The settings of a training run (TrainConfig): one place for their defaults, which the CLI,
the workflow and the checkpoints all take from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..model.nets import NetConfig

#: fields older checkpoints may hold that no longer exist (dropped when read)
RETIRED = ("fail_at_step",)


@dataclass
class TrainConfig:
    """Every setting of a training run; saved in its checkpoints, so a prior says how it was made."""

    steps: int = 2000
    time_budget: float | None = None  # seconds; training stops at whichever comes first
    batch: int = 4
    patch: int = 32
    lr_g: float = 1e-3
    lr_d: float = 2e-4
    # g's learning rate follows a cosine from lr_g down to lr_final x lr_g over the run (the step
    # count, or the time budget when that comes first); 1: constant
    lr_final: float = 1.0
    prior_weight: float = 0.01  # lambda of the E-step's posterior (see SolveConfig)
    langevin_steps: int = 1
    langevin_step: float = 0.05
    fit_weight: float = 0.0  # g(y) towards the E-step samples: measured to pull g back towards the noisy y
    # the proxy's cycle (g(A R x + n) -> R x on its own candidates) and the adversarial term are off
    # by default: on the real crop either one kept the wedge empty at 1000 steps, and together
    # they broke the tube's wall into ringing; the turned recorrupted pairs fill it (README)
    cycle_weight: float = 0.0
    # compare the cycle only where the rotated candidate holds measured data: elsewhere its target
    # is g's own (early on, empty) wedge, which the quarter turns that keep the wedge in place ask g to copy
    cycle_measured: bool = False
    denoise_weight: float = 1.0
    # the recorrupted pairs turned about the tilt axis by up to this many degrees (0: not turned):
    # the data themselves then teach g to fill the wedge (measured on the real crop: see README)
    denoise_turn: float = 90.0
    # weight of the turned loss where it lies in the input's missing wedge (the measured part: 1);
    # measured: 3 fills the wedge better on both phantoms (README: the fill weight)
    fill_weight: float = 3.0
    # fill the input's own wedge with g(y) before turning it (IsoNet's refinement), so that g trains
    # on inputs measured as fully as the data it restores (README: the refined turns)
    refine: bool = True
    # train the coarse network beside g, a step of each per training step, on the tile stores'
    # coarse levels (the tomograms binned 2x; stores without one train without it): the two-scale
    # fill takes the wedge's low frequencies from it (README, Quality: the coarse network)
    coarse: bool = True
    recorrupt: float = 1.0  # alpha of the recorrupted pairs y + alpha n / y - n / alpha (1: measured best of 0.5, 1)
    adv_weight: float = 0.0
    # with adv_weight 0, D (the energy of MAP and the std map) trains on every d_every-th step only
    d_every: int = 4
    ema: float = 0.99
    checkpoint_every: int = 50
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["net"] = self.net.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = {k: v for k, v in d.items() if k not in RETIRED}
        d.setdefault("denoise_turn", 0.0)  # checkpoints from before the turns were trained without them
        d.setdefault("fill_weight", 1.0)  # ... and from before the fill weight, with the turned loss unweighted
        d.setdefault("refine", False)  # ... and from before the refined turns, with the input's wedge left empty
        d.setdefault("coarse", False)  # ... and from before the coarse network, without it
        d["net"] = NetConfig.from_dict(d["net"])
        return cls(**d)
