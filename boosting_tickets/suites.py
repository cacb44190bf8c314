"""Benchmark suites: a TOML file naming dataset, model, protocol, arms and seeds, and its expansion.

A suite lives in ``benchmarks/suites/<name>.toml``::

    description = "one line shown by 'bench list'"
    seeds = [0, 1]                 # or a count: seeds = 2 means [0, 1]
    device = "cpu"                 # where it is meant to run: cpu | gpu (plan and cost estimate)
    reference = ["li2020-table3"]  # published tables shown beside results with a matching protocol

    [run]                          # hparams.RunConfig: the retraining schedule shared by every arm
    data.dataset = "fashion-mnist" #   (data/model/train/eval sections, as for 'boosting-tickets train')
    train.epochs = 4

    [find]                         # tickets.FindConfig overrides for ticket arms: train/eval/prune
    prune.sparsity = 0.8           #   (data and model always follow the arm's [run])

    [compare]
    baseline = "dense"             # the arm tickets are compared with (same seed, same grid point)
    target = "baseline-best"       # or a fixed held-out PGD accuracy such as 0.45
    target_fraction = 1.0          # target = fraction x the baseline's best held-out PGD accuracy

    [[arms]]
    name = "dense"                 # unique: lower-case letters, digits, '-', '.', '_'
    kind = "dense"                 # dense | ticket | reinit | random-mask | random-mask-global
    label = "dense, ticket schedule"
    published = "paper:dense"      # optional: the published row (of a reference table) it repeats
    run.train.lr = 0.1             # per-arm overrides of [run] (never of its data split or [eval])

    [[arms]]
    name = "reinit"
    kind = "reinit"                # controls retrain another arm's ticket: same mask, other weights
    ticket_of = "ticket-natural"

    [sweep]                        # optional grid: each listed arm becomes one arm per grid point
    arms = ["ticket-natural", "reinit"]
    grid = { "find.prune.sparsity" = [0.5, 0.8, 0.9] }

Expansion gives ``arms x seeds`` planned runs. Run directories are named by the hash of each run's
non-default settings (config.config_hash), so renaming an arm, editing a description or spelling out
a setting at its default value never changes which runs are reused. Every problem is a one-line
:class:`UserError` naming the suite, the arm and the key.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import check_ranges, from_dict, iter_settings, load_toml, to_dict
from .errors import UserError
from .hparams import DataConfig, RunConfig

#: Where suite files live: benchmarks/suites/ of the repository checkout this package runs from.
SUITES_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"

ARM_KINDS = ("dense", "ticket", "reinit", "random-mask", "random-mask-global")
CONTROL_KINDS = ("reinit", "random-mask", "random-mask-global")
DEVICES = ("cpu", "gpu")
_TOP_KEYS = (
    "description",
    "seeds",
    "device",
    "reference",
    "run",
    "find",
    "compare",
    "arms",
    "sweep",
)
_ARM_KEYS = ("name", "kind", "label", "note", "ticket_of", "published", "run", "find")
_COMPARE_KEYS = ("baseline", "target", "target_fraction")
_SWEEP_KEYS = ("arms", "grid")
_FIND_SECTIONS = ("train", "eval", "prune")
# The data split is loaded once per suite and every arm is scored under one protocol, so arms may
# change neither; batch size and augmentation are training choices and may differ.
_SPLIT_FIELDS = ("dataset", "train_subset", "val_size", "test_subset", "data_seed", "data_dir")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Compare:
    """How arms are compared: the baseline arm and the convergence target.

    ``target`` None means "the baseline's best held-out PGD accuracy (same seed) x target_fraction";
    a number is a fixed held-out accuracy threshold.
    """

    baseline: str = "dense"
    target: float | None = None
    target_fraction: float = 1.0

    def describe(self) -> str:
        if self.target is not None:
            return f"fixed held-out PGD accuracy {self.target:.4g}"
        frac = "" if self.target_fraction == 1.0 else f"{self.target_fraction:g} x "
        return f"{frac}the '{self.baseline}' arm's best held-out PGD accuracy (same seed)"


@dataclass(frozen=True)
class Arm:
    """One arm after sweep expansion.

    ``template`` is the arm's name in the suite file and ``grid`` the sweep point it was expanded
    at (empty outside sweeps); ``run``/``find`` are its override dicts, merged over [run]/[find].
    """

    name: str
    kind: str
    label: str
    note: str
    ticket_of: str | None
    run: Mapping[str, Any]
    find: Mapping[str, Any]
    template: str
    grid: tuple[tuple[str, Any], ...] = ()
    published: str | None = None

    @property
    def is_control(self) -> bool:
        return self.kind in CONTROL_KINDS

    @property
    def needs_ticket(self) -> bool:
        return self.kind == "ticket" or self.is_control

    @property
    def row_kind(self) -> str:
        """The results-row kind (results.ROW_KINDS): both random-mask controls are 'random-mask'."""
        return "random-mask" if self.kind.startswith("random-mask") else self.kind


@dataclass(frozen=True)
class Suite:
    """A validated suite. ``arms`` are expanded; ``run`` is the shared [run] RunConfig."""

    name: str
    path: Path
    description: str
    seeds: tuple[int, ...]
    device: str
    reference: tuple[str, ...]
    run: RunConfig
    find: Mapping[str, Any]
    compare: Compare
    arms: tuple[Arm, ...]
    sweep: Mapping[str, Any]

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise UserError(f"suite {self.name} has no arm '{name}'; arms: {self.arm_names()}")

    def arm_names(self) -> str:
        return ", ".join(a.name for a in self.arms)

    def ticket_arm(self, arm: Arm) -> Arm:
        """The arm whose ticket ``arm`` retrains (itself for a ticket arm)."""
        if arm.kind == "ticket":
            return arm
        assert arm.ticket_of is not None
        return self.arm(arm.ticket_of)

    def baseline_of(self, arm: Arm) -> Arm | None:
        """The dense arm ``arm`` is compared with: the baseline at the same grid point if it was
        swept, else the un-swept baseline; None for the baseline itself."""
        same_point = [
            a for a in self.arms if a.template == self.compare.baseline and a.grid == arm.grid
        ]
        plain = [a for a in self.arms if a.template == self.compare.baseline and not a.grid]
        found = same_point or plain
        if not found or found[0].name == arm.name:
            return None
        return found[0]

    def run_config(self, arm: Arm, seed: int) -> RunConfig:
        """The retraining (or dense training) config of ``arm`` at ``seed``."""
        return _run_config(self, arm, seed)

    def find_config(self, arm: Arm, seed: int) -> Any:
        """The tickets.FindConfig that finds the ticket ``arm`` retrains (None for dense arms)."""
        if not arm.needs_ticket:
            return None
        source = self.ticket_arm(arm)
        return _find_config(self, source, seed)

    def seeds_for(self, count: int | None) -> tuple[int, ...]:
        """The first ``count`` seeds: the suite's own list, continued with the next integers."""
        if count is None:
            return self.seeds
        if count < 1:
            raise UserError(f"--seeds must be >= 1, got {count}")
        out = list(self.seeds[:count])
        nxt = max(self.seeds) + 1
        while len(out) < count:
            out.append(nxt)
            nxt += 1
        return tuple(out)


