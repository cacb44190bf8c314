"""Zoo checkpoint files checked before robustbench unpickles them, downloads, and loading.

Missing, HTML (failed Google-Drive download), truncated, foreign or other-architecture files become
one-line errors; every file is read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from ..core.storage import file_sha256, safe_torch_load, sniff_checkpoint
from .config import EXPORT_FORMAT, NORMALIZATION_KEYS
from .robustbench import entry_files, import_robustbench, zoo_checkpoint_path, zoo_entry

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class StateDictMismatch:
    """How a state_dict differs from an architecture's: keys missing, unexpected, of other shape."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape)

    def describe(self) -> str:
        """One clause per kind of difference, with the first example of each."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s) e.g. {self.missing[0]}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) e.g. {self.unexpected[0]}")
        if self.shape:
            key, got, want = self.shape[0]
            parts.append(f"{len(self.shape)} of another shape e.g. {key}: {got} vs {want}")
        return "; ".join(parts)


def state_dict_mismatch(
    expected: Mapping[str, Sequence[int]],
    given: Mapping[str, Sequence[int]],
    *,
    optional: Iterable[str] = (),
) -> StateDictMismatch:
    """Compare key -> shape maps: ``expected`` (the architecture) with ``given`` (a file).

    Keys in ``optional`` may be absent from ``given``. Orders follow ``expected`` then ``given``.
    """
    skip = set(optional)
    missing = tuple(k for k in expected if k not in given and k not in skip)
    unexpected = tuple(k for k in given if k not in expected)
    shape = tuple(
        (k, tuple(given[k]), tuple(expected[k]))
        for k in expected
        if k in given and tuple(given[k]) != tuple(expected[k])
    )
    return StateDictMismatch(missing, unexpected, shape)


def tensor_state_dict(obj: Any, where: str) -> dict[str, Any]:
    """The state_dict inside a loaded zoo checkpoint, found the way robustbench.load_model does."""
    import torch

    # Andriushchenko2020Understanding and Kireev2021* files hold {'last': ..., 'best': ...}.
    if isinstance(obj, Mapping) and isinstance(obj.get("last"), Mapping):
        obj = obj["last"]
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{where} holds no state_dict (a mapping of weight tensors)")
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise UserError(f"{where} holds something other than a state_dict of weight tensors")
    from robustbench.utils import rm_substr_from_state_dict

    # Exactly robustbench's renaming (it strips 'module.' and 'model.' the same way).
    return dict(rm_substr_from_state_dict(rm_substr_from_state_dict(obj, "module."), "model."))


def meta_shapes(build: Callable[[], Any]) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of the model ``build()`` makes, built on the meta device (no memory, fast)."""
    import torch

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = build()
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: skip the check
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_zoo_file(path: Path, name: str, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """Reject a zoo checkpoint file robustbench could not load, with one line saying why.

    Sniffs (missing, empty, HTML page, truncated zip, unknown format), loads with
    ``weights_only=True`` (refusing pickled code), finds the state_dict as robustbench does and,
    for single models, compares its keys and shapes with the architecture robustbench builds for
    ``name`` (missing ``mu``/``sigma`` normalization buffers are allowed: robustbench fills them).
    Returns the boosting-tickets metadata when the file is one of our exports, else None.
    """
    what = f"RobustBench checkpoint for {name}"
    obj = safe_torch_load(path, what=what)
    state = tensor_state_dict(obj, f"{what} {path}")
    meta = obj.get("boosting_tickets") if isinstance(obj, Mapping) else None
    export = (
        dict(meta) if isinstance(meta, Mapping) and meta.get("format") == EXPORT_FORMAT else None
    )
    del obj
    if isinstance(entry.get("gdrive_id"), list):
        return export  # ensembles: each file holds one member; robustbench's own load checks them
    expected = meta_shapes(entry["model"])
    if expected is None:
        return export
    given = {k: tuple(v.shape) for k, v in state.items()}
    diff = state_dict_mismatch(expected, given, optional=NORMALIZATION_KEYS)
    if diff:
        raise UserError(
            f"{what} {path} holds weights of another architecture ({diff.describe()}); "
            f"delete it and fetch the file published for {name}"
        )
    return export


def _download(rb: ModuleType, name: str, entry: Mapping[str, Any], files: Sequence[Path]) -> None:
    """Fetch missing files with robustbench's downloader into a temp name, sniff, then rename."""
    ids = entry["gdrive_id"] if isinstance(entry["gdrive_id"], list) else [entry["gdrive_id"]]
    for gid, target in zip(ids, files, strict=True):
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.download")
        try:
            rb.utils.download_gdrive_new(gid, tmp)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            tmp.unlink(missing_ok=True)
            raise UserError(
                f"downloading {name} (Google Drive id {gid}) failed ({type(exc).__name__}); "
                f"fix: check the internet connection, or copy the file to {target}"
            ) from None
        try:
            sniff_checkpoint(tmp, f"the download of {name}")
        except UserError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"{exc}; nothing was kept: copy the file to {target} by hand") from None
        os.replace(tmp, target)


