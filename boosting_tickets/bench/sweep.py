"""Sweep expansion: each swept arm of a suite becomes one arm per point of its grid.

A point's values are written into the arm's ``run``/``find`` overrides; arm names get the point as a
suffix (``ticket@sparsity=0.9``) and controls follow their ticket arm to the same point.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.config import iter_settings
from ..core.errors import UserError
from ..training.hparams import RunConfig
from .suite_schema import (
    SWEEP_KEYS,
    check_find_table,
    check_run_overrides,
    set_dotted,
    table,
    unknown_key,
)

if TYPE_CHECKING:
    from .suites import Arm


def _grid_key_ok(key: str, where: str) -> None:
    section, _, rest = key.partition(".")
    sub, _, leaf = rest.partition(".")
    if section not in ("run", "find") or not sub or not leaf or "." in leaf:
        raise UserError(
            f"{where} [sweep.grid]: key '{key}' must look like run.SECTION.SETTING or "
            "find.SECTION.SETTING (e.g. find.prune.sparsity, run.model.model)"
        )
    if section == "run":
        check_run_overrides({sub: {leaf: None}}, f"{where} [sweep.grid]")
        valid = {k for k, _, _ in iter_settings(RunConfig)}
        if f"{sub}.{leaf}" not in valid:
            raise UserError(
                f"{where} [sweep.grid]: unknown setting '{key}' (no {sub}.{leaf} in [run])"
            )
    else:
        check_find_table({sub: {}}, where + " [sweep.grid]")


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand(templates: list[Arm], sweep: Mapping[str, Any], where: str) -> list[Arm]:
    """The arms of a suite after its ``[sweep]`` (the templates themselves when there is none)."""
    if not sweep:
        return templates
    for key in sweep:
        if key not in SWEEP_KEYS:
            raise unknown_key(f"{where} [sweep]", key, SWEEP_KEYS)
    grid = table(sweep.get("grid", {}), f"{where} [sweep.grid]")
    if not grid:
        raise UserError(f'{where} [sweep] has no grid; add grid = {{ "KEY" = [values] }}')
    for key, values in grid.items():
        _grid_key_ok(key, where)
        if not isinstance(values, list) or not values:
            raise UserError(f"{where} [sweep.grid]: '{key}' needs a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise UserError(f"{where} [sweep.grid]: '{key}' lists a value twice")
    names = [a.name for a in templates]
    swept = sweep.get("arms", names)
    if not isinstance(swept, list) or any(n not in names for n in swept):
        raise UserError(
            f"{where} [sweep]: arms = {swept!r}; each entry must be an arm of this suite "
            f"({', '.join(names)})"
        )
    by_name = {a.name: a for a in templates}
    for n in swept:
        arm = by_name[n]
        if arm.is_control and arm.ticket_of not in swept:
            raise UserError(
                f"{where} [sweep]: control '{n}' is swept but its ticket arm '{arm.ticket_of}' is "
                "not; add it to sweep.arms"
            )
        if arm.kind_entry.finds:
            for c in templates:
                if c.ticket_of == n and c.name not in swept:
                    raise UserError(
                        f"{where} [sweep]: ticket arm '{n}' is swept but its control '{c.name}' "
                        "is not; add it to sweep.arms so each grid point keeps its control"
                    )
        if arm.kind == "dense" and any(k.startswith("find.") for k in grid):
            raise UserError(
                f"{where} [sweep]: grid key(s) {', '.join(k for k in grid if k.startswith('find.'))} "
                f"do not apply to dense arm '{n}'; remove it from sweep.arms"
            )
    keys = list(grid)
    points = [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
    out: list[Arm] = []
    for arm in templates:
        if arm.name not in swept:
            out.append(arm)
            continue
        for point in points:
            suffix = ",".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in point)
            run, find = dict(arm.run), dict(arm.find)
            for key, value in point:
                section, _, rest = key.partition(".")
                if section == "run":
                    run = set_dotted(run, rest, value)
                elif arm.kind_entry.finds:
                    find = set_dotted(find, rest, value)
            label_point = ", ".join(f"{k.rsplit('.', 1)[-1]} {_short(v)}" for k, v in point)
            out.append(
                dataclasses.replace(
                    arm,
                    name=f"{arm.name}@{suffix}",
                    label=f"{arm.label} ({label_point})",
                    ticket_of=None if arm.ticket_of is None else f"{arm.ticket_of}@{suffix}",
                    run=run,
                    find=find,
                    grid=point,
                )
            )
    return out
