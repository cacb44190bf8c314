"""Binary pruning masks over a model's named parameters.

A :class:`Mask` maps parameter names (as in ``model.named_parameters()``) to 0/1 float tensors of the
same shape; 1 keeps a weight, 0 prunes it. During training the mask is applied to the gradients before
each optimizer step and to the weights and SGD momentum buffers after it, so pruned weights, their
gradients and their momentum stay exactly zero (also under weight decay, which SGD adds to the gradient
of a weight that is already zero).

Entries are of two kinds: *weight* entries (conv/linear weights, what pruning acts on and what sparsity
counts) and *channel* entries (BatchNorm weight/bias of channels whose whole filter is pruned, as in the
boosting-ticket code, Li et al. arXiv 2003.05733). Channel entries are applied like any other entry but
are left out of the sparsity counts and reported separately.

A pruned model is exported *dense* (:func:`dense_state_dict`): the ordinary state_dict with pruned
entries exactly zero, which loads with ``strict=True`` into a plain WideResNet (ours or RobustBench's);
:func:`import_dense` loads such a state_dict back and recovers the mask from its zeros.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.storage import atomic_torch_save, safe_torch_load

MASK_FORMAT = "boosting-tickets/mask"


class Mask(Mapping[str, torch.Tensor]):
    """0/1 keep-mask per parameter name. Parameters not in the mask are never pruned.

    ``channels`` names the entries that are BatchNorm channel masks (derived from the weight mask);
    they are applied in training but not counted in :meth:`counts`/:meth:`sparsity`.
    """

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], *, channels: Collection[str] = ()
    ) -> None:
        self._t: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            t = t.detach().to(torch.float32).cpu()
            if not bool(((t == 0) | (t == 1)).all()):
                raise UserError(f"mask entry '{name}' holds values other than 0 and 1")
            self._t[name] = t
        unknown = [c for c in channels if c not in self._t]
        if unknown:
            raise UserError(f"mask channel entry '{unknown[0]}' has no tensor in the mask")
        self._channels: frozenset[str] = frozenset(channels)

    # Mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    @classmethod
    def ones(cls, params: Mapping[str, torch.Tensor]) -> Mask:
        """An all-keep mask over ``params`` (e.g. ``layers.prunable_parameters(model)``)."""
        return cls({n: torch.ones_like(p, dtype=torch.float32) for n, p in params.items()})

    @classmethod
    def for_model(cls, model: nn.Module, ignore: Sequence[str] = ()) -> Mask:
        """All-keep mask over ``model``'s prunable weights minus the ``ignore`` patterns."""
        return cls.ones(prunable_weights(model, ignore))

    # --- kinds of entries ---------------------------------------------------------------------
    @property
    def channel_names(self) -> frozenset[str]:
        """Names of the BatchNorm channel entries (not counted in sparsity)."""
        return self._channels

    def weight_names(self) -> list[str]:
        """Names of the weight entries, in mask order."""
        return [n for n in self._t if n not in self._channels]

    def weights_only(self) -> Mask:
        """This mask without its channel entries."""
        return Mask({n: self._t[n] for n in self.weight_names()})

    def with_channels(self, channel_masks: Mapping[str, torch.Tensor]) -> Mask:
        """This mask's weight entries plus ``channel_masks`` (replacing earlier channel entries)."""
        clash = [n for n in channel_masks if n in self._t and n not in self._channels]
        if clash:
            raise UserError(f"'{clash[0]}' is a weight entry of the mask, not a channel entry")
        merged = {n: self._t[n] for n in self.weight_names()}
        merged.update(channel_masks)
        return Mask(merged, channels=tuple(channel_masks))

    def digest(self) -> str:
        """SHA-256 over names, kinds, shapes and bits: the identity of a mask, independent of files."""
        h = hashlib.sha256()
        for name in sorted(self._t):
            t = self._t[name]
            kind = "c" if name in self._channels else "w"
            h.update(f"{name}|{kind}|{tuple(t.shape)}|".encode())
            h.update(t.to(torch.bool).numpy().tobytes())
        return h.hexdigest()

    # --- statistics ------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(total, kept) entries over all weight entries (channel entries excluded)."""
        weights = [self._t[n] for n in self.weight_names()]
        total = sum(t.numel() for t in weights)
        kept = int(sum(int(t.sum().item()) for t in weights))
        return total, kept

    def sparsity(self) -> float:
        """Fraction of masked weight entries that are pruned (0 = dense)."""
        total, kept = self.counts()
        return 0.0 if total == 0 else 1.0 - kept / total

    def report(self) -> dict[str, Any]:
        """Per-layer and global sparsity as a JSON-ready dict.

        ``global`` and ``layers`` cover the weight entries; ``channels`` lists the BatchNorm channel
        entries (kept/total channels per BN tensor), empty when BN channels are not masked.
        """

        def stats(t: torch.Tensor) -> dict[str, Any]:
            n, k = t.numel(), int(t.sum().item())
            return {
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
            "layers": {n: stats(self._t[n]) for n in self.weight_names()},
            "channels": {n: stats(self._t[n]) for n in self._t if n in self._channels},
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
        out._channels = self._channels
        return out

    # --- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain dict (bool tensors, compact) loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": MASK_FORMAT,
            "version": 1,
            "masks": {n: t.cpu().bool() for n, t in self._t.items()},
            "channels": sorted(self._channels),
        }

    @classmethod
    def from_state_dict(cls, sd: Any, *, source: str = "mask") -> Mask:
        """Inverse of :meth:`state_dict`, with one-line errors for foreign files."""
        if not isinstance(sd, dict) or sd.get("format") != MASK_FORMAT:
            raise UserError(f"{source} is not a boosting-tickets mask file")
        masks = sd.get("masks")
        if not isinstance(masks, dict) or not all(torch.is_tensor(t) for t in masks.values()):
            raise UserError(f"{source} is a damaged mask file (no tensors under 'masks')")
        channels = sd.get("channels", [])
        if not isinstance(channels, list | tuple) or not all(isinstance(c, str) for c in channels):
            raise UserError(f"{source} is a damaged mask file (bad 'channels' list)")
        return cls({n: t.float() for n, t in masks.items()}, channels=channels)

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


