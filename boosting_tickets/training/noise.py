"""A run's random streams (the SGD noise) and the switch that lets two copies of a run differ in
nothing else.

The noise of a run is its data order and augmentation (the ``data`` generator, the same on every
rank), the training attack's random starts (``attack``) and dropout (torch's global generator).
The init is drawn from ``--seed`` before any of them. With ``--noise-seed S`` the noise comes from
``S`` instead, from optimizer step ``--noise-step K`` on (0: from the start). This is what the
instability analysis of Frankle et al. 2020 needs: two copies that share their init and their
first K steps, then see different SGD noise. A mid-epoch switch changes augmentation, attack
starts and dropout at once and the data order from the next epoch on (the epoch's permutation is
drawn at its start).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.distributed import Distributed
from .loop import Callback, StepEnd, TrainState


def seed_noise(gens: dict[str, torch.Generator], seed: int, rank: int, *, dropout: bool) -> None:
    """Seed the run's streams from ``seed``: data order and augmentation alike on every rank,
    attack starts and (``dropout=True``, or any rank but 0) dropout per rank."""
    gens["data"].manual_seed(seed)
    gens["attack"].manual_seed(seed + 1 + 7919 * rank)
    if dropout:
        torch.manual_seed(seed + 2 + 104729 * rank)
    elif rank:
        torch.manual_seed(seed + 104729 * rank)


def run_generators(cfg: Any, device: torch.device, dist: Distributed) -> dict[str, torch.Generator]:
    """The run's random streams, seeded from ``--seed`` (rank 0's dropout continues torch's global
    generator after the init), or from ``--noise-seed`` when it applies from step 0."""
    tc = cfg.train
    gens = {"data": torch.Generator(), "attack": torch.Generator(device=device)}
    if tc.noise_seed is not None and tc.noise_step == 0:
        seed_noise(gens, tc.noise_seed, dist.rank, dropout=True)
    else:
        seed_noise(gens, tc.seed, dist.rank, dropout=False)
    return gens


class NoiseSwitch(Callback):
    """After optimizer step ``step``, reseed the noise from ``seed`` (``--noise-step > 0``).

    A run resumed after the switch restores the switched streams from ``last.pt``; one resumed
    before it replays the steps up to it and switches again, so resuming never changes the noise.
    """

    def __init__(
        self, seed: int, step: int, gens: dict[str, torch.Generator], dist: Distributed
    ) -> None:
        self.seed, self.step, self.gens, self.dist = seed, step, gens, dist

    def on_step_end(self, state: TrainState, step: StepEnd) -> None:
        if state.step == self.step:
            seed_noise(self.gens, self.seed, self.dist.rank, dropout=True)
