"""The RobustBench leaderboard entries shipped as package data, and their results rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..core.errors import UserError

#: Threat model -> the shipped RobustBench CIFAR-10 leaderboard of it.
REFERENCE_FILES = {
    "Linf": "reference/robustbench_cifar10_linf.json",
    "L2": "reference/robustbench_cifar10_l2.json",
}
REFERENCE_FILE = REFERENCE_FILES["Linf"]
REFERENCE_FORMAT = "boosting-tickets/reference-leaderboard"
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


def load_reference(threat: str = "Linf") -> dict[str, Any]:
    """The shipped RobustBench CIFAR-10 leaderboard entries of ``threat`` (``Linf``: eps 8/255,
    ``L2``: eps 0.5; percentages), checked for sane values."""
    from importlib import resources

    from ..adversarial.spec import check_threat

    REFERENCE_FILE = REFERENCE_FILES[check_threat(threat)]  # noqa: N806 - the messages' name
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
    doc = load_reference(threat)
    if (doc["dataset"], doc["threat_model"]) != (dataset, threat):
        return {}  # zoo names repeat across datasets ('Standard'): never attach the wrong numbers
    return {e["name"]: e for e in doc["entries"]}


def reference_table(threat: str = "Linf") -> str:
    """The leaderboard entries of ``threat`` as a Markdown table (percentages), with the source
    below."""
    from ..report.formats import fmt_cell, markdown_table

    doc = load_reference(threat)
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


def published_row(
    entry: Mapping[str, Any], params: int | None, threat: str = "Linf"
) -> dict[str, Any]:
    """A results row (kind reference, source published) from a leaderboard entry (percent) of
    the ``threat`` leaderboard."""

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
            f"published by RobustBench (AutoAttack standard, full CIFAR-10 test set, "
            f"{threat} eps {entry['eps']}), not measured here; source {entry['source']}"
        ),
        "extra_data": entry["extra_data"],
        "venue": entry["venue"],
    }
