"""The training losses of the built-in objectives (see :mod:`.objectives`).

Each takes a batch ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,) and the keyword arguments of
``ObjectiveEntry.loss`` (``cfg``, ``attack``, ``generator``, ``use_amp``, ``class_weights``: None or
per-class weights (K,) of the cross-entropy; each reads what it needs),
and returns the scalar loss and the logits the training accuracy is read from; attacks put the
model back in train mode.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..adversarial.attacks import perturb, trades_perturb


def _forward(model: nn.Module, inp: torch.Tensor, use_amp: bool) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        return model(inp).float()


Tensor = torch.Tensor


def cross_entropy(logits: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over the batch; with per-class ``weights`` (K,), each image's term is
    scaled by its class's weight and the mean is still over images, so the loss of a batch split
    over ranks is the mean of the ranks' losses weighted by their image counts (exact under DDP)."""
    if weights is None:
        return F.cross_entropy(logits, y)
    return (F.cross_entropy(logits, y, reduction="none") * weights[y]).mean()


def natural_loss(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> tuple[Tensor, Tensor]:
    """Cross-entropy on the clean batch."""
    logits = _forward(model, x, kw.get("use_amp", False))
    return cross_entropy(logits, y, kw.get("class_weights")), logits


def adversarial_loss(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> tuple[Tensor, Tensor]:
    """Cross-entropy on ``kw["attack"]``'s adversarial batch (FGSM, FGSM-RS, PGD training)."""
    use_amp = kw.get("use_amp", False)
    amp_dtype = torch.bfloat16 if use_amp else None
    x_adv = perturb(model, x, y, kw["attack"], generator=kw["generator"], autocast_dtype=amp_dtype)
    model.train()
    logits = _forward(model, x_adv, use_amp)
    return cross_entropy(logits, y, kw.get("class_weights")), logits


def trades_loss(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> tuple[Tensor, Tensor]:
    """TRADES (Zhang et al. 2019): CE(clean) + beta · KL(p(clean) ‖ p(x_adv)), x_adv from the
    TRADES inner maximization with the run's attack budget and steps."""
    attack, cfg, use_amp = kw["attack"], kw["cfg"], kw.get("use_amp", False)
    x_adv = trades_perturb(
        model,
        x,
        attack.eps,
        step_size=attack.step_size,
        steps=attack.steps,
        bn_mode=attack.bn_mode,
        generator=kw["generator"],
    )
    model.train()
    logits = _forward(model, x, use_amp)
    adv_logits = _forward(model, x_adv, use_amp)
    robust = F.kl_div(
        F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
    )
    clean = cross_entropy(logits, y, kw.get("class_weights"))
    return clean + cfg.train.trades_beta * robust, logits
