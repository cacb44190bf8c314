"""Results rows of a suite: one per finished run, with convergence numbers and the per-epoch curve,
and the suite's results file (``report.results`` format) with the protocol, arms and wall times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import non_default
from ..data.registry import get_spec
from ..report.results import write_results
from ..report.targets import chance_floor, with_convergence
from ..training.hparams import held_out_size, train_attack_spec
from ..training.kernels import recorded_record
from ..training.work import WORK_KEYS, rows_with_work
from .plan import suite_protocol
from .suites import Suite

if TYPE_CHECKING:
    from .runner import Failure, Outcome, SuiteRun


CURVE_KEYS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_clean",
    "val_fgsm",
    "val_pgd",
    "train_seconds",
    "cum_train_seconds",
    "eval_seconds",
    "overfit",
    *WORK_KEYS,
)


def build_rows(
    suite: Suite, outcomes: Sequence[Outcome], out: Path, train_images: int
) -> list[dict[str, Any]]:
    """One results row per finished run (results.REQUIRED_ROW_KEYS plus convergence and curve)."""

    rows = []
    for o in outcomes:
        pr, res = o.planned, o.result
        test = res.test or {}
        best, final = test.get("best") or {}, test.get("final") or {}
        base = suite.baseline_of(pr.arm)
        baseline = base.name if base is not None else None
        meta = o.ticket_meta or {}
        find_train = float(meta.get("find_train_seconds", 0.0))
        curve = rows_with_work(pr.run, res.metrics, train_images)
        row: dict[str, Any] = {
            "arm": pr.arm.name,
            "label": pr.arm.label,
            "kind": pr.arm.row_kind,
            "source": "measured",
            "seed": pr.seed,
            "dataset": pr.run.data.dataset,
            "model": pr.run.model.model,
            "params": o.params[0],
            "nonzero_params": o.params[1],
            "sparsity": float(meta.get("sparsity", 0.0)),
            "n": best.get("n"),
            "clean_acc": best.get("clean_acc"),
            "fgsm_acc": best.get("fgsm_acc"),
            "pgd_acc": best.get("pgd_acc"),
            "best_epoch": best.get("epoch"),
            "final_clean_acc": final.get("clean_acc"),
            "final_fgsm_acc": final.get("fgsm_acc"),
            "final_pgd_acc": final.get("pgd_acc"),
            "flags": sorted(set(best.get("flags", [])) | set(final.get("flags", []))),
            "status": res.status,
            "template": pr.arm.template,
            "grid": {k: v for k, v in pr.arm.grid},
            "baseline": baseline,
            "control": pr.control,
            "ticket_of": pr.arm.ticket_of,
            "train_objective": pr.run.train.objective,
            "epochs": len(res.metrics),
            "train_seconds": res.train_seconds,
            "run_seconds": sum(r["train_seconds"] + r["eval_seconds"] for r in res.metrics),
            "find_train_seconds": find_train if o.ticket_meta else None,
            "find_work_flops": meta.get("find_work_flops") if o.ticket_meta else None,
            "find_wall_seconds": meta.get("find_wall_seconds"),
            "find_objective": meta.get("objective"),
            "find_lr": meta.get("find_lr"),
            # A ticket found on another dataset (a transfer) and, if the class counts differ,
            # how the output layer was made (tickets.transfer).
            "find_dataset": meta.get("dataset") if o.ticket_meta else None,
            "transfer_head": pr.transfer_head
            if meta.get("dataset", pr.run.data.dataset) != pr.run.data.dataset
            else None,
            "find_overfit": meta.get("catastrophic_overfitting"),
            "work_per_epoch": curve[0]["work_flops"] if curve else None,
            "per_class": _per_class(best),
            "eps_curve": _eps_points(Path(res.run_dir)),
            "curve": [{k: r.get(k) for k in CURVE_KEYS} for r in curve],
            "kernels": recorded_record(res.run_dir),
            "run_dir": _rel(Path(res.run_dir), out),
            "ticket_dir": None if o.ticket_dir is None else _rel(o.ticket_dir, out),
        }
        if pr.arm.note:
            row["note"] = pr.arm.note
        rows.append(row)
    return with_convergence(compare_record(suite), rows, floor=floor_of(suite))[0]


def floor_of(suite: Suite) -> float:
    """Chance plus two standard errors of the suite's held-out set."""
    spec = get_spec(suite.run.data.dataset)
    return chance_floor(spec.num_classes, held_out_size(suite.run))


