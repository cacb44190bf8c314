"""The synthetic dataset: fixed smooth class templates plus pixel noise, generated in memory.

Each class is a smooth random template in ``[0.15, 0.85]`` (a coarse random grid upsampled and made
left-right symmetric, so a 1-2 pixel shift or a horizontal flip keeps the class) plus Gaussian pixel
noise (std 0.15), quantised to uint8. The pixels depend only on the shape arguments, never on a
seed the user passes: like a real dataset, it is fixed. Tests and smoke runs use it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from .registry import DatasetSpec, Raw, get_spec

_SYNTHETIC_CONTENT_SEED = 20200312


def _synthetic_arrays(
    channels: int, size: int, num_classes: int, n_train: int, n_test: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate the synthetic dataset's pixels (uint8) and labels (int64) for train and test."""
    g = torch.Generator().manual_seed(_SYNTHETIC_CONTENT_SEED)
    grid = max(2, min(4, size))
    coarse = torch.rand(num_classes, channels, grid, grid, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    templates = 0.5 * (templates + templates.flip(-1))
    lo = templates.amin(dim=(1, 2, 3), keepdim=True)
    hi = templates.amax(dim=(1, 2, 3), keepdim=True)
    templates = 0.15 + 0.7 * (templates - lo) / (hi - lo).clamp_min(1e-6)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        noise = 0.15 * torch.randn(n, channels, size, size, generator=g)
        pixels = (templates[labels] + noise).clamp_(0.0, 1.0)
        return (pixels * 255.0).round_().to(torch.uint8), labels.to(torch.int64)

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y


def synthetic_spec(
    *,
    channels: int = 1,
    size: int = 16,
    num_classes: int = 10,
    train_size: int = 2000,
    test_size: int = 500,
) -> DatasetSpec:
    """Spec of a synthetic dataset with the given shape (defaults: 1x16x16, 10 classes, 2000/500,
    the registry's ``synthetic``). Mean/std are measured on the generated training images."""
    for label, value, low in (
        ("channels", channels, 1),
        ("size", size, 4),
        ("num_classes", num_classes, 2),
        ("train_size", train_size, num_classes),
        ("test_size", test_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(
                f"synthetic dataset: {label}={value!r} is invalid; fix: use an integer >= {low}"
            )
    train_x, _, _, _ = _synthetic_arrays(channels, size, num_classes, train_size, 0)
    as_float = train_x.float() / 255.0
    mean = tuple(round(float(v), 4) for v in as_float.mean(dim=(0, 2, 3)))
    std = tuple(round(float(v), 4) for v in as_float.std(dim=(0, 2, 3)))
    return replace(
        get_spec("synthetic"),
        channels=channels,
        size=size,
        num_classes=num_classes,
        mean=mean,
        std=std,
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        train_size=train_size,
        test_size=test_size,
    )


def make_synthetic(
    spec: DatasetSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``(train_images, train_labels, test_images, test_labels)`` for a synthetic spec.

    Images are uint8 ``(N, C, H, W)``, labels int64 ``(N,)``; classes are exactly balanced (up to
    ``N mod num_classes``). Deterministic: the same spec always gives the same tensors.
    """
    return _synthetic_arrays(
        spec.channels, spec.size, spec.num_classes, spec.train_size, spec.test_size
    )


def load_synthetic(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    """The registry loader of synthetic specs: nothing is read, everything is generated."""
    del data_dir, allow_download
    train_x, train_y, test_x, test_y = make_synthetic(spec)
    return train_x, train_y, test_x, test_y, "generated in memory"
