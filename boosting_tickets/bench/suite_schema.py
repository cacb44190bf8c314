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
ARM_KEYS = ("name", "kind", "label", "note", "ticket_of", "published", "run", "find")
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


def check_find_table(raw: Mapping[str, Any], where: str) -> None:
    """A [find] table (or an arm's find overrides) may set train/eval/prune, never data or the
    architecture; of the model only ``dropout`` (the mask fits either way), so that a suite can
    put dropout in the finding, the retraining or both."""
    for key, value in raw.items():
        extra_model = (
            set(value) - FIND_MODEL_KEYS if key == "model" and isinstance(value, Mapping) else None
        )
        if key == "data" or (key == "model" and extra_model != set()):
            raise UserError(
                f"{where} sets [find.{key}]; a ticket is found on the data and model it is "
                f"retrained on, so set them in [run] (or the arm's run.{key}); of the model, "
                "only find.model.dropout may differ"
            )
        if key not in FIND_SECTIONS and key != "model":
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
