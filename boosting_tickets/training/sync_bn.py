"""Batch normalization over the global batch of all ranks, on any device (gloo on the CPU too).

``torch.nn.SyncBatchNorm`` runs on GPUs only; this one works wherever ``torch.distributed`` does.
In training mode each rank's per-channel sum and count, then its sum of squared deviations from
the global mean, are summed over the ranks with a differentiable all-reduce
(:class:`_AllReduceSum`: the gradient of a sum over ranks is the sum over ranks of the gradients),
so the batch statistics, the running statistics and the gradients are those of the global batch.
In eval mode (and in every attack, which runs in eval mode by default) it is an ordinary
BatchNorm and never communicates. Its state_dict keys are BatchNorm's, so checkpoints load anywhere.
"""

from __future__ import annotations

import torch
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiably (every rank must call it, forward and backward)."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        import torch.distributed as dist

        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training-mode statistics are those of every rank's batch."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [d for d in range(input.dim()) if d != 1]
        c = input.shape[1]
        shape = [1, c] + [1] * (input.dim() - 2)
        # Two passes (mean, then the mean squared deviation), like BatchNorm's own kernels:
        # E[x^2] - E[x]^2 in float32 loses digits that an adversarial attack's sign would amplify.
        count = torch.tensor([input.numel() / c], dtype=input.dtype, device=input.device)
        first = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        count = first[-1]
        mean = first[:c] / count
        centered = input - mean.view(shape)
        var = _AllReduceSum.apply((centered * centered).sum(dims)) / count  # biased, as BN
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centered / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm1d/2d replaced, in place, by :class:`SyncBatchNorm` (same
    parameters and buffers, so the same state_dict)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
            sync = SyncBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            sync.load_state_dict(child.state_dict())
            sync.to(next(child.buffers()).device)
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            convert(child)
    return model
