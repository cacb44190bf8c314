"""The dataset registry: name -> channels, size, classes, statistics, default eps, files and loader.

Images are uint8 ``(N, C, H, W)`` in memory and become float32 in ``[0, 1]`` one batch at a time;
normalization by the spec's mean/std is the model's job (its first layer), so attacks work in pixel
space with budgets such as ``eps = 8/255``.

Built-in datasets, kept as plain data in ``data/datasets.json``: ``fashion-mnist`` (the default;
offline from Debian's ``dataset-fashion-mnist``), ``mnist``, ``cifar10``, ``cifar100``, ``svhn``
(torchvision files under ``data_dir``) and ``synthetic`` (generated in memory, needs no files). Plugins add more by declaring ``DATASETS``, a
tuple of :class:`DatasetSpec` (see ``docs/extending.md``). This module imports no torch: the CLI
reads names and defaults from it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..core.config import parse_float
from ..core.errors import UserError
from ..core.registry import Registry, build_registry
from . import files



class Raw(NamedTuple):
    """What a loader returns: the official train and test files as uint8 (N, C, H, W) images and
    int64 (N,) labels, and where they were read from (a plain 5-tuple in this order also works);
    for a dataset with an official validation split (DermaMNIST), its images and labels too."""

    train_images: Any
    train_labels: Any
    test_images: Any
    test_labels: Any
    source: str
    val_images: Any = None
    val_labels: Any = None

Loader = Callable[["DatasetSpec", Path, bool], Raw]
# (found, location or None, missing paths) for `doctor`; checks existence only.
Locator = Callable[["DatasetSpec", Path], tuple[bool, str | None, list[str]]]


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation: random crop after zero padding, then optional horizontal flip.

    ``crop_padding=0`` and ``horizontal_flip=False`` means no augmentation.
    """

    crop_padding: int = 0
    horizontal_flip: bool = False

    @property
    def enabled(self) -> bool:
        """True when the augmentation changes images at all."""
        return self.crop_padding > 0 or self.horizontal_flip

    def describe(self) -> str:
        """Human-readable summary, e.g. ``"random crop (pad 4) + horizontal flip"``."""
        parts = []
        if self.crop_padding > 0:
            parts.append(f"random crop (pad {self.crop_padding})")
        if self.horizontal_flip:
            parts.append("horizontal flip")
        return " + ".join(parts) if parts else "none"


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry: static facts about a dataset and how to read it.

    Attributes:
        name: registry key, e.g. ``"cifar10"``.
        channels, size: image channels ``C`` and height = width ``H == W``.
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        mean, std: per-channel statistics of the training images in ``[0, 1]`` units, for the
            model's Normalize layer (length ``channels``).
        class_names: one name per label.
        augmentation: the default training augmentation.
        train_size, test_size: sizes of the full official splits, before any subsetting.
        fix_hint: how to install or fetch the files (shown when they are missing).
        default_eps: the customary L∞ budget on this dataset (8/255 on natural colour images, Madry
            et al. 2018; 0.1 on Fashion-MNIST; 0.3 on MNIST).
        loader: ``loader(spec, data_dir, allow_download) -> Raw``; never downloads unless allowed.
        locate: ``locate(spec, data_dir) -> (found, location, missing)``, for ``doctor``.
        note: why the defaults are what they are (shown by ``doctor``).
        official_val: size of the dataset's own validation split (0: none; the held-out set is
            then carved out of the training file). With one, ``val_size`` images are drawn from
            it and the training file is all training data.
        file_name: the file a single-file format reads from ``data_dir`` (``npz``).
    """

    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    augmentation: Augmentation
    train_size: int
    test_size: int
    fix_hint: str
    default_eps: float
    loader: Loader
    locate: Locator
    note: str = ""
    official_val: int = 0
    file_name: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.channels, self.size, self.size)


def _synthetic_loader(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    from .synthetic import load_synthetic

    return load_synthetic(spec, data_dir, allow_download)


def _medmnist_loader(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    from .medmnist import load_medmnist_npz

    return load_medmnist_npz(spec, data_dir, allow_download)


def _medmnist_locator(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    from .medmnist import locate_npz

    return locate_npz(spec, root)


#: File format of a built-in dataset -> (loader, locator).
FORMATS: dict[str, tuple[Loader, Locator]] = {
    "idx": (files.load_mnist_like, files.locate_mnist_like),
    "cifar-python": (files.load_cifar, files.locate_cifar),
    "svhn-mat": (files.load_svhn, files.locate_svhn),
    "generated": (_synthetic_loader, files.locate_generated),
    "medmnist-npz": (_medmnist_loader, _medmnist_locator),
}
DATA_FILE = "data/datasets.json"


@functools.cache
def builtin_datasets() -> tuple[DatasetSpec, ...]:
    """The built-in datasets, kept as plain data in ``data/datasets.json`` (each entry's ``note``
    says why its augmentation is what it is)."""
    from importlib import resources

    try:
        doc = json.loads(resources.files("boosting_tickets").joinpath(DATA_FILE).read_text("utf-8"))
        specs = []
        for d in doc["datasets"]:
            loader, locate = FORMATS[d["format"]]
            eps = d["default_eps"]
            specs.append(
                DatasetSpec(
                    name=d["name"],
                    channels=d["channels"],
                    size=d["size"],
                    num_classes=d["num_classes"],
                    mean=tuple(d["mean"]),
                    std=tuple(d["std"]),
                    class_names=tuple(d["class_names"]),
                    augmentation=Augmentation(**d["augmentation"]),
                    train_size=d["train_size"],
                    test_size=d["test_size"],
                    fix_hint=d["fix_hint"],
                    default_eps=parse_float(eps) if isinstance(eps, str) else float(eps),
                    loader=loader,
                    locate=locate,
                    note=d.get("note", ""),
                    official_val=d.get("official_val", 0),
                    file_name=d.get("file_name", ""),
                )
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{DATA_FILE} is unreadable ({exc!r}); reinstall boosting-tickets") from None
    return tuple(specs)


def datasets() -> Registry[DatasetSpec]:
    """The built-in datasets plus those of plugins (``DATASETS``)."""
    return build_registry("dataset", builtin_datasets(), "DATASETS")


def dataset_names() -> tuple[str, ...]:
    """Registered dataset names, for CLI choices and validation."""
    return datasets().names


def get_spec(name: str) -> DatasetSpec:
    """The registered spec for ``name`` (case-insensitive; ``_`` and ``-`` are equivalent).

    Raises:
        UserError: unknown name; the message lists the valid ones.
    """
    key = str(name).strip().lower().replace("_", "-")
    reg = datasets()
    if key not in reg:
        raise UserError(f"unknown dataset {name!r}; fix: use one of {', '.join(reg.names)}")
    return reg.get(key)


def describe_datasets(data_dir: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Report, per registered dataset, whether its files are present (without loading them).

    Returns one dict per dataset with keys ``name``, ``found`` (bool), ``location`` (folder or
    ``None``), ``missing`` (list of missing paths, first place looked), ``fix`` (the spec's fix
    hint) and ``shape`` / ``classes``. Files are checked for existence only, not checksummed.
    """
    root = Path(data_dir)
    report: list[dict[str, object]] = []
    for spec in datasets():
        found, location, missing = spec.locate(spec, root)
        report.append(
            {
                "name": spec.name,
                "found": found,
                "location": location,
                "missing": missing,
                "fix": spec.fix_hint.replace("<data_dir>", str(root)),
                "shape": spec.image_shape,
                "classes": spec.num_classes,
            }
        )
    return report
