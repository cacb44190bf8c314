"""A found ticket on disk: its mask, its rewind point θ_rewind and its record, read back safely.

Written by :func:`finding.find_ticket` into ``<out>/ticket_<hash>`` (file names in ``core.paths``);
read by :func:`load_ticket`, which checks that the mask is the one the ticket was found with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import config_hash, from_dict, to_dict
from ..core.errors import UserError
from ..core.paths import TICKET_PREFIX, TicketPaths, hashed_dir
from ..core.storage import file_sha256, read_json, safe_torch_load
from ..models.checkpoints import (
    MODEL_FORMAT,
    build_from_arch,
    load_state_dict_strict,
    read_model_checkpoint,
)
from ..models.masks import Mask
from .config import FindConfig, PruneConfig, parse_rewind

TICKET_FORMAT = "boosting-tickets/ticket"


@dataclass
class Ticket:
    """A found ticket: its directory, mask, rewind point θ_rewind (unmasked, CPU) and meta.

    The ticket's weights are ``rewind_state ⊙ mask`` (:meth:`weights`); ``rewind_state`` keeps the
    pruned entries' values too, which the random-mask controls need. ``meta`` holds at least
    ``hash``, ``sparsity``, ``find_lr``, ``objective``, ``find_train_seconds`` (training wall time of
    all finding runs), ``find_wall_seconds``, ``arch`` and ``input_shape``.
    """

    dir: Path
    mask: Mask
    rewind_state: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def paths(self) -> TicketPaths:
        return TicketPaths(self.dir)

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta["arch"]

    def weights(self) -> dict[str, torch.Tensor]:
        """θ_rewind ⊙ mask: the ticket's starting weights as a dense state_dict."""
        out = {k: v.clone() for k, v in self.rewind_state.items()}
        for name, m in self.mask.items():
            out[name].mul_(m.to(out[name].dtype))
        return out

    def build_model(self) -> nn.Module:
        """A fresh model of the ticket's architecture holding :meth:`weights` (CPU)."""
        model = build_from_arch(self.arch)
        load_state_dict_strict(model, self.weights(), f"ticket {self.dir}")
        return model


def check_ticket_dir(d: Path) -> TicketPaths:
    """The paths of ticket directory ``d``; one-line UserError if it is not a finished one."""
    paths = TicketPaths(d)
    if not d.is_dir():
        raise UserError(f"ticket directory not found: {d}; pass a directory made by find-ticket")
    for path in paths.required:
        if not path.is_file():
            raise UserError(
                f"ticket directory {d} lacks {path.name} (unfinished or damaged find-ticket run); "
                "rerun find-ticket with the same settings"
            )
    return paths


def load_ticket(ticket_dir: str | Path) -> Ticket:
    """Read a ticket directory written by :func:`find_ticket`; one-line UserError if incomplete."""
    d = Path(ticket_dir)
    paths = check_ticket_dir(d)
    meta = read_json(paths.meta, what="ticket file")
    if not isinstance(meta, dict) or meta.get("format") != TICKET_FORMAT:
        raise UserError(f"{paths.meta} is not a boosting-tickets ticket file")
    ckpt = read_model_checkpoint(paths.rewind)
    model = build_from_arch(ckpt["arch"])
    mask = Mask.load(paths.mask, model)
    if mask.digest() != meta.get("mask_sha256"):
        raise UserError(
            f"{paths.mask} is not the mask this ticket was found with (replaced or edited); "
            "rerun find-ticket"
        )
    load_state_dict_strict(model, ckpt["state_dict"], f"rewind checkpoint {paths.rewind}")
    state = {k: v.detach().cpu() for k, v in ckpt["state_dict"].items()}
    return Ticket(dir=d, mask=mask, rewind_state=state, meta={**meta, "arch": ckpt["arch"]})


# The sections a retraining inherits from the ticket's finding run unless told otherwise: a mask
# only fits its architecture, and the ticket was found on these data.
INHERITED_SECTIONS = ("data", "model")


def inherited_settings(ticket_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The finding run's ``data`` and ``model`` sections, ``{"data": {...}, "model": {...}}``
    (TOML layout), from the ticket's ``hparams.json``; what ``train --ticket`` starts from before
    a config file and flags override it. One-line UserError if the record is missing or damaged."""
    paths = check_ticket_dir(Path(ticket_dir))
    read_model_checkpoint(paths.rewind)  # an unsafe or damaged ticket is refused first
    record = read_json(paths.hparams, what="ticket hparams file")
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"{paths.hparams} holds no finding settings (damaged); rerun find-ticket")
    # Validate through the finding run's own type: wrong types or unknown keys are one line.
    found = from_dict(FindConfig, config, source=str(paths.hparams))
    return {name: to_dict(getattr(found, name)) for name in INHERITED_SECTIONS}


def retrain_command(ticket_dir: str | Path, meta: dict[str, Any]) -> str:
    """The command that retrains the ticket: ``train --ticket`` takes the architecture and the data
    settings from the ticket; the epoch count is the finding run's (override freely)."""
    import shlex

    epochs = meta.get("find_epochs") or (meta.get("non_default") or {}).get("train.epochs") or 10
    return shlex.join(["boosting-tickets", "train", "--ticket", str(ticket_dir), "--epochs",
                       str(epochs)])  # fmt: skip


def ticket_dir_for(cfg: FindConfig, out: str | Path) -> Path:
    """``out/ticket_<hash>``; a checkpoint rewind target's bytes are part of the hash."""
    return hashed_dir(out, TICKET_PREFIX, config_hash(cfg, rewind_identity(cfg.prune)))


def rewind_identity(pc: PruneConfig) -> dict[str, Any]:
    """What the hash needs beyond the settings: a checkpoint rewind target's bytes."""
    kind, _ = parse_rewind(pc.rewind)
    if kind != "path":
        return {}
    # The path alone would let another file under the same name reuse this ticket.
    return {"rewind_sha256": file_sha256(pc.rewind)}


def external_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint used as rewind target: a boosting-tickets model checkpoint, a
    ``{"state_dict": ...}`` dict or a plain state_dict (``module.`` prefixes of DataParallel are
    removed). Loaded with ``weights_only=True``."""
    obj = safe_torch_load(path, what="rewind checkpoint")
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"rewind checkpoint {path} holds no state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)