# --------------------------------------------------------------------------------------------------
# Finding and listing suite files
# --------------------------------------------------------------------------------------------------


def suite_names(directory: Path = SUITES_DIR) -> list[str]:
    """Names of the suites in ``directory`` (file stems), sorted."""
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def resolve_suite_path(name_or_path: str, directory: Path = SUITES_DIR) -> Path:
    """A suite name in ``directory`` or a path to a .toml file -> the file's path."""
    text = str(name_or_path)
    candidate = Path(text)
    if text.endswith(".toml") or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"suite file not found: {candidate}")
        return candidate
    path = directory / f"{text}.toml"
    if path.is_file():
        return path
    names = suite_names(directory)
    listing = ", ".join(names) if names else f"none found in {directory}"
    raise UserError(f"unknown suite '{text}'; known suites: {listing} (or pass a path to a .toml)")


def load_suite(name_or_path: str | Path, directory: Path = SUITES_DIR) -> Suite:
    """Read, validate and expand a suite file; every problem is a one-line UserError."""
    path = resolve_suite_path(str(name_or_path), directory)
    return parse_suite(load_toml(path), name=path.stem, path=path)


# --------------------------------------------------------------------------------------------------
# Validation and expansion
# --------------------------------------------------------------------------------------------------


def _unknown(where: str, key: str, valid: Sequence[str]) -> UserError:
    return UserError(f"{where} has unknown key '{key}'; valid keys: {', '.join(sorted(valid))}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table (key = value pairs), got {value!r}")
    return value


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    out = dict(d)
    if rest:
        inner = out.get(head, {})
        out[head] = _set_dotted(inner if isinstance(inner, Mapping) else {}, rest, value)
    else:
        out[head] = value
    return out


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UserError(f"{where}: seeds = {value}; use a count >= 1 or a list like [0, 1]")
        return tuple(range(value))
    if isinstance(value, list) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise UserError(f"{where}: seeds must be non-negative integers, got {value!r}")
        if len(set(value)) != len(value):
            raise UserError(f"{where}: seeds repeat in {value!r}; list each seed once")
        return tuple(value)
    raise UserError(
        f"{where}: seeds must be a count or a non-empty list of integers, got {value!r}"
    )


