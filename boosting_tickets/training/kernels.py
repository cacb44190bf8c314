"""Kernel choices by measurement: the memory format (channels_last) and ``torch.compile``.

``training/kernels.json`` (package data) lists, per device type and model family, the kernels that
measured at least ``threshold`` (1.1) times faster than plain NCHW eager execution here, and how
they were measured. :func:`choose` applies it: a flag (``--channels-last/--no-channels-last``,
``--compile/--no-compile``) wins, else the measured choice, else off. A run resolves its choice once,
when its directory is created, and records it in ``hparams.json`` (``details.kernels``: what and
why); a resumed run keeps it, so one run never mixes kernels. Neither changes results beyond float
rounding (tested on the CPU), so neither is part of a run's hash. This module imports no torch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserError

KERNELS_FILE = "training/kernels.json"
KERNELS_FORMAT = "boosting-tickets/kernels"


@dataclass(frozen=True)
class KernelChoice:
    """What a run computes with: ``channels_last`` memory format and ``compile`` (torch.compile
    of the model for the training step), and ``source``: why (flag, measured, off)."""

    channels_last: bool = False
    compile: bool = False
    source: str = "off"

    def record(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "compile": self.compile, "source": self.source}

    def describe(self) -> str:
        on = [k for k in ("channels_last", "compile") if getattr(self, k)]
        return f"kernels: {', '.join(on) or 'plain NCHW, eager'} ({self.source})"


@functools.cache
def measured() -> tuple[Mapping[str, Any], ...]:
    """The measured choices of ``kernels.json``, checked entry by entry."""
    from importlib import resources

    try:
        doc = json.loads(resources.files("boosting_tickets").joinpath(KERNELS_FILE).read_text())
        if doc.get("format") != KERNELS_FORMAT:
            raise ValueError("not a kernels file")
        out = []
        for e in doc["choices"]:
            if not (isinstance(e["device"], str) and isinstance(e["family"], str)
                    and isinstance(e["channels_last"], bool) and isinstance(e["compile"], bool)
                    and isinstance(e["measured"], str)):  # fmt: skip
                raise ValueError(f"bad entry {e!r}")
            out.append(e)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{KERNELS_FILE} is unreadable ({exc}); reinstall boosting-tickets"
        ) from None
    return tuple(out)


def choose(
    device_type: str, model: str, *, channels_last: bool | None, compile: bool | None
) -> KernelChoice:
    """The kernels of a run of ``model`` on ``device_type``: each flag given wins, the rest come
    from the measured table for the model's family on that device type, else off."""
    from ..models.registry import parse_model

    family = parse_model(model)[0].name
    entry = next((e for e in measured() if (e["device"], e["family"]) == (device_type, family)),
                 None)  # fmt: skip
    parts, values = [], {}
    for key, flag in (("channels_last", channels_last), ("compile", compile)):
        if flag is not None:
            values[key] = bool(flag)
            parts.append(f"{key} by flag")
        elif entry is not None and entry[key]:
            values[key] = True
            parts.append(f"{key} measured faster for {family} on {device_type}")
        else:
            values[key] = False
    source = "; ".join(parts) or f"nothing measured faster for {family} on {device_type}"
    return KernelChoice(values["channels_last"], values["compile"], source)


def recorded_record(run_dir: Any) -> dict[str, Any] | None:
    """The ``details.kernels`` record of run directory ``run_dir``'s hparams.json (None when the
    run predates the record, or has no hparams.json)."""
    from ..core.paths import RunPaths
    from ..core.storage import read_json

    path = RunPaths(run_dir).hparams
    if not path.is_file():
        return None
    details = read_json(path, what="hparams file").get("details")
    rec = details.get("kernels") if isinstance(details, Mapping) else None
    return dict(rec) if isinstance(rec, Mapping) else None


def recorded(rec: Mapping[str, Any] | None, legacy_channels_last: bool) -> KernelChoice:
    """The choice a run recorded (:func:`recorded_record`), or for a run created before choices
    were recorded, what it then used: its channels_last setting, no compile."""
    if isinstance(rec, Mapping) and isinstance(rec.get("channels_last"), bool):
        return KernelChoice(rec["channels_last"], bool(rec.get("compile")), str(rec.get("source")))
    return KernelChoice(bool(legacy_channels_last), False, "recorded before kernel choices")
