"""Our models in RobustBench format: a checkpoint ``robustbench.load_model`` reads, checked logit for
logit before it replaces anything.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from ..core.paths import RunPaths, TicketPaths
from ..core.storage import atomic_torch_save, atomic_write_json, file_sha256, safe_torch_load
from .checkpoints import (
    StateDictMismatch,
    meta_shapes,
    robustbench_load,
    state_dict_mismatch,
    tensor_state_dict,
)
from .config import EXPORT_FORMAT, NORMALIZATION_KEYS, ZOO_DATASETS, check_model_name
from .robustbench import check_zoo_target, zoo_checkpoint_path, zoo_entry, zoo_models

if TYPE_CHECKING:
    import torch

# An exported file must reproduce our logits to this relative precision (float32 summation order
# differs between adaptive and fixed average pooling).
_LOGIT_RTOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote and how it was checked."""

    path: Path
    target: str
    zoo_name: bool
    max_logit_diff: float
    max_logit: float
    normalization_in_target: bool
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    params: int
    nonzero_params: int
    notes: tuple[str, ...]
    model_info: Path | None = None


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


@dataclass
class _Export:
    """An export in progress: the source model and the target architecture's state."""

    src: Path
    model: Any
    arch: Mapping[str, Any]
    name: str
    dataset: str
    threat: str
    zoo: bool = False
    target: str = ""
    build: Callable[[], Any] | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    has_norm: bool = False
    sub_block: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def normalizer(self) -> Any:
        return self.model.normalize

    @property
    def normalizes(self) -> bool:
        return not self.normalizer.is_identity

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The model's mean/std (float32 buffers printed as float64 show noise: 6 digits)."""
        norm = self.normalizer
        mean = tuple(round(float(v), 6) for v in norm.mean.flatten().tolist())
        return mean, tuple(round(float(v), 6) for v in norm.std.flatten().tolist())


def _untrained_ticket(ticket_dir: Path, rewind: Path | None = None) -> str:
    """Why a ticket itself is not exported, and the commands that make a model that is."""
    what = (
        f"{rewind} is a ticket's rewind point: untrained, and not masked"
        if rewind is not None
        else f"{ticket_dir} is a ticket: a mask and an untrained rewind point, no trained model"
    )
    return (
        f"{what}; retrain it first (`boosting-tickets train --ticket {ticket_dir}`, which prints "
        "its run directory) and export that run directory, whose best.pt is the masked, "
        "trained ticket"
    )


def _source(checkpoint: str | os.PathLike[str], name: str, dataset: str, threat: str) -> _Export:
    """Our model (a run directory means its best.pt), checked against the dataset; a ticket
    itself is refused (:func:`_untrained_ticket`)."""
    from ..models.checkpoints import load_model

    src = Path(checkpoint)
    if src.is_dir() and TicketPaths(src).meta.is_file():
        raise UserError(_untrained_ticket(src))
    if src.is_dir():
        src = RunPaths(src).best
    model, ckpt = load_model(src)
    if ckpt.get("kind") == "rewind":
        raise UserError(_untrained_ticket(src.parent, src))
    model.eval()
    arch = ckpt["arch"]
    classes = ZOO_DATASETS[dataset]
    if int(arch["in_channels"]) != 3 or int(arch["num_classes"]) != classes:
        raise UserError(
            f"{src} is a {arch['in_channels']}-channel, {arch['num_classes']}-class model; "
            f"RobustBench {dataset} models take 3-channel 32x32 images and give {classes} logits"
        )
    return _Export(src, model, arch, name, dataset, threat)


def _match_target(exp: _Export) -> None:
    """The target architecture (a zoo entry's, or robustbench's plain one) and our tensors under
    its keys; a mismatch is a one-line error."""
    exp.zoo = exp.name in zoo_models(exp.dataset, exp.threat)
    if exp.zoo:
        entry = zoo_entry(exp.name, exp.dataset, exp.threat)
        if isinstance(entry.get("gdrive_id"), list):
            raise UserError(
                f"{exp.name} is an ensemble in robustbench's zoo; export under a new name"
            )
        exp.target = f"robustbench's {exp.dataset}/{exp.threat} zoo entry {exp.name}"
        exp.build = entry["model"]
    else:
        exp.target, exp.build = _plain_architecture(exp.arch)
    shapes = meta_shapes(exp.build)
    if shapes is None:
        raise UserError(f"cannot build the architecture of {exp.target}; choose another --name")
    exp.shapes = shapes
    exp.state, diff, exp.has_norm, exp.sub_block = _export_state_dict(
        exp.model.state_dict(), shapes
    )
    if diff:
        raise UserError(
            f"{exp.src} ({exp.arch['model']}) does not match the architecture of {exp.target} "
            f"({diff.describe()}); use a zoo name with the same architecture or a new --name"
        )


