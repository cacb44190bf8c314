"""The pieces every attack is made of: input checks, model-mode handling, and per threat model
(``Linf``, ``L2``) the random start and one projected step (:func:`noise_for`, :func:`step_for`).

All take float inputs ``x`` of shape (N, C, H, W) in [0, 1] and integer labels ``y`` of shape
(N,). Gradients are taken with respect to the input only (``torch.autograd.grad``), so model
parameters' ``.grad`` are never touched. The device is taken from ``x``; a ``generator``, when
given, must live on the same device type as ``x``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UserError
from .spec import check_bn_mode

_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@contextlib.contextmanager
def bn_mode(
    model: nn.Module, mode: str, *, keep_running_stats: bool = False
) -> Iterator[nn.Module]:
    """Put every module of ``model`` in train or eval mode for the ``with`` block.

    On exit (also on exception) each module gets back its own previous ``training`` flag, so a
    model with mixed modes (e.g. frozen BN inside a training model) is restored exactly.
    With ``keep_running_stats=True`` and mode "train", batch-norm running statistics and
    ``num_batches_tracked`` are restored too, so forward passes made inside the block (e.g. while
    generating attacks) leave no trace in the model. Default False: plain mode switching.
    """
    mode = check_bn_mode(mode)
    flags = [(module, module.training) for module in model.modules()]
    saved: list[tuple[Tensor, Tensor]] = []
    if keep_running_stats and mode == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase):
                for buf in (module.running_mean, module.running_var, module.num_batches_tracked):
                    if buf is not None:
                        saved.append((buf, buf.detach().clone()))
    try:
        model.train(mode == "train")
        yield model
    finally:
        for module, was_training in flags:
            module.training = was_training
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


def check_x(x: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise UserError(
            "x must be a float tensor of images in [0, 1]; convert with x.float() / 255"
        )
    if x.dim() < 2:
        raise UserError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}; add a batch dim")
    if x.numel() and bool((~((x >= 0) & (x <= 1))).any()):
        raise UserError("x must lie in [0, 1] (no NaN); normalize inside the model, not the data")
    return x.detach()


def check_y(y: Any, x: Tensor) -> Tensor:
    if (
        not isinstance(y, Tensor)
        or y.is_floating_point()
        or y.is_complex()
        or y.dtype == torch.bool
    ):
        raise UserError("y must be an integer tensor of class labels; convert with y.long()")
    if y.shape != (x.shape[0],):
        raise UserError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if y.device != x.device:
        raise UserError(f"y is on {y.device} but x on {x.device}; move both to the same device")
    return y.detach()


def check_generator(generator: torch.Generator | None, x: Tensor) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise UserError(f"generator must be a torch.Generator or None, got {type(generator)}")
    if generator.device.type != x.device.type:
        raise UserError(
            f"generator is on {generator.device} but x on {x.device}; "
            "create it with torch.Generator(device=x.device)"
        )


def check_autocast(autocast_dtype: torch.dtype | None) -> None:
    if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
        raise UserError(
            f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype}"
        )


def check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def checked_inputs(
    model: Any,
    x: Any,
    y: Any,
    eps: Any,
    bn_mode: Any,
    generator: torch.Generator | None,
    autocast_dtype: torch.dtype | None,
    norm: str = "Linf",
) -> tuple[nn.Module, Tensor, Tensor | None, float]:
    """The checks every attack starts with (``y`` None: an attack without labels, e.g. TRADES);
    returns the model, detached ``x`` and ``y``, and ``eps`` (checked for ``norm``) as a float."""
    from .spec import check_eps

    model = check_model(model)
    x = check_x(x)
    y = None if y is None else check_y(y, x)
    eps = check_eps(eps, norm)
    check_bn_mode(bn_mode)
    check_generator(generator, x)
    check_autocast(autocast_dtype)
    return model, x, y, eps


def autocast(x: Tensor, autocast_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=autocast_dtype)


def logits_of(model: nn.Module, x: Tensor, autocast_dtype: torch.dtype | None) -> Tensor:
    """Forward pass; logits are returned in fp32 so losses are always computed in fp32."""
    with autocast(x, autocast_dtype):
        out = model(x)
    return out.float()


def input_grad(
    model: nn.Module, x_adv: Tensor, y: Tensor, autocast_dtype: torch.dtype | None
) -> tuple[Tensor, Tensor]:
    """Gradient of mean cross-entropy w.r.t. the input only, and the (detached) logits."""
    with torch.enable_grad():
        x_adv = x_adv.detach().requires_grad_(True)
        logits = logits_of(model, x_adv, autocast_dtype)
        loss = F.cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss, x_adv)
    return grad, logits.detach()


def project_step(x_adv: Tensor, x: Tensor, grad: Tensor, step_size: float, eps: float) -> Tensor:
    """x_adv + step·sign(grad), projected to the eps-ball around x and to [0, 1].

    Same operation order as torchattacks.PGD, so results agree to float rounding.
    """
    x_adv = x_adv.detach() + step_size * grad.sign()
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1).detach()


def _per_example(v: Tensor, x: Tensor) -> Tensor:
    """(N,) values shaped to broadcast over x's (N, C, H, W)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def project_step_l2(x_adv: Tensor, x: Tensor, grad: Tensor, step_size: float, eps: float) -> Tensor:
    """x_adv + step·grad/‖grad‖₂ per example, projected to the L2 eps-ball around x and to [0, 1].

    Same operations in the same order as torchattacks.PGDL2 (gradient norm + 1e-10; the
    difference scaled by min(1, eps/‖δ‖₂)), so the iterates agree to float rounding; where δ = 0
    it stays 0 (torchattacks gives NaN).
    """
    g = grad.flatten(1).norm(p=2, dim=1) + 1e-10
    x_adv = x_adv.detach() + step_size * (grad / _per_example(g, x))
    delta = x_adv - x
    dn = delta.flatten(1).norm(p=2, dim=1)
    # δ = 0 (eps 0, or a zero gradient) stays 0; torchattacks would compute 0/0 = NaN there.
    factor = torch.where(dn > 0, eps / dn.clamp_min(torch.finfo(dn.dtype).tiny), 1.0)
    factor = torch.minimum(factor, torch.ones_like(dn))
    return torch.clamp(x + delta * _per_example(factor, x), min=0, max=1).detach()


