"""RobustBench models under the boosting-tickets evaluation harness, and our models in RobustBench format.

Three jobs, one concept (the RobustBench model zoo):

* **Load and measure zoo models.** :func:`load_zoo_model` imports robustbench lazily (behind the
  ``autoattack`` -> ``pyautoattack`` alias, after checking that no other package overwrote its
  files), checks the checkpoint file ``<model_dir>/<dataset>/<threat>/<name>.pt`` *before*
  robustbench unpickles it (missing, HTML page, truncated, foreign or other-architecture files
  become one-line errors), then calls ``robustbench.load_model``. :func:`run_comparison` measures
  each model with :func:`evaluation.evaluate` under exactly the protocol our tickets are scored
  with (:func:`comparison_protocol`: PGD-20, step eps/4, random start, FGSM, BatchNorm in eval mode;
  AutoAttack standard through pyautoattack on request) and writes one results file (kind ``zoo``,
  source ``measured``, next to the published numbers as kind ``reference``, source
  ``published``).
* **Published numbers.** :func:`load_reference` reads the RobustBench leaderboard entries shipped
  as package data (``reference/robustbench_cifar10_linf.json``, each entry naming its source file).
* **Export.** :func:`export_checkpoint` writes one of our model checkpoints (a dense model, or a
  ticket: zeros where pruned) as ``<model_dir>/<dataset>/<threat>/<name>.pt`` in the format
  ``robustbench.load_model`` reads, after checking on a probe batch that robustbench's architecture
  computes the same logits.

torch and robustbench are imported inside functions so that ``boosting-tickets --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from .config import config_hash, non_default, setting
from .errors import UserError
from .storage import (
    atomic_torch_save,
    atomic_write_json,
    file_sha256,
    read_json,
    safe_torch_load,
    sniff_checkpoint,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .evaluation import EvalProtocol

#: Datasets of the RobustBench zoo that our harness can score (L∞ attacks on 3x32x32 images),
#: with their number of classes.
ZOO_DATASETS: Mapping[str, int] = MappingProxyType({"cifar10": 10, "cifar100": 100})
#: Threat models our attacks implement.
ZOO_THREATS: tuple[str, ...] = ("Linf",)
#: Where the images of a comparison come from.
EVAL_DATA: tuple[str, ...] = ("dataset", "synthetic")
REFERENCE_FILE = "reference/robustbench_cifar10_linf.json"
REFERENCE_FORMAT = "boosting-tickets/reference-leaderboard"
EXPORT_FORMAT = "boosting-tickets/robustbench-export"
COMPARE_SUITE = "robustbench-compare"
DEFAULT_RESULTS = "runs/compare/robustbench/results.json"
# Normalization buffers some zoo architectures keep in their state_dict (Wong2020FastNet,
# Rice2020OverfittingNet, ...); robustbench fills them from the constructor when a file lacks them.
NORMALIZATION_KEYS = ("mu", "sigma")
# An exported file must reproduce our logits to this relative precision (float32 summation order
# differs between adaptive and fixed average pooling).
_LOGIT_RTOL = 1e-4
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_REFERENCE_KEYS = (
    "name",
    "architecture",
    "extra_data",
    "venue",
    "eps",
    "clean_acc",
    "autoattack_acc",
    "reported_acc",
    "in_model_zoo",
    "source",
)


# --------------------------------------------------------------------------------------------
# Settings of a comparison
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareConfig:
    """Which RobustBench models to measure, on which images, and how (``compare robustbench``).

    The attack protocol is not a setting: it is always the one tickets are scored with
    (:func:`comparison_protocol`), so that every row of the resulting table is comparable.
    """

    models: tuple[str, ...] = setting(
        (),
        "RobustBench model names, comma separated (see 'boosting-tickets compare list')",
        hashed=False,
    )
    model_dir: str = setting(
        "models", "directory holding <dataset>/<threat>/<name>.pt checkpoints", hashed=False
    )
    dataset: str = setting("cifar10", "RobustBench dataset", choices=tuple(ZOO_DATASETS))
    threat: str = setting("Linf", "RobustBench threat model", choices=ZOO_THREATS)
    n_examples: int | None = setting(
        None, "evaluate this many test images (stratified, deterministic); none = all", low=1
    )
    data_dir: str = setting("data", "directory holding the dataset files", hashed=False)
    download: bool = setting(
        False, "download missing dataset files (needs internet; never done silently)", hashed=False
    )
    eval_data: str = setting(
        "dataset",
        "images to measure on: 'dataset' (the real test set of --dataset) or 'synthetic' "
        "(generated images of the same shape: a smoke test, not a robustness number)",
        choices=EVAL_DATA,
    )
    autoattack: bool = setting(False, "also run AutoAttack (standard, pyautoattack); slow")
    allow_download: bool = setting(
        False, "download missing checkpoints from RobustBench (needs internet)", hashed=False
    )
    batch_size: int = setting(200, "evaluation batch size", low=1, hashed=False)
    device: str = setting("auto", "torch device: auto, cpu, cuda, cuda:N", hashed=False)
    progress: bool = setting(True, "show progress bars", hashed=False)

    def validate(self) -> None:
        if not self.models:
            raise UserError(
                "no models given; pass --models NAME[,NAME...] "
                "(names as in 'boosting-tickets compare list', e.g. Wong2020Fast)"
            )
        for name in self.models:
            check_model_name(name)
        dupes = sorted({m for m in self.models if self.models.count(m) > 1})
        if dupes:
            raise UserError(f"--models names {', '.join(dupes)} more than once; list each once")


def check_model_name(name: str) -> str:
    """Return ``name`` if it can name a checkpoint file (letters, digits, ``_ . -``)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UserError(
            f"bad model name {name!r}: use letters, digits, '_', '.' and '-' only "
            "(a RobustBench name such as Wong2020Fast)"
        )
    return name


