"""Wall-time estimates of a suite spread over workers, from the cost model.

The workers of :mod:`.runner` take the planned runs in order; a ticket run whose ticket nobody is
finding yet finds it first (its dependents wait for it), a run whose ticket another worker is
finding is skipped and taken once the ticket exists. :func:`simulate` replays exactly that policy
with each run's cost-model seconds (:mod:`.cost`) on ``workers`` identical workers, so the estimate
includes the idle time the dependencies force. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .cost import fmt_seconds


@dataclass(frozen=True)
class Task:
    """One planned run: its seconds, and its ticket search's key and seconds (None: dense)."""

    seconds: float
    find_key: str | None
    find_seconds: float


@dataclass(frozen=True)
class Schedule:
    """What :func:`simulate` found: the wall time, the busy share of the workers' time and the
    longest single chain (a ticket search and its longest retraining, or the longest run)."""

    wall_seconds: float
    busy_fraction: float
    critical_seconds: float


def simulate(tasks: Sequence[Task], workers: int) -> Schedule:
    """Replay the runner's claiming policy on ``workers`` workers (see the module docstring)."""
    free = [0.0] * workers
    found: dict[str, float] = {}  # find key -> time its ticket exists
    pending = list(range(len(tasks)))
    busy = 0.0
    while pending:
        w = min(range(workers), key=free.__getitem__)
        now = free[w]
        for i in pending:
            key = tasks[i].find_key
            if key is None or key not in found or found[key] <= now:
                break
        else:  # everything left waits for a ticket being found elsewhere
            free[w] = min(found[tasks[i].find_key] for i in pending)  # type: ignore[index]
            continue
        task = tasks[i]
        start = now
        if task.find_key is not None and task.find_key not in found:
            found[task.find_key] = start + task.find_seconds
            start += task.find_seconds
        free[w] = start + task.seconds
        busy += free[w] - now
        pending.remove(i)
    wall = max(free)
    finds = {t.find_key: t.find_seconds for t in tasks if t.find_key is not None}
    chains = [t.seconds + (finds[t.find_key] if t.find_key else 0.0) for t in tasks]
    return Schedule(wall, busy / (wall * workers) if wall else 1.0, max(chains, default=0.0))


def describe(schedule: Schedule, workers: int, what: str) -> str:
    """One line: the estimate with its busy share and critical chain."""
    return (
        f"{fmt_seconds(schedule.wall_seconds)} with {workers} worker(s) of {what} "
        f"(workers busy {schedule.busy_fraction:.0%} of the time; longest chain "
        f"{fmt_seconds(schedule.critical_seconds)})"
    )
