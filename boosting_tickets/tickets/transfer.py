"""Ticket transfer: a mask found on dataset A applied to the same architecture on dataset B.

Chen et al. (2020, BERT tickets) ask whether a mask found on one task trains well on another, and
whether it can be found at a pre-trained init. Here a ticket found on A retrains on B
(``train --ticket T --dataset B``) with the ticket's mask and θ_rewind everywhere the two models
have the same shape; θ_rewind of a ticket rewound to epoch E of its finding (``--rewind epoch:E``)
is the pre-trained init. The input shape must match. When the class counts differ, the output
layer (the ticket's ``output_layer`` and its bias) has another shape; it starts from a fresh init
of B's model (seeded by the ticket, the run seed and ``transfer-head``), and ``head`` decides its
mask:

- ``reprune`` (default): pruned by magnitude of that fresh init to the sparsity the ticket's own
  output layer had, so the network is as sparse as the ticket;
- ``dense``: kept whole (the usual choice when fine-tuning a new head).

Same class counts (``fashion-mnist:0-4`` -> ``fashion-mnist:5-9``) keep the whole mask and
θ_rewind, head included. The record of what was done (``transfer`` in ``hparams.json``'s extra)
names both datasets, the head rule applied and the head's sparsity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError

if TYPE_CHECKING:  # torch is imported when a transfer is made, not for the CLI's --help
    import torch

    from ..models.masks import Mask

#: Output-layer rules for a transfer to another class count.
HEADS = ("reprune", "dense")


def is_transfer(meta: Mapping[str, Any], dataset: str) -> bool:
    """True when a ticket found on ``meta["dataset"]`` is retrained on another ``dataset``."""
    from ..data.registry import get_spec

    found_on = meta.get("dataset")
    return found_on is not None and get_spec(found_on).name != get_spec(dataset).name


def identity(meta: Mapping[str, Any], dataset: str, head: str) -> dict[str, Any] | None:
    """What a transfer adds to the retraining's hash (None when it is no transfer)."""
    from ..data.registry import get_spec

    if not is_transfer(meta, dataset):
        return None
    same = get_spec(meta["dataset"]).num_classes == get_spec(dataset).num_classes
    # With one class count the head rule changes nothing, so it must not change the hash.
    return {"from": meta["dataset"], "to": dataset, "head": "kept" if same else head}


def transfer_start(
    ticket: Any,
    mask: Mask,
    init: Mapping[str, torch.Tensor],
    target_arch: Mapping[str, Any],
    input_shape: tuple[int, int, int],
    *,
    head: str,
    seed: int,
) -> tuple[Mask, dict[str, torch.Tensor], dict[str, Any]]:
    """(mask, init, record) of retraining ``ticket``'s (mask, init) on another dataset whose model
    is ``target_arch`` and whose images are ``input_shape`` = (C, H, W).

    Raises:
        UserError: another input shape, or parameters other than the output layer's that differ
            (another architecture).
    """
    import torch

    from ..models.checkpoints import build_from_arch
    from ..models.masks import Mask
    from .controls import derived_seed

    if head not in HEADS:
        raise UserError(f"--transfer-head must be one of {', '.join(HEADS)}, got {head!r}")
    found = tuple(ticket.meta.get("input_shape") or ())
    if found and found != tuple(input_shape):
        raise UserError(
            f"ticket {ticket.dir} was found on {ticket.meta['dataset']} images {list(found)} but "
            f"this run's are {list(input_shape)}; a mask transfers only between inputs of one shape"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed("transfer-head", ticket.meta["hash"], seed))
        model = build_from_arch(target_arch)
    fresh = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out_weight = ticket.meta.get("output_layer") or ""
    out_prefix = out_weight.rpartition(".")[0] + "."
    if set(fresh) != set(init):
        name = sorted(set(fresh) ^ set(init))[0]
        raise UserError(
            f"ticket {ticket.dir} does not fit this model: '{name}' is in only one of them (a "
            "mask transfers only within one architecture)"
        )
    changed = sorted(k for k in fresh if tuple(fresh[k].shape) != tuple(init[k].shape))
    wrong = [k for k in changed if not k.startswith(out_prefix)]
    if wrong:
        raise UserError(
            f"ticket {ticket.dir} does not fit this model: '{wrong[0]}' is "
            f"{tuple(init[wrong[0]].shape)} in the ticket but {tuple(fresh[wrong[0]].shape)} here "
            "(a mask transfers only within one architecture)"
        )
    state = {k: (fresh[k] if k in changed else v) for k, v in init.items()}
    tensors = dict(mask.items())
    record: dict[str, Any] = {
        "from": ticket.meta["dataset"], "to": target_arch.get("dataset"),
        "classes": [int(ticket.arch["num_classes"]), int(target_arch["num_classes"])],
        "reinitialized": changed,
    }  # fmt: skip
    if not changed:
        kept = {**record, "head": "kept (same shape)", "head_sparsity": _sparsity(mask, out_weight)}
        return mask, state, kept
    for name in changed:
        if name not in tensors:
            continue
        if head == "dense":
            tensors[name] = torch.ones_like(fresh[name])
        else:
            tensors[name] = _magnitude_mask(fresh[name], _sparsity(mask, name))
    new = Mask(tensors, channels=mask.channel_names)
    return new, state, {**record, "head": head, "head_sparsity": _sparsity(new, out_weight)}


def _sparsity(mask: Mask, name: str) -> float:
    """Fraction of ``name``'s weights the mask prunes (0 when it is not masked)."""
    if name not in mask:
        return 0.0
    m = mask[name]
    return float(1.0 - m.sum() / m.numel())


def _magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the ``round((1 - sparsity) * numel)`` largest |weight| (ties by position)."""
    import torch

    n = weight.numel()
    keep = round((1.0 - sparsity) * n)
    flat = torch.zeros(n)
    if keep > 0:
        order = torch.argsort(weight.abs().flatten(), descending=True, stable=True)
        flat[order[:keep]] = 1.0
    return flat.view_as(weight)
