"""Structured tickets: whole inner channels of a WideResNet's blocks pruned, and the slimmer network
built for real, so each epoch costs fewer FLOPs (an unstructured mask multiplies its zeros).

In a pre-activation WRN block, conv1's output channels pass through bn2 and ReLU into conv2 only;
the residual stream is untouched by them. Removing inner channel c of block b removes filter c of
``b.conv1``, entry c of ``b.bn2`` (weight, bias, running statistics) and input channel c of
``b.conv2``: the slim network (``wrn-D-K-mid-…``, :mod:`models.wide_resnet`) computes exactly what
the full one computes with those channels' conv1 filters, bn2 scales and shifts zero (tested).

Criteria score each inner channel on the trained weights of the finding run:

* ``l1`` -- the L1 norm of its conv1 filter (Li et al. 2017, "Pruning filters for efficient
  ConvNets");
* ``bn-scale`` -- |γ| of its bn2 entry (Liu et al. 2017, "Learning efficient convolutional networks
  through network slimming").

``global`` scope ranks all inner channels together after dividing each block's scores by their mean
(blocks of different widths and scales then compete fairly); ``layer`` prunes every block by the
same fraction. Every block keeps at least one channel. θ_rewind (θ0 by default) is sliced to the
kept channels: the structured ticket is retrained from the same weights the full network had there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError

if TYPE_CHECKING:
    import torch

#: Channel criteria: name -> what it scores.
CHANNEL_CRITERIA = {"l1": "L1 norm of the conv1 filter", "bn-scale": "|γ| of the bn2 entry"}
STRUCTURES = ("weights", "channels")
#: The results-row kind of a structured ticket's retraining.
STRUCTURED_ROW_KIND = "structured-ticket"


def block_prefixes(state: Mapping[str, Any]) -> list[str]:
    """The WRN blocks of a state_dict, in network order ("block1.layer.0", ...)."""
    blocks = [k[: -len(".conv1.weight")] for k in state if k.endswith(".conv1.weight")]

    def order(prefix: str) -> tuple[int, int]:
        group, _, index = prefix.partition(".layer.")
        return int(group.removeprefix("block")), int(index)

    if not blocks or not all(b.startswith("block") and ".layer." in b for b in blocks):
        raise UserError("structured pruning needs a WideResNet (blocks with conv1, bn2, conv2)")
    return sorted(blocks, key=order)


def channel_scores(state: Mapping[str, Any], criterion: str) -> dict[str, torch.Tensor]:
    """Per block, one score per inner channel (higher = kept first)."""
    if criterion not in CHANNEL_CRITERIA:
        raise UserError(
            f"unknown channel criterion {criterion!r}; choose one of {', '.join(CHANNEL_CRITERIA)}"
        )
    out = {}
    for b in block_prefixes(state):
        if criterion == "l1":
            out[b] = state[f"{b}.conv1.weight"].detach().abs().sum(dim=(1, 2, 3)).double()
        else:
            out[b] = state[f"{b}.bn2.weight"].detach().abs().double()
    return out


def select_channels(
    scores: Mapping[str, torch.Tensor], sparsity: float, scope: str
) -> dict[str, torch.Tensor]:
    """Per block, the sorted indices of the inner channels kept when ``sparsity`` of all inner
    channels are pruned (``scope`` global or layer; ties by position; at least one per block)."""
    import torch

    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"--sparsity must lie in [0, 1) for channels, got {sparsity}")
    keep: dict[str, torch.Tensor] = {}
    if scope == "layer":
        for b, s in scores.items():
            k = max(1, round((1.0 - sparsity) * s.numel()))
            keep[b] = torch.sort(torch.argsort(s, descending=True, stable=True)[:k]).values
        return keep
    names = list(scores)
    normed = [scores[b] / scores[b].mean().clamp_min(1e-30) for b in names]
    flat = torch.cat(normed)
    k = round((1.0 - sparsity) * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    start = 0
    for i, b in enumerate(names):
        part = chosen[start : start + len(normed[i])]
        if not bool(part.any()):  # a block without channels would cut the network
            part[int(torch.argmax(normed[i]))] = True
        keep[b] = part.nonzero().flatten()
        start += len(normed[i])
    return keep


def slim_state(
    state: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with only the kept inner channels of every block (conv1 filters, bn2 entries,
    conv2 input channels); everything else unchanged."""
    out = {k: v.detach().clone() for k, v in state.items()}
    for b, idx in keep.items():
        out[f"{b}.conv1.weight"] = out[f"{b}.conv1.weight"][idx].clone()
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{b}.bn2.{name}"] = out[f"{b}.bn2.{name}"][idx].clone()
        out[f"{b}.conv2.weight"] = out[f"{b}.conv2.weight"][:, idx].clone()
    return out


