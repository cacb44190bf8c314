"""The benchmark runner: run a suite (arms x seeds), reusing, resuming, and writing its results.

``run_suite`` loads the suite's data split once, then for every planned (arm, seed):

* dense arms train with ``training.train`` in ``<out>/runs/train_<hash>``;
* ticket arms find their ticket with ``tickets.find_ticket`` in ``<out>/tickets/ticket_<hash>`` and
  retrain it with ``tickets.retrain_ticket`` in ``<out>/runs/retrain_<hash>``; controls (the arm
  kinds that name a control, ``bench.arms``) retrain the same ticket with that control.

Every stage is idempotent and resumable (hashed directories, ``last.pt``), so rerunning a suite reuses
finished runs and resumes an interrupted one. A run that fails (a diverged run or any other one-line
error) is reported on the console and in the results file and never tabulated; the other runs go on.
After every run ``<out>/results.json`` is rewritten (:mod:`.rows`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import RUN_ERRORS, UserError
from ..core.paths import SuitePaths
from .plan import PlannedRun, plan_suite
from .suite_files import suite_dirs, suite_files
from .suites import Suite, load_suite, split_settings

Log = Callable[[str], None]


@dataclass
class Outcome:
    """A finished run of the suite and what the results rows need from it."""

    planned: PlannedRun
    result: Any  # training.RunResult
    ticket_meta: dict[str, Any] | None
    ticket_dir: Path | None
    params: tuple[int, int]


@dataclass
class Failure:
    """A run that failed in ``stage`` find or train (a UserError or a diverged run)."""

    planned: PlannedRun
    stage: str  # "find" or "train"
    error: str
    run_dir: str | None = None


@dataclass
class BenchReport:
    """What ``run_suite`` did: results path, rows written, failures."""

    results_path: Path
    rows: list[dict[str, Any]]
    failures: list[Failure]
    wall_seconds: float


def check_out_dir(out: Path, suite: Suite) -> None:
    """Refuse an --out directory whose results file belongs to another suite (never overwrite it)."""
    path = SuitePaths(out).results
    if not path.exists():
        return
    from ..report.results import read_results

    doc = read_results(path)
    if doc.get("suite") != suite.name:
        raise UserError(
            f"{path} holds results of suite '{doc.get('suite')}', not '{suite.name}'; "
            "choose another --out directory"
        )


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


@dataclass
class SuiteRun:
    """One invocation of ``run_suite``: what has been done and what failed so far."""

    suite: Suite
    paths: SuitePaths
    plan: list[PlannedRun]
    splits: Any
    say: Log
    environment: dict[str, Any]
    t_start: float = field(default_factory=time.perf_counter)
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    tickets: dict[str, Any] = field(default_factory=dict)
    find_errors: dict[str, str] = field(default_factory=dict)

    def write(self, status: str) -> list[dict[str, Any]]:
        from .rows import build_rows, write_suite_results

        rows = build_rows(self.suite, self.outcomes, self.paths.dir)
        write_suite_results(self, rows, status, time.perf_counter() - self.t_start)
        return rows

    def ticket_for(self, pr: PlannedRun, head: str) -> Any:
        """The ticket ``pr`` retrains, found once per suite (None for dense arms)."""
        if pr.find is None:
            return None
        key = pr.find_key
        assert key is not None
        if key in self.find_errors:
            raise UserError(f"its ticket could not be found: {self.find_errors[key]}")
        if key not in self.tickets:
            from ..tickets.finding import find_ticket

            self.say(f"{head}: finding ticket ({pr.find.train.objective} training)")
            try:
                self.tickets[key] = find_ticket(
                    pr.find, self.paths.tickets, log=self.say, splits=self.splits
                )
            except RUN_ERRORS as exc:
                self.find_errors[key] = str(exc)
                raise
        return self.tickets[key]

    def train(self, pr: PlannedRun, ticket: Any, head: str) -> Any:
        from ..training.run import run_dir_for, train

        if ticket is None:
            run_dir = run_dir_for(pr.run, self.paths.runs)
            self.say(f"{head}: training {run_dir}")
            return train(pr.run, run_dir, splits=self.splits, log=self.say)
        from ..tickets.retrain import retrain_ticket

        self.say(f"{head}: retraining {'the ticket' if not pr.control else pr.control}")
        return retrain_ticket(
            pr.run,
            ticket,
            out=self.paths.runs,
            control=pr.control,
            log=self.say,
            splits=self.splits,
        )

    def run_one(self, i: int, pr: PlannedRun) -> None:
        head = f"[{i}/{len(self.plan)}] {pr.title}"
        stage = "find"
        try:
            ticket = self.ticket_for(pr, head)
            stage = "train"
            result = self.train(pr, ticket, head)
        except RUN_ERRORS as exc:
            self.failures.append(Failure(pr, stage, str(exc)))
            self.say(f"{head}: FAILED ({stage}): {exc}")
            return
        self.outcomes.append(
            Outcome(
                pr,
                result,
                None if ticket is None else dict(ticket.meta),
                None if ticket is None else Path(ticket.dir),
                _params(Path(result.run_dir)),
            )
        )
        test = (result.test or {}).get("best") or {}
        self.say(
            f"{head}: {result.status}; best test clean {_pct(test.get('clean_acc'))}, "
            f"PGD {_pct(test.get('pgd_acc'))}; {result.train_seconds:.0f} s training"
        )


def _params(run_dir: Path) -> tuple[int, int]:
    from ..core.paths import RunPaths
    from ..models.checkpoints import load_model
    from ..models.layers import count_parameters

    model, _ = load_model(RunPaths(run_dir).best)
    return count_parameters(model)


def _load_split(suite: Suite) -> Any:
    from ..data.splits import load_splits

    s = split_settings(suite.run)
    return load_splits(
        s["dataset"],
        s["data_dir"],
        train_subset=s["train_subset"],
        val_size=s["val_size"],
        test_subset=s["test_subset"],
        data_seed=s["data_seed"],
        allow_download=suite.run.data.download,
    )


def run_suite(
    suite: Suite,
    *,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    log: Log | None = None,
    progress: bool | None = None,
    splits: Any = None,
) -> BenchReport:
    """Run (or reuse, or resume) every planned run of ``suite`` under ``out``; write results.json.

    ``progress``: show the suite's progress bar (None: only on a terminal). ``splits`` replaces
    loading the suite's data (e.g. a split already in memory).
    """
    from tqdm import tqdm

    from ..core.environment import environment_info, resolve_device

    out = Path(out)
    check_out_dir(out, suite)
    plan = plan_suite(suite, seeds)
    t_start = time.perf_counter()
    splits = _load_split(suite) if splits is None else splits
    environment = environment_info(resolve_device(suite.run.train.device))
    state = SuiteRun(suite, SuitePaths(out), plan, splits, log or (lambda msg: None), environment)
    state.t_start = t_start
    bar = tqdm(
        total=len(plan),
        desc=f"bench {suite.name}",
        unit="run",
        disable=None if progress is None else not progress,
    )
    try:
        for i, pr in enumerate(plan, 1):
            state.run_one(i, pr)
            state.write("running")
            bar.update(1)
    finally:
        bar.close()
    rows = state.write("complete" if not state.failures else "complete-with-failures")
    return BenchReport(state.paths.results, rows, state.failures, time.perf_counter() - t_start)


def list_suites(directory: Path | Sequence[Path] | None = None) -> list[dict[str, Any]]:
    """Name, source, device, arms, seeds, runs and description of every suite file found (in the
    user's suite directories and the packaged ones); invalid ones say why."""
    dirs = suite_dirs() if directory is None else directory
    dirs = (dirs,) if isinstance(dirs, str | Path) else tuple(dirs)
    out = []
    for name, path in suite_files([Path(d) for d in dirs]).items():
        try:
            s = load_suite(path)
        except UserError as exc:
            out.append({"name": name, "path": str(path), "error": str(exc)})
            continue
        out.append(
            {
                "name": name,
                "path": str(path),
                "device": s.device,
                "arms": len(s.arms),
                "seeds": len(s.seeds),
                "runs": len(s.arms) * len(s.seeds),
                "description": s.description,
            }
        )
    return out
