"""A run's or a ticket's directory: its settings record (``hparams.json``), its claim across
processes and DDP ranks (``core.claims``), and its creation once the claim is held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..core.claims import ClaimBusy, holding
from ..core.distributed import Distributed
from ..core.errors import UserError
from ..core.storage import atomic_write_json, read_json


def check_hparams(path: Path, record: Mapping[str, Any], *, write: bool = True) -> None:
    """Refuse a directory holding another run's settings; write ``hparams.json`` if absent."""
    if path.exists():
        old = read_json(path, what="hparams file")
        if old.get("hash") != record["hash"] or old.get("non_default") != record["non_default"]:
            raise UserError(
                f"{path.parent} holds a run with other settings (hash {old.get('hash')}); "
                "use another --out directory or delete it"
            )
    elif write:
        atomic_write_json(path, dict(record))


@contextlib.contextmanager
def claimed(target: Path, what: str, dist: Distributed, wait: float | None) -> Iterator[None]:
    """Hold the claim on ``target`` for the block (``core.claims``): the primary claims it, and
    every rank learns whether that worked, so a refused claim stops all of them alike."""
    if not dist.active:
        with holding(target, what, wait=wait):
            yield
        return
    stack = contextlib.ExitStack()
    problem: tuple[str, Any] | None = None
    if dist.primary:
        try:
            stack.enter_context(holding(target, what, wait=wait))
        except ClaimBusy as exc:
            problem = (str(exc), exc.holder)
        except UserError as exc:
            problem = (str(exc), None)
    problem = dist.gather(problem)[0]
    if problem is not None:
        message, holder = problem
        raise UserError(message) if holder is None else ClaimBusy(message, holder)
    with stack:
        yield


def create_claimed(
    target: Path, hparams: Path, record: Mapping[str, Any], dist: Distributed, what: str
) -> None:
    """Inside :func:`claimed`: the primary creates ``target`` and writes (or checks) its
    ``hparams.json``; every rank waits for it. ``what`` names the directory in errors."""
    if dist.primary:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {what} {target}: {exc.strerror}") from None
        check_hparams(hparams, record)
    dist.barrier()