def check_structured_model(model: str) -> str:
    """``model``'s canonical name if it is a plain WideResNet (wrn-D-K), else one line."""
    from ..models.registry import validate_model_name

    base = validate_model_name(model)
    if not base.startswith("wrn-") or "-mid-" in base:
        raise UserError(
            f"--structure channels needs a plain WideResNet (wrn-D-K), got {model}; use "
            "--structure weights for other architectures"
        )
    return base


def slim_name(model: str, keep: Mapping[str, torch.Tensor]) -> str:
    """The registry name of the slim WRN: ``wrn-D-K-mid-<kept channels of every block>``."""
    from ..models.registry import validate_model_name

    base = check_structured_model(model)
    return validate_model_name(base + "-mid-" + "-".join(str(len(v)) for v in keep.values()))


def structure_report(
    model: str, slim: str, keep: Mapping[str, torch.Tensor], image: tuple[int, int, int],
    num_classes: int,
) -> dict[str, Any]:  # fmt: skip
    """What a structured ticket records: widths, channel sparsity, FLOPs and parameters kept."""
    from ..models.registry import build_model, forward_flops, wrn_block_widths

    full, slimmed = (
        forward_flops(model, image[0], image[1], num_classes),
        forward_flops(slim, image[0], image[1], num_classes),
    )
    params = [sum(p.numel() for p in build_model(m, num_classes=num_classes, in_channels=image[0])
                  .parameters()) for m in (model, slim)]  # fmt: skip
    depth, widen = (int(v) for v in model.split("-")[1:3])
    widths = wrn_block_widths(depth, widen)
    kept = [len(v) for v in keep.values()]
    return {
        "structure": "channels",
        "base_model": model,
        "inner_widths": {"full": widths, "kept": kept},
        "channel_sparsity": 1.0 - sum(kept) / sum(widths),
        "forward_flops": {"full": full, "slim": slimmed, "ratio": slimmed / full},
        "params": {"full": params[0], "slim": params[1], "ratio": params[1] / params[0]},
    }


def find_structured(
    search: Any,
    level0: Any,
    rewind_state: dict[str, torch.Tensor],
    arch: dict[str, Any],
    rewind_run: Any,
) -> None:
    """The end of a ``--structure channels`` search (``finding.find_ticket``, after the level-0
    run): the inner channels the criterion keeps on the trained weights, the slim network they
    make, θ_rewind sliced to them, and the ticket's files."""
    import time

    from ..core.storage import atomic_write_json
    from ..models.checkpoints import build_from_arch, load_state_dict_strict, read_model_checkpoint
    from ..models.masks import Mask
    from .finding import run_summary, ticket_meta, write_ticket
    from .pruning import output_layer_name

    pc, paths, spec = search.cfg.prune, search.paths, search.splits.spec
    t0 = time.perf_counter()
    trained = read_model_checkpoint(level0.paths.final)["state_dict"]
    keep = select_channels(channel_scores(trained, pc.channel_criterion), pc.sparsity,
                           pc.prune_scope)  # fmt: skip
    slim = slim_name(search.cfg.model.model, keep)
    state = slim_state(rewind_state, keep)
    probe = build_from_arch({**arch, "model": slim})
    load_state_dict_strict(probe, state, "slim rewind point")
    mask = Mask.for_model(probe)  # all ones: what is gone is gone from the architecture
    report = structure_report(search.cfg.model.model, slim, keep, spec.image_shape,
                              spec.num_classes)  # fmt: skip
    prune_seconds = time.perf_counter() - t0
    info = {"level": 1, "criterion": pc.channel_criterion, "scope": pc.prune_scope,
            "pruned_from": str(level0.paths.final.relative_to(paths.dir)),
            "prune_seconds": prune_seconds, **report,
            "kept_channels": {b: v.tolist() for b, v in keep.items()}}  # fmt: skip
    weight_sparsity = 1.0 - report["params"]["ratio"]
    levels: list[dict[str, Any]] = [
        {"level": 0, "sparsity": 0.0, **run_summary(level0, paths.dir)},
        {"level": 1, "sparsity": weight_sparsity, "channel_sparsity": report["channel_sparsity"]},
    ]
    meta = ticket_meta(search, mask, levels, rewind_run, prune_seconds)
    meta.update(
        report,
        model=slim,
        sparsity=weight_sparsity,
        mask_sha256=mask.digest(),
        output_layer=output_layer_name(probe),
        channel_criterion=pc.channel_criterion,
    )
    if search.dist.primary:
        atomic_write_json(paths.level_prune_record(1), info)
        write_ticket(search, {**arch, "model": slim}, mask, state, meta, levels, probe=probe)
    search.dist.barrier()
    search.say(
        f"structured ticket: {paths.dir} ({slim}: {report['channel_sparsity']:.0%} of the inner "
        f"channels pruned, {report['forward_flops']['ratio']:.2f}x the FLOPs, "
        f"{report['params']['ratio']:.2f}x the parameters)"
    )
