"""Reading raw results files and grouping their rows: one group per arm of a results file (its
seeds), plus the published rows whose protocol matches the measured ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..core.errors import UserError
from .stats import Interval, mean_ci

_HEAD_MARK = '"kind": "boosting-tickets/results"'


@dataclass(frozen=True)
class ResultsDoc:
    """One results file and where it was found (``rel``: path relative to the results directory)."""

    path: Path
    rel: str
    doc: Mapping[str, Any]

    @property
    def suite(self) -> str:
        return str(self.doc.get("suite"))

    @property
    def protocol(self) -> Mapping[str, Any]:
        return self.doc.get("protocol", {})


def find_results(root: str | Path, *, standalone: bool = True) -> list[ResultsDoc]:
    """Every results file under ``root`` (recursively), sorted by relative path; with
    ``standalone``, also the finished train/retrain runs no results file lists, as one
    document per protocol (``report.runs``)."""
    from .results import read_results

    base = Path(root)
    if not base.exists():
        raise UserError(
            f"results directory {base} does not exist; run 'boosting-tickets bench run quick' first "
            "or pass the directory holding results JSON files"
        )
    if base.is_file():
        return [ResultsDoc(base, base.name, read_results(base))]
    from ..core.storage import check_regular

    out = []
    for p in sorted(base.rglob("*.json")):
        check_regular(p, "results file")
        if p.is_dir():
            continue
        try:
            with p.open("r", encoding="utf-8", errors="replace") as fh:
                head = fh.read(256)
        except OSError:
            continue
        if _HEAD_MARK in head:
            out.append(ResultsDoc(p, p.relative_to(base).as_posix(), read_results(p)))
    if standalone:
        from .runs import standalone_docs

        for doc in standalone_docs(base):
            out.append(ResultsDoc(base / doc["suite"], f"{doc['suite']} (standalone runs)", doc))
    if not out:
        raise UserError(
            f"no results files or finished runs under {base}; run 'boosting-tickets bench run "
            "quick' first (it writes <out>/results.json)"
        )
    return out


def check_protocols(docs: Sequence[ResultsDoc], *, mix: bool) -> bool:
    """Raise UserError naming the differing fields when protocols differ (unless ``mix``).

    Returns True when they differ (and ``mix`` allows it), False when all agree.
    """
    from .results import protocol_differences

    first = docs[0]
    differs = False
    for d in docs[1:]:
        diff = protocol_differences(first.protocol, d.protocol)
        if diff and not mix:
            raise UserError(
                f"{first.rel} and {d.rel} were measured under different protocols (fields: "
                f"{', '.join(diff)}); tabulate them separately or pass --mix-protocols to show "
                "them together with a protocol column"
            )
        differs = differs or bool(diff)
    return differs


def protocol_label(p: Mapping[str, Any]) -> str:
    """Short protocol text: 'Linf 0.1, PGD-20 step 0.025, n=500'."""
    eps, steps, step = p.get("eps"), p.get("pgd_steps"), p.get("step_size")
    parts = [f"{p.get('threat_model', 'Linf')} {eps:.4g}" if eps is not None else "?"]
    if steps is not None:
        parts.append(f"PGD-{steps}" + (f" step {step:.4g}" if step is not None else ""))
    if p.get("n_examples") is not None:
        parts.append(f"n={p['n_examples']}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# Aggregation: rows of one (results file, arm) across seeds
# --------------------------------------------------------------------------------------------------


@dataclass
class Group:
    """The rows of one arm of one results file (one per seed), or one published/zoo row."""

    doc: ResultsDoc | None
    suite: str
    arm: str
    rows: list[Mapping[str, Any]] = field(default_factory=list)
    protocol: Mapping[str, Any] = field(default_factory=dict)
    target: Mapping[str, Any] | None = None  # report.targets.Target.record() of its comparison

    @property
    def first(self) -> Mapping[str, Any]:
        return self.rows[0]

    @property
    def kind(self) -> str:
        return str(self.first["kind"])

    @property
    def measured(self) -> bool:
        return self.first["source"] == "measured"

    @property
    def has_curves(self) -> bool:
        return self.measured and all(r.get("curve") for r in self.rows)

    def values(self, get: Callable[[Mapping[str, Any]], Any]) -> list[Any]:
        return [get(r) for r in self.rows]

    def by_seed(self, get: Callable[[Mapping[str, Any]], Any]) -> dict[int, Any]:
        return {int(r["seed"]): get(r) for r in self.rows if r.get("seed") is not None}

    def ci(self, get: Callable[[Mapping[str, Any]], Any]) -> Interval:
        return mean_ci(self.values(get))


def convergence_field(key: str) -> Callable[[Mapping[str, Any]], Any]:
    """A getter of ``row["convergence"][key]`` (None when absent)."""
    return lambda r: (r.get("convergence") or {}).get(key)


def total_train_seconds(r: Mapping[str, Any]) -> float | None:
    """Training seconds of a row, ticket finding included (published rows: their total time)."""
    if r.get("total_seconds") is not None:  # published rows
        return r["total_seconds"]
    if r.get("train_seconds") is None:
        return None
    return float(r["train_seconds"]) + float(r.get("find_train_seconds") or 0.0)


def judged_rows(d: ResultsDoc) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The rows of ``d`` with convergence recomputed from their curves under the suite's target
    rule (``report.targets``), and the target records by baseline arm. Rows without curves
    (zoo models) pass through."""
    from .results import tabulated
    from .targets import with_convergence

    compare = d.doc.get("compare") or {}
    rows = [r for r in d.doc.get("rows", []) if tabulated(r)]
    curved = [r for r in rows if r.get("curve")]
    judged, records = with_convergence(compare, curved, floor=compare.get("chance_floor"))
    by_id = {id(r): j for r, j in zip(curved, judged, strict=True)}
    return [by_id.get(id(r), dict(r)) for r in rows], records


