"""Every file and directory name of a run, a ticket and a suite, defined once.

The layouts (what each file holds is documented where it is written):

* a training run, ``<root>/train_<hash>`` or ``<root>/retrain_<hash>`` (:class:`RunPaths`);
* a ticket, ``<root>/ticket_<hash>`` (:class:`TicketPaths`), whose finding runs are training runs;
* a suite's output directory, ``runs/bench/<suite>`` by default (:class:`SuitePaths`).

Directory names carry the hash of the non-default settings (``core.config.config_hash``), so the
same settings always name the same directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_PREFIX = "train"
RETRAIN_PREFIX = "retrain"
TICKET_PREFIX = "ticket"

HPARAMS = "hparams.json"
INIT = "init.pt"
LAST = "last.pt"
BEST = "best.pt"
FINAL = "final.pt"
METRICS = "metrics.json"
TEST_EVAL = "test_eval.json"
TENSORBOARD = "tensorboard"
ATTEMPTS = "attempts.json"

TICKET_META = "ticket.json"
MASK = "mask.pt"
REWIND = "rewind.pt"
SPARSITY = "sparsity.json"
FIND_METRICS = "find_metrics.json"
PRUNE_RECORD = "prune.json"

RESULTS = "results.json"


class _In:
    """A file of a directory described by a paths object: ``best = _In(BEST)`` makes
    ``RunPaths(d).best == d / "best.pt"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Any:
        return self if obj is None else obj.dir / self.name


def hashed_dir(root: str | Path, prefix: str, digest: str) -> Path:
    """``root/<prefix>_<digest>``."""
    return Path(root) / f"{prefix}_{digest}"


@dataclass(frozen=True)
class RunPaths:
    """The files of one training run directory."""

    dir: Path

    hparams, metrics, test_eval = _In(HPARAMS), _In(METRICS), _In(TEST_EVAL)
    init, last, best, final = _In(INIT), _In(LAST), _In(BEST), _In(FINAL)
    tensorboard, attempts = _In(TENSORBOARD), _In(ATTEMPTS)

    def step_snapshot(self, step: int) -> Path:
        """``step_<K>.pt``: the weights right after optimizer step K (a mid-epoch rewind point)."""
        return self.dir / f"step_{step}.pt"


@dataclass(frozen=True)
class TicketPaths:
    """The files of one ticket directory (see ``tickets.finding`` for what each holds)."""

    dir: Path

    hparams, meta, mask, rewind = _In(HPARAMS), _In(TICKET_META), _In(MASK), _In(REWIND)
    sparsity, find_metrics = _In(SPARSITY), _In(FIND_METRICS)

    def level(self, level: int) -> Path:
        """``level_<L>/``: the mask after L pruning rounds (and, for IMP, its training run)."""
        return self.dir / f"level_{level}"

    def level_mask(self, level: int) -> Path:
        return self.level(level) / MASK

    def level_prune_record(self, level: int) -> Path:
        return self.level(level) / PRUNE_RECORD

    def level_run(self, level: int) -> Path:
        """The training run of level L (level 0: the dense finding run)."""
        return self.level(level) / "train"

    def rewind_run(self, epochs: int) -> Path:
        """The finding run stopped after ``epochs`` epochs (rewind epoch:K)."""
        return self.dir / f"rewind_epoch_{epochs}"

    #: Files whose presence marks a finished ticket (ticket.json is written last).
    @property
    def required(self) -> tuple[Path, ...]:
        return (self.meta, self.mask, self.rewind)


@dataclass(frozen=True)
class SuitePaths:
    """A suite's output directory."""

    dir: Path

    results = _In(RESULTS)
    runs = _In("runs")
    tickets = _In("tickets")
