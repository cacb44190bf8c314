"""Retraining a ticket, or one of its controls, as a training run of its own.

The run starts from the ticket's mask and θ_rewind (or what a control derives from them, see
:mod:`.controls`), adapted to another dataset's output layer when it transfers (:mod:`.transfer`),
and lives in ``out/retrain_<hash>``, the hash covering the run settings, the ticket's hash, its
mask digest, the control and a transfer's datasets and head rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.distributed import current
from ..core.errors import UserError
from ..core.paths import RETRAIN_PREFIX
from ..models.masks import Mask
from ..models.registry import validate_model_name
from ..training.hparams import RunConfig
from ..training.run import RunResult, run_dir_for, train
from .controls import controls
from .ticket import Ticket, load_ticket
from .transfer import HEADS
from .transfer import identity as transfer_identity

Log = Callable[[str], None] | None


def control_start(
    ticket: Ticket, control: str | None, seed: int = 0
) -> tuple[Mask, dict[str, torch.Tensor]]:
    """The (mask, initial weights) a retraining run starts from.

    ``None``: the ticket (its mask, θ_rewind); otherwise what the registered control derives from
    the ticket and ``seed`` (see :mod:`.controls`). Initial weights are unmasked:
    ``training.train`` applies the mask.
    """
    if control is None:
        return ticket.mask, ticket.rewind_state
    return controls().get(control).start(ticket, seed)


def retrain_start(
    ticket: Ticket, control: str | None, cfg: RunConfig, head: str = HEADS[0]
) -> tuple[Mask, dict[str, torch.Tensor], dict[str, Any] | None]:
    """(mask, initial weights, transfer record or None) of retraining ``ticket`` (or ``control``)
    with ``cfg``: :func:`control_start`, adapted to ``cfg``'s dataset when it is not the one the
    ticket was found on (:func:`.transfer.transfer_start`, output layer by ``head``)."""
    mask, init = control_start(ticket, control, cfg.train.seed)
    if transfer_identity(ticket.meta, cfg.data.dataset, head) is None:
        return mask, init, None
    from ..data.registry import get_spec
    from ..models.checkpoints import arch_meta
    from .transfer import transfer_start

    spec = get_spec(cfg.data.dataset)
    # The output layer's shape is all a transfer needs of B's model (mean/std are not weights).
    arch = arch_meta(cfg.model.model, num_classes=spec.num_classes, in_channels=spec.channels,
                     mean=None, std=None, dropout=cfg.model.dropout, dataset=spec.name)  # fmt: skip
    return transfer_start(ticket, mask, init, arch, spec.image_shape, head=head,
                          seed=cfg.train.seed)  # fmt: skip


def retrain_identity(
    cfg: RunConfig,
    meta: Mapping[str, Any],
    control: str | None,
    out: str | Path,
    head: str = HEADS[0],
) -> tuple[RunConfig, dict[str, Any], Path]:
    """(the settings it trains with, the hash's extra, the run directory) of retraining the ticket
    whose ``ticket.json`` is ``meta`` with ``cfg``: what :func:`retrain_ticket` trains and where a
    finished one is found (``bench`` collects suites from disk with it).

    When ``cfg`` has warmup but no ``warmup_lr``, the warmup starts at the ticket's finding lr, as
    in the paper (warm up from the finding lr to the peak lr). A transfer to another dataset adds
    ``transfer`` (both datasets and ``head``) to the extra; other runs' hashes are unchanged.
    """
    if cfg.train.warmup_epochs > 0 and cfg.train.warmup_lr is None:
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, warmup_lr=meta["find_lr"])
        )
    if meta.get("structure") == "channels" and cfg.model.model == meta.get("base_model"):
        # A structured ticket is its own slim architecture: the settings name it.
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, model=meta["model"]))
    extra = {"ticket": meta["hash"], "ticket_mask": meta["mask_sha256"], "control": control}
    moved = transfer_identity(meta, cfg.data.dataset, head)
    if moved is not None:
        extra["transfer"] = moved
    return cfg, extra, run_dir_for(cfg, out, prefix=RETRAIN_PREFIX, extra=extra)


def retrain_ticket(
    cfg: RunConfig,
    ticket: str | Path | Ticket,
    *,
    out: str | Path,
    control: str | None = None,
    log: Log = None,
    splits: Any = None,
    wait: float | None = None,
    transfer_head: str = HEADS[0],
) -> RunResult:
    """Retrain a ticket (or a control) with ``cfg`` in ``out/retrain_<hash>``.

    When ``cfg`` has warmup (``warmup_epochs`` > 0) but no ``warmup_lr``, the warmup starts at the
    ticket's finding lr, as in the paper (warm up from the finding lr to the peak lr); give the dense
    baseline ``--warmup-lr`` explicitly for the identical schedule. ``cfg.model.model`` must be the
    ticket's architecture; its dataset may differ (a transfer: ``transfer_head`` is the output
    layer's rule when the class counts differ, see :mod:`.transfer`). ``wait``: as in
    :func:`training.run.train`.
    """
    if control is not None:
        controls().get(control)  # an unknown name fails before the ticket is read
    t = ticket if isinstance(ticket, Ticket) else load_ticket(ticket)
    if not current().primary:
        log = None  # under torchrun only rank 0 speaks
    say = log or (lambda msg: None)
    found_with = t.arch["model"]
    named = validate_model_name(cfg.model.model)
    if t.meta.get("structure") == "channels" and named == t.meta.get("base_model"):
        named = found_with  # the slim network the structured ticket is
    if named != found_with:
        raise UserError(
            f"ticket {t.dir} was found with {found_with} but --model is {cfg.model.model}; "
            f"pass --model {found_with} (a mask only fits its architecture)"
        )
    new_cfg, extra, run_dir = retrain_identity(cfg, t.meta, control, out, transfer_head)
    if new_cfg.train.warmup_lr != cfg.train.warmup_lr:
        say(
            f"warmup starts at the ticket's finding lr {t.meta['find_lr']:g}; pass --warmup-lr "
            f"{t.meta['find_lr']:g} to the dense baseline for the identical schedule"
        )
    mask, init_state, moved = retrain_start(t, control, new_cfg, transfer_head)
    if moved is not None:
        say(
            f"transfer: mask found on {moved['from']}, retrained on {moved['to']}; output layer "
            f"{moved['head']} (sparsity {moved['head_sparsity']:.2%})"
        )
    say(
        f"run directory: {run_dir} (ticket {t.dir.name}, control {control or 'none'}, "
        f"sparsity {mask.sparsity():.2%})"
    )
    return train(
        new_cfg, run_dir, splits=splits, mask=mask, init_state=init_state, extra=extra, log=log,
        wait=wait, details={"transfer": moved} if moved is not None else None,
    )  # fmt: skip
