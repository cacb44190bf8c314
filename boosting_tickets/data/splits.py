"""Deterministic train / held-out / test splits of a registered dataset, kept in memory as uint8.

The validation set is carved from the training file with ``data_seed``, the training subset is
drawn from what is left, and the test subset is drawn with ``test_seed``. All three draws are
stratified by class and none depends on the run seed, so runs that differ only in their
initialisation see exactly the same images.
"""

from __future__ import annotations

import dataclasses

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from .registry import DatasetSpec, Raw, get_spec


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A set of images kept as uint8.

    Attributes:
        images: ``(N, C, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor.
        indices: ``(N,)`` int64 positions of these images in their source file (the official train
            file for ``train``/``val``, the official test file for ``test``); for bookkeeping.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, num_classes: int) -> torch.Tensor:
        """``(num_classes,)`` int64 count of examples per label."""
        return torch.bincount(self.labels, minlength=num_classes)


@dataclass(frozen=True, eq=False)
class Splits:
    """Train/validation/test sets of one dataset plus provenance.

    ``val`` may be empty (``val_size=0``). ``source`` says where the files were read from.
    """

    train: ImageSet
    val: ImageSet
    test: ImageSet
    spec: DatasetSpec
    data_seed: int
    test_seed: int
    source: str


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images to float32 in ``[0, 1]`` (same shape, same device)."""
    return images.to(torch.float32).div_(255.0)


def check_count(label: str, value: object, *, allow_zero: bool) -> None:
    """Raise a one-line UserError unless ``value`` is a whole number (>= 1, or >= 0 if allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UserError(f"{label}={value!r} is not an integer; fix: pass a whole number")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise UserError(f"{label}={value} is invalid; fix: use a value {bound}")



def _stratified_choice(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``k`` positions of ``labels`` with per-class counts proportional to the class sizes.

    Largest-remainder allocation in exact integer arithmetic; ties (and classes that cannot all get
    one example when ``k`` is small) are broken by a seeded random class order. Returned sorted.
    """
    n = labels.shape[0]
    classes, counts = np.unique(labels, return_counts=True)
    base = (k * counts) // n
    remainder = (k * counts) % n
    tie_break = rng.permutation(len(classes))
    # Sort by remainder descending, then by the random tie-break.
    order = np.lexsort((tie_break, -remainder))
    base[order[: k - int(base.sum())]] += 1
    chosen = []
    for cls, take in zip(classes, base, strict=True):
        members = np.flatnonzero(labels == cls)
        chosen.append(members[rng.permutation(members.shape[0])[:take]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _rng(seed: int, purpose: int) -> np.random.Generator:
    # Separate, stable streams for val / train-subset / test-subset draws from one user seed.
    return np.random.default_rng([seed, purpose])


def _subset(images: torch.Tensor, labels: torch.Tensor, positions: np.ndarray) -> ImageSet:
    idx = torch.from_numpy(positions.astype(np.int64))
    return ImageSet(images=images[idx], labels=labels[idx], indices=idx)


def _validate_raw(spec: DatasetSpec, raw: Raw) -> None:
    for split, images, labels in (
        ("train", raw.train_images, raw.train_labels),
        ("test", raw.test_images, raw.test_labels),
        *((("val", raw.val_images, raw.val_labels),) if raw.val_images is not None else ()),
    ):
        if tuple(images.shape[1:]) != spec.image_shape or images.shape[0] != labels.shape[0]:
            raise UserError(
                f"{spec.name}: {split} images have shape {tuple(images.shape)} with "
                f"{labels.shape[0]} labels, expected (N, {spec.channels}, {spec.size}, "
                f"{spec.size}); fix: delete the files in {raw.source} and fetch them again"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes):
            raise UserError(
                f"{spec.name}: {split} labels outside 0..{spec.num_classes - 1}; fix: delete "
                f"the files in {raw.source} and fetch them again"
            )


def load_splits(
    name: str | DatasetSpec,
    data_dir: str | os.PathLike[str],
    *,
    train_subset: int | None = None,
    val_size: int = 0,
    test_subset: int | None = None,
    data_seed: int = 0,
    test_seed: int = 0,
    allow_download: bool = False,
) -> Splits:
    """Load a dataset into memory and split it deterministically.

    Args:
        name: a registered name (``data.registry.datasets()``) or a :class:`DatasetSpec` (e.g.
            from ``synthetic.synthetic_spec`` for a synthetic dataset of another shape).
        data_dir: root folder for dataset files (created when files are decompressed into it).
        train_subset: number of training images kept after the validation split; ``None`` keeps all.
        val_size: images held out of the official training file for validation (default 0: none;
            the paper holds out 5000 of CIFAR-10's 50000). Never overlaps ``train``. For a dataset
            with its own validation split (``spec.official_val``, DermaMNIST) they are drawn from
            that split instead, and the whole training file is training data.
        test_subset: number of test images kept; ``None`` keeps the whole official test set.
        data_seed: seed of the validation split and the training subset (not the run seed).
        test_seed: seed of the test subset, separate so every run is scored on the same images.
        allow_download: let torchvision fetch missing files from the internet. Never done otherwise.

    Returns:
        :class:`Splits` whose image tensors are uint8 ``(N, C, H, W)`` and labels int64 ``(N,)``.
        All draws are stratified by class (largest-remainder quotas) and sorted by file position.

    Raises:
        UserError: unknown dataset, missing/corrupt files, or sizes that are negative, zero (except
            ``val_size``) or larger than what is available.
    """
    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    check_count("val_size", val_size, allow_zero=True)
    check_count("data_seed", data_seed, allow_zero=True)
    check_count("test_seed", test_seed, allow_zero=True)
    if train_subset is not None:
        check_count("train_subset", train_subset, allow_zero=False)
    if test_subset is not None:
        check_count("test_subset", test_subset, allow_zero=False)
    # Check against the nominal sizes before touching files, so typos fail fast.
    _check_sizes(spec, spec.train_size, spec.test_size, train_subset, val_size, test_subset,
                 n_val=spec.official_val or None)  # fmt: skip

    raw = Raw(*spec.loader(spec, Path(data_dir), allow_download))
    _validate_raw(spec, raw)
    train_x, train_y, test_x, test_y, source = raw[:5]
    n_train, n_test = int(train_y.shape[0]), int(test_y.shape[0])
    own_val = raw.val_images is not None
    _check_sizes(spec, n_train, n_test, train_subset, val_size, test_subset,
                 n_val=int(raw.val_labels.shape[0]) if own_val else None)  # fmt: skip
    spec = _with_statistics(spec, train_x)
    labels_np = train_y.numpy()
    if own_val:  # the dataset's own validation split: val_size of it, stratified
        val_x, val_y = raw.val_images, raw.val_labels
        val_pos = _stratified_choice(val_y.numpy(), val_size, _rng(data_seed, 1))
        rest = np.arange(n_train)
    else:
        val_x, val_y = train_x, train_y
        val_pos = _stratified_choice(labels_np, val_size, _rng(data_seed, 1))
        rest = np.setdiff1d(np.arange(n_train), val_pos, assume_unique=True)
    if train_subset is not None and train_subset < rest.shape[0]:
        pick = _stratified_choice(labels_np[rest], train_subset, _rng(data_seed, 2))
        rest = rest[pick]
    test_pos = np.arange(n_test)
    if test_subset is not None and test_subset < n_test:
        test_pos = _stratified_choice(test_y.numpy(), test_subset, _rng(test_seed, 3))

    return Splits(
        train=_subset(train_x, train_y, rest),
        val=_subset(val_x, val_y, val_pos),
        test=_subset(test_x, test_y, test_pos),
        spec=spec,
        data_seed=data_seed,
        test_seed=test_seed,
        source=source,
    )


def _with_statistics(spec: DatasetSpec, train_x: torch.Tensor) -> DatasetSpec:
    """``spec``, with mean/std measured on the official training file when the registry has none."""
    if spec.mean:
        return spec
    x = train_x.to(torch.float64) / 255.0
    return dataclasses.replace(
        spec,
        mean=tuple(round(float(v), 4) for v in x.mean((0, 2, 3))),
        std=tuple(round(float(v), 4) for v in x.std((0, 2, 3))),
    )


def _check_sizes(
    spec: DatasetSpec,
    n_train: int,
    n_test: int,
    train_subset: int | None,
    val_size: int,
    test_subset: int | None,
    n_val: int | None = None,
) -> None:
    if n_val is not None:  # an official validation split: val_size is drawn from it
        if val_size > n_val:
            raise UserError(
                f"{spec.name}: val_size={val_size} exceeds its own validation split of {n_val} "
                f"images; fix: use val_size <= {n_val}"
            )
        val_size = 0
    if val_size >= n_train:
        raise UserError(
            f"{spec.name}: val_size={val_size} leaves no training images ({spec.name} has "
            f"{n_train}); fix: use val_size < {n_train}"
        )
    left = n_train - val_size
    if train_subset is not None and train_subset > left:
        raise UserError(
            f"{spec.name}: train_subset={train_subset} exceeds the {left} training images left "
            f"after val_size={val_size} (of {n_train}); fix: use train_subset <= {left}"
        )
    if test_subset is not None and test_subset > n_test:
        raise UserError(
            f"{spec.name}: test_subset={test_subset} exceeds the {n_test} test images; "
            f"fix: use test_subset <= {n_test}"
        )


# --------------------------------------------------------------------------------------------------
# Augmentation and batching
# --------------------------------------------------------------------------------------------------