def _checked(cfg: Any) -> Any:
    check_ranges(cfg)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def _run_config(suite: Suite, arm: Arm, seed: int) -> RunConfig:
    cfg = from_dict(
        RunConfig, arm.run, base=suite.run, source=f"suite {suite.name}, arm {arm.name}"
    )
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    return _checked(cfg)


def _find_class() -> type:
    try:
        from .tickets import FindConfig
    except ImportError as exc:  # pragma: no cover - the package always ships tickets.py
        raise UserError(f"ticket arms need boosting_tickets.tickets ({exc})") from None
    return FindConfig


def _find_config(suite: Suite, arm: Arm, seed: int) -> Any:
    find_cls = _find_class()
    run = _run_config(suite, arm, seed)
    raw = _merge(suite.find, arm.find)
    train = dict(raw.get("train", {}))
    # Where and how visibly it runs follow the retraining run unless the suite says otherwise.
    train.setdefault("device", run.train.device)
    train.setdefault("progress", run.train.progress)
    train["seed"] = seed
    doc = {
        "data": to_dict(run.data),
        "model": to_dict(run.model),
        "train": train,
        "eval": _merge(to_dict(run.eval), raw.get("eval", {})),
        **{k: v for k, v in raw.items() if k not in ("train", "eval")},
    }
    return _checked(from_dict(find_cls, doc, source=f"suite {suite.name}, arm {arm.name} [find]"))


def _check_find_table(raw: Mapping[str, Any], where: str) -> None:
    for key, value in raw.items():
        if key in ("data", "model"):
            raise UserError(
                f"{where} sets [find.{key}]; a ticket is found on the data and model it is "
                f"retrained on, so set them in [run] (or the arm's run.{key})"
            )
        if key not in _FIND_SECTIONS:
            raise _unknown(where + " [find]", key, _FIND_SECTIONS)
        _table(value, f"{where} [find.{key}]")


def _check_run_overrides(raw: Mapping[str, Any], where: str) -> None:
    if "eval" in raw:
        raise UserError(
            f"{where} overrides run.eval; every arm of a suite is evaluated under the suite's "
            "one protocol, so set it in [run.eval]"
        )
    data = raw.get("data", {})
    if isinstance(data, Mapping):
        for key in data:
            if key in _SPLIT_FIELDS:
                raise UserError(
                    f"{where} overrides run.data.{key}; a suite loads one data split for every "
                    "arm, so set it in [run.data]"
                )


