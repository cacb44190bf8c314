"""The settings of ``compare robustbench`` and the names and constants of the RobustBench zoo
our harness can score. This module imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..core.config import setting
from ..core.errors import UserError

#: Datasets of the RobustBench zoo that our harness can score (L∞ attacks on 3x32x32 images),
#: with their number of classes.
ZOO_DATASETS: Mapping[str, int] = MappingProxyType({"cifar10": 10, "cifar100": 100})
#: Threat models our attacks implement (RobustBench's Linf and L2 leaderboards).
ZOO_THREATS: tuple[str, ...] = ("Linf", "L2")
#: Where the images of a comparison come from.
EVAL_DATA: tuple[str, ...] = ("dataset", "synthetic")
EXPORT_FORMAT = "boosting-tickets/robustbench-export"
COMPARE_SUITE = "robustbench-compare"
DEFAULT_RESULTS = "runs/compare/robustbench/results.json"
# Normalization buffers some zoo architectures keep in their state_dict (Wong2020FastNet,
# Rice2020OverfittingNet, ...); robustbench fills them from the constructor when a file lacks them.
NORMALIZATION_KEYS = ("mu", "sigma")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class CompareConfig:
    """Which RobustBench models to measure, on which images, and how (``compare robustbench``).

    The attack protocol is not a setting: it is always the one tickets are scored with
    (:func:`comparison_protocol`), so that every row of the resulting table is comparable.
    """

    models: tuple[str, ...] = setting(
        (),
        "RobustBench model names, comma separated (see 'boosting-tickets compare list')",
        hashed=False,
    )
    model_dir: str = setting(
        "models", "directory holding <dataset>/<threat>/<name>.pt checkpoints", hashed=False
    )
    dataset: str = setting("cifar10", "RobustBench dataset", choices=tuple(ZOO_DATASETS))
    threat: str = setting("Linf", "RobustBench threat model", choices=ZOO_THREATS)
    n_examples: int | None = setting(
        None, "evaluate this many test images (stratified, deterministic); none = all", low=1
    )
    data_dir: str = setting("data", "directory holding the dataset files", hashed=False)
    download: bool = setting(
        False, "download missing dataset files (needs internet; never done silently)", hashed=False
    )
    eval_data: str = setting(
        "dataset",
        "images to measure on: 'dataset' (the real test set of --dataset) or 'synthetic' "
        "(generated images of the same shape: a smoke test, not a robustness number)",
        choices=EVAL_DATA,
    )
    autoattack: bool = setting(False, "also run AutoAttack (standard, pyautoattack); slow")
    allow_download: bool = setting(
        False, "download missing checkpoints from RobustBench (needs internet)", hashed=False
    )
    batch_size: int = setting(200, "evaluation batch size", low=1, hashed=False)
    device: str = setting("auto", "torch device: auto, cpu, cuda, cuda:N", hashed=False)
    progress: bool = setting(True, "show progress bars", hashed=False)

    def validate(self) -> None:
        if not self.models:
            raise UserError(
                "no models given; pass --models NAME[,NAME...] "
                "(names as in 'boosting-tickets compare list', e.g. Wong2020Fast)"
            )
        for name in self.models:
            check_model_name(name)
        dupes = sorted({m for m in self.models if self.models.count(m) > 1})
        if dupes:
            raise UserError(f"--models names {', '.join(dupes)} more than once; list each once")


def check_model_name(name: str) -> str:
    """Return ``name`` if it can name a checkpoint file (letters, digits, ``_ . -``)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UserError(
            f"bad model name {name!r}: use letters, digits, '_', '.' and '-' only "
            "(a RobustBench name such as Wong2020Fast)"
        )
    return name