def _place_normalization(exp: _Export) -> None:
    """Our in-model normalization into the target's mu/sigma buffers, or a note, or a refusal."""
    mean, std = exp.stats()
    norm = exp.normalizer
    if exp.has_norm:
        shape = exp.shapes[NORMALIZATION_KEYS[0]]
        for key, buf in zip(NORMALIZATION_KEYS, (norm.mean, norm.std), strict=True):
            exp.state[key] = buf.detach().cpu().reshape(1, -1, 1, 1).expand(shape).clone()
    elif exp.normalizes and exp.zoo:
        raise UserError(
            f"{exp.src} normalizes its inputs inside the model (mean {list(mean)}, std "
            f"{list(std)}) but the architecture of {exp.target} does not, so load_model would "
            "feed it raw pixels; train with --no-normalize, or export under a new --name (the "
            "file then records mean/std)"
        )
    elif exp.normalizes:
        exp.notes.append(
            f"the model normalizes inputs (mean {list(mean)}, std {list(std)}) and robustbench's "
            "architecture does not: wrap it as nn.Sequential(normalize, model) -- mean/std are "
            "recorded in the file under boosting_tickets.input_normalization"
        )
    if exp.sub_block:
        exp.notes.append("sub_block1.* holds a copy of block1 (the architecture never uses it)")
    if exp.arch.get("dataset") not in (None, exp.dataset):
        exp.notes.append(f"trained on {exp.arch.get('dataset')}, exported under {exp.dataset}")


def _meta(exp: _Export) -> dict[str, Any]:
    """What the exported file records about itself (under ``boosting_tickets``)."""
    from ..core.environment import package_versions
    from ..models.layers import count_parameters

    mean, std = exp.stats()
    params, nonzero = count_parameters(exp.model)
    verified = "robustbench.load_model" if exp.zoo else "strict load into " + exp.target
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        "source_checkpoint": str(exp.src),
        "source_sha256": file_sha256(exp.src),
        "arch": dict(exp.arch),
        "trained_on": exp.arch.get("dataset"),
        "target": exp.target,
        "zoo_name": exp.zoo,
        "input_normalization": {
            "mean": list(mean),
            "std": list(std),
            "identity": not exp.normalizes,
            "applied_by_architecture": exp.has_norm or not exp.normalizes,
        },
        "params": params,
        "nonzero_params": nonzero,
        "verified": verified
        + f" reproduces the source's logits within {_LOGIT_RTOL:g} (relative) on a probe batch",
        "notes": exp.notes,
        "packages": package_versions(),
    }


# RobustBench's L-inf radius on CIFAR, as its model_info files write it.
_ZOO_EPS = {"Linf": "8/255", "L2": "0.5"}


def _architecture_label(arch: Mapping[str, Any]) -> str:
    """The architecture as RobustBench's leaderboard names it (WideResNet-28-10, PreActResNet-18)."""
    m = re.match(r"^wrn-(\d+)-(\d+)$", arch["model"])
    if m:
        return f"WideResNet-{m.group(1)}-{m.group(2)}"
    return {"preact-resnet18": "PreActResNet-18"}.get(arch["model"], arch["model"])


def model_info(exp: _Export, nonzero: int, params: int) -> dict[str, Any]:
    """The entry RobustBench's ``model_info/<dataset>/<threat>/<name>.json`` holds for a
    submission (the fields of ``robustbench.utils.ModelInfo``). What we know is filled in; the
    paper's fields (link, name, authors, venue) and the accuracies are left null: robustbench's
    ``benchmark(..., to_disk=True)`` run in the model directory fills ``clean_acc`` and
    ``autoattack_acc`` into this very file, and it keeps fields it does not measure."""
    sparse = params - nonzero
    footnote = (
        f"Boosting ticket: {sparse / params:.1%} of the weights are zero (pruned)."
        if sparse > 0.01 * params
        else None
    )
    return {
        "link": None,
        "name": None,
        "authors": None,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": exp.dataset,
        "venue": None,
        "architecture": _architecture_label(exp.arch),
        "eps": _ZOO_EPS[exp.threat],
        "clean_acc": None,
        "reported": None,
        "autoattack_acc": None,
        "footnote": footnote,
    }


