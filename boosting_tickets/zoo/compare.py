"""RobustBench models measured under the tickets' evaluation protocol, next to published numbers.

:func:`run_comparison` measures each model with :func:`adversarial.evaluation.evaluate` under exactly
the protocol our tickets are scored with (:func:`comparison_protocol`: PGD-20, step eps/4, random
start, FGSM, BatchNorm in eval mode; AutoAttack standard through pyautoattack on request) and writes
one results file (kind ``zoo``, source ``measured``, next to the published numbers as kind
``reference``, source ``published``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import config_hash, non_default
from ..core.errors import UserError
from ..core.storage import atomic_write_json, read_json
from .checkpoints import prepare_zoo_checkpoint, robustbench_load
from .config import COMPARE_SUITE, DEFAULT_RESULTS, ZOO_DATASETS, CompareConfig
from .reference import load_reference, published_row, reference_entries

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..adversarial.protocol import EvalProtocol


def comparison_protocol(
    dataset: str, *, autoattack: bool = False, threat: str = "Linf"
) -> EvalProtocol:
    """The protocol tickets are scored with, for ``dataset``: the test protocol of a default run.

    That is :func:`training.eval_protocol` of a default :class:`hparams.RunConfig` on ``dataset``:
    L∞ eps 8/255 on CIFAR, PGD-20 with step eps/4 and one random start, FGSM, BatchNorm in eval
    mode, seed 0 (Madry et al. 2018's protocol; the boosting-tickets paper's official code attacks
    without a random start, and with PGD-10 for VGG) -- plus AutoAttack
    standard (Croce & Hein 2020) when ``autoattack``. ``threat="L2"``: the same with PGD-20-L2 and
    FGM at the dataset's L2 eps (0.5 on CIFAR-10, RobustBench's L2 leaderboard), AutoAttack L2.
    """
    from ..training.hparams import DataConfig, EvalConfig, RunConfig, eval_protocol

    base = eval_protocol(
        RunConfig(data=DataConfig(dataset=dataset), eval=EvalConfig(threat=threat))
    )
    return dataclasses.replace(base, autoattack=autoattack)


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
    from ..data.splits import load_splits
    from ..data.synthetic import synthetic_spec

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
    from ..adversarial.evaluation import evaluate
    from ..models.layers import count_parameters

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


@dataclass(frozen=True)
class ZooComparison:
    """What :func:`run_comparison` produced: the results file, its rows, and what was done."""

    path: Path
    rows: list[dict[str, Any]]
    protocol: dict[str, Any]
    evaluated: tuple[str, ...]
    reused: tuple[str, ...]
    written: bool


def _existing_results(path: Path, settings_hash: str, data_sha: str) -> dict[str, Any] | None:
    from ..report.results import read_results

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


def _measure_or_reuse(
    cfg: CompareConfig,
    name: str,
    ckpt: Any,
    data: tuple[EvalData, dict[str, Any]],
    protocol: EvalProtocol,
    device: Any,
    results_path: Path,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], bool]:
    """One model's evaluation record, from ``<results dir>/evals/`` when it was measured before
    under these settings, checkpoint and images (``data``: the images and their record); and
    whether it came from there."""
    from ..core.environment import environment_info

    data, data_record = data
    sha = ckpt.sha256()
    key = config_hash(cfg, {"model": name, "checkpoint": sha, "data": data_record["sha256"]})
    cache = results_path.parent / "evals" / f"{name}-{key}.json"
    if cache.exists():
        say(f"{name}: measured before, reusing {cache}")
        return read_json(cache, what="cached evaluation"), True
    # Checked already (prepare_zoo_checkpoint); robustbench now loads it.
    model = robustbench_load(name, cfg.model_dir, cfg.dataset, cfg.threat, ckpt.files[0])
    model.to(device)
    say(f"{name}: measuring on {data.description}")
    res = measure_model(
        model, data, protocol, batch_size=cfg.batch_size, device=device, progress=cfg.progress,
        desc=name,
    )  # fmt: skip
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
    return rec, False


def run_comparison(
    cfg: CompareConfig,
    results_path: str | os.PathLike[str] = DEFAULT_RESULTS,
    *,
    data: EvalData | None = None,
    log: Callable[[str], None] | None = None,
) -> ZooComparison:
    """Measure every model of ``cfg.models`` under :func:`comparison_protocol`; write the results.

    All checkpoints are checked before any work. Each model's evaluation is cached in
    ``<results dir>/evals/<name>-<hash>.json`` (hash of the settings, the checkpoint's and the
    images' SHA-256), so an interrupted comparison resumes and a repeated one does no work. The
    results file keeps rows of models compared earlier under the same settings, adds a published
    row next to every measured one, and is rewritten only when its rows change. ``data`` replaces
    :func:`load_eval_data` (tests, or images prepared elsewhere).
    """
    from tqdm import tqdm

    from ..core.environment import environment_info, resolve_device
    from ..report.results import write_results

    say = log or (lambda msg: None)
    cfg.validate()
    path = Path(results_path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; --out must name a results .json file")
    protocol = comparison_protocol(cfg.dataset, autoattack=cfg.autoattack, threat=cfg.threat)
    device = resolve_device(cfg.device)
    where = {"dataset": cfg.dataset, "threat": cfg.threat, "allow_download": cfg.allow_download}
    checked = {name: prepare_zoo_checkpoint(name, cfg.model_dir, **where) for name in cfg.models}
    data = data if data is not None else load_eval_data(cfg)
    data_record = data.record()
    settings_hash = config_hash(cfg)
    existing = _existing_results(path, settings_hash, data_record["sha256"])
    published = reference_entries(cfg.dataset, cfg.threat)
    evaluated, reused, rows = [], [], []
    for name in tqdm(cfg.models, desc="zoo models", disable=None if cfg.progress else True):
        rec, was_cached = _measure_or_reuse(
            cfg, name, checked[name], (data, data_record), protocol, device, path, say
        )
        (reused if was_cached else evaluated).append(name)
        # Our own export saved under a zoo name is not the published model: no published row.
        ref = None if rec.get("export") else published.get(name)
        rows.append(measured_row(name, rec, ref))
        if ref is not None:
            rows.append(published_row(ref, rec["result"]["params"], cfg.threat))
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
            reference_source=load_reference(cfg.threat)["source"],
        )
    return ZooComparison(path, all_rows, record, tuple(evaluated), tuple(reused), not unchanged)


def _comparable(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), sort_keys=True, default=str)


def comparison_table(rows: Sequence[Mapping[str, Any]], pgd_steps: int = 20) -> str:
    """Measured and published rows side by side (percentages), one line per row."""
    from ..report.formats import fmt_cell, markdown_table

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
