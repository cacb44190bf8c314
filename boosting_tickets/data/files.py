"""Reading the built-in datasets' files (torchvision's formats) and checking that they exist.

Loaders return uint8 ``(N, C, H, W)`` images and int64 ``(N,)`` labels for the official train and
test files, plus where they came from; they download only when allowed. Fashion-MNIST is also read
from Debian's ``dataset-fashion-mnist`` package (recompressed .gz files whose md5 differs from
torchvision's list, so they are decompressed into ``<data_dir>/FashionMNIST/raw`` and read with
``download=False``). torch, torchvision and numpy are imported inside the loaders: the registry that
references them is read by the CLI without importing them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError

if TYPE_CHECKING:
    from .registry import DatasetSpec, Raw

# Where Debian's dataset-fashion-mnist package puts the four IDX .gz files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                                        "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}  # fmt: skip
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _raw_dir(spec: DatasetSpec, data_dir: Path) -> Path:
    return data_dir / ("FashionMNIST" if spec.name == "fashion-mnist" else "MNIST") / "raw"


def _decompress_atomic(src: Path, dst: Path) -> None:
    """Gunzip ``src`` to ``dst`` via a temporary file in the same folder and a rename."""
    tmp_name: str | None = None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 20)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; the data folder may be shared
        # A concurrent loader may finish first; os.replace keeps either complete copy.
        os.replace(tmp_name, dst)
    except (OSError, EOFError) as exc:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        raise UserError(
            f"could not decompress {src} into {dst}: {exc}; fix: check that the file is intact and "
            f"that {dst.parent} is writable (or pass another --data-dir)"
        ) from exc


def _find_idx_file(raw: Path, name: str, fallback_dir: Path | None) -> str | None:
    """Make ``raw/name`` exist, decompressing ``raw/name.gz`` or ``fallback_dir/name.gz`` if needed.

    Returns the folder the file came from, or ``None`` when it is nowhere.
    """
    target = raw / name
    if target.is_file():
        return str(raw)
    for candidate in (raw / f"{name}.gz", (fallback_dir / f"{name}.gz") if fallback_dir else None):
        if candidate is not None and candidate.is_file():
            _decompress_atomic(candidate, target)
            return str(candidate.parent)
    return None


def _torchvision_call(spec: DatasetSpec, where: Path, data_dir: Path, make: Callable[[], Any]) -> Any:
    """Run a torchvision constructor, turning its missing-file / download errors into UserError."""
    try:
        return make()
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        detail = " ".join(str(exc).split())[:200]
        hint = spec.fix_hint.replace("<data_dir>", str(data_dir))
        raise UserError(
            f"{spec.name}: files missing or corrupt in {where} ({detail}); fix: {hint}"
        ) from exc


def load_mnist_like(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    """MNIST or Fashion-MNIST from ``<data_dir>/<MNIST|FashionMNIST>/raw`` (or Debian's files)."""
    import torch
    import torchvision.datasets as tvd

    fashion = spec.name == "fashion-mnist"
    cls = tvd.FashionMNIST if fashion else tvd.MNIST
    raw = _raw_dir(spec, data_dir)
    fallback = DEBIAN_FASHION_MNIST_DIR if fashion else None
    origins = [_find_idx_file(raw, f, fallback) for f in MNIST_FILES]
    missing = [f for f, o in zip(MNIST_FILES, origins, strict=True) if o is None]
    if missing and not allow_download:
        looked = f"{raw}" + (f" or {DEBIAN_FASHION_MNIST_DIR}" if fashion else "")
        raise UserError(
            f"{spec.name}: files not found in {looked} (missing {missing[0]}); "
            f"fix: {spec.fix_hint.replace('<data_dir>', str(data_dir))}"
        )
    copied = sorted({o for o in origins if o is not None and o != str(raw)})
    source = str(raw) + (f" (decompressed from {', '.join(copied)})" if copied else "")
    # download=True only when files are missing and allowed; the test call then finds them.
    train = _torchvision_call(
        spec, raw, data_dir, lambda: cls(str(data_dir), train=True, download=bool(missing))
    )
    test = _torchvision_call(
        spec, raw, data_dir, lambda: cls(str(data_dir), train=False, download=False)
    )
    return (
        train.data.unsqueeze(1).to(torch.uint8).contiguous(),
        train.targets.to(torch.int64),
        test.data.unsqueeze(1).to(torch.uint8).contiguous(),
        test.targets.to(torch.int64),
        source,
    )


def load_cifar(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    """CIFAR-10 or CIFAR-100 from the official python pickles under ``data_dir``."""
    import numpy as np
    import torch
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if spec.name == "cifar10" else tvd.CIFAR100
    where = data_dir / cls.base_folder
    if not where.is_dir() and not allow_download:
        raise UserError(
            f"{spec.name}: files not found in {where}; fix: "
            + spec.fix_hint.replace("<data_dir>", str(data_dir))
        )
    out = []
    for train in (True, False):
        ds = _torchvision_call(
            spec,
            where,
            data_dir,
            lambda train=train: cls(str(data_dir), train=train, download=allow_download),
        )
        # CIFAR .data is (N, H, W, C) numpy uint8.
        out.append(torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous())
        out.append(torch.as_tensor(ds.targets, dtype=torch.int64))
    return out[0], out[1], out[2], out[3], str(where)


def load_svhn(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    """SVHN's train and test ``.mat`` files from ``<data_dir>/SVHN`` (not the 'extra' split)."""
    import numpy as np
    import torch
    import torchvision.datasets as tvd

    try:
        import scipy.io  # noqa: F401  (torchvision's SVHN reads .mat files with it)
    except ImportError as exc:
        raise UserError("svhn: reading its .mat files needs scipy; fix: pip install scipy") from exc
    where = data_dir / "SVHN"
    if not allow_download and not all((where / n).is_file() for n in _SVHN_FILES):
        raise UserError(
            f"svhn: files not found in {where} (need {' and '.join(_SVHN_FILES)}); fix: "
            + spec.fix_hint.replace("<data_dir>", str(data_dir))
        )
    out = []
    for split in ("train", "test"):
        ds = _torchvision_call(
            spec,
            where,
            data_dir,
            lambda split=split: tvd.SVHN(str(where), split=split, download=allow_download),
        )
        # SVHN .data is already (N, C, H, W) numpy uint8 with labels mapped 10 -> 0.
        out.append(torch.from_numpy(np.ascontiguousarray(ds.data)).to(torch.uint8))
        out.append(torch.as_tensor(ds.labels, dtype=torch.int64))
    return out[0], out[1], out[2], out[3], str(where)


# --- locating files for `doctor` (existence only) ---------------------------------------------


def _files_status(paths: list[Path]) -> tuple[bool, str | None, list[str]]:
    missing = [str(p) for p in paths if not p.is_file()]
    return (not missing, str(paths[0].parent) if not missing else None, missing)


def locate_mnist_like(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    """The MNIST-format files in ``root`` (decompressed or .gz), or Debian's Fashion-MNIST."""
    raw = _raw_dir(spec, root)
    places = [raw] + ([DEBIAN_FASHION_MNIST_DIR] if spec.name == "fashion-mnist" else [])
    for place in places:
        if all((place / f).is_file() or (place / f"{f}.gz").is_file() for f in MNIST_FILES):
            return True, str(place), []
    return False, None, [str(raw / f) for f in MNIST_FILES if not (raw / f).is_file()]


def locate_cifar(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    """The extracted CIFAR python pickles under ``root``."""
    folder, names = _CIFAR_FILES[spec.name]
    return _files_status([root / folder / n for n in names])


def locate_svhn(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    """SVHN's two ``.mat`` files under ``root/SVHN``."""
    return _files_status([root / "SVHN" / n for n in _SVHN_FILES])


def locate_generated(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    """Datasets generated in memory are always there."""
    return True, "generated in memory", []
