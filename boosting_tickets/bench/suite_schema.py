"""The keys a suite file may hold and the checks shared by suite parsing and sweep expansion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import UserError

TOP_KEYS = (
    "description",
    "seeds",
    "device",
    "reference",
    "run",
    "find",
    "compare",
    "arms",
    "sweep",
    "launch",
)
ARM_KEYS = (
    "name", "kind", "label", "note", "ticket_of", "published", "run", "find", "transfer_head",
)  # fmt: skip
COMPARE_KEYS = (
    "baseline",
    "target",
    "target_fraction",
    "target_window",
    "allow_weak_stats",
    "eps_curve",
    "eps_curve_n",
)
SWEEP_KEYS = ("arms", "grid")
FIND_SECTIONS = ("train", "eval", "prune")
DEVICES = ("cpu", "gpu")
# The data split is loaded once per suite and every arm is scored under one protocol, so arms may
# change neither; batch size and augmentation are training choices and may differ.
SPLIT_FIELDS = ("dataset", "train_subset", "val_size", "test_subset", "data_seed", "data_dir")


def unknown_key(where: str, key: str, valid: Sequence[str]) -> UserError:
    return UserError(f"{where} has unknown key '{key}'; valid keys: {', '.join(sorted(valid))}")


def table(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a TOML table, else a one-line UserError."""
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table (key = value pairs), got {value!r}")
    return value


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def set_dotted(d: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of nested ``d`` with ``a.b.c`` set to ``value``."""
    head, _, rest = dotted.partition(".")
    out = dict(d)
    if rest:
        inner = out.get(head, {})
        out[head] = set_dotted(inner if isinstance(inner, Mapping) else {}, rest, value)
    else:
        out[head] = value
    return out


#: Model settings a ticket's finding may set apart from its retraining.
FIND_MODEL_KEYS = frozenset({"dropout"})
#: Data settings a ticket's finding may set apart from its retraining (a transfer, issue #13).
FIND_DATA_KEYS = frozenset({"dataset"})


def check_find_table(raw: Mapping[str, Any], where: str) -> None:
    """A [find] table (or an arm's find overrides) may set train/eval/prune, never the
    architecture; of the model only ``dropout`` (the mask fits either way), so that a suite can
    put dropout in the finding, the retraining or both; of the data only ``dataset``, so that a
    ticket found on one task retrains on another (the split sizes stay the suite's)."""
    allowed = {"model": FIND_MODEL_KEYS, "data": FIND_DATA_KEYS}
    for key, value in raw.items():
        if key in allowed and isinstance(value, Mapping) and set(value) - allowed[key]:
            bad = sorted(set(value) - allowed[key])[0]
            raise UserError(
                f"{where} sets find.{key}.{bad}; a ticket is found on the split and model it is "
                f"retrained on, so set it in [run] (or the arm's run.{key}); only "
                "find.model.dropout and find.data.dataset may differ"
            )
        if key not in FIND_SECTIONS and key not in allowed:
            raise unknown_key(where + " [find]", key, FIND_SECTIONS)
        table(value, f"{where} [find.{key}]")


def check_run_overrides(raw: Mapping[str, Any], where: str) -> None:
    """An arm's run overrides may not change the suite's data split or its evaluation protocol."""
    if "eval" in raw:
        raise UserError(
            f"{where} overrides run.eval; every arm of a suite is evaluated under the suite's "
            "one protocol, so set it in [run.eval]"
        )
    data = raw.get("data", {})
    if isinstance(data, Mapping):
        for key in data:
            if key in SPLIT_FIELDS:
                raise UserError(
                    f"{where} overrides run.data.{key}; a suite loads one data split for every "
                    "arm, so set it in [run.data]"
                )