def parse_suite(doc: Mapping[str, Any], *, name: str, path: Path | None = None) -> Suite:
    """Validate a suite document (the parsed TOML) and expand its sweep into arms."""
    where = f"suite {name}"
    for key in doc:
        if key not in _TOP_KEYS:
            raise _unknown(where, key, _TOP_KEYS)
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{where}: description must be a string")
    seeds = _seeds(doc.get("seeds", 1), where)
    device = doc.get("device", "cpu")
    if device not in DEVICES:
        raise UserError(f"{where}: device = {device!r}; choose one of: {', '.join(DEVICES)}")
    reference = doc.get("reference", [])
    from .published import TABLES

    if not isinstance(reference, list) or any(r not in TABLES for r in reference):
        raise UserError(
            f"{where}: reference = {reference!r}; each entry must be one of: {', '.join(TABLES)}"
        )
    run = _checked(
        from_dict(RunConfig, _table(doc.get("run", {}), f"{where} [run]"), source=f"{where} [run]")
    )
    find = _table(doc.get("find", {}), f"{where} [find]")
    _check_find_table(find, where)

    arms_raw = doc.get("arms")
    if not isinstance(arms_raw, list) or not arms_raw:
        raise UserError(f"{where} has no arms; add [[arms]] tables with name and kind")
    templates: list[Arm] = []
    for i, raw in enumerate(arms_raw):
        raw = _table(raw, f"{where} arm #{i + 1}")
        arm_name = raw.get("name")
        if not isinstance(arm_name, str) or not _NAME.match(arm_name):
            raise UserError(
                f"{where} arm #{i + 1} needs a name of lower-case letters, digits, '-', '.', '_' "
                f"(got {arm_name!r})"
            )
        aw = f"{where}, arm '{arm_name}'"
        for key in raw:
            if key not in _ARM_KEYS:
                raise _unknown(aw, key, _ARM_KEYS)
        if arm_name in (a.name for a in templates):
            raise UserError(f"{where} has two arms named '{arm_name}'; arm names must be unique")
        kind = raw.get("kind")
        if kind not in ARM_KINDS:
            raise UserError(
                f"{aw} has unknown kind {kind!r}; choose one of: {', '.join(ARM_KINDS)}"
            )
        ticket_of = raw.get("ticket_of")
        if kind in CONTROL_KINDS and not isinstance(ticket_of, str):
            raise UserError(
                f"{aw} is a {kind} control: name the ticket arm it retrains in ticket_of"
            )
        if kind not in CONTROL_KINDS and ticket_of is not None:
            raise UserError(
                f"{aw} sets ticket_of, but only controls ({', '.join(CONTROL_KINDS)}) do"
            )
        run_over = _table(raw.get("run", {}), f"{aw} run")
        _check_run_overrides(run_over, aw)
        find_over = _table(raw.get("find", {}), f"{aw} find")
        if find_over and kind != "ticket":
            raise UserError(
                f"{aw} sets find overrides but is a {kind} arm; only ticket arms find tickets "
                "(a control uses its ticket_of arm's ticket)"
            )
        _check_find_table(find_over, aw)
        for key in ("label", "note"):
            if not isinstance(raw.get(key, ""), str):
                raise UserError(f"{aw}: {key} must be a string")
        published = raw.get("published")
        if published is not None and published not in {
            row.arm for r in reference for row in TABLES[r].rows
        }:
            raise UserError(
                f"{aw}: published = {published!r} is not a row of the suite's reference tables "
                f"({', '.join(reference) or 'none listed'})"
            )
        templates.append(
            Arm(
                name=arm_name,
                kind=kind,
                label=raw.get("label", arm_name),
                note=raw.get("note", ""),
                ticket_of=ticket_of,
                run=run_over,
                find=find_over,
                template=arm_name,
                published=published,
            )
        )
    by_name = {a.name: a for a in templates}
    for a in templates:
        if a.ticket_of is not None and by_name.get(a.ticket_of, a).kind != "ticket":
            tickets = ", ".join(t.name for t in templates if t.kind == "ticket") or "none"
            raise UserError(
                f"{where}, arm '{a.name}': ticket_of '{a.ticket_of}' is not a ticket arm of this "
                f"suite (ticket arms: {tickets})"
            )

    compare = _compare(_table(doc.get("compare", {}), f"{where} [compare]"), where, by_name)
    sweep = _table(doc.get("sweep", {}), f"{where} [sweep]")
    arms = _expand(templates, sweep, where)
    suite = Suite(
        name=name,
        path=path if path is not None else Path(f"{name}.toml"),
        description=description,
        seeds=seeds,
        device=device,
        reference=tuple(reference),
        run=run,
        find=find,
        compare=compare,
        arms=tuple(arms),
        sweep=sweep,
    )
    # Build every arm's configs once (seed 0 stands for all seeds) so bad values fail now, with
    # the arm named, not hours into the suite.
    for arm in suite.arms:
        cfg = suite.run_config(arm, seeds[0])
        suite.find_config(arm, seeds[0])
        if arm.needs_ticket and cfg.train.warmup_epochs > 0 and cfg.train.warmup_lr is None:
            # retrain_ticket would start the warmup at the finding lr, the dense arm at lr/10.
            raise UserError(
                f"{where}, arm '{arm.name}': warmup without run.train.warmup_lr; set it "
                "explicitly (the paper: the finding lr, e.g. 0.01) so dense and ticket arms "
                "train with one schedule"
            )
    return suite