def comparison_protocol(dataset: str, *, autoattack: bool = False) -> EvalProtocol:
    """The protocol tickets are scored with, for ``dataset``: the test protocol of a default run.

    That is :func:`training.eval_protocol` of a default :class:`hparams.RunConfig` on ``dataset``:
    L∞ eps 8/255 on CIFAR, PGD-20 with step eps/4 and one random start, FGSM, BatchNorm in eval
    mode, seed 0 (Madry et al. 2018; the boosting-tickets paper's evaluation) -- plus AutoAttack
    standard (Croce & Hein 2020) when ``autoattack``.
    """
    from .hparams import DataConfig, RunConfig
    from .training import eval_protocol

    base = eval_protocol(RunConfig(data=DataConfig(dataset=dataset)))
    return dataclasses.replace(base, autoattack=autoattack)


# --------------------------------------------------------------------------------------------
# Importing robustbench
# --------------------------------------------------------------------------------------------


def check_robustbench_integrity() -> None:
    """Raise a one-line UserError when robustbench is absent or another package changed its files.

    torchattacks 3.5.1 ships a stale top-level ``robustbench``: installed after robustbench it
    overwrites robustbench's files, uninstalled it deletes some. Uses
    :func:`environment.package_integrity` (the RECORD hashes), imports nothing.
    """
    from .environment import package_integrity

    info = package_integrity("robustbench")
    if not info["installed"]:
        raise UserError(
            "robustbench is not installed; install the zoo extra: pip install -e '.[zoo]' "
            "(or run 'make setup')"
        )
    changed = list(info["modified"]) + list(info["missing"])
    if changed:
        raise UserError(
            f"robustbench {info['version']} files were changed by another package "
            f"({len(info['modified'])} modified, {len(info['missing'])} missing, e.g. {changed[0]}); "
            f"fix: {info['fix']}"
        )


def import_robustbench() -> ModuleType:
    """Check robustbench's files, alias ``autoattack`` to pyautoattack, import robustbench.

    robustbench 1.1.1 does ``from autoattack import AutoAttack`` but its dependency installs the
    module ``pyautoattack``; the alias is set only when no real ``autoattack`` is installed.
    It also imports ``pkg_resources`` (setuptools < 81).
    """
    check_robustbench_integrity()
    with warnings.catch_warnings():
        # robustbench's imports warn about pkg_resources and torch.jit; none of it concerns users.
        warnings.simplefilter("ignore")
        if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
            try:
                sys.modules["autoattack"] = importlib.import_module("pyautoattack")
            except ImportError:
                raise UserError(
                    "robustbench needs AutoAttack, installed as the pyautoattack package; "
                    "fix: pip install pyautoattack"
                ) from None
        try:
            robustbench = importlib.import_module("robustbench")
            importlib.import_module("robustbench.utils")
            importlib.import_module("robustbench.model_zoo")
        except Exception as exc:  # noqa: BLE001 - a damaged install fails in many ways
            if isinstance(exc, ImportError) and "pkg_resources" in str(exc):
                raise UserError(
                    "robustbench imports pkg_resources, which setuptools 81 removed; "
                    "fix: pip install 'setuptools>=77,<81'"
                ) from None
            detail = " ".join(str(exc).split())[:200]
            raise UserError(
                f"robustbench cannot be imported ({type(exc).__name__}: {detail}); "
                "fix: pip install --force-reinstall --no-deps robustbench==1.1.1"
            ) from None
    return robustbench


def zoo_models(dataset: str = "cifar10", threat: str = "Linf") -> Mapping[str, Any]:
    """robustbench's registry for ``dataset``/``threat``: zoo name -> entry (constructor, ids)."""
    check_zoo_target(dataset, threat)
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]