def model_info_path(
    model_dir: str | os.PathLike[str], name: str, dataset: str, threat: str
) -> Path:
    """``<model_dir>/model_info/<dataset>/<threat>/<name>.json``: where robustbench's
    ``benchmark(..., to_disk=True)`` run from ``model_dir`` updates it."""
    return Path(model_dir) / "model_info" / dataset / threat / f"{check_model_name(name)}.json"


def _load_back(exp: _Export, staging: Path, staged: Path) -> Any:
    """The staged file loaded the way users will load it."""
    if exp.zoo:
        return robustbench_load(exp.name, staging, exp.dataset, exp.threat, staged)
    assert exp.build is not None
    loaded = exp.build()
    back = tensor_state_dict(safe_torch_load(staged, what="exported file"), str(staged))
    try:
        loaded.load_state_dict(back, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{exp.target} refused the exported weights ({first})") from None
    return loaded.eval()


def _write_verified(
    exp: _Export, meta: dict[str, Any], model_dir: Path, out: Path
) -> tuple[float, float]:
    """Write into a staging model dir beside the target, load it back, compare logits on a fixed
    probe batch, and only then move it into place: a file that fails never replaces anything.
    Returns the largest logit difference and the largest logit (its scale)."""
    import torch

    # robustbench reads checkpoint['last'] for these entries (see its utils.load_model).
    name = exp.name
    reads_last = exp.zoo and (
        "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding"
    )
    weights = {"last": {"state_dict": exp.state}} if reads_last else {"state_dict": exp.state}
    probe = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = exp.model(probe)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    except OSError as exc:
        raise UserError(f"cannot write into --model-dir {model_dir}: {exc.strerror}") from None
    try:
        staged = zoo_checkpoint_path(staging, name, exp.dataset, exp.threat)
        atomic_torch_save({**weights, "boosting_tickets": meta}, staged)
        loaded = _load_back(exp, staging, staged)
        with torch.no_grad():
            got = loaded(probe if exp.has_norm or not exp.normalizes else exp.normalizer(probe))
        max_diff = float((want - got).abs().max())
        max_logit = float(want.abs().max())
        if not max_diff <= _LOGIT_RTOL * max(1.0, max_logit):
            raise UserError(
                f"{exp.target} computes other logits than {exp.src} on a probe batch (max "
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
    return max_diff, max_logit


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

    ``checkpoint`` is a boosting-tickets model checkpoint (``best.pt``, ``final.pt`` ...; a run
    directory means its ``best.pt``); a retrained ticket exports dense, with zeros where pruned. A
    ticket directory or its ``rewind.pt`` (untrained, and rewind.pt unmasked) is refused with the
    command that retrains it. Beside the weights, ``<model_dir>/model_info/<dataset>/<threat>/
    <name>.json`` gets RobustBench's model-info entry (:func:`model_info`).
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
    check_zoo_target(dataset, threat)
    out = zoo_checkpoint_path(model_dir, name, dataset, threat)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it or choose another --name")
    exp = _source(checkpoint, name, dataset, threat)
    _match_target(exp)
    _place_normalization(exp)
    meta = _meta(exp)
    max_diff, max_logit = _write_verified(exp, meta, Path(model_dir), out)
    info = model_info_path(model_dir, name, dataset, threat)
    try:
        atomic_write_json(info, model_info(exp, meta["nonzero_params"], meta["params"]))
    except OSError as exc:
        raise UserError(f"cannot write {info}: {exc.strerror}") from None
    mean, std = exp.stats()
    shown = exp.normalizes or exp.has_norm
    return ExportResult(
        out,
        exp.target,
        exp.zoo,
        max_diff,
        max_logit,
        exp.has_norm,
        mean if shown else None,
        std if shown else None,
        meta["params"],
        meta["nonzero_params"],
        tuple(exp.notes),
        info,
    )