def group_rows(docs: Sequence[ResultsDoc]) -> list[Group]:
    """Groups in file order, arms in the order their rows first appear."""
    groups: list[Group] = []
    for d in docs:
        index: dict[str, Group] = {}
        rows, targets = judged_rows(d)
        for r in rows:
            g = index.get(r["arm"])
            if g is None:
                g = Group(d, d.suite, r["arm"], protocol=d.protocol)
                g.target = targets.get(r.get("baseline") or r["arm"])
                index[r["arm"]] = g
                groups.append(g)
            g.rows.append(r)
        for g in index.values():
            g.rows.sort(key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
    return groups


class ArchCounts(NamedTuple):
    """Parameters of an architecture: all of them, and the prunable conv/linear weights."""

    total: int
    prunable: int


def _arch_counts(model: str, dataset: str) -> ArchCounts | None:
    """(all parameters, prunable conv/linear weights) of ``model`` built for ``dataset``, on the
    meta device (no memory, no time); None if either is unknown here."""
    try:
        import torch

        from ..data.registry import get_spec
        from ..models.layers import prunable_parameters
        from ..models.registry import build_model

        spec = get_spec(dataset)
        with torch.device("meta"):
            net = build_model(model, num_classes=spec.num_classes, in_channels=spec.channels)
    except (UserError, ImportError):
        return None
    total = sum(p.numel() for p in net.parameters())
    return ArchCounts(total, sum(p.numel() for p in prunable_parameters(net).values()))


def reference_groups(groups: Sequence[Group]) -> tuple[list[Group], list[str]]:
    """Published rows matching the measured groups' protocols, and notes on listed tables that
    did not match (so the README can say why they are absent)."""
    from .published import matching_tables, protocol_matches, published_tables

    shown: dict[str, Group] = {}
    out: list[Group] = []
    notes: list[str] = []
    wanted = {name for g in groups if g.doc for name in g.doc.doc.get("reference", [])}
    seen_keys = set()
    for g in groups:
        if not g.measured:
            continue
        key = (id(g.doc), g.first["dataset"], g.first["model"])
        if key in seen_keys:
            continue
        seen_keys.add(key)
        for table in matching_tables(g.protocol, g.first["dataset"], g.first["model"]):
            if table.name in shown:
                continue
            counts = _arch_counts(table.model, table.dataset)
            for pr in table.rows:
                # Non-zero count of a ticket: its sparsity applies to the conv/linear weights.
                total = None if counts is None else counts.total
                nonzero = None if counts is None else total - round(pr.sparsity * counts.prunable)
                row = {
                    "arm": pr.arm,
                    "label": pr.label,
                    "kind": "reference",
                    "source": "published",
                    "seed": None,
                    "dataset": table.dataset,
                    "model": table.model,
                    "params": total,
                    "nonzero_params": nonzero,
                    "clean_acc": pr.clean_acc,
                    "fgsm_acc": None,
                    "pgd_acc": pr.pgd_acc,
                    "epochs": pr.epochs,
                    "total_seconds": pr.total_seconds,
                    "note": pr.note or table.source,
                    "protocol_differences": list(table.differences),
                    **dict(pr.extra),
                }
                grp = Group(None, table.source, pr.arm, [row], protocol=dict(table.protocol))
                out.append(grp)
            shown[table.name] = grp
    for name in sorted(wanted - set(shown)):
        t = published_tables()[name]
        reasons = []
        for g in groups:
            if g.measured and g.doc and name in g.doc.doc.get("reference", []):
                if g.first["dataset"] != t.dataset or g.first["model"] != t.model:
                    reasons.append(
                        f"{g.arm} is {g.first['model']} on {g.first['dataset']}, the table "
                        f"{t.model} on {t.dataset}"
                    )
                elif not protocol_matches(t.protocol, g.protocol):
                    reasons.append(
                        f"protocol differs from the table's ({protocol_label(t.protocol)})"
                    )
                break
        why = reasons[0] if reasons else "no measured results of that suite"
        notes.append(f"{t.source} is not shown: {why}")
    return out, notes