def check_zoo_target(dataset: str, threat: str) -> None:
    """Raise UserError unless ``dataset``/``threat`` is a zoo section our harness can score."""
    if dataset not in ZOO_DATASETS:
        raise UserError(
            f"unknown RobustBench dataset '{dataset}'; choose one of: {', '.join(ZOO_DATASETS)}"
        )
    if threat not in ZOO_THREATS:
        raise UserError(
            f"threat model '{threat}' is not supported (our attacks are L-infinity); use Linf"
        )


def zoo_entry(name: str, dataset: str = "cifar10", threat: str = "Linf") -> Mapping[str, Any]:
    """robustbench's entry for ``name``; unknown names raise UserError with close matches."""
    check_model_name(name)
    models = zoo_models(dataset, threat)
    if name not in models:
        close = difflib.get_close_matches(name, [str(k) for k in models], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"'{name}' is not in robustbench's {dataset}/{threat} model zoo{hint} "
            "(see 'boosting-tickets compare list')"
        )
    entry = models[name]
    if not isinstance(entry, Mapping) or "model" not in entry:
        raise UserError(f"robustbench's zoo entry for '{name}' is incomplete; choose another model")
    return entry


def zoo_checkpoint_path(
    model_dir: str | os.PathLike[str], name: str, dataset: str = "cifar10", threat: str = "Linf"
) -> Path:
    """``<model_dir>/<dataset>/<threat>/<name>.pt``: where ``robustbench.load_model`` looks."""
    return Path(model_dir) / dataset / threat / f"{check_model_name(name)}.pt"


def _entry_files(path: Path, entry: Mapping[str, Any]) -> list[Path]:
    # Ensembles (a list of Google-Drive ids) are stored as <name>.pt_m0.pt, <name>.pt_m1.pt, ...
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return [Path(f"{path}_m{i}.pt") for i in range(len(ids))]
    return [path]


# --------------------------------------------------------------------------------------------
# Checking checkpoint files before robustbench unpickles them
# --------------------------------------------------------------------------------------------


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


def _tensor_state_dict(obj: Any, where: str) -> dict[str, Any]:
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


def _meta_shapes(build: Callable[[], Any]) -> dict[str, tuple[int, ...]] | None:
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
    state = _tensor_state_dict(obj, f"{what} {path}")
    meta = obj.get("boosting_tickets") if isinstance(obj, Mapping) else None
    export = (
        dict(meta) if isinstance(meta, Mapping) and meta.get("format") == EXPORT_FORMAT else None
    )
    del obj
    if isinstance(entry.get("gdrive_id"), list):
        return export  # ensembles: each file holds one member; robustbench's own load checks them
    expected = _meta_shapes(entry["model"])
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
    files = _entry_files(zoo_checkpoint_path(model_dir, name, dataset, threat), entry)
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


def load_zoo_model(
    name: str,
    model_dir: str | os.PathLike[str],
    *,
    dataset: str = "cifar10",
    threat: str = "Linf",
    allow_download: bool = False,
) -> nn.Module:
    """Load zoo model ``name`` through ``robustbench.load_model``, in eval mode, on the CPU.

    The file is checked first (:func:`prepare_zoo_checkpoint`); robustbench's own exceptions are
    turned into one-line errors. The model maps (N, 3, 32, 32) images in [0, 1] to logits.
    """
    ckpt = prepare_zoo_checkpoint(
        name, model_dir, dataset=dataset, threat=threat, allow_download=allow_download
    )
    return _robustbench_load(name, model_dir, dataset, threat, ckpt.files[0])


