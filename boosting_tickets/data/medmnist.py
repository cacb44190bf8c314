"""MedMNIST v2 ``.npz`` files (DermaMNIST: 7 skin-lesion classes from HAM10000, 3x28x28; split
7,007 / 1,003 / 2,005): reading with ``allow_pickle=False``, checking, and downloading.

One file ``<data_dir>/<name>.npz`` holds ``train_images``, ``train_labels``, ``val_images``,
``val_labels``, ``test_images`` and ``test_labels``: uint8 images (N, H, W, C) and integer labels
(N, 1). Every key, dtype, shape and label is checked before use; any problem is one line naming
the file. Downloads happen only with ``--download`` and take the URL and md5 from the ``medmnist``
package's own metadata (``medmnist.INFO``), so they follow that package's releases. numpy and
torch are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError

if TYPE_CHECKING:
    from .registry import DatasetSpec, Raw

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


def npz_path(spec: DatasetSpec, data_dir: Path) -> Path:
    """``<data_dir>/<file_name>`` (``dermamnist.npz``, medmnist's own name for it)."""
    return Path(data_dir) / (spec.file_name or f"{spec.name}.npz")


def locate_npz(spec: DatasetSpec, root: Path) -> tuple[bool, str | None, list[str]]:
    """Whether the npz file exists (for ``doctor``)."""
    path = npz_path(spec, root)
    return (True, str(path), []) if path.is_file() else (False, None, [str(path)])


def check_arrays(spec: DatasetSpec, arrays: Any, path: Path) -> dict[str, Any]:
    """The six arrays of a MedMNIST file, checked: keys, dtypes, shapes, label range."""
    import numpy as np

    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it is not a MedMNIST {spec.name} file")
    out = {k: arrays[k] for k in KEYS}
    shape = (spec.size, spec.size, spec.channels)
    for split in SPLITS:
        x, y = out[f"{split}_images"], out[f"{split}_labels"]
        if x.dtype != np.uint8:
            raise UserError(f"{path}: {split}_images are {x.dtype}, expected uint8")
        if x.ndim == 3 and spec.channels == 1:
            x = out[f"{split}_images"] = x[..., None]
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise UserError(
                f"{path}: {split}_images have shape {tuple(x.shape)}, expected (N, "
                f"{spec.size}, {spec.size}, {spec.channels}) for {spec.name}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{path}: {split}_labels are {y.dtype}, expected integers")
        if y.shape not in ((x.shape[0], 1), (x.shape[0],)):
            raise UserError(
                f"{path}: {split}_labels have shape {tuple(y.shape)} for {x.shape[0]} images, "
                f"expected ({x.shape[0]}, 1)"
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
            raise UserError(
                f"{path}: {split}_labels lie in {int(y.min())}..{int(y.max())}, outside "
                f"0..{spec.num_classes - 1}"
            )
    return out


def load_medmnist_npz(spec: DatasetSpec, data_dir: Path, allow_download: bool) -> Raw:
    """Train, official validation and test sets of a MedMNIST npz as uint8 (N, C, H, W) tensors
    and int64 (N,) labels; downloads the file first when it is missing and that is allowed."""
    import numpy as np
    import torch

    from ..core.storage import check_regular
    from .registry import Raw

    path = npz_path(spec, data_dir)
    if not path.is_file() and allow_download:
        download(spec, path)
    if not path.exists():
        hint = spec.fix_hint.replace("<data_dir>", str(data_dir))
        raise UserError(f"{spec.name}: {path} not found; fix: {hint}")
    check_regular(path, f"{spec.name} file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = check_arrays(spec, {k: npz[k] for k in npz.files}, path)
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise UserError(f"{path} is not a readable .npz file ({detail}); fetch it again") from None

    def images(split: str) -> Any:
        return torch.from_numpy(np.ascontiguousarray(arrays[f"{split}_images"])).permute(0, 3, 1, 2)

    def labels(split: str) -> Any:
        return torch.from_numpy(arrays[f"{split}_labels"].reshape(-1).astype(np.int64))

    return Raw(
        images("train").contiguous(), labels("train"), images("test").contiguous(),
        labels("test"), str(path), images("val").contiguous(), labels("val"),
    )  # fmt: skip


def _info(spec: DatasetSpec) -> tuple[str, str]:
    """(url, md5) of the file from the installed medmnist package's metadata."""
    try:
        import medmnist
    except ImportError:
        raise UserError(
            f"downloading {spec.name} needs the URL and md5 from the medmnist package: pip "
            f"install medmnist, or copy {spec.file_name} into the data directory"
        ) from None
    entry = getattr(medmnist, "INFO", {}).get(spec.name)
    if not isinstance(entry, dict) or "url" not in entry or "MD5" not in entry:
        raise UserError(f"the installed medmnist package has no download entry for {spec.name}")
    return str(entry["url"]), str(entry["MD5"])


def download(spec: DatasetSpec, path: Path) -> None:
    """Fetch the file to a temporary name beside ``path``, check its md5, then rename it."""
    import urllib.request

    url, md5 = _info(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise UserError(f"the download of {url} has md5 {digest.hexdigest()}, not {md5}")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"downloading {url} failed ({exc}); copy the file by hand") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
