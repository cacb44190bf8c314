"""The raw-results format shared by ``bench run``, ``compare robustbench`` and ``tables``.

A results file is one JSON document (written atomically, with a SHA-256 checksum over its content)::

    {
      "kind": "boosting-tickets/results",
      "schema": 1,
      "suite": "quick",                 # or "robustbench-compare", ...
      "protocol": {...},                # the evaluation protocol every row was measured under
      "environment": {...},             # package versions, device, git commit
      "rows": [ {row}, ... ],
      ...                               # producer-specific extras (wall times, per-epoch curves)
    }

A row is one model under that protocol. Required keys: ``arm`` (e.g. "dense", "ticket-natural",
"reinit", "zoo:Carmon2019Unlabeled"), ``kind`` (:func:`row_kinds`: dense | ticket | a control's row
kind such as reinit or random-mask | zoo | reference), ``source`` (measured | published), ``seed``
(int or None), ``dataset``, ``model``, ``params``, ``nonzero_params``, ``clean_acc``,
``fgsm_acc``, ``pgd_acc`` (fractions in [0,1] or None). Optional: ``autoattack_acc``, ``label``,
``n``, ``sparsity``, ``note``, convergence fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.storage import atomic_write_json, read_json

RESULTS_KIND = "boosting-tickets/results"
SCHEMA_VERSION = 1


def row_kinds() -> tuple[str, ...]:
    """Row kinds: dense, ticket, each registered control's row kind, zoo and reference."""
    from ..tickets.controls import controls

    made = tuple(dict.fromkeys(c.row_kind for c in controls()))
    return ("dense", "ticket", *made, "zoo", "reference")


REQUIRED_ROW_KEYS = (
    "arm",
    "kind",
    "source",
    "seed",
    "dataset",
    "model",
    "params",
    "nonzero_params",
    "clean_acc",
    "fgsm_acc",
    "pgd_acc",
)
# Protocol fields that must agree for rows to share a table (the rest is informational).
PROTOCOL_KEYS = (
    "threat_model",
    "eps",
    "pgd_steps",
    "step_size",
    "restarts",
    "random_start",
    "bn_mode",
    "n_examples",
)


def check_row(row: Mapping[str, Any], where: str = "row") -> None:
    """Raise UserError if ``row`` lacks a required key or holds an impossible value."""
    missing = [k for k in REQUIRED_ROW_KEYS if k not in row]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    kinds = row_kinds()
    if row["kind"] not in kinds:
        raise UserError(f"{where} has unknown kind '{row['kind']}' (one of {', '.join(kinds)})")
    if row["source"] not in ("measured", "published"):
        raise UserError(f"{where} has source '{row['source']}' (measured or published)")
    for k in ("clean_acc", "fgsm_acc", "pgd_acc", "autoattack_acc"):
        v = row.get(k)
        if v is not None and not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
            raise UserError(f"{where} has {k}={v!r}; accuracies are fractions in [0, 1]")


def write_results(
    path: str | Path,
    *,
    suite: str,
    protocol: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    environment: Mapping[str, Any],
    **extra: Any,
) -> None:
    """Validate rows and write a results file atomically with a checksum."""
    for i, row in enumerate(rows):
        check_row(row, f"row {i} ({row.get('arm', '?')})")
    doc = {
        "kind": RESULTS_KIND,
        "schema": SCHEMA_VERSION,
        "suite": suite,
        "protocol": dict(protocol),
        "environment": dict(environment),
        "rows": [dict(r) for r in rows],
        **extra,
    }
    atomic_write_json(path, doc, checksum=True)


def read_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results file: kind, schema version, checksum and rows."""
    doc = read_json(path, what="results file")
    if not isinstance(doc, dict) or doc.get("kind") != RESULTS_KIND:
        raise UserError(f"{path} is not a boosting-tickets results file")
    if doc.get("schema") != SCHEMA_VERSION:
        raise UserError(
            f"{path} has results schema version {doc.get('schema')!r}, this version reads "
            f"{SCHEMA_VERSION}; regenerate it with this version's 'bench run'"
        )
    if "sha256" not in doc:
        raise UserError(f"{path} has no checksum; it was not written by boosting-tickets")
    for i, row in enumerate(doc.get("rows", [])):
        check_row(row, f"{path} row {i}")
    return doc


def protocol_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Names of the protocol fields on which ``a`` and ``b`` disagree."""
    out = []
    for k in PROTOCOL_KEYS:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, float) and isinstance(vb, float):
            if abs(va - vb) > 1e-9:
                out.append(k)
        elif va != vb:
            out.append(k)
    return out
