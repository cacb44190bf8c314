"""The arm-kind registry: what an arm of a suite trains, and what its results rows are called.

Arm kinds are ``dense`` (trained from a seeded init), ``ticket`` (found, then retrained),
``structured-ticket`` (a ticket of whole inner channels, ``find.prune.structure = "channels"``:
the slimmer network is retrained, ``tickets.structured``) and one kind per registered control
(``tickets.controls``: ``reinit``, ``random-mask``, ``random-mask-global``, and any a plugin adds),
which retrains another arm's ticket. A new control is therefore a new arm kind without touching
this package. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..core.registry import Entry, Registry
from ..tickets.controls import ControlEntry, controls
from ..tickets.structured import STRUCTURED_ROW_KIND


@dataclass(frozen=True)
class ArmKind(Entry):
    """One arm kind: whether it needs a ticket, the control it applies, its row kind, and the
    [find] settings it implies (under the suite's [find], over the arm's own)."""

    needs_ticket: bool
    control: str | None
    row_kind: str
    find_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_control(self) -> bool:
        return self.control is not None

    @property
    def finds(self) -> bool:
        """True for the kinds that find a ticket of their own (not controls)."""
        return self.needs_ticket and not self.is_control


_FIXED = (
    ArmKind("dense", "the dense network from a seeded init", False, None, "dense"),
    ArmKind(
        "ticket", "a ticket found by the arm's [find] settings, retrained", True, None, "ticket"
    ),
    ArmKind(
        "structured-ticket",
        "whole inner channels of every WideResNet block pruned, the slim network retrained",
        True,
        None,
        STRUCTURED_ROW_KIND,
        MappingProxyType({"prune": {"structure": "channels"}}),
    ),
)


def arm_kinds() -> Registry[ArmKind]:
    """dense, ticket, and one kind per registered control."""
    return _kinds(controls())


@functools.lru_cache(maxsize=16)
def _kinds(registry: Registry[ControlEntry]) -> Registry[ArmKind]:
    made = tuple(ArmKind(c.name, c.description, True, c.name, c.row_kind) for c in registry)
    return Registry("arm kind", (*_FIXED, *made))


def control_kinds() -> tuple[str, ...]:
    """The arm kinds that are controls."""
    return tuple(k.name for k in arm_kinds() if k.is_control)