# --- which weights are prunable ---------------------------------------------------------------


def prunable_weights(model: nn.Module, ignore: Sequence[str] = ()) -> dict[str, nn.Parameter]:
    """``layers.prunable_parameters(model)`` (every conv and linear weight) minus ``ignore``.

    ``ignore`` holds exact names or shell-style patterns (``"conv1.weight"``, ``"*.convShortcut.*"``);
    a pattern that matches no prunable weight raises UserError listing the valid names, so a typo
    never silently prunes a layer the user meant to keep.
    """
    from .layers import prunable_parameters

    params = prunable_parameters(model)
    for pattern in ignore:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in params):
            shown = ", ".join(list(params)[:6]) + (", ..." if len(params) > 6 else "")
            raise UserError(
                f"--prune-ignore pattern '{pattern}' matches no prunable weight of this model; "
                f"prunable weights are: {shown}"
            )
    return {
        n: p for n, p in params.items() if not any(fnmatch.fnmatchcase(n, pat) for pat in ignore)
    }


# --- dense export / import ----------------------------------------------------------------------


@torch.no_grad()
def dense_state_dict(model: nn.Module, mask: Mask | None = None) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as CPU tensors with ``mask`` applied (pruned entries exactly zero).

    The result has exactly the keys of the model's own state_dict (no mask buffers, no
    ``weight_orig``), so a pruned WideResNet loads with ``strict=True`` into RobustBench's
    ``WideResNet``. The model itself is not modified.
    """
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if mask is not None:
        mask.check_compatible(model)
        for name, m in mask.items():
            sd[name].mul_(m.to(sd[name].dtype))
    return sd


def mask_from_dense(
    state_dict: Mapping[str, torch.Tensor], names: Sequence[str], *, source: str = "state_dict"
) -> Mask:
    """The mask implied by a dense export: weight ``name`` is kept where it is non-zero.

    A surviving weight that is exactly zero reads as pruned; after training that has probability
    ~0, which is why stored-dense sparse models (e.g. RobustBench's Sehwag2020Hydra) work this way.
    """
    missing = [n for n in names if n not in state_dict]
    if missing:
        raise UserError(f"{source} has no tensor '{missing[0]}' (from another architecture?)")
    return Mask({n: (state_dict[n] != 0).float() for n in names})


def import_dense(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ignore: Sequence[str] = (),
    source: str = "state_dict",
) -> Mask:
    """Load a dense export into ``model`` (strict) and return the mask of its non-zero weights.

    The mask covers ``prunable_weights(model, ignore)``; a state_dict from another architecture
    raises a one-line UserError naming the first key that does not fit.
    """
    from .checkpoints import load_state_dict_strict

    load_state_dict_strict(model, state_dict, source)
    return mask_from_dense(state_dict, list(prunable_weights(model, ignore)), source=source)
