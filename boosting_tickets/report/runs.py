"""Every run directory under a folder, and standalone runs as results rows.

A run directory is one holding ``hparams.json`` (``train`` / retrain runs, and the training runs of
ticket searches under ``tickets/ticket_*/``). :func:`scan_runs` reads each one's settings, metrics
and test evaluation (checksummed files, read through ``core.storage``), and the results files
around them to name the suite, arm and seed a run belongs to. ``boosting-tickets runs DIR``
prints them; ``tables DIR`` turns the finished ones that no results file lists (a hand-made
``train`` or ``retrain-ticket`` run) into rows of a results document per protocol, so every run
is tabulable. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError

HPARAMS, METRICS, TEST_EVAL = "hparams.json", "metrics.json", "test_eval.json"


@dataclass(frozen=True)
class RunRecord:
    """One run directory as ``runs`` lists it."""

    path: Path
    kind: str  # train | retrain | find
    status: str
    epochs_done: int
    epochs: int
    best_val_pgd: float | None
    seed: int | None
    dataset: str | None
    model: str | None
    suite: str | None
    arm: str | None
    hparams: Mapping[str, Any]
    metrics: Mapping[str, Any] | None
    test: Mapping[str, Any] | None


def _read(path: Path, what: str) -> Any:
    from ..core.storage import read_json

    if not path.is_file():
        return None
    try:
        return read_json(path, what=what)
    except UserError:
        return None


def _owners(root: Path) -> dict[Path, tuple[str, str, int | None]]:
    """run directory -> (suite, arm, seed), from every results file under ``root``."""
    from .collect import find_results

    out: dict[Path, tuple[str, str, int | None]] = {}
    try:
        docs = find_results(root, standalone=False)
    except UserError:
        return out
    for d in docs:
        for r in d.doc.get("rows", []):
            if r.get("run_dir"):
                run = (d.path.parent / str(r["run_dir"])).resolve()
                out[run] = (d.suite, str(r["arm"]), r.get("seed"))
    return out


def _kind(path: Path, hparams: Mapping[str, Any]) -> str:
    if path.name.startswith("ticket_"):
        return "ticket"  # the search itself: its training runs lie below it
    if any(p.startswith("ticket_") for p in path.parts):
        return "find"
    extra = hparams.get("extra") or {}
    return "retrain" if extra.get("ticket") else "train"


def scan_runs(root: str | Path) -> list[RunRecord]:
    """Every run directory under ``root`` (sorted by path; unreadable files count as absent),
    and every ticket search (kind ``ticket``, status found or searching)."""
    base = Path(root)
    if not base.is_dir():
        raise UserError(f"{base} is not a directory; pass the folder holding your runs")
    owners = _owners(base)
    out = []
    for hp in sorted(base.rglob(HPARAMS)):
        if any(part.startswith(".") for part in hp.relative_to(base).parts):
            continue
        run = hp.parent
        hparams = _read(hp, "run settings")
        if not isinstance(hparams, dict) or not isinstance(hparams.get("config"), dict):
            continue
        cfg = hparams["config"]
        metrics = _read(run / METRICS, "metrics")
        rows = (metrics or {}).get("epochs") or []
        pgd = [r.get("val_pgd") for r in rows if r.get("val_pgd") is not None]
        owner = owners.get(run.resolve())
        kind = _kind(run.relative_to(base), hparams)
        status = str((metrics or {}).get("status", "not started"))
        if kind == "ticket":
            status = "found" if (run / "ticket.json").is_file() else "searching"
        out.append(
            RunRecord(
                path=run,
                kind=kind,
                status=status,
                epochs_done=len(rows),
                epochs=int((cfg.get("train") or {}).get("epochs") or 0),
                best_val_pgd=max(pgd) if pgd else None,
                seed=(cfg.get("train") or {}).get("seed"),
                dataset=(cfg.get("data") or {}).get("dataset"),
                model=(cfg.get("model") or {}).get("model"),
                suite=owner[0] if owner else None,
                arm=owner[1] if owner else None,
                hparams=hparams,
                metrics=metrics,
                test=_read(run / TEST_EVAL, "test evaluation"),
            )
        )
    return out


def runs_table(records: Sequence[RunRecord], root: Path) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of ``boosting-tickets runs``."""
    headers = ["run", "kind", "status", "epochs", "best held-out PGD %", "suite", "arm", "seed"]
    rows = []
    for r in records:
        rows.append(
            [
                r.path.relative_to(root).as_posix(),
                r.kind,
                r.status,
                f"{r.epochs_done}/{r.epochs}",
                "–" if r.best_val_pgd is None else f"{100 * r.best_val_pgd:.2f}",
                r.suite or "–",
                r.arm or "–",
                "–" if r.seed is None else str(r.seed),
            ]
        )
    return headers, rows


