"""Binary pruning masks over a model's named parameters.

A :class:`Mask` maps parameter names (as in ``model.named_parameters()``) to 0/1 float tensors of the
same shape; 1 keeps a weight, 0 prunes it. During training the mask is applied to the gradients before
each optimizer step and to the weights and SGD momentum buffers after it, so pruned weights, their
gradients and their momentum stay exactly zero (also under weight decay, which SGD adds to the gradient
of a weight that is already zero).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .storage import atomic_torch_save, safe_torch_load

MASK_FORMAT = "boosting-tickets/mask"


class Mask(Mapping[str, torch.Tensor]):
    """0/1 keep-mask per parameter name. Parameters not in the mask are never pruned."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._t: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            t = t.detach().to(torch.float32).cpu()
            if not bool(((t == 0) | (t == 1)).all()):
                raise UserError(f"mask entry '{name}' holds values other than 0 and 1")
            self._t[name] = t

    # Mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    @classmethod
    def ones(cls, params: Mapping[str, torch.Tensor]) -> Mask:
        """An all-keep mask over ``params`` (e.g. ``models.prunable_parameters(model)``)."""
        return cls({n: torch.ones_like(p, dtype=torch.float32) for n, p in params.items()})

    # --- statistics ------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(total, kept) entries over all masked parameters."""
        total = sum(t.numel() for t in self._t.values())
        kept = int(sum(int(t.sum().item()) for t in self._t.values()))
        return total, kept

    def sparsity(self) -> float:
        """Fraction of masked-parameter entries that are pruned (0 = dense)."""
        total, kept = self.counts()
        return 0.0 if total == 0 else 1.0 - kept / total

    def report(self) -> dict[str, Any]:
        """Per-layer and global sparsity as a JSON-ready dict."""
        layers = {}
        for name, t in self._t.items():
            n, k = t.numel(), int(t.sum().item())
            layers[name] = {
                "shape": list(t.shape),
                "total": n,
                "kept": k,
                "pruned": n - k,
                "sparsity": 0.0 if n == 0 else 1.0 - k / n,
            }
        total, kept = self.counts()
        return {
            "global": {
                "total": total,
                "kept": kept,
                "pruned": total - kept,
                "sparsity": self.sparsity(),
            },
            "layers": layers,
        }

    # --- model interaction --------------------------------------------------------------------
    def check_compatible(self, model: nn.Module) -> None:
        """Raise UserError if a masked name is missing from ``model`` or has another shape."""
        params = dict(model.named_parameters())
        for name, t in self._t.items():
            if name not in params:
                raise UserError(
                    f"mask does not fit this model: it has no parameter '{name}' "
                    "(mask from another architecture?)"
                )
            if tuple(params[name].shape) != tuple(t.shape):
                raise UserError(
                    f"mask does not fit this model: '{name}' is {tuple(t.shape)} in the mask but "
                    f"{tuple(params[name].shape)} in the model (mask from another architecture?)"
                )

    def _pairs(self, model: nn.Module) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
        params = dict(model.named_parameters())
        for name, t in self._t.items():
            p = params[name]
            yield p, t.to(device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place; returns the model."""
        self.check_compatible(model)
        for p, m in self._pairs(model):
            p.mul_(m)
        return model

    @torch.no_grad()
    def mask_grads_(self, model: nn.Module) -> None:
        """Zero the gradients of pruned weights (call between backward and optimizer.step)."""
        for p, m in self._pairs(model):
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def mask_optimizer_state_(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Zero pruned entries of every per-parameter optimizer buffer (SGD momentum, Adam moments)."""
        for p, m in self._pairs(model):
            state = optimizer.state.get(p, {})
            for value in state.values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(m)

    def on_device(self, device: torch.device | str) -> Mask:
        """A copy whose tensors live on ``device`` (avoids per-step transfers on GPUs)."""
        out = Mask.__new__(Mask)
        out._t = {n: t.to(device) for n, t in self._t.items()}
        return out

    # --- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain dict (bool tensors, compact) loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": MASK_FORMAT,
            "version": 1,
            "masks": {n: t.cpu().bool() for n, t in self._t.items()},
        }

    @classmethod
    def from_state_dict(cls, sd: Any, *, source: str = "mask") -> Mask:
        """Inverse of :meth:`state_dict`, with one-line errors for foreign files."""
        if not isinstance(sd, dict) or sd.get("format") != MASK_FORMAT:
            raise UserError(f"{source} is not a boosting-tickets mask file")
        masks = sd.get("masks")
        if not isinstance(masks, dict) or not all(torch.is_tensor(t) for t in masks.values()):
            raise UserError(f"{source} is a damaged mask file (no tensors under 'masks')")
        return cls({n: t.float() for n, t in masks.items()})

    def save(self, path: str | Path) -> None:
        """Write the mask atomically."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> Mask:
        """Read a mask (weights_only) and, given ``model``, check that it fits."""
        mask = cls.from_state_dict(safe_torch_load(path, what="mask file"), source=str(path))
        if model is not None:
            mask.check_compatible(model)
        return mask
