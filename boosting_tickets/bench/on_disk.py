"""A suite's state read from its output directory: which runs are finished, failed, running.

Every worker of a suite (``bench run`` processes on one machine or many) writes its runs into the
same ``<out>/runs`` and ``<out>/tickets``; the results file is therefore rebuilt from the disk, not
from what one worker did: a planned run (arm x seed) is

* ``finished`` when its run directory holds a finished ``metrics.json`` (then :func:`outcome` reads
  what the results rows need from it);
* ``failed`` when its ``metrics.json`` (or its ticket's finding run's) says so;
* ``running`` while a live process holds the claim on its run or ticket directory
  (``core.claims``);
* ``pending`` otherwise.

A retraining run's directory depends on its ticket (hash and mask), so it is known once the
ticket's ``ticket.json`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.claims import Holder, live_holder
from ..core.errors import UserError
from ..core.paths import RunPaths, SuitePaths, TicketPaths
from ..core.storage import read_json
from .plan import PlannedRun


@dataclass(frozen=True)
class Where:
    """Where a planned run lives: its ticket directory (None for dense arms) and its run directory
    (None while its ticket is not found yet)."""

    ticket_dir: Path | None
    run_dir: Path | None
    ticket_meta: dict[str, Any] | None


def locate(pr: PlannedRun, paths: SuitePaths) -> Where:
    """The directories of ``pr`` under ``paths`` (reads only ``ticket.json``)."""
    from ..tickets.retrain import retrain_identity
    from ..tickets.ticket import ticket_dir_for
    from ..training.run import run_dir_for

    if pr.find is None:
        return Where(None, run_dir_for(pr.run, paths.runs), None)
    tdir = ticket_dir_for(pr.find, paths.tickets)
    meta_path = TicketPaths(tdir).meta
    if not meta_path.exists():
        return Where(tdir, None, None)
    meta = read_json(meta_path, what="ticket file", require_checksum=True)
    _, _, run_dir = retrain_identity(pr.run, meta, pr.control, paths.runs, pr.transfer_head)
    return Where(tdir, run_dir, meta)


def _metrics(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not RunPaths(run_dir).metrics.exists():
        return None
    return read_json(RunPaths(run_dir).metrics, what="metrics file", require_checksum=True)


@dataclass(frozen=True)
class RunState:
    """One planned run's state on disk (see the module docstring)."""

    state: str  # finished | failed | running | pending
    where: Where
    stage: str | None = None  # failed / running: "find" or "train"
    error: str | None = None
    holder: Holder | None = None


def run_state(pr: PlannedRun, paths: SuitePaths) -> RunState:
    """What the disk says about ``pr``."""
    from ..training.run import FINISHED

    where = locate(pr, paths)
    metrics = _metrics(where.run_dir)
    if metrics is not None and metrics.get("status") in FINISHED:
        return RunState("finished", where)
    if where.ticket_dir is not None and where.run_dir is None:
        holder = live_holder(where.ticket_dir)
        if holder is not None:
            return RunState("running", where, "find", holder=holder)
        failed = _failed_finding(TicketPaths(where.ticket_dir))
        if failed is not None:
            return RunState("failed", where, "find", failed)
        return RunState("pending", where)
    assert where.run_dir is not None
    holder = live_holder(where.run_dir)
    if holder is not None:
        return RunState("running", where, "train", holder=holder)
    if metrics is not None and metrics.get("status") == "failed":
        return RunState("failed", where, "train", str(metrics.get("failure", "failed")))
    return RunState("pending", where)


def _failed_finding(paths: TicketPaths) -> str | None:
    """The failure of a ticket's finding run, if one of them failed."""
    if not paths.dir.is_dir():
        return None
    runs = [p for p in paths.dir.glob("*/train")] + list(paths.dir.glob("rewind_epoch_*"))
    for run in sorted(runs):
        metrics = _metrics(run)
        if metrics is not None and metrics.get("status") == "failed":
            return f"{run.relative_to(paths.dir)}: {metrics.get('failure', 'failed')}"
    return None


def outcome(pr: PlannedRun, where: Where) -> Any:
    """The :class:`runner.Outcome` of a finished run (reads its files; no training)."""
    from ..training.run import finished_result
    from .runner import Outcome, run_params

    assert where.run_dir is not None
    result = finished_result(RunPaths(where.run_dir))
    if result is None:
        raise UserError(f"{where.run_dir} is not a finished run")
    return Outcome(pr, result, where.ticket_meta, where.ticket_dir, run_params(where.run_dir))
