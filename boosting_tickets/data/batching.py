"""Batching: vectorised crop-and-flip augmentation and a generator-driven batch loader.

Every random draw (shuffle order, crop offsets, flips) comes from one explicit CPU
``torch.Generator``, so saving its state before an epoch and restoring it replays the epoch exactly.
:func:`epoch_layout` is the one place that says how many optimizer steps an epoch has.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from .registry import Augmentation, DatasetSpec
from .splits import check_count, to_unit_float


@dataclass(frozen=True)
class EpochLayout:
    """How an epoch of ``n`` examples is cut into batches of ``batch_size``.

    A trailing batch of one breaks BatchNorm in train mode, so it is dropped (a different example
    each epoch, since the order is reshuffled); with several ranks, a trailing batch that cannot
    give each rank two images.
    """

    steps: int
    drop_last: bool


def epoch_layout(n: int, batch_size: int, world: int = 1) -> EpochLayout:
    """Optimizer steps per epoch and whether the last batch is dropped: when it is too small to
    give each of ``world`` ranks two images (alone: a last batch of one)."""
    rest = n % batch_size
    drop_last = 0 < rest < 2 * world and n > rest
    steps = n // batch_size if drop_last else -(-n // batch_size)
    return EpochLayout(steps, drop_last)


def _draw_augmentation(
    n: int, aug: Augmentation, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-sample crop offsets ``(n,)``, ``(n,)`` in ``[0, 2*pad]`` and flip flags ``(n,)``."""
    span = 2 * aug.crop_padding + 1
    offsets = torch.randint(0, span, (2, n), generator=generator)
    if aug.horizontal_flip:
        flips = torch.rand(n, generator=generator) < 0.5
    else:
        flips = torch.zeros(n, dtype=torch.bool)
    return offsets[0], offsets[1], flips


def _apply_crop_flip(
    images: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor
) -> torch.Tensor:
    """Crop ``images`` (B, C, H, W) at offsets (dy, dx) of the zero-padded batch; flip where set.

    One ``torch.gather`` over the flattened padded images for the whole batch; the flip is folded
    into the column indices, so it costs nothing extra.
    """
    b, c, h, w = images.shape
    dev = images.device
    dy, dx, flips = dy.to(dev), dx.to(dev), flips.to(dev)
    padded = F.pad(images, (pad, pad, pad, pad)) if pad > 0 else images
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h[None, :]  # (B, H)
    cols = dx[:, None] + torch.where(flips[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])
    flat = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # (B, H, W) into padded H'*W'
    flat = flat.view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.reshape(b, c, -1), 2, flat).view(b, c, h, w)


def augment_batch(
    images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator
) -> torch.Tensor:
    """Randomly crop (zero padding ``augmentation.crop_padding``) and maybe flip each image.

    Works on any dtype (uint8 or float) and device; ``images`` is ``(B, C, H, W)`` and the result
    has the same shape and dtype. Random numbers come only from ``generator`` (a CPU generator):
    per call one ``randint`` of shape ``(2, B)`` and, when flips are on, one ``rand`` of shape
    ``(B,)``.
    """
    if not augmentation.enabled or images.shape[0] == 0:
        return images
    dy, dx, flips = _draw_augmentation(images.shape[0], augmentation, generator)
    return _apply_crop_flip(images, augmentation.crop_padding, dy, dx, flips)


class BatchLoader:
    """Iterate over ``(x, y)`` batches: x float32 ``(B, C, H, W)`` in ``[0, 1]``, y int64 ``(B,)``.

    Shuffling and augmentation draw only from ``generator``, so saving ``generator.get_state()``
    before an epoch and restoring it replays the epoch exactly; :meth:`iterate` with ``start_batch``
    resumes mid-epoch (the skipped batches' random draws are replayed, not their pixels).

    Augmentation is vectorised: one padded gather per batch, on ``device`` (its measured cost is
    in docs/benchmarks.md).

    Args:
        images: uint8 ``(N, C, H, W)`` (float images in ``[0, 1]`` also work).
        labels: int64 ``(N,)``.
        batch_size: examples per batch (>= 1); the last batch may be smaller unless ``drop_last``.
        shuffle: draw a fresh permutation from ``generator`` at the start of every epoch.
        augment: an :class:`Augmentation`, a :class:`DatasetSpec` (its default augmentation) or
            ``None`` for none.
        generator: CPU ``torch.Generator``; the only source of randomness.
        drop_last: skip a final incomplete batch.
        device: where batches are delivered (images move there as uint8, then convert).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        augment: Augmentation | DatasetSpec | None = None,
        generator: torch.Generator,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        check_count("batch_size", batch_size, allow_zero=False)
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise UserError(
                f"BatchLoader needs images (N, C, H, W) and labels (N,), got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}; fix: pass an ImageSet's "
                "images and labels"
            )
        if not isinstance(generator, torch.Generator):
            raise UserError(
                "BatchLoader needs generator=torch.Generator(); fix: pass one explicitly"
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment.augmentation if isinstance(augment, DatasetSpec) else augment
        self.generator = generator
        self.drop_last = drop_last
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = int(self.labels.shape[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate()

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the epoch's batches from ``start_batch`` on (0 = whole epoch).

        With the generator restored to its state at the start of the epoch, ``iterate(k)`` yields
        exactly the batches ``k, k+1, ...`` that ``iterate(0)`` would have, and leaves the generator
        in the same end state.
        """
        n = int(self.labels.shape[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        aug = self.augment if self.augment is not None and self.augment.enabled else None
        for batch in range(len(self)):
            idx = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            draws = _draw_augmentation(idx.shape[0], aug, self.generator) if aug else None
            if batch < start_batch:
                continue  # the draws above keep the generator in step with a full epoch
            x = self.images[idx].to(self.device, non_blocking=True)
            if draws is not None:
                x = _apply_crop_flip(x, aug.crop_padding, *draws)
            y = self.labels[idx].to(self.device, non_blocking=True)
            yield (to_unit_float(x) if x.dtype == torch.uint8 else x.to(torch.float32)), y