def compare_record(suite: Suite) -> dict[str, Any]:
    """The results file's ``compare`` block: the settings, their description, the held-out size
    and the chance floor the tables check targets against."""
    return dataclasses.asdict(suite.compare) | {
        "describe": suite.compare.describe(),
        "heldout_n": held_out_size(suite.run),
        "chance_floor": floor_of(suite),
    }


def _eps_points(run_dir: Path) -> list[dict[str, Any]] | None:
    """The run's robust accuracy against eps (bench.eps_curve), compactly, or None."""
    from .eps_curve import read_curve

    doc = read_curve(run_dir)
    if doc is None:
        return None
    return [{"eps": p["eps"], "clean_acc": p["clean_acc"], "pgd_acc": p["pgd_acc"],
             "n": doc["n"]} for p in doc["points"]]  # fmt: skip


def _per_class(best: Mapping[str, Any]) -> Any:
    """Per-class test accuracies of the selected model (as the evaluation wrote them)."""
    return best.get("per_class")


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _arm_records(suite: Suite, plan: Sequence[Any]) -> list[dict[str, Any]]:
    """What the results file says about every arm: kind, relations, settings, training attack."""
    arms = []
    for arm in suite.arms:
        first = next((p for p in plan if p.arm.name == arm.name), None)
        if first is None:
            continue
        attack = train_attack_spec(first.run)
        arms.append(
            {
                "name": arm.name,
                "label": arm.label,
                "kind": arm.kind,
                "template": arm.template,
                "grid": {k: v for k, v in arm.grid},
                "ticket_of": arm.ticket_of,
                "baseline": (b.name if (b := suite.baseline_of(arm)) else None),
                "note": arm.note,
                "run_settings": {
                    k: v for k, v in non_default(first.run).items() if k != "train.seed"
                },
                "train_attack": None if attack is None else attack.protocol(),
                "find_settings": None
                if first.find is None
                else {k: v for k, v in non_default(first.find).items() if k != "train.seed"},
            }
        )
    return arms


def _unchanged(path: Path, rows: list[dict[str, Any]], failures: Sequence[Failure],
               running: Sequence[Mapping[str, Any]], status: str) -> bool:  # fmt: skip
    """Whether ``path`` already holds exactly these rows, failures, runs in progress and status."""
    import json

    from ..core.errors import UserError
    from ..report.results import read_results

    if not path.is_file() or running:
        return False
    try:
        old = read_results(path)
    except UserError:
        return False
    failed = [{"arm": f.planned.arm.name, "seed": f.planned.seed, "stage": f.stage,
               "error": f.error} for f in failures]  # fmt: skip
    same = json.loads(json.dumps(rows, default=str)) == old.get("rows")
    return same and old.get("failed") == failed and old.get("status") == status


def write_suite_results(
    run: SuiteRun,
    rows: list[dict[str, Any]],
    failures: Sequence[Failure],
    running: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    status: str,
    wall: float,
) -> None:
    """Write ``<out>/results.json`` for the suite so far (atomically, with a checksum): the rows
    of every finished run on disk, the failed ones, and those other workers are running."""
    from .plan import plan_suite

    suite = run.suite
    if _unchanged(run.paths.results, rows, failures, running, status):
        return  # a finished suite rerun: nothing to rewrite (its folder may be read-only)
    plan = plan_suite(suite, seeds)
    finds: dict[str, dict[str, Any]] = {}
    for o in run.seen.values():
        if o.ticket_meta is not None:
            finds[o.ticket_meta["hash"]] = o.ticket_meta
    write_results(
        run.paths.results,
        suite=suite.name,
        protocol=suite_protocol(suite.run, len(run.splits.test.labels)),
        rows=rows,
        environment=run.environment,
        status=status,
        description=suite.description,
        suite_file=str(suite.path),
        reference=list(suite.reference),
        seeds=sorted(seeds),
        compare=compare_record(suite),
        arms=_arm_records(suite, plan),
        failed=[
            {"arm": f.planned.arm.name, "seed": f.planned.seed, "stage": f.stage, "error": f.error}
            for f in failures
        ],
        running=[dict(r) for r in running],
        wall_seconds={
            "this_invocation": wall,
            "find_train_seconds": sum(m.get("find_train_seconds", 0.0) for m in finds.values()),
            "find_wall_seconds": sum(m.get("find_wall_seconds", 0.0) for m in finds.values()),
            "train_seconds": sum(r["train_seconds"] for r in rows),
            "run_seconds": sum(r["run_seconds"] for r in rows),
            "covers": "find_*: every ticket-finding run once; train/run_*: every tabulated "
            "(re)training run (run = training + per-epoch held-out evaluation)",
        },
    )
