"""Magnitude pruning, BatchNorm channel masking and random-mask controls.

Boosting tickets (Li et al., arXiv 2003.05733) prune the smallest 80% of all conv and linear weights
once, globally, after dividing each layer's magnitudes by that layer's mean |w| (the official code's
"normalization (important)"), and mask the BatchNorm channels whose filter is entirely pruned.
The lottery-ticket papers (Frankle & Carbin, ICLR 2019) prune iteratively (IMP): each round removes a
fraction of the *remaining* weights, the output layer optionally at half that rate.

Everything here is pure tensor bookkeeping on CPU masks:

* :func:`magnitude_prune` -- one round: prune ``fraction`` of the surviving weights (global or per
  layer, optional per-layer overrides); never un-prunes; exact counts (``round(fraction * remaining)``
  per pool, the rounding of ``torch.nn.utils.prune``).
* :func:`per_round_rate` -- the IMP rate per round that reaches a target sparsity after R rounds.
* :func:`with_bn_channels` -- add BatchNorm weight/bias entries for channels whose filter is all pruned.
* :func:`random_mask` -- the random-pruning controls (shuffle per layer or globally).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.errors import UserError
from ..models.masks import Mask
from .config import SCOPES


def per_round_rate(sparsity: float, rounds: int) -> float:
    """Fraction of the remaining weights one IMP round prunes so that ``rounds`` rounds reach
    ``sparsity``: ``1 - (1 - sparsity) ** (1 / rounds)`` (e.g. 0.8 in 1 round -> 0.8; in 3 -> 0.415).
    """
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"sparsity must be in [0, 1), got {sparsity}")
    if rounds < 1:
        raise UserError(f"pruning rounds must be >= 1, got {rounds}")
    return 1.0 - (1.0 - sparsity) ** (1.0 / rounds)


def output_layer_name(model: nn.Module) -> str:
    """Name of the output layer's weight: the last conv/linear weight in ``named_parameters`` order
    (``fc.weight`` for WideResNets, ``classifier.4.weight`` for VGG-16-BN)."""
    from ..models.layers import prunable_parameters

    names = list(prunable_parameters(model))
    if not names:
        raise UserError(f"{type(model).__name__} has no conv or linear weights to prune")
    return names[-1]


def magnitude_scores(
    weights: Mapping[str, torch.Tensor], mask: Mask, *, normalize_by_mean: bool
) -> dict[str, torch.Tensor]:
    """Pruning scores per weight: ``|w|``, or ``|w| / mean(|w| over the layer's surviving weights)``.

    Normalizing puts layers of different scale on one footing before a global threshold (the
    official boosting-ticket code); the mean is taken over surviving weights so that an IMP round
    does not penalize a layer for having been pruned before (for one-shot pruning it is the plain
    layer mean). Shapes equal the weights' shapes.
    """
    scores: dict[str, torch.Tensor] = {}
    for name in mask.weight_names():
        w = weights[name].detach().float().abs().cpu()
        if not bool(torch.isfinite(w).all()):
            raise UserError(
                f"weight '{name}' holds NaN/inf values; the run diverged, so it cannot be pruned"
            )
        if normalize_by_mean:
            alive = w[mask[name].bool()]
            mean = float(alive.mean()) if alive.numel() else 0.0
            # An all-zero layer has nothing to rank; leave its scores at zero rather than NaN.
            w = w / mean if mean > 0 else w
        scores[name] = w
    return scores


def _prune_smallest(
    scores: Mapping[str, torch.Tensor],
    keep: dict[str, torch.Tensor],
    names: Sequence[str],
    fraction: float,
) -> None:
    """Zero ``round(fraction * survivors)`` of the lowest-scoring survivors of ``names`` in ``keep``.

    Only surviving entries are candidates, so nothing is ever un-pruned. Ties go to the earlier entry
    (stable sort), which makes the result deterministic.
    """
    alive = [keep[n].bool() for n in names]
    pool = torch.cat([scores[n][a] for n, a in zip(names, alive, strict=True)])
    k = round(fraction * pool.numel())  # Python rounding, as torch.nn.utils.prune
    if k == 0:
        return
    flags = torch.ones(pool.numel())
    flags[torch.argsort(pool, stable=True)[:k]] = 0.0
    offset = 0
    for n, a in zip(names, alive, strict=True):
        count = int(a.sum())
        keep[n][a] = flags[offset : offset + count]
        offset += count


def _check_shapes(tensors: Mapping[str, torch.Tensor], mask: Mask, what: str) -> None:
    names = mask.weight_names()
    missing = [n for n in names if n not in tensors]
    if missing:
        raise UserError(f"no {what} for masked layer '{missing[0]}' (from another architecture?)")
    for n in names:
        if tuple(tensors[n].shape) != tuple(mask[n].shape):
            raise UserError(
                f"{what[:-1] if what.endswith('s') else what} '{n}' is "
                f"{tuple(tensors[n].shape)} but its mask is {tuple(mask[n].shape)} "
                "(from another architecture?)"
            )


def prune_by_scores(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    fraction: float,
    *,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
) -> Mask:
    """One round of pruning: remove ``fraction`` of the weights ``mask`` still keeps, lowest
    ``scores`` first (any criterion's scores, see :mod:`.criteria`).

    Args:
        scores: a score per weight entry of ``mask`` (same shapes).
        mask: the current mask; its weight entries define what is prunable. Channel entries are
            dropped from the result (recompute them with :func:`with_bn_channels`).
        fraction: share of the *remaining* weights to prune, in [0, 1).
        scope: ``"global"`` -- one threshold over all layers (the paper); ``"layer"`` -- each layer
            loses ``fraction`` of its own survivors.
        layer_fractions: layers pruned on their own at another fraction (e.g. the output layer at
            half rate, Frankle & Carbin 2019), outside the global pool.

    Returns a new weights-only :class:`Mask`; every pool loses exactly ``round(f * survivors)``.
    """
    if scope not in SCOPES:
        raise UserError(f"unknown pruning scope '{scope}'; choose one of: {', '.join(SCOPES)}")
    overrides = dict(layer_fractions or {})
    for f in (fraction, *overrides.values()):
        if not 0.0 <= f < 1.0:
            raise UserError(f"pruning fraction must be in [0, 1), got {f}")
    names = mask.weight_names()
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise UserError(f"layer '{unknown[0]}' given its own pruning rate is not in the mask")
    _check_shapes(scores, mask, "scores")
    keep = {n: mask[n].clone() for n in names}
    if scope == "layer":
        for n in names:
            _prune_smallest(scores, keep, [n], overrides.get(n, fraction))
    else:
        pool = [n for n in names if n not in overrides]
        if pool:
            _prune_smallest(scores, keep, pool, fraction)
        for n, f in overrides.items():
            _prune_smallest(scores, keep, [n], f)
    return Mask(keep)


def magnitude_prune(
    weights: Mapping[str, torch.Tensor],
    mask: Mask,
    fraction: float,
    *,
    scope: str = "global",
    normalize_by_mean: bool = True,
    layer_fractions: Mapping[str, float] | None = None,
) -> Mask:
    """One round of magnitude pruning (:func:`prune_by_scores` of :func:`magnitude_scores`).

    ``normalize_by_mean`` (global scope only) ranks ``|w| / mean |w|`` of each layer (the official
    boosting-ticket default); without it, plain ``|w|`` as
    ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured)``. ``weights``: trained weights
    by name (at least every weight entry of ``mask``); other arguments as for
    :func:`prune_by_scores`.
    """
    if scope not in SCOPES:
        raise UserError(f"unknown pruning scope '{scope}'; choose one of: {', '.join(SCOPES)}")
    _check_shapes(weights, mask, "weights")
    scores = magnitude_scores(
        weights, mask, normalize_by_mean=normalize_by_mean and scope == "global"
    )
    return prune_by_scores(scores, mask, fraction, scope=scope, layer_fractions=layer_fractions)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(layer weight name, BatchNorm module name)`` for every BN fed *directly* by a conv/linear.

    Found by one forward pass (eval mode, no grad) of ``example`` (default: two 32x32 images with the
    first conv's input channels) with hooks: a BN is paired with a layer when its input tensor is
    that layer's output object. A BN after a residual sum (pre-activation blocks' ``bn1``) is fed by
    the sum, not by one conv, so it is correctly left unpaired: a pruned filter does not zero it.
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if example is None:
        convs = [m for m in layers.values() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise UserError("pass an example input: the model has no conv layer to infer it from")
        example = torch.rand(2, convs[0].in_channels, 32, 32)
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, mod in layers.items():

        def keep_output(_m: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> None:
            produced[id(out)] = (name, out)  # the tensor is held, so its id is not reused

        handles.append(mod.register_forward_hook(keep_output))
    for name, mod in bns.items():

        def match_input(_m: nn.Module, inp: tuple, name: str = name) -> None:
            hit = produced.get(id(inp[0]))
            if hit is not None and hit[1] is inp[0]:
                pairs.append((f"{hit[0]}.weight", name))

        handles.append(mod.register_forward_pre_hook(match_input))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(example.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return pairs


def bn_channel_masks(
    model: nn.Module, mask: Mask, example: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Channel keep-masks ``{"<bn>.weight": (C,), "<bn>.bias": (C,)}`` for BNs after masked layers.

    Channel ``c`` is pruned when the feeding layer's mask row ``c`` (a whole conv filter, or a linear
    output unit) is all zero: its pre-BN activation is then constant 0, and masking the BN's weight
    and bias keeps the channel's output at exactly 0 (the official boosting-ticket code).
    """
    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for weight_name, bn_name in conv_bn_pairs(model, example):
        if weight_name not in mask or weight_name in mask.channel_names:
            continue
        bn = modules[bn_name]
        if not bn.affine:
            continue
        alive = (mask[weight_name].flatten(1).sum(dim=1) > 0).float()
        out[f"{bn_name}.weight"] = alive
        out[f"{bn_name}.bias"] = alive.clone()
    return out


def with_bn_channels(model: nn.Module, mask: Mask, example: torch.Tensor | None = None) -> Mask:
    """``mask``'s weight entries plus the BatchNorm channel entries they imply (see
    :func:`bn_channel_masks`)."""
    return mask.with_channels(bn_channel_masks(model, mask.weights_only(), example))


def random_mask(mask: Mask, scope: str, generator: torch.Generator) -> Mask:
    """The random-pruning control: ``mask``'s weight entries shuffled at random.

    ``scope="layer"`` permutes each layer's entries (every layer keeps exactly its sparsity);
    ``scope="global"`` permutes all entries together (the global count is kept, layers vary).
    Channel entries are dropped (recompute them with :func:`with_bn_channels`).
    """
    names = mask.weight_names()
    if scope == "layer":
        out = {}
        for n in names:
            flat = mask[n].flatten()
            out[n] = flat[torch.randperm(flat.numel(), generator=generator)].view_as(mask[n])
        return Mask(out)
    if scope == "global":
        flat = torch.cat([mask[n].flatten() for n in names])
        flat = flat[torch.randperm(flat.numel(), generator=generator)]
        out, offset = {}, 0
        for n in names:
            size = mask[n].numel()
            out[n] = flat[offset : offset + size].view_as(mask[n])
            offset += size
        return Mask(out)
    raise UserError(f"unknown random-mask scope '{scope}'; choose one of: {', '.join(SCOPES)}")
