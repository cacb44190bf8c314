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

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.storage import atomic_write_json, read_json

RESULTS_KIND = "boosting-tickets/results"
SCHEMA_VERSION = 1


def row_kinds() -> tuple[str, ...]:
    """Row kinds: dense, ticket, structured-ticket, each registered control's row kind, zoo and
    reference."""
    from ..tickets.controls import controls
    from ..tickets.structured import STRUCTURED_ROW_KIND

    made = tuple(dict.fromkeys(c.row_kind for c in controls()))
    return ("dense", "ticket", STRUCTURED_ROW_KIND, *made, "zoo", "reference")


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


# Names that end up in file names (figures) or tables: no path separators, no control characters.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@=+,-]{0,127}$")
ACCURACY_KEYS = ("clean_acc", "fgsm_acc", "pgd_acc", "autoattack_acc", "final_clean_acc",
                 "final_fgsm_acc", "final_pgd_acc")  # fmt: skip
TABULATED_STATUS = ("complete", "stopped_overfit")


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a safe name (letters, digits, ``._:@=+,-``; no '/', no '..'), else a
    one-line UserError: names from files become file names, and a valid checksum proves
    nothing about who wrote the file."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise UserError(
            f"{what} {value!r} is not a safe name (letters, digits and ._:@=+,- only, no '..'); "
            "the file was not written by boosting-tickets"
        )
    return value


def _number(row: Mapping[str, Any], key: str, where: str, low: float, high: float | None,
            *, whole: bool = False) -> None:  # fmt: skip
    v = row.get(key)
    if v is None:
        return
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and v >= low and (high is None or v <= high) and (not whole or float(v).is_integer())
    if not ok:
        rng = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        kind = "a whole number" if whole else "a number"
        raise UserError(f"{where} has {key}={v!r}; expected {kind} in {rng}")


def check_row(row: Mapping[str, Any], where: str = "row") -> None:
    """Raise UserError if ``row`` lacks a required key or holds an impossible value (types and
    ranges of every number, safe names, known kinds and sources)."""
    if not isinstance(row, Mapping):
        raise UserError(f"{where} is not an object")
    missing = [k for k in REQUIRED_ROW_KEYS if k not in row]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    kinds = row_kinds()
    if row["kind"] not in kinds:
        raise UserError(f"{where} has unknown kind '{row['kind']}' (one of {', '.join(kinds)})")
    if row["source"] not in ("measured", "published"):
        raise UserError(f"{where} has source '{row['source']}' (measured or published)")
    for k in ("arm", "model", "dataset"):
        check_name(row[k], f"{where} {k}")
    for k in ACCURACY_KEYS:
        v = row.get(k)
        if v is not None and not (
            isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0
        ):
            raise UserError(f"{where} has {k}={v!r}; accuracies are fractions in [0, 1]")
    for k in ("params", "nonzero_params", "n", "epochs", "best_epoch"):
        _number(row, k, where, 0, None, whole=True)
    _number(row, "seed", where, 0, 2**63 - 1, whole=True)
    _number(row, "sparsity", where, 0.0, 1.0)
    for k in ("train_seconds", "run_seconds", "find_train_seconds", "find_work_flops"):
        _number(row, k, where, 0.0, None)
    if row.get("status") is not None and not isinstance(row["status"], str):
        raise UserError(f"{where} has status {row['status']!r}; expected a string")


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
    check_name(doc.get("suite"), f"{path}: suite")
    protocol = doc.get("protocol")
    if not isinstance(protocol, dict) or protocol.get("eps") is None:
        raise UserError(
            f"{path} has no evaluation protocol (eps, attack, n); its numbers cannot be compared "
            "with anything, so it is refused"
        )
    rows = doc.get("rows", [])
    if not isinstance(rows, list):
        raise UserError(f"{path}: rows is not a list")
    for i, row in enumerate(rows):
        check_row(row, f"{path} row {i}")
    return doc


def tabulated(row: Mapping[str, Any]) -> bool:
    """Whether a row enters tables: finished runs only (a row marked failed or running never)."""
    return row.get("status") is None or row.get("status") in TABULATED_STATUS


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