def _robustbench_load(
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


# --------------------------------------------------------------------------------------------
# Published numbers
# --------------------------------------------------------------------------------------------


def load_reference() -> dict[str, Any]:
    """The shipped RobustBench leaderboard entries (percentages), checked for sane values."""
    from importlib import resources

    try:
        text = resources.files("boosting_tickets").joinpath(REFERENCE_FILE).read_text("utf-8")
        doc = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"the packaged reference table {REFERENCE_FILE} is unreadable ({exc}); reinstall "
            "boosting-tickets"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != REFERENCE_FORMAT:
        raise UserError(f"{REFERENCE_FILE} is not a reference table; reinstall boosting-tickets")
    for i, entry in enumerate(doc.get("entries", [])):
        missing = [k for k in _REFERENCE_KEYS if k not in entry]
        if missing:
            raise UserError(f"{REFERENCE_FILE} entry {i} lacks {', '.join(missing)}")
        for k in ("clean_acc", "autoattack_acc", "reported_acc"):
            v = entry[k]
            if v is not None and not (isinstance(v, int | float) and 0 <= v <= 100):
                raise UserError(f"{REFERENCE_FILE} entry {entry['name']} has {k}={v!r}")
    return doc


def reference_entries(dataset: str = "cifar10", threat: str = "Linf") -> dict[str, dict[str, Any]]:
    """Name -> published entry, for the leaderboard of ``dataset``/``threat`` (else empty)."""
    doc = load_reference()
    if (doc["dataset"], doc["threat_model"]) != (dataset, threat):
        return {}  # zoo names repeat across datasets ('Standard'): never attach the wrong numbers
    return {e["name"]: e for e in doc["entries"]}


def reference_table() -> str:
    """The leaderboard entries as a Markdown table (percentages), with the source below."""
    from .reporting import fmt_cell, markdown_table

    doc = load_reference()
    rows = [
        [
            e["name"],
            e["architecture"],
            "yes" if e["extra_data"] else "no",
            e["venue"],
            e["eps"],
            fmt_cell(e["clean_acc"]),
            fmt_cell(e["autoattack_acc"]),
            fmt_cell(e["reported_acc"]),
            "yes" if e["in_model_zoo"] else "no",
        ]
        for e in doc["entries"]
    ]
    headers = [
        "name",
        "architecture",
        "extra data",
        "venue",
        "eps",
        "clean %",
        "AutoAttack %",
        "reported %",
        "in zoo",
    ]
    table = markdown_table(headers, rows)
    return (
        f"{doc['title']} (published, not measured here)\n{table}\n"
        f"evaluation: {doc['evaluation']}\nsource: {doc['source']}"
    )


# --------------------------------------------------------------------------------------------
# Measuring zoo models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EvalData:
    """The images a comparison measures on, and what to call them in every row.

    ``images``: (N, C, H, W) uint8 or float in [0, 1]; ``labels``: (N,) int64; ``dataset``: the
    name recorded in rows (``cifar10``, or ``synthetic`` for generated images); ``description``:
    one human sentence.
    """

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str
    description: str
    num_classes: int

    def sha256(self) -> str:
        """Digest of the pixels and labels: rows measured on other images never mix."""
        h = hashlib.sha256()
        h.update(self.images.contiguous().cpu().numpy().tobytes())
        h.update(self.labels.contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        """What is written next to every number measured on these images."""
        return {
            "dataset": self.dataset,
            "description": self.description,
            "n": int(self.labels.shape[0]),
            "image_shape": list(self.images.shape[1:]),
            "sha256": self.sha256(),
        }


def load_eval_data(cfg: CompareConfig) -> EvalData:
    """The test images of ``cfg.dataset`` (or synthetic ones of the same shape) for a comparison.

    Real data goes through :func:`data.load_splits` (its one-line error when files are missing);
    ``n_examples`` takes a stratified, deterministic subset. Synthetic data: ``n_examples``
    (default 500) generated 3x32x32 images, only to check the pipeline end to end.
    """
    from .data import load_splits, synthetic_spec

    classes = ZOO_DATASETS[cfg.dataset]
    if cfg.eval_data == "synthetic":
        n = cfg.n_examples or 500
        spec = synthetic_spec(channels=3, size=32, num_classes=classes, test_size=n)
        splits = load_splits(spec, cfg.data_dir)
        desc = (
            f"{n} synthetic 3x32x32 images ({classes} classes), generated: a pipeline check, "
            f"not {cfg.dataset}"
        )
        name = "synthetic"
    else:
        splits = load_splits(
            cfg.dataset, cfg.data_dir, test_subset=cfg.n_examples, allow_download=cfg.download
        )
        n = len(splits.test)
        subset = "the whole test set" if cfg.n_examples is None else "a stratified subset"
        desc = f"{cfg.dataset} test set, {n} images ({subset}, test_seed 0) from {splits.source}"
        name = cfg.dataset
    return EvalData(splits.test.images, splits.test.labels, name, desc, classes)


def measure_model(
    model: nn.Module,
    data: EvalData,
    protocol: EvalProtocol,
    *,
    batch_size: int = 200,
    device: Any = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, Any]:
    """:func:`evaluation.evaluate` of ``model`` on ``data`` plus parameter counts and wall time.

    Returns the evaluation dict (``clean_acc``, ``fgsm_acc``, ``pgd_acc``, optionally
    ``autoattack_acc``, fractions in [0, 1]; ``per_class``; ``protocol``; ``flags``) with
    ``params`` / ``nonzero_params`` (over ``model.parameters()``) and ``eval_seconds``.
    """
    from .evaluation import evaluate
    from .models import count_parameters

    params, nonzero = count_parameters(model)
    t0 = time.perf_counter()
    result = evaluate(
        model,
        data.images,
        data.labels,
        protocol,
        batch_size=batch_size,
        num_classes=data.num_classes,
        per_class=True,
        device=device,
        progress=progress,
        desc=desc,
    )
    result.update(params=params, nonzero_params=nonzero, eval_seconds=time.perf_counter() - t0)
    return result


def measured_row(name: str, rec: Mapping[str, Any], published: Mapping | None) -> dict[str, Any]:
    """A results row (kind zoo, source measured) from one model's cached evaluation record."""
    res = rec["result"]
    if published:
        arch = published["architecture"]
    elif rec.get("export"):
        arch = rec["export"]["arch"]["model"]
    else:
        arch = rec["architecture"]
    row = {
        "arm": f"zoo:{name}",
        "kind": "zoo",
        "source": "measured",
        "seed": None,
        "dataset": rec["data"]["dataset"],
        "model": arch,
        "params": res["params"],
        "nonzero_params": res["nonzero_params"],
        "clean_acc": res["clean_acc"],
        "fgsm_acc": res["fgsm_acc"],
        "pgd_acc": res["pgd_acc"],
        "n": res["n"],
        "label": name,
        "note": f"measured here with the tickets' protocol on {rec['data']['description']}"
        + (
            f"; the file is a boosting-tickets export of {rec['export']['source_checkpoint']}, "
            "not the published weights"
            if rec.get("export")
            else ""
        ),
        "architecture_class": rec["architecture"],
        "export_of": rec["export"]["source_checkpoint"] if rec.get("export") else None,
        "checkpoint_sha256": rec["checkpoint_sha256"],
        "flags": res.get("flags", []),
        "eval_seconds": res.get("eval_seconds"),
    }
    if "autoattack_acc" in res:
        row["autoattack_acc"] = res["autoattack_acc"]
    return row


def published_row(entry: Mapping[str, Any], params: int | None) -> dict[str, Any]:
    """A results row (kind reference, source published) from a leaderboard entry (percent)."""

    def frac(v: float | None) -> float | None:
        return None if v is None else round(v / 100.0, 6)

    return {
        "arm": f"published:{entry['name']}",
        "kind": "reference",
        "source": "published",
        "seed": None,
        "dataset": "cifar10",
        "model": entry["architecture"],
        "params": params,
        "nonzero_params": None,
        "clean_acc": frac(entry["clean_acc"]),
        "fgsm_acc": None,
        "pgd_acc": None,
        "autoattack_acc": frac(entry["autoattack_acc"]),
        "reported_acc": frac(entry["reported_acc"]),
        "n": 10000,
        "label": entry["name"],
        "note": (
            f"published by RobustBench (AutoAttack standard, full CIFAR-10 test set, eps "
            f"{entry['eps']}), not measured here; source {entry['source']}"
        ),
        "extra_data": entry["extra_data"],
        "venue": entry["venue"],
    }


@dataclass(frozen=True)
class Comparison:
    """What :func:`run_comparison` produced: the results file, its rows, and what was done."""

    path: Path
    rows: list[dict[str, Any]]
    protocol: dict[str, Any]
    evaluated: tuple[str, ...]
    reused: tuple[str, ...]
    written: bool


def _existing_results(path: Path, settings_hash: str, data_sha: str) -> dict[str, Any] | None:
    from .results import read_results

    if not path.exists():
        return None
    doc = read_results(path)
    if doc.get("suite") != COMPARE_SUITE:
        raise UserError(f"{path} holds results of suite '{doc.get('suite')}'; choose another --out")
    if doc.get("settings_hash") != settings_hash or doc.get("data", {}).get("sha256") != data_sha:
        raise UserError(
            f"{path} holds a comparison under other settings or images (settings "
            f"{doc.get('settings_hash')}, now {settings_hash}); choose another --out"
        )
    return doc


def merge_rows(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Rows of ``old`` whose model (``label``) is not in ``new``, then ``new``, in order."""
    fresh = {r["label"] for r in new}
    return [dict(r) for r in old if r.get("label") not in fresh] + [dict(r) for r in new]


def run_comparison(
    cfg: CompareConfig,
    results_path: str | os.PathLike[str] = DEFAULT_RESULTS,
    *,
    data: EvalData | None = None,
    log: Callable[[str], None] | None = None,
) -> Comparison:
    """Measure every model of ``cfg.models`` under :func:`comparison_protocol`; write the results.

    All checkpoints are checked before any work. Each model's evaluation is cached in
    ``<results dir>/evals/<name>-<hash>.json`` (hash of the settings, the checkpoint's and the
    images' SHA-256), so an interrupted comparison resumes and a repeated one does no work. The
    results file keeps rows of models compared earlier under the same settings, adds a published
    row next to every measured one, and is rewritten only when its rows change. ``data`` replaces
    :func:`load_eval_data` (tests, or images prepared elsewhere).
    """
    from tqdm import tqdm

    from .environment import environment_info, resolve_device
    from .results import write_results

    say = log or (lambda msg: None)
    cfg.validate()
    path = Path(results_path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; --out must name a results .json file")
    protocol = comparison_protocol(cfg.dataset, autoattack=cfg.autoattack)
    device = resolve_device(cfg.device)
    checked = {
        name: prepare_zoo_checkpoint(
            name,
            cfg.model_dir,
            dataset=cfg.dataset,
            threat=cfg.threat,
            allow_download=cfg.allow_download,
        )
        for name in cfg.models
    }
    data = data if data is not None else load_eval_data(cfg)
    data_record = data.record()
    settings_hash = config_hash(cfg)
    existing = _existing_results(path, settings_hash, data_record["sha256"])
    published = reference_entries(cfg.dataset, cfg.threat)
    evaluated, reused, rows = [], [], []
    for name in tqdm(cfg.models, desc="zoo models", disable=None if cfg.progress else True):
        ckpt = checked[name]
        sha = ckpt.sha256()
        key = config_hash(cfg, {"model": name, "checkpoint": sha, "data": data_record["sha256"]})
        cache = path.parent / "evals" / f"{name}-{key}.json"
        if cache.exists():
            rec = read_json(cache, what="cached evaluation")
            reused.append(name)
            say(f"{name}: measured before, reusing {cache}")
        else:
            # Checked above (prepare_zoo_checkpoint); robustbench now loads it.
            model = _robustbench_load(name, cfg.model_dir, cfg.dataset, cfg.threat, ckpt.files[0])
            model.to(device)
            say(f"{name}: measuring on {data.description}")
            res = measure_model(
                model,
                data,
                protocol,
                batch_size=cfg.batch_size,
                device=device,
                progress=cfg.progress,
                desc=name,
            )
            rec = {
                "model": name,
                "architecture": type(model).__name__,
                "checkpoint": [str(f) for f in ckpt.files],
                "checkpoint_sha256": sha,
                "export": ckpt.export,
                "data": data_record,
                "result": res,
                "environment": environment_info(device),
            }
            atomic_write_json(cache, rec, checksum=True)
            evaluated.append(name)
            del model
        # Our own export saved under a zoo name is not the published model: no published row.
        ref = None if rec.get("export") else published.get(name)
        rows.append(measured_row(name, rec, ref))
        if ref is not None:
            rows.append(published_row(ref, rec["result"]["params"]))
    record = {**protocol.record(data_record["n"]), "data": data_record}
    all_rows = merge_rows(existing["rows"] if existing else [], rows)
    unchanged = existing is not None and _comparable(existing["rows"]) == _comparable(all_rows)
    if not unchanged:
        write_results(
            path,
            suite=COMPARE_SUITE,
            protocol=record,
            rows=all_rows,
            environment=environment_info(device),
            settings_hash=settings_hash,
            settings=non_default(cfg),
            data=data_record,
            reference_source=load_reference()["source"],
        )
    return Comparison(path, all_rows, record, tuple(evaluated), tuple(reused), not unchanged)


def _comparable(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), sort_keys=True, default=str)


def comparison_table(rows: Sequence[Mapping[str, Any]], pgd_steps: int = 20) -> str:
    """Measured and published rows side by side (percentages), one line per row."""
    from .reporting import fmt_cell, markdown_table

    body = [
        [
            r["label"],
            r["source"] + (" (our export)" if r.get("export_of") else ""),
            r["dataset"],
            r.get("n", "–"),
            fmt_cell(r["clean_acc"], pct=True),
            fmt_cell(r["fgsm_acc"], pct=True),
            fmt_cell(r["pgd_acc"], pct=True),
            fmt_cell(r.get("autoattack_acc"), pct=True),
            fmt_cell(r["params"]),
            fmt_cell(r["nonzero_params"]),
        ]
        for r in rows
    ]
    headers = [
        "model",
        "source",
        "data",
        "n",
        "clean %",
        "FGSM %",
        f"PGD-{pgd_steps} %",
        "AutoAttack %",
        "params",
        "nonzero",
    ]
    return markdown_table(headers, body)


# --------------------------------------------------------------------------------------------
# Exporting our models in RobustBench format
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote and how it was checked."""

    path: Path
    target: str
    zoo_name: bool
    max_logit_diff: float
    normalization_in_target: bool
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    params: int
    nonzero_params: int
    notes: tuple[str, ...]


def _plain_architecture(arch: Mapping[str, Any]) -> tuple[str, Callable[[], Any]]:
    """robustbench's plain architecture with our model's state_dict keys (no normalization)."""
    from robustbench.model_zoo.architectures.resnet import PreActBlock, PreActResNet
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    name, classes = arch["model"], int(arch["num_classes"])
    m = re.match(r"^wrn-(\d+)-(\d+)$", name)
    if m:
        depth, widen = int(m.group(1)), int(m.group(2))
        drop = float(arch.get("dropout") or 0.0)
        desc = (
            f"robustbench WideResNet(depth={depth}, num_classes={classes}, widen_factor={widen}, "
            "sub_block1=False, bias_last=True)"
        )
        return desc, lambda: WideResNet(
            depth=depth, num_classes=classes, widen_factor=widen, sub_block1=False, dropRate=drop
        )
    if name == "preact-resnet18":
        desc = f"robustbench PreActResNet(PreActBlock, [2, 2, 2, 2], num_classes={classes})"
        return desc, lambda: PreActResNet(PreActBlock, [2, 2, 2, 2], num_classes=classes)
    raise UserError(
        f"robustbench has no architecture matching our {name}; export works for wrn-D-K and "
        "preact-resnet18 models"
    )


def _export_state_dict(
    ours: Mapping[str, torch.Tensor], target: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], StateDictMismatch, bool, bool]:
    """Our tensors under the target's keys; returns (state_dict, mismatch, has_norm, sub_block1).

    Keys the target has and we lack: ``mu``/``sigma`` (filled later with our normalization) and
    ``sub_block1.*`` (TRADES-style WideResNets carry a second first block that their forward pass
    never uses; it gets a copy of ``block1``). Anything else is a mismatch.
    """
    given = {k: tuple(v.shape) for k, v in ours.items()}
    out: dict[str, torch.Tensor] = {}
    filled: dict[str, tuple[int, ...]] = {}
    sub_block = False
    for k in target:
        if k in ours:
            out[k] = ours[k].detach().cpu().clone()
        elif k.startswith("sub_block1.") and ("block1." + k[len("sub_block1.") :]) in ours:
            src = ours["block1." + k[len("sub_block1.") :]]
            out[k] = src.detach().cpu().clone()
            filled[k] = tuple(src.shape)
            sub_block = True
    has_norm = all(k in target for k in NORMALIZATION_KEYS)
    diff = state_dict_mismatch(
        target, {**given, **filled}, optional=NORMALIZATION_KEYS if has_norm else ()
    )
    return out, diff, has_norm, sub_block


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    name: str,
    *,
    dataset: str = "cifar10",
    threat: str = "Linf",
    overwrite: bool = False,
) -> ExportResult:
    """Write our model checkpoint as ``<model_dir>/<dataset>/<threat>/<name>.pt`` for RobustBench.

    ``checkpoint`` is a boosting-tickets model checkpoint (``best.pt``, ``final.pt`` ...; a run or
    ticket directory means its ``best.pt``); a ticket exports dense, with zeros where pruned.
    If ``name`` is a zoo name (e.g. ``Wong2020Fast`` for a preact-resnet18), the file is made
    for that entry's architecture and ``robustbench.load_model(name, model_dir)`` loads it; any
    other name targets robustbench's plain WideResNet / PreActResNet, which load the file's
    ``state_dict`` with ``strict=True``. Our normalization (a non-persistent buffer) goes into the
    target's ``mu``/``sigma`` buffers when it has them; otherwise a normalizing model is refused
    for zoo names (load_model would feed it raw pixels) and, for other names, its mean/std are
    recorded in the file for the user to apply. The file is written to a staging directory,
    loaded back the way users will load it (``robustbench.load_model`` for zoo names) and moved
    into place only if it reproduces our logits on a fixed probe batch; nothing is replaced
    otherwise. Shapes: (N, 3, 32, 32) images in [0, 1] -> (N, classes) logits.
    """
    import torch

    from .checkpoints import load_model
    from .environment import package_versions
    from .models import Normalize, count_parameters

    check_zoo_target(dataset, threat)
    out = zoo_checkpoint_path(model_dir, name, dataset, threat)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it or choose another --name")
    src = Path(checkpoint)
    if src.is_dir():
        src = src / "best.pt"
    model, ckpt = load_model(src)
    model.eval()
    arch = ckpt["arch"]
    classes = ZOO_DATASETS[dataset]
    if int(arch["in_channels"]) != 3 or int(arch["num_classes"]) != classes:
        raise UserError(
            f"{src} is a {arch['in_channels']}-channel, {arch['num_classes']}-class model; "
            f"RobustBench {dataset} models take 3-channel 32x32 images and give {classes} logits"
        )
    zoo = name in zoo_models(dataset, threat)
    if zoo:
        entry = zoo_entry(name, dataset, threat)
        if isinstance(entry.get("gdrive_id"), list):
            raise UserError(f"{name} is an ensemble in robustbench's zoo; export under a new name")
        target_desc, build = f"robustbench's {dataset}/{threat} zoo entry {name}", entry["model"]
    else:
        target_desc, build = _plain_architecture(arch)
    shapes = _meta_shapes(build)
    if shapes is None:
        raise UserError(f"cannot build the architecture of {target_desc}; choose another --name")
    state, diff, has_norm, sub_block = _export_state_dict(model.state_dict(), shapes)
    if diff:
        raise UserError(
            f"{src} ({arch['model']}) does not match the architecture of {target_desc} "
            f"({diff.describe()}); use a zoo name with the same architecture or a new --name"
        )
    norm: Normalize = model.normalize
    # float32 buffers printed as float64 show noise (0.4914000034...): report 6 digits.
    mean = tuple(round(float(v), 6) for v in norm.mean.flatten().tolist())
    std = tuple(round(float(v), 6) for v in norm.std.flatten().tolist())
    normalizes = not norm.is_identity
    notes: list[str] = []
    if has_norm:
        shape = shapes[NORMALIZATION_KEYS[0]]
        for key, buf in zip(NORMALIZATION_KEYS, (norm.mean, norm.std), strict=True):
            state[key] = buf.detach().cpu().reshape(1, -1, 1, 1).expand(shape).clone()
    elif normalizes and zoo:
        raise UserError(
            f"{src} normalizes its inputs inside the model (mean {list(mean)}, std {list(std)}) "
            f"but the architecture of {target_desc} does not, so load_model would feed it raw "
            "pixels; train with --no-normalize, or export under a new --name (the file then "
            "records mean/std)"
        )
    elif normalizes:
        notes.append(
            f"the model normalizes inputs (mean {list(mean)}, std {list(std)}) and robustbench's "
            "architecture does not: wrap it as nn.Sequential(normalize, model) -- mean/std are "
            "recorded in the file under boosting_tickets.input_normalization"
        )
    if sub_block:
        notes.append("sub_block1.* holds a copy of block1 (the architecture never uses it)")

    if arch.get("dataset") not in (None, dataset):
        notes.append(f"trained on {arch.get('dataset')}, exported under {dataset}")
    params, nonzero = count_parameters(model)
    meta = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "source_checkpoint": str(src),
        "source_sha256": file_sha256(src),
        "arch": dict(arch),
        "trained_on": arch.get("dataset"),
        "target": target_desc,
        "zoo_name": zoo,
        "input_normalization": {
            "mean": list(mean),
            "std": list(std),
            "identity": not normalizes,
            "applied_by_architecture": has_norm or not normalizes,
        },
        "params": params,
        "nonzero_params": nonzero,
        "verified": ("robustbench.load_model" if zoo else "strict load into " + target_desc)
        + f" reproduces the source's logits within {_LOGIT_RTOL:g} (relative) on a probe batch",
        "notes": notes,
        "packages": package_versions(),
    }
    # robustbench reads checkpoint['last'] for these entries (see its utils.load_model).
    reads_last = zoo and (
        "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding"
    )
    weights = {"last": {"state_dict": state}} if reads_last else {"state_dict": state}
    probe = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(probe)
    # Write into a staging model dir beside the target, load it back the way users will, and only
    # then move it into place: a file that fails the check never replaces anything.
    root = Path(model_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    except OSError as exc:
        raise UserError(f"cannot write into --model-dir {root}: {exc.strerror}") from None
    try:
        staged = zoo_checkpoint_path(staging, name, dataset, threat)
        atomic_torch_save({**weights, "boosting_tickets": meta}, staged)
        if zoo:
            loaded = _robustbench_load(name, staging, dataset, threat, staged)
        else:
            loaded = build()
            back = _tensor_state_dict(safe_torch_load(staged, what="exported file"), str(staged))
            try:
                loaded.load_state_dict(back, strict=True)
            except RuntimeError as exc:
                first = " ".join(str(exc).split())[:200]
                raise UserError(f"{target_desc} refused the exported weights ({first})") from None
            loaded.eval()
        with torch.no_grad():
            got = loaded(probe if has_norm or not normalizes else norm(probe))
        max_diff = float((want - got).abs().max())
        if not max_diff <= _LOGIT_RTOL * max(1.0, float(want.abs().max())):
            raise UserError(
                f"{target_desc} computes other logits than {src} on a probe batch (max "
                f"difference {max_diff:.3g}; its forward pass differs from ours); nothing was "
                "written"
            )
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, out)
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(
        out,
        target_desc,
        zoo,
        max_diff,
        has_norm,
        mean if normalizes or has_norm else None,
        std if normalizes or has_norm else None,
        params,
        nonzero,
        tuple(notes),
    )
