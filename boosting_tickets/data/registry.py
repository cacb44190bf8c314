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
        default_eps_l2: the customary L2 budget, where a source fixes one (CIFAR-10: 0.5,
            RobustBench's L2 leaderboard); None: an L2 run must give its eps.
        loader: ``loader(spec, data_dir, allow_download) -> Raw``; never downloads unless allowed.
        locate: ``locate(spec, data_dir) -> (found, location, missing)``, for ``doctor``.
        note: why the defaults are what they are (shown by ``doctor``).
        official_val: size of the dataset's own validation split (0: none; the held-out set is
            then carved out of the training file). With one, ``val_size`` images are drawn from
            it and the training file is all training data.
        file_name: the file a single-file format reads from ``data_dir`` (``npz``).
        view_of, classes: for a class view (:func:`class_view`), the dataset it is cut from and
            the labels it keeps, in the order that renumbers them ``0 .. len(classes) - 1``.
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
    view_of: str = ""
    classes: tuple[int, ...] = ()
    default_eps_l2: float | None = None

    def eps_for(self, norm: str) -> float:
        """The default budget under threat model ``norm`` (``Linf`` or ``L2``); an L2 budget
        nobody has fixed for this dataset is a one-line UserError naming the flags."""
        if norm != "L2":
            return self.default_eps
        if self.default_eps_l2 is None:
            raise UserError(
                f"{self.name} has no customary L2 eps; pass one (--eval-eps / --train-eps, or "
                "--eps to evaluate), e.g. 0.5 as on CIFAR-10"
            )
        return self.default_eps_l2

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


def _view_loader(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    """The base dataset's files, keeping the images of ``spec.classes`` and renumbering them."""
    import torch

    base = get_spec(spec.view_of)
    raw = Raw(*base.loader(base, data_dir, allow_download))
    lookup = torch.full((base.num_classes,), -1, dtype=torch.int64)
    lookup[list(spec.classes)] = torch.arange(len(spec.classes))

    def keep(images: Any, labels: Any) -> tuple[Any, Any]:
        if images is None:
            return None, None
        pos = torch.isin(labels, torch.tensor(spec.classes)).nonzero().flatten()
        return images[pos], lookup[labels[pos]]

    train, test, val = (keep(raw.train_images, raw.train_labels),
                        keep(raw.test_images, raw.test_labels),
                        keep(raw.val_images, raw.val_labels))  # fmt: skip
    return Raw(*train, *test, f"{raw.source} (classes {_span(spec.classes)})", *val)


def _view_locator(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    base = get_spec(spec.view_of)
    return base.locate(base, root)


def _span(classes: tuple[int, ...]) -> str:
    lo, hi = classes[0], classes[-1]
    return f"{lo}-{hi}" if classes == tuple(range(lo, hi + 1)) else ",".join(map(str, classes))


def class_view(
    base: DatasetSpec,
    classes: tuple[int, ...] | list[int],
    *,
    train_size: int,
    test_size: int,
    name: str | None = None,
    note: str = "",
) -> DatasetSpec:
    """A dataset made of some classes of ``base``, relabelled ``0 .. len(classes) - 1`` in the
    given order: the offline stand-in for a second task (ticket transfer, Chen et al. 2020, on
    ``fashion-mnist:0-4`` -> ``fashion-mnist:5-9``). Images, augmentation, eps and files are the
    base's; mean and std are measured on the view's own training images when it is loaded.
    ``name`` defaults to ``"<base>:<lo>-<hi>"``; ``train_size``/``test_size`` are the view's
    official split sizes; ``note`` says what the view is for."""
    classes = tuple(int(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise UserError(f"a class view of {base.name} needs distinct classes, got {classes}")
    if any(not 0 <= c < base.num_classes for c in classes):
        raise UserError(f"{base.name} has classes 0..{base.num_classes - 1}, not {classes}")
    return DatasetSpec(
        name=name or f"{base.name}:{_span(classes)}",
        channels=base.channels,
        size=base.size,
        num_classes=len(classes),
        mean=(),
        std=(),
        class_names=tuple(base.class_names[c] for c in classes),
        augmentation=base.augmentation,
        train_size=train_size,
        test_size=test_size,
        fix_hint=base.fix_hint,
        default_eps=base.default_eps,
        loader=_view_loader,
        locate=_view_locator,
        note=f"classes {_span(classes)} of {base.name}, relabelled from 0" + (f"; {note}" if note else ""),
        official_val=base.official_val,
        file_name=base.file_name,
        view_of=base.name,
        classes=classes,
        default_eps_l2=base.default_eps_l2,
    )


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
        specs: list[DatasetSpec] = []
        for d in doc["datasets"]:
            if "view_of" in d:
                base = next(b for b in specs if b.name == d["view_of"])
                specs.append(class_view(base, d["classes"], name=d["name"],
                                        train_size=d["train_size"], test_size=d["test_size"],
                                        note=d.get("note", "")))  # fmt: skip
                continue
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
                    default_eps_l2=d.get("default_eps_l2"),
                )
            )
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
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
