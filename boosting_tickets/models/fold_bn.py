"""Eval-mode BatchNorm folded into the convolution before it: the same function, fewer passes.

In eval mode, ``BatchNorm2d`` is a per-channel affine map ``y = x·s + t`` with
``s = γ / √(σ² + ε)`` and ``t = β − μ·s`` (running mean μ and variance σ²). After a convolution
with weight ``W`` (C_out, C_in, kh, kw) and bias ``b`` it folds into one convolution with weight
``W·s`` (per output channel) and bias ``b·s + t`` (Ioffe & Szegedy 2015; the standard inference
fold, e.g. Jacob et al. 2018, §3.2). An attack step then skips BatchNorm's forward and backward
(about 29% of a WRN-10-1 attack step on the CPU, ``docs/benchmarks.md``). A BatchNorm that no
convolution feeds alone (pre-activation nets' ``bn1``) becomes one fused multiply-add.

:class:`FoldedBatchNorm` wraps a live model; nothing is copied. The folded weight and bias are
recomputed from the live parameters and running statistics on every forward pass, so they never go
stale (training between evaluations, masks' zeros, ``.to()``), and autograd reaches the original
parameters: input gradients (attacks) and parameter gradients equal the model's within float
rounding. The folded graph (``torch.fx``, traced once in eval mode) is used only while every module
of the model is in eval mode; otherwise the model's own ``forward`` runs, so train-mode BatchNorm,
dropout and running-statistics updates are exactly the model's. A model that does not trace, or has
nothing to fold, runs its own forward always (``reason`` says why). The wrapper is never saved:
checkpoints are written from the model it wraps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Normalize


class FoldedConvBN(nn.Module):
    """``bn(conv(x))`` as one convolution with weight ``W·s`` and bias ``b·s + t`` computed from
    ``conv`` and eval-mode ``bn`` (both live, not copied) at every call. Input (N, C_in, H, W),
    output (N, C_out, H', W')."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.conv, self.bn
        scale, shift = bn_affine(bn)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        if conv.weight.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        bias = shift if conv.bias is None else torch.addcmul(shift, conv.bias, scale)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class AffineBN(nn.Module):
    """Eval-mode ``bn(x)`` as one fused multiply-add ``x·s + t`` (``bn`` live). (N, C, H, W)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = bn_affine(self.bn)
        return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``bn`` as ``(s, t)``, each (C,): ``s = γ / √(σ² + ε)``, ``t = β − μ·s``
    (γ = 1, β = 0 without affine parameters)."""
    assert bn.running_mean is not None and bn.running_var is not None
    inv = torch.rsqrt(bn.running_var + bn.eps)
    scale = inv if bn.weight is None else bn.weight * inv
    shift = -bn.running_mean * scale
    return scale, (shift if bn.bias is None else shift + bn.bias)


class _Tracer(torch.fx.Tracer):
    # Normalize branches on a Python flag of its own; keep it (and our fused modules) opaque.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)


def _foldable_bn(m: Any) -> bool:
    return (type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_mean is not None
            and not _hooked(m))  # fmt: skip


def _hooked(m: nn.Module) -> bool:
    # Hooks (torch.nn.utils.prune, parametrizations) must still run: such modules stay as they are.
    return bool(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "parametrizations"))


def _foldable_conv(m: Any, bn: nn.BatchNorm2d) -> bool:
    return (type(m) is nn.Conv2d and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and m.out_channels == bn.num_features and not _hooked(m))  # fmt: skip


def fold_graph(model: nn.Module) -> tuple[torch.fx.GraphModule | None, int, int, str]:
    """``model`` traced in eval mode with every conv→BatchNorm2d pair folded
    (:class:`FoldedConvBN`) and every other foldable BatchNorm2d an :class:`AffineBN`; returns
    ``(graph, folded pairs, affine BNs, reason)``, graph None (and the reason) when the model does
    not trace or has nothing to fold. The model's modes are restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()  # Python-level ``self.training`` reads (F.dropout) are baked in as eval
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # any tracing failure means: run the model's own forward
        return None, 0, 0, f"not traceable by torch.fx ({type(exc).__name__}: {exc})"[:200]
    finally:
        for m, was in flags:
            m.training = was
    if any(node.op == "get_attr" for node in graph.nodes):
        # A tensor read directly (not through its module) would go stale after ``.to()``.
        return None, 0, 0, "the forward reads tensors directly (torch.fx get_attr)"
    gm = torch.fx.GraphModule(model, graph)
    mods = dict(gm.named_modules())
    pairs = affine = 0
    for node in list(gm.graph.nodes):
        bn = mods.get(node.target) if node.op == "call_module" else None
        if not _foldable_bn(bn) or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        conv = mods.get(src.target) if getattr(src, "op", None) == "call_module" else None
        if conv is not None and len(src.users) == 1 and _foldable_conv(conv, bn):
            name = f"_folded_{pairs}"
            gm.add_submodule(name, FoldedConvBN(conv, bn))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, src.args, src.kwargs)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            gm.graph.erase_node(src)
            pairs += 1
        else:
            name = f"_affine_{affine}"
            gm.add_submodule(name, AffineBN(bn))
            node.target = name
            affine += 1
    if not pairs + affine:
        return None, 0, 0, "no eval-mode BatchNorm2d to fold"
    gm.graph.lint()
    gm.recompile()
    return gm, pairs, affine, f"{pairs} conv+BN pairs folded, {affine} BN as multiply-add"


class FoldedBatchNorm(nn.Module):
    """``model`` with eval-mode BatchNorm folded (module docstring): the folded graph while every
    module is in eval mode, the model's own forward otherwise. ``model``: the wrapped (live)
    network, its only submodule, so ``.train()``, ``.eval()``, ``.to()`` and ``modules()`` reach
    it; ``reason``: what was folded, or why nothing was. Logits (N, num_classes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        graph, self.pairs, self.affine, self.reason = fold_graph(model)
        # Held outside the module tree: its submodules are the model's own, already registered.
        self._graph_holder = (graph, tuple(model.modules()))

    @property
    def active(self) -> bool:
        """Whether eval-mode forward passes use the folded graph."""
        return self._graph_holder[0] is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        graph, modules = self._graph_holder
        if graph is not None and not any(m.training for m in modules):
            return graph(x)
        return self.model(x)


def fold_batchnorm(model: nn.Module) -> FoldedBatchNorm:
    """``model`` wrapped as :class:`FoldedBatchNorm` (a wrapper is not wrapped twice)."""
    return model if isinstance(model, FoldedBatchNorm) else FoldedBatchNorm(model)