def l2_noise(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """A random start in the L2 eps-ball: a Gaussian direction scaled to radius r·eps, r ~ U(0, 1)
    per example (torchattacks.PGDL2's draw, in its order: the direction, then the radii)."""
    delta = torch.empty_like(x).normal_(generator=generator)
    n = _per_example(delta.flatten(1).norm(p=2, dim=1), x)
    r = torch.zeros_like(n).uniform_(0, 1, generator=generator)
    return delta * (r / n * eps)


def uniform_noise(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    # Drawn for the whole batch so the random stream never depends on which points survive.
    return torch.empty_like(x).uniform_(-eps, eps, generator=generator)


def start_point(x: Tensor, noise: Tensor | None) -> Tensor:
    if noise is None:
        return x.clone().detach()
    return torch.clamp(x + noise, min=0, max=1).detach()


#: Threat model -> (random start, projected step); read-only.
GEOMETRY = MappingProxyType(
    {"Linf": (uniform_noise, project_step), "L2": (l2_noise, project_step_l2)}
)


def noise_for(norm: str) -> Any:
    """``noise(x, eps, generator)``: the random start of ``norm`` (whole-batch draw)."""
    return GEOMETRY[norm][0]


def step_for(norm: str) -> Any:
    """``step(x_adv, x, grad, step_size, eps)``: one projected ascent step under ``norm``."""
    return GEOMETRY[norm][1]