def _arm_name(r: RunRecord) -> str:
    """Runs that differ only in their seed share an arm: kind + the non-default settings."""
    nd = {k: v for k, v in (r.hparams.get("non_default") or {}).items() if k != "train.seed"}
    extra = r.hparams.get("extra") or {}
    parts = [r.kind, str(r.model)]
    if extra.get("ticket"):
        parts.append(f"ticket {extra['ticket']}" + (f" {extra['control']}" if extra.get("control")
                                                     else ""))  # fmt: skip
    for k in ("train.objective", "train.epochs", "train.lr"):
        if k in nd:
            parts.append(f"{k.rsplit('.', 1)[-1]}={nd[k]}")
    return " ".join(parts)


def standalone_docs(root: str | Path) -> list[dict[str, Any]]:
    """Results documents (in memory, ``report.results`` layout) of the finished train and
    retrain runs under ``root`` that no results file lists: one per test protocol."""
    from .collect import _arch_counts
    from .results import RESULTS_KIND, SCHEMA_VERSION

    base = Path(root)
    docs: dict[str, dict[str, Any]] = {}
    for r in scan_runs(base):
        if r.arm is not None or r.kind == "find" or r.status not in ("complete", "stopped_overfit"):
            continue
        best = (r.test or {}).get("best") or {}
        protocol = dict(best.get("protocol") or {})
        if not protocol or best.get("pgd_acc") is None:
            continue
        protocol["dataset"] = r.dataset
        key = repr(sorted((k, repr(v)) for k, v in protocol.items()))
        doc = docs.setdefault(key, {
            "kind": RESULTS_KIND, "schema": SCHEMA_VERSION, "suite": f"runs-{len(docs) + 1}",
            "protocol": protocol, "environment": (r.metrics or {}).get("environment") or {},
            "compare": {"rule": "baseline-plateau"}, "rows": [],
        })  # fmt: skip
        final = (r.test or {}).get("final") or {}
        counts = _arch_counts(str(r.model), str(r.dataset))
        params = None if counts is None else counts.total
        doc["rows"].append(
            {
                "arm": _arm_name(r), "label": r.path.relative_to(base).as_posix(),
                "kind": "ticket" if r.kind == "retrain" else "dense", "source": "measured",
                "seed": r.seed, "dataset": r.dataset, "model": r.model, "params": params,
                "nonzero_params": params if r.kind == "train" else None, "n": best.get("n"),
                "clean_acc": best.get("clean_acc"),
                "fgsm_acc": best.get("fgsm_acc"), "pgd_acc": best.get("pgd_acc"),
                "best_epoch": best.get("epoch"), "final_pgd_acc": final.get("pgd_acc"),
                "status": r.status, "baseline": None,
                "train_seconds": ((r.metrics or {}).get("epochs") or [{}])[-1].get(
                    "cum_train_seconds"),
                "per_class": best.get("per_class"),
                "curve": list((r.metrics or {}).get("epochs") or []),
                "run_dir": r.path.relative_to(base).as_posix(),
            }
        )  # fmt: skip
    return list(docs.values())
