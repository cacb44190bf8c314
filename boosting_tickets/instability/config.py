"""The settings of ``boosting-tickets instability`` (a typed dataclass; TOML via ``--config`` or
flags). This module imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import MAX_SEED, setting
from ..core.errors import UserError

#: The second copy's noise seed, unless given: the run seed plus this (a prime).
NOISE_OFFSET = 1_000_003


@dataclass(frozen=True)
class InstabilityConfig:
    """Where the copies part (K), how finely the path is measured and on which images."""

    steps: tuple[int, ...] = setting(
        (0,),
        "rewind points K, comma separated: optimizer steps after which the second copy's SGD "
        "noise differs (0: from the start)",
    )
    alphas: int = setting(30, "evenly spaced points on the path, both ends included", low=3)
    n_examples: int | None = setting(
        None, "test images: the first N of the run's test subset; none = all of it", low=1
    )
    bn_images: int = setting(
        500,
        "training images (the first, unaugmented) on which BatchNorm statistics are recomputed "
        "at each point; 0 = keep the interpolated statistics",
        low=0,
    )
    noise_seed: int | None = setting(
        None,
        f"noise seed of the second copy; none = the run seed + {NOISE_OFFSET}",
        low=0,
        high=MAX_SEED,
    )
    eval_batch_size: int = setting(500, "evaluation batch size", low=1, hashed=False)
    device: str = setting("auto", "torch device: auto, cpu, cuda, cuda:N", hashed=False)
    progress: bool = setting(True, "show progress bars of the copies' training", hashed=False)

    def validate(self) -> None:
        if not self.steps:
            raise UserError("--steps needs at least one rewind point K")
        if any(k < 0 for k in self.steps):
            raise UserError(f"--steps must be >= 0, got {list(self.steps)}")
        if len(set(self.steps)) != len(self.steps):
            raise UserError(f"--steps lists a rewind point twice: {list(self.steps)}")