@dataclass(frozen=True)
class ZooCheckpoint:
    """A checked zoo checkpoint: its file(s) and, for our own exports, their metadata."""

    name: str
    files: tuple[Path, ...]
    export: dict[str, Any] | None

    def sha256(self) -> str:
        """SHA-256 of the file(s), joined with '+' for ensembles."""
        return "+".join(file_sha256(f) for f in self.files)


def prepare_zoo_checkpoint(
    name: str,
    model_dir: str | os.PathLike[str],
    *,
    dataset: str = "cifar10",
    threat: str = "Linf",
    allow_download: bool = False,
) -> ZooCheckpoint:
    """Make sure ``name``'s checkpoint file(s) exist and are loadable.

    Missing files are downloaded only with ``allow_download``; otherwise the error names the exact
    path expected and how to obtain it.
    """
    rb = import_robustbench()
    entry = zoo_entry(name, dataset, threat)
    import timm

    timm_name = f"{name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"
    if timm.is_model(timm_name):
        raise UserError(
            f"{name} is served by timm from the Hugging Face hub, not from --model-dir; "
            "only file-based zoo entries can be compared"
        )
    if entry.get("gdrive_id") is None:
        raise UserError(f"robustbench publishes no weights for {name}; choose another model")
    files = entry_files(zoo_checkpoint_path(model_dir, name, dataset, threat), entry)
    missing = [f for f in files if not f.exists()]
    if missing:
        if not allow_download:
            raise UserError(
                f"checkpoint for {name} not found: expected {missing[0]}; fix: pass "
                "--allow-download (allow_download=True; needs internet) or copy the published "
                "file to that path"
            )
        _download(rb, name, entry, files)
    exports = [check_zoo_file(f, name, entry) for f in files]
    return ZooCheckpoint(name, tuple(files), exports[0])


def load_zoo_model(name: str, model_dir: str | os.PathLike[str], **kw: Any) -> nn.Module:
    """Load zoo model ``name`` through ``robustbench.load_model``, in eval mode, on the CPU.

    Keyword arguments (``dataset``, ``threat``, ``allow_download``) are those of
    :func:`prepare_zoo_checkpoint`.

    The file is checked first (:func:`prepare_zoo_checkpoint`); robustbench's own exceptions are
    turned into one-line errors. The model maps (N, 3, 32, 32) images in [0, 1] to logits.
    """
    ckpt = prepare_zoo_checkpoint(name, model_dir, **kw)
    dataset, threat = kw.get("dataset", "cifar10"), kw.get("threat", "Linf")
    return robustbench_load(name, model_dir, dataset, threat, ckpt.files[0])


def robustbench_load(
    name: str, model_dir: str | os.PathLike[str], dataset: str, threat: str, shown: Path
) -> nn.Module:
    """``robustbench.load_model`` of a file already checked; any exception becomes one line."""
    rb = import_robustbench()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = rb.load_model(
                name, model_dir=str(model_dir), dataset=dataset, threat_model=threat
            )
    except Exception as exc:  # noqa: BLE001 - robustbench raises anything; users get one line
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"robustbench.load_model could not load {name} from {shown} "
            f"({type(exc).__name__}: {detail}); delete the file and fetch it again"
        ) from None
    return model.eval()
