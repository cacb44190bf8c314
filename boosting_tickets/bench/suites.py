"""Benchmark suites: a TOML file naming dataset, model, protocol, arms and seeds, and its expansion.

A suite is a TOML file: packaged ones in ``boosting_tickets/suites/``, or the user's own, by path or in
a suite directory (:mod:`.suite_files`)::

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
    target = "baseline-plateau"    # or "baseline-best", or a fixed held-out PGD accuracy (0.45)
    target_fraction = 1.0          # target = fraction x the baseline's plateau (or best)
    target_window = 2              # plateau: the baseline's last epochs averaged (default: 1/4)
    allow_weak_stats = false       # true: run with fewer than 3 seeds (no intervals, no verdicts)
    eps_curve = [0.05, 0.1, 0.2]   # also attack each selected model at these eps (test subset)
    eps_curve_n = 500              #   on this many test images

    [[arms]]
    name = "dense"                 # unique: lower-case letters, digits, '-', '.', '_'
    kind = "dense"                 # an arm kind (bench.arms): dense | ticket | a control's name
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

    [launch]                       # optional: how `bench run` starts workers (bench.launch)
    launcher = "slurm"
    workers = 8
    slurm_partition = "gpu"
    gpus_per_run = 1

Expansion gives ``arms x seeds`` planned runs. Run directories are named by the hash of each run's
non-default settings (config.config_hash), so renaming an arm, editing a description or spelling out
a setting at its default value never changes which runs are reused. Every problem is a one-line
:class:`UserError` naming the suite, the arm and the key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import check_ranges, from_dict, load_toml, to_dict
from ..core.errors import UserError
from ..report.published import published_tables
from ..tickets.config import FindConfig
from ..training.hparams import DataConfig, RunConfig
from .arms import ArmKind, arm_kinds, control_kinds
from .launch import LaunchConfig
from .suite_files import resolve_suite_path
from .suite_schema import (
    ARM_KEYS,
    COMPARE_KEYS,
    DEVICES,
    SPLIT_FIELDS,
    TOP_KEYS,
    check_find_table,
    check_run_overrides,
    merge,
    table,
    unknown_key,
)
from .sweep import expand

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Compare:
    """How arms are compared: the baseline arm and the convergence target (``report.targets``).

    ``target`` None means the ``rule``: ``baseline-plateau`` (the baseline's held-out PGD accuracy
    over its last ``target_window`` epochs, averaged over seeds) or ``baseline-best`` (its best
    epoch, same seed), times ``target_fraction``; a number is a fixed held-out accuracy.
    ``allow_weak_stats`` lets a suite run with fewer seeds than intervals need. ``eps_curve``
    lists eps at which each selected model is also attacked, on ``eps_curve_n`` test images.
    """

    baseline: str = "dense"
    target: float | None = None
    target_fraction: float = 1.0
    rule: str = "baseline-plateau"
    target_window: int | None = None
    allow_weak_stats: bool = False
    eps_curve: tuple[float, ...] = ()
    eps_curve_n: int = 500

    def describe(self) -> str:
        if self.target is not None:
            return f"fixed held-out PGD accuracy {self.target:.4g}"
        frac = "" if self.target_fraction == 1.0 else f"{self.target_fraction:g} x "
        if self.rule == "baseline-best":
            return f"{frac}the '{self.baseline}' arm's best held-out PGD accuracy (same seed)"
        window = f"last {self.target_window}" if self.target_window else "last quarter of the"
        return (
            f"{frac}the '{self.baseline}' arm's held-out PGD accuracy over its {window} epochs, "
            "averaged over seeds"
        )


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
    transfer_head: str = "reprune"  # tickets.transfer.HEADS; used when find.data.dataset differs

    @property
    def kind_entry(self) -> ArmKind:
        return arm_kinds().get(self.kind)

    @property
    def is_control(self) -> bool:
        return self.kind_entry.is_control

    @property
    def needs_ticket(self) -> bool:
        return self.kind_entry.needs_ticket

    @property
    def row_kind(self) -> str:
        """The results-row kind (both random-mask controls give 'random-mask')."""
        return self.kind_entry.row_kind


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
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise UserError(f"suite {self.name} has no arm '{name}'; arms: {self.arm_names()}")

    def arm_names(self) -> str:
        return ", ".join(a.name for a in self.arms)

    def ticket_arm(self, arm: Arm) -> Arm:
        """The arm whose ticket ``arm`` retrains (itself for a ticket arm)."""
        if arm.kind_entry.finds:
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


def load_suite(name_or_path: str | Path, directory: Path | Sequence[Path] | None = None) -> Suite:
    """Read, validate and expand a suite file; every problem is a one-line UserError.

    ``directory``: where names are looked up (default: the user's suite directories, then the
    packaged suites; see :mod:`.suite_files`).
    """
    path = resolve_suite_path(str(name_or_path), directory)
    return parse_suite(load_toml(path), name=path.stem, path=path)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    from ..training.hparams import MAX_SEED

    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 10_000:
            raise UserError(f"{where}: seeds = {value}; use a count in [1, 10000] or a list")
        return tuple(range(value))
    if isinstance(value, list) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                   for s in value):  # fmt: skip
            raise UserError(f"{where}: seeds must be integers in [0, 2^63 - 1], got {value!r}")
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


def _find_config(suite: Suite, arm: Arm, seed: int) -> Any:
    run = _run_config(suite, arm, seed)
    raw = merge(merge(suite.find, arm.kind_entry.find_defaults), arm.find)
    train = dict(raw.get("train", {}))
    # Where and how visibly it runs follow the retraining run unless the suite says otherwise.
    train.setdefault("device", run.train.device)
    train.setdefault("progress", run.train.progress)
    train["seed"] = seed
    doc = {
        "data": merge(to_dict(run.data), raw.get("data", {})),
        "model": merge(to_dict(run.model), raw.get("model", {})),
        "train": train,
        "eval": merge(to_dict(run.eval), raw.get("eval", {})),
        **{k: v for k, v in raw.items() if k not in ("data", "train", "eval", "model")},
    }
    return _checked(from_dict(FindConfig, doc, source=f"suite {suite.name}, arm {arm.name} [find]"))


def _parse_arm(raw: Any, i: int, where: str, reference: Sequence[str]) -> Arm:
    """One [[arms]] table, validated (before sweep expansion)."""
    raw = table(raw, f"{where} arm #{i + 1}")
    arm_name = raw.get("name")
    if not isinstance(arm_name, str) or not _NAME.match(arm_name):
        raise UserError(
            f"{where} arm #{i + 1} needs a name of lower-case letters, digits, '-', '.', '_' "
            f"(got {arm_name!r})"
        )
    aw = f"{where}, arm '{arm_name}'"
    for key in raw:
        if key not in ARM_KEYS:
            raise unknown_key(aw, key, ARM_KEYS)
    kinds = arm_kinds()
    kind = raw.get("kind")
    if kind not in kinds:
        raise UserError(f"{aw} has unknown kind {kind!r}; choose one of: {', '.join(kinds.names)}")
    ticket_of = raw.get("ticket_of")
    if kinds.get(kind).is_control and not isinstance(ticket_of, str):
        raise UserError(f"{aw} is a {kind} control: name the ticket arm it retrains in ticket_of")
    if not kinds.get(kind).is_control and ticket_of is not None:
        raise UserError(f"{aw} sets ticket_of, but only controls ({', '.join(control_kinds())}) do")
    run_over = table(raw.get("run", {}), f"{aw} run")
    check_run_overrides(run_over, aw)
    find_over = table(raw.get("find", {}), f"{aw} find")
    if find_over and not kinds.get(kind).finds:
        raise UserError(
            f"{aw} sets find overrides but is a {kind} arm; only ticket arms find tickets "
            "(a control uses its ticket_of arm's ticket)"
        )
    check_find_table(find_over, aw)
    for key in ("label", "note"):
        if not isinstance(raw.get(key, ""), str):
            raise UserError(f"{aw}: {key} must be a string")
    from ..tickets.transfer import HEADS

    head = raw.get("transfer_head", HEADS[0])
    if head not in HEADS or (head != HEADS[0] and kind == "dense"):
        raise UserError(
            f"{aw}: transfer_head = {head!r}; use one of {', '.join(HEADS)}, on a ticket or "
            "control arm"
        )
    published = raw.get("published")
    rows = {row.arm for r in reference for row in published_tables()[r].rows}
    if published is not None and published not in rows:
        raise UserError(
            f"{aw}: published = {published!r} is not a row of the suite's reference tables "
            f"({', '.join(reference) or 'none listed'})"
        )
    return Arm(
        name=arm_name,
        kind=kind,
        label=raw.get("label", arm_name),
        note=raw.get("note", ""),
        ticket_of=ticket_of,
        run=run_over,
        find=find_over,
        template=arm_name,
        published=published,
        transfer_head=head,
    )


def _parse_arms(doc: Mapping[str, Any], where: str, reference: Sequence[str]) -> list[Arm]:
    arms_raw = doc.get("arms")
    if not isinstance(arms_raw, list) or not arms_raw:
        raise UserError(f"{where} has no arms; add [[arms]] tables with name and kind")
    templates: list[Arm] = []
    for i, raw in enumerate(arms_raw):
        arm = _parse_arm(raw, i, where, reference)
        if arm.name in (a.name for a in templates):
            raise UserError(f"{where} has two arms named '{arm.name}'; arm names must be unique")
        templates.append(arm)
    by_name = {a.name: a for a in templates}
    for a in templates:
        if a.ticket_of is not None and not by_name.get(a.ticket_of, a).kind_entry.finds:
            tickets = ", ".join(t.name for t in templates if t.kind_entry.finds) or "none"
            raise UserError(
                f"{where}, arm '{a.name}': ticket_of '{a.ticket_of}' is not a ticket arm of this "
                f"suite (ticket arms: {tickets})"
            )
    return templates


def parse_suite(doc: Mapping[str, Any], *, name: str, path: Path | None = None) -> Suite:
    """Validate a suite document (the parsed TOML) and expand its sweep into arms."""
    where = f"suite {name}"
    for key in doc:
        if key not in TOP_KEYS:
            raise unknown_key(where, key, TOP_KEYS)
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{where}: description must be a string")
    seeds = _seeds(doc.get("seeds", 1), where)
    device = doc.get("device", "cpu")
    if device not in DEVICES:
        raise UserError(f"{where}: device = {device!r}; choose one of: {', '.join(DEVICES)}")
    reference = doc.get("reference", [])
    tables = published_tables()
    if not isinstance(reference, list) or any(r not in tables for r in reference):
        raise UserError(
            f"{where}: reference = {reference!r}; each entry must be one of: {', '.join(tables)}"
        )
    run = _checked(
        from_dict(RunConfig, table(doc.get("run", {}), f"{where} [run]"), source=f"{where} [run]")
    )
    find = table(doc.get("find", {}), f"{where} [find]")
    check_find_table(find, where)
    templates = _parse_arms(doc, where, reference)
    by_name = {a.name: a for a in templates}
    compare = _compare(table(doc.get("compare", {}), f"{where} [compare]"), where, by_name)
    sweep = table(doc.get("sweep", {}), f"{where} [sweep]")
    launch = from_dict(
        LaunchConfig, table(doc.get("launch", {}), f"{where} [launch]"), source=f"{where} [launch]"
    )
    check_ranges(launch)
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
        arms=tuple(expand(templates, sweep, where)),
        sweep=sweep,
        launch=launch,
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
        if key not in COMPARE_KEYS:
            raise unknown_key(f"{where} [compare]", key, COMPARE_KEYS)
    baseline = raw.get("baseline", "dense")
    if baseline not in arms or arms[baseline].kind != "dense":
        dense = ", ".join(a.name for a in arms.values() if a.kind == "dense") or "none"
        raise UserError(
            f"{where} [compare]: baseline '{baseline}' is not a dense arm (dense arms: {dense}); "
            "add a dense arm or name one in compare.baseline"
        )
    target = raw.get("target", "baseline-plateau")
    rule, target_value = "baseline-plateau", None
    if target in ("baseline-plateau", "baseline-best"):
        rule = target
    elif isinstance(target, int | float) and not isinstance(target, bool) and 0 < target <= 1:
        rule, target_value = "fixed", float(target)
    else:
        raise UserError(
            f'{where} [compare]: target = {target!r}; use "baseline-plateau", "baseline-best" or '
            "an accuracy in (0, 1]"
        )
    window = raw.get("target_window")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 1
    ):
        raise UserError(f"{where} [compare]: target_window = {window!r}; use a whole number >= 1")
    weak = raw.get("allow_weak_stats", False)
    if not isinstance(weak, bool):
        raise UserError(f"{where} [compare]: allow_weak_stats = {weak!r}; use true or false")
    fraction = raw.get("target_fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise UserError(
            f"{where} [compare]: target_fraction = {fraction!r}; use a number in (0, 1]"
        )
    curve = raw.get("eps_curve", [])
    if not isinstance(curve, list) or not all(
        isinstance(e, int | float) and not isinstance(e, bool) and 0 < e <= 1 for e in curve
    ):
        raise UserError(f"{where} [compare]: eps_curve = {curve!r}; use a list of eps in (0, 1]")
    n = raw.get("eps_curve_n", 500)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{where} [compare]: eps_curve_n = {n!r}; use a whole number >= 1")
    eps = tuple(sorted(float(e) for e in curve))
    return Compare(baseline, target_value, float(fraction), rule, window, weak, eps, n)


def split_settings(cfg: RunConfig) -> dict[str, Any]:
    """The data-split settings a suite loads once (dataset, subsets, seeds, directory)."""
    return {k: getattr(cfg.data, k) for k in SPLIT_FIELDS if k in DataConfig.__dataclass_fields__}
