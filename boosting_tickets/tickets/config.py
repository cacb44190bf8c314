"""The settings of a ticket search: the finding run (a training run at a small lr), pruning and
rewinding. Every leaf is a flag of ``boosting-tickets find-ticket``; this module imports no torch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.config import setting
from ..core.errors import UserError
from ..training.hparams import RunConfig, TrainConfig
from ..training.objectives import finding_objective_names
from .criteria import criterion_names
from .structured import CHANNEL_CRITERIA, STRUCTURES

SCOPES = ("global", "layer")
_REWIND_RE = re.compile(r"^(epoch|iter):(\d+)$")


@dataclass(frozen=True)
class PruneConfig:
    """How the ticket is pruned and where it is rewound to."""

    sparsity: float = setting(
        0.8, "fraction of the prunable weights pruned in the end, in [0,1) (the paper: 0.8)"
    )
    prune_scope: str = setting(
        "global",
        "global: one threshold over all layers (the paper); layer: each layer alike",
        choices=SCOPES,
    )
    criterion: str = setting(
        "magnitude",
        "pruning criterion (a registry name): magnitude = |w| of the trained weights",
        choices=criterion_names,
    )
    normalize_by_mean: bool = setting(
        True,
        "global pruning ranks |w| / mean |w| of each layer (the official boosting-ticket code)",
    )
    imp_rounds: int = setting(
        1,
        "pruning rounds: 1 = one-shot (the paper); R > 1 = iterative magnitude pruning, "
        "each round pruning 1-(1-sparsity)^(1/R) of the remaining weights",
        low=1,
    )
    output_rate: float = setting(
        1.0,
        "output layer's pruning rate relative to the others (0.5 = half rate, Frankle & Carbin)",
        low=0.0,
        high=1.0,
    )
    prune_ignore: tuple[str, ...] = setting(
        (), "weights never pruned: names or patterns, comma-separated (e.g. conv1.weight)"
    )
    mask_bn_channels: bool = setting(
        True, "mask BatchNorm weight/bias of channels whose whole filter is pruned (official code)"
    )
    structure: str = setting(
        "weights",
        "weights: unstructured (a mask, the paper); channels: whole inner channels of every "
        "WideResNet block, the slimmer network built for real (fewer FLOPs per epoch)",
        choices=STRUCTURES,
    )
    channel_criterion: str = setting(
        "l1",
        "with --structure channels: l1 (conv1 filter norm, Li et al. 2017) or bn-scale (|γ| of "
        "the BN after it, Liu et al. 2017)",
        choices=tuple(CHANNEL_CRITERIA),
    )
    rewind: str = setting(
        "init",
        "rewind point: init (θ0), epoch:K, iter:K (a whole number of epochs), or a model "
        "checkpoint path (a pre-trained init: the finding run also starts there)",
    )

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise UserError(
                f"--sparsity must be in [0, 1) (the fraction of weights pruned), got {self.sparsity}"
            )
        if self.structure == "channels" and self.imp_rounds != 1:
            raise UserError(
                "--structure channels prunes once (--imp-rounds 1): the slim network has no "
                "mask to prune further"
            )
        kind, _ = parse_rewind(self.rewind)
        if kind == "path" and not Path(self.rewind).is_file():
            raise UserError(
                f"--rewind '{self.rewind}' is neither init, epoch:K, iter:K nor an existing "
                "checkpoint file"
            )


@dataclass(frozen=True)
class FindTrainConfig(TrainConfig):
    """Training of the finding run: the paper finds tickets at a small lr (0.01) without warmup."""

    objective: str = setting(
        "natural",
        "objective of the finding run (the paper: natural, or cheap FGSM for robust tickets)",
        choices=finding_objective_names,
    )
    lr: float = setting(
        0.01, "finding lr (the paper: small, 0.01 for VGG-16, no warmup)", low=0.0, low_open=True
    )


@dataclass(frozen=True)
class FindConfig(RunConfig):
    """A ticket search: the finding run's settings (a training run's sections, with the finding
    defaults in ``train``) plus pruning and rewinding."""

    train: FindTrainConfig = FindTrainConfig()
    prune: PruneConfig = PruneConfig()

    def run_config(self) -> RunConfig:
        """The finding run as a plain :class:`RunConfig` (same values, TrainConfig type)."""
        tc = TrainConfig(
            **{f.name: getattr(self.train, f.name) for f in dataclasses.fields(TrainConfig)}
        )
        return RunConfig(data=self.data, model=self.model, train=tc, eval=self.eval)

    def validate(self) -> None:
        self.run_config().validate()
        self.prune.validate()
        if self.prune.structure == "channels":
            from .structured import check_structured_model

            check_structured_model(self.model.model)  # a plain WideResNet, else one line now
        kind, k = parse_rewind(self.prune.rewind)
        if kind == "epoch" and k >= self.train.epochs:
            raise UserError(
                f"--rewind epoch:{k} must be below --epochs ({self.train.epochs}): "
                "the rewind point lies inside the finding run"
            )
        if kind in ("epoch", "iter") and k > 0 and self.train.schedule == "cyclic":
            raise UserError(
                "--rewind epoch:K/iter:K needs a step or constant --schedule (the cyclic lr depends "
                "on the total length, so a K-epoch run would not reproduce epoch K); use init"
            )


def parse_rewind(text: str) -> tuple[str, int]:
    """``"init"`` -> ("init", 0); ``"epoch:3"`` -> ("epoch", 3); ``"iter:500"`` -> ("iter", 500);
    anything else is a checkpoint path -> ("path", 0)."""
    if text == "init":
        return "init", 0
    m = _REWIND_RE.match(text)
    if m:
        return m.group(1), int(m.group(2))
    if text.startswith(("epoch", "iter")) and ":" in text:
        raise UserError(f"--rewind '{text}' is malformed; use epoch:K or iter:K with K >= 0")
    return "path", 0


# ------------------------------------------------------------------------------------ tickets
