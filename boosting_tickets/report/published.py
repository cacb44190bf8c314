"""The boosting-ticket paper's published numbers, as reference rows for the results tables.

The numbers are package data (``reference/li2020_tables.json``, each table naming its source):
Li et al., "Towards Practical Lottery Ticket Hypothesis for Adversarial Training" (arXiv
2003.05733), Tables 2 and 3, plus the dense VGG-16 run with the tickets' own schedule found in the
official repository's raw logs. Accuracies are fractions in [0, 1]; times are seconds on the
paper's 2x V100.

Each table carries the protocol it was measured under. ``tables`` shows a published row only next to
measured results whose protocol, dataset and model match it (:func:`matching_tables`), labelled
``kind="reference"``, ``source="published"``. This module imports no torch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..core.errors import UserError

DATA_FILE = "reference/li2020_tables.json"
DATA_FORMAT = "boosting-tickets/published-tables"
_ROW_KEYS = {"arm", "label", "epochs", "clean_acc", "pgd_acc"}


@dataclass(frozen=True)
class PublishedRow:
    """One published model: its accuracies (fractions) and, where reported, its total time."""

    arm: str
    label: str
    epochs: int | None
    clean_acc: float | None
    pgd_acc: float | None
    total_seconds: float | None = None
    find_seconds: float | None = None
    sparsity: float = 0.0
    extra: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""


@dataclass(frozen=True)
class PublishedTable:
    """A published table and the protocol its numbers were measured under."""

    name: str
    source: str
    dataset: str
    model: str
    protocol: Mapping[str, Any]
    rows: tuple[PublishedRow, ...]
    differences: tuple[str, ...] = ()  # how its protocol differs from ours, beyond the numbers


def _row(raw: Mapping[str, Any], where: str) -> PublishedRow:
    missing = _ROW_KEYS - set(raw)
    if missing:
        raise UserError(f"{where} lacks {', '.join(sorted(missing))}; reinstall boosting-tickets")
    for k in ("clean_acc", "pgd_acc"):
        v = raw[k]
        if v is not None and not (isinstance(v, int | float) and 0 <= v <= 1):
            raise UserError(f"{where} has {k}={v!r}; reinstall boosting-tickets")
    return PublishedRow(
        arm=raw["arm"],
        label=raw["label"],
        epochs=raw["epochs"],
        clean_acc=raw["clean_acc"],
        pgd_acc=raw["pgd_acc"],
        total_seconds=raw.get("total_seconds"),
        find_seconds=raw.get("find_seconds"),
        sparsity=float(raw.get("sparsity", 0.0)),
        extra=MappingProxyType(dict(raw.get("extra", {}))),
        note=raw.get("note", ""),
    )


@functools.cache
def published_tables() -> Mapping[str, PublishedTable]:
    """The published tables by name, read once from the package data and checked."""
    from importlib import resources

    try:
        text = resources.files("boosting_tickets").joinpath(DATA_FILE).read_text("utf-8")
        doc = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{DATA_FILE} is unreadable ({exc}); reinstall boosting-tickets") from None
    if not isinstance(doc, dict) or doc.get("format") != DATA_FORMAT:
        raise UserError(f"{DATA_FILE} is not a published-tables file; reinstall boosting-tickets")
    tables = {}
    for t in doc["tables"]:
        rows = tuple(_row(r, f"{DATA_FILE} table {t['name']}") for r in t["rows"])
        tables[t["name"]] = PublishedTable(
            t["name"], t["source"], t["dataset"], t["model"], MappingProxyType(t["protocol"]), rows,
            tuple(str(x) for x in t.get("protocol_differences", ())),
        )  # fmt: skip
    return MappingProxyType(tables)


def protocol_matches(published: Mapping[str, Any], measured: Mapping[str, Any]) -> bool:
    """True when every field the paper states agrees with the measured protocol (floats to 1e-9)."""
    for key, want in published.items():
        got = measured.get(key)
        if isinstance(want, float) and isinstance(got, int | float):
            if abs(want - float(got)) > 1e-9:
                return False
        elif got != want:
            return False
    return True


def matching_tables(protocol: Mapping[str, Any], dataset: str, model: str) -> list[PublishedTable]:
    """Published tables measured under ``protocol`` on ``dataset`` with ``model``."""
    return [
        t
        for t in published_tables().values()
        if t.dataset == dataset and t.model == model and protocol_matches(t.protocol, protocol)
    ]