def _compare(raw: Mapping[str, Any], where: str, arms: Mapping[str, Arm]) -> Compare:
    for key in raw:
        if key not in _COMPARE_KEYS:
            raise _unknown(f"{where} [compare]", key, _COMPARE_KEYS)
    baseline = raw.get("baseline", "dense")
    if baseline not in arms or arms[baseline].kind != "dense":
        dense = ", ".join(a.name for a in arms.values() if a.kind == "dense") or "none"
        raise UserError(
            f"{where} [compare]: baseline '{baseline}' is not a dense arm (dense arms: {dense}); "
            "add a dense arm or name one in compare.baseline"
        )
    target = raw.get("target", "baseline-best")
    if target == "baseline-best":
        target_value = None
    elif isinstance(target, int | float) and not isinstance(target, bool) and 0 < target <= 1:
        target_value = float(target)
    else:
        raise UserError(
            f'{where} [compare]: target = {target!r}; use "baseline-best" or an accuracy in (0, 1]'
        )
    fraction = raw.get("target_fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise UserError(
            f"{where} [compare]: target_fraction = {fraction!r}; use a number in (0, 1]"
        )
    return Compare(baseline=baseline, target=target_value, target_fraction=float(fraction))


def _grid_key_ok(key: str, where: str) -> None:
    section, _, rest = key.partition(".")
    sub, _, leaf = rest.partition(".")
    if section not in ("run", "find") or not sub or not leaf or "." in leaf:
        raise UserError(
            f"{where} [sweep.grid]: key '{key}' must look like run.SECTION.SETTING or "
            "find.SECTION.SETTING (e.g. find.prune.sparsity, run.model.model)"
        )
    if section == "run":
        _check_run_overrides({sub: {leaf: None}}, f"{where} [sweep.grid]")
        valid = {k for k, _, _ in iter_settings(RunConfig)}
        if f"{sub}.{leaf}" not in valid:
            raise UserError(
                f"{where} [sweep.grid]: unknown setting '{key}' (no {sub}.{leaf} in [run])"
            )
    else:
        _check_find_table({sub: {}}, where + " [sweep.grid]")


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expand(templates: list[Arm], sweep: Mapping[str, Any], where: str) -> list[Arm]:
    if not sweep:
        return templates
    for key in sweep:
        if key not in _SWEEP_KEYS:
            raise _unknown(f"{where} [sweep]", key, _SWEEP_KEYS)
    grid = _table(sweep.get("grid", {}), f"{where} [sweep.grid]")
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
        if arm.kind == "ticket":
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
                    run = _set_dotted(run, rest, value)
                elif arm.kind == "ticket":
                    find = _set_dotted(find, rest, value)
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


def split_settings(cfg: RunConfig) -> dict[str, Any]:
    """The data-split settings a suite loads once (dataset, subsets, seeds, directory)."""
    return {k: getattr(cfg.data, k) for k in _SPLIT_FIELDS if k in DataConfig.__dataclass_fields__}
