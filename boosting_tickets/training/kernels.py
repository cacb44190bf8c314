"""Kernel choices by measurement: the memory format (channels_last), ``torch.compile`` and eval-mode
BatchNorm folding (``models.fold_bn``).

``training/kernels.json`` (package data) lists, per device type and model family, the kernels that
measured at least ``threshold`` (1.1) times faster than plain NCHW eager execution here, and how
they were measured. :func:`choose` applies it: a flag (``--channels-last/--no-channels-last``,
``--compile/--no-compile``, ``--fold-bn/--no-fold-bn``) wins, else the measured choice, else off. A
run resolves its choice once, when its directory is created, and records it in ``hparams.json``
(``details.kernels``: what and why); a resumed run keeps it, so one run never mixes kernels. None
changes results beyond float rounding (tested on the CPU), so none is part of a run's hash.
:func:`prepare` applies a choice to a model. This module imports no torch at import time.
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
KERNELS = ("channels_last", "compile", "fold_bn")


@dataclass(frozen=True)
class KernelChoice:
    """What a run computes with: ``channels_last`` memory format, ``compile`` (torch.compile
    of the model for the training step), ``fold_bn`` (eval-mode BatchNorm folded into the
    convolutions: attacks crafted in BN eval mode and every evaluation), and ``source``: why
    (flag, measured, off)."""

    channels_last: bool = False
    compile: bool = False
    source: str = "off"
    fold_bn: bool = False

    def record(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "compile": self.compile,
                "fold_bn": self.fold_bn, "source": self.source}  # fmt: skip

    def describe(self) -> str:
        on = [k for k in KERNELS if getattr(self, k)]
        return f"kernels: {', '.join(on) or 'plain NCHW, eager'} ({self.source})"


def parse_table(text: str) -> tuple[float, tuple[Mapping[str, Any], ...]]:
    """(threshold, choices) of a kernels table's JSON ``text``, checked entry by entry;
    UserError naming what is wrong."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != KERNELS_FORMAT:
            raise ValueError("not a kernels file")
        threshold = doc["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 1:
            raise ValueError(f"bad threshold {threshold!r}")
        out = []
        for e in doc["choices"]:
            if not (isinstance(e["device"], str) and isinstance(e["family"], str)
                    and all(isinstance(e[k], bool) for k in KERNELS)
                    and isinstance(e["measured"], str)):  # fmt: skip
                raise ValueError(f"bad entry {e!r}")
            out.append(e)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{KERNELS_FILE} is unreadable ({exc}); reinstall boosting-tickets"
        ) from None
    return float(threshold), tuple(out)


@functools.cache
def _document() -> tuple[float, tuple[Mapping[str, Any], ...]]:
    """The installed ``kernels.json``, parsed once."""
    from importlib import resources

    try:
        text = resources.files("boosting_tickets").joinpath(KERNELS_FILE).read_text()
    except OSError as exc:
        raise UserError(
            f"{KERNELS_FILE} is unreadable ({exc}); reinstall boosting-tickets"
        ) from None
    return parse_table(text)


def measured() -> tuple[Mapping[str, Any], ...]:
    """The measured choices of ``kernels.json``, checked entry by entry."""
    return _document()[1]


def threshold() -> float:
    """The speed-up (≥ 1) a kernel must have measured to be listed as a default (1.1)."""
    return _document()[0]


def choose(
    device_type: str,
    model: str,
    *,
    channels_last: bool | None,
    compile: bool | None,
    fold_bn: bool | None = None,
) -> KernelChoice:
    """The kernels of a run of ``model`` on ``device_type``: each flag given wins, the rest come
    from the measured table for the model's family on that device type, else off."""
    from ..models.registry import parse_model

    family = parse_model(model)[0].name
    entry = next((e for e in measured() if (e["device"], e["family"]) == (device_type, family)),
                 None)  # fmt: skip
    parts, values = [], {}
    flags = {"channels_last": channels_last, "compile": compile, "fold_bn": fold_bn}
    for key, flag in flags.items():
        if flag is not None:
            values[key] = bool(flag)
            parts.append(f"{key} by flag")
        elif entry is not None and entry[key]:
            values[key] = True
            parts.append(f"{key} measured faster for {family} on {device_type}")
        else:
            values[key] = False
    source = "; ".join(parts) or f"nothing measured faster for {family} on {device_type}"
    return KernelChoice(values["channels_last"], values["compile"], source, values["fold_bn"])


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
    were recorded, what it then used: its channels_last setting, no compile. A record made before
    BatchNorm folding existed did not fold."""
    if isinstance(rec, Mapping) and isinstance(rec.get("channels_last"), bool):
        return KernelChoice(rec["channels_last"], bool(rec.get("compile")), str(rec.get("source")),
                            rec.get("fold_bn") is True)  # fmt: skip
    return KernelChoice(bool(legacy_channels_last), False, "recorded before kernel choices")


def prepare(model: Any, kernels: KernelChoice) -> Any:
    """``model`` (an ``nn.Module``) as ``kernels`` evaluate it: moved to channels_last in place
    when chosen, and wrapped in ``models.fold_bn.FoldedBatchNorm`` when ``fold_bn`` is chosen (the
    wrapper shares the model's parameters; save the model, not the wrapper). Never compiled."""
    import torch

    if kernels.channels_last:
        model.to(memory_format=torch.channels_last)
    if kernels.fold_bn:
        from ..models.fold_bn import fold_batchnorm

        return fold_batchnorm(model)
    return model
