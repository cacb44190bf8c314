"""The benchmark runner: run a suite (arms x seeds), reusing, resuming, and writing its results.

``run_suite`` loads the suite's data split once, then for every planned (arm, seed):

* dense arms train with ``training.train`` in ``<out>/runs/train_<hash>``;
* ticket arms find their ticket with ``tickets.find_ticket`` in ``<out>/tickets/ticket_<hash>`` and
  retrain it with ``tickets.retrain_ticket`` in ``<out>/runs/retrain_<hash>``; controls (the arm
  kinds that name a control, ``bench.arms``) retrain the same ticket with that control.

Every stage is idempotent and resumable (hashed directories, ``last.pt``), so rerunning a suite reuses
finished runs and resumes an interrupted one. A run that fails (a diverged run or any other one-line
error) is reported on the console and in the results file and never tabulated; the other runs go on.

Any number of workers (``bench run`` processes here or on other machines sharing the filesystem)
can work through one suite: each run and each ticket search is claimed while it trains
(``core.claims``), a worker skips what another live worker holds and comes back to it, and a claim
of a dead worker is taken over (the run resumes from its ``last.pt``). ``shard=(i, n)`` restricts a
worker to every n-th planned run. After every run ``<out>/results.json`` is rebuilt, under its own
claim, from every finished run on disk (:mod:`.on_disk`), for the seeds of this invocation and of
the results file before it, with the runs other workers hold listed as running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.claims import ClaimBusy, holding
from ..core.errors import RUN_ERRORS, UserError
from ..core.paths import SuitePaths
from .plan import PlannedRun, plan_suite
from .suite_files import suite_dirs, suite_files
from .suites import Suite, load_suite, split_settings

Log = Callable[[str], None]
#: Seconds between passes over the runs other workers hold.
POLL_S = 2.0
#: Seconds a worker waits for another one writing results.json.
RESULTS_WAIT_S = 300.0


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
    """What ``run_suite`` did: results path, rows written, failures, runs other workers hold."""

    results_path: Path
    rows: list[dict[str, Any]]
    failures: list[Failure]
    wall_seconds: float
    running: list[dict[str, Any]] = field(default_factory=list)


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 0 <= i < n -> (i, n)."""
    parts = text.split("/")
    try:
        i, n = (int(p) for p in parts)
    except ValueError:
        i, n = -1, 0
    if len(parts) != 2 or not 0 <= i < n:
        raise UserError(f"--shard {text!r} is not i/n with 0 <= i < n (e.g. 0/4 ... 3/4)")
    return i, n


@dataclass
class SuiteRun:
    """One worker's pass over a suite: what it has done and what failed so far."""

    suite: Suite
    paths: SuitePaths
    plan: list[PlannedRun]
    splits: Any
    say: Log
    environment: dict[str, Any]
    seeds: list[int]
    t_start: float = field(default_factory=time.perf_counter)
    failures: list[Failure] = field(default_factory=list)
    tickets: dict[str, Any] = field(default_factory=dict)
    find_errors: dict[str, str] = field(default_factory=dict)
    seen: dict[tuple[str, int], Outcome] = field(default_factory=dict)
    running: list[dict[str, Any]] = field(default_factory=list)
    primary: bool = True

    def write(self) -> list[dict[str, Any]]:
        """Rebuild results.json from the disk under its claim; returns its rows (under torchrun:
        the primary writes, the other ranks return no rows)."""
        if not self.primary:
            return []
        with holding(self.paths.results, "writing results.json", wait=RESULTS_WAIT_S):
            return self._write()

    def _write(self) -> list[dict[str, Any]]:
        from .on_disk import outcome, run_state
        from .rows import build_rows, write_suite_results

        earlier = _previous_seeds(self.paths, self.suite)
        seeds = [*self.seeds, *(x for x in earlier if x not in self.seeds)]
        outcomes, running, failed = [], [], {}
        for pr in plan_suite(self.suite, seeds):
            key = (pr.arm.name, pr.seed)
            if key in self.seen:  # finished runs stay finished
                outcomes.append(self.seen[key])
                continue
            st = run_state(pr, self.paths)
            if st.state == "finished":
                self.seen[key] = outcome(pr, st.where)
                outcomes.append(self.seen[key])
            elif st.state == "running" and st.holder is not None:
                running.append({"arm": pr.arm.name, "seed": pr.seed, "stage": st.stage,
                                "holder": st.holder.describe()})  # fmt: skip
            elif st.state == "failed":
                failed[(pr.arm.name, pr.seed)] = Failure(pr, st.stage or "train", st.error or "")
        for f in self.failures:  # this worker's (also those that left no metrics.json)
            failed.setdefault((f.planned.arm.name, f.planned.seed), f)
        done = {(o.planned.arm.name, o.planned.seed) for o in outcomes}
        failures = [f for k, f in failed.items() if k not in done]
        pending = len(plan_suite(self.suite, seeds)) - len(outcomes) - len(failures)
        status = "running" if pending else "complete"
        if status == "complete" and failures:
            status = "complete-with-failures"
        self.running = running
        rows = build_rows(self.suite, outcomes, self.paths.dir, len(self.splits.train.labels))
        write_suite_results(self, rows, failures, running, seeds, status,
                            time.perf_counter() - self.t_start)  # fmt: skip
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
                # A ticket found on another dataset (a transfer) loads its own split.
                same = pr.find.data.dataset == self.suite.run.data.dataset
                self.tickets[key] = find_ticket(pr.find, self.paths.tickets, log=self.say,
                                                splits=self.splits if same else None)  # fmt: skip
            except ClaimBusy:
                raise
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
            transfer_head=pr.transfer_head,
        )

    def run_one(self, i: int, pr: PlannedRun) -> bool:
        """Run (or reuse) ``pr``; False when another live worker holds it (or its ticket)."""
        head = f"[{i}/{len(self.plan)}] {pr.title}"
        stage = "find"
        try:
            ticket = self.ticket_for(pr, head)
            stage = "train"
            result = self.train(pr, ticket, head)
        except ClaimBusy as exc:
            self.say(f"{head}: held by {exc.holder.describe()}; moving on")
            return False
        except RUN_ERRORS as exc:
            self.failures.append(Failure(pr, stage, str(exc)))
            self.say(f"{head}: FAILED ({stage}): {exc}")
            return True
        test = (result.test or {}).get("best") or {}
        self.say(
            f"{head}: {result.status}; best test clean {_pct(test.get('clean_acc'))}, "
            f"PGD {_pct(test.get('pgd_acc'))}; {result.train_seconds:.0f} s training"
        )
        return self.eps_curve(pr, result, head)

    def eps_curve(self, pr: PlannedRun, result: Any, head: str) -> bool:
        """The run's robust accuracy against eps, when the suite asks for it (once, claimed)."""
        from ..training.run import FINISHED
        from .eps_curve import ensure_curve

        c = self.suite.compare
        if not c.eps_curve or result.status not in FINISHED:
            return True
        try:
            ensure_curve(Path(result.run_dir), pr.run, c.eps_curve, c.eps_curve_n, self.splits.test)
        except ClaimBusy as exc:
            self.say(f"{head}: eps curve held by {exc.holder.describe()}; moving on")
            return False
        return True


def _previous_seeds(paths: SuitePaths, suite: Suite) -> list[int]:
    """The seeds of the results file already there (so that a run with fewer seeds keeps rows)."""
    if not paths.results.exists():
        return []
    from ..report.results import read_results

    doc = read_results(paths.results)
    seeds = doc.get("seeds") if doc.get("suite") == suite.name else None
    if not isinstance(seeds, list) or not all(isinstance(x, int) for x in seeds):
        return []
    return seeds


def run_params(run_dir: Path) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a run's best model."""
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
    shard: tuple[int, int] | None = None,
    poll: float = POLL_S,
) -> BenchReport:
    """Run (or reuse, or resume) every planned run of ``suite`` under ``out``; write results.json.

    ``progress``: show the suite's progress bar (None: only on a terminal). ``splits`` replaces
    loading the suite's data (e.g. a split already in memory). ``shard=(i, n)``: only every n-th
    planned run, from the i-th. Runs other live workers hold are skipped and retried every
    ``poll`` seconds until they are finished (by whoever holds them) or taken over.
    """
    from tqdm import tqdm

    from ..core.distributed import current
    from ..core.environment import environment_info, resolve_device

    out = Path(out)
    primary = current().primary  # under torchrun the ranks run the suite together
    if not primary:
        log, progress = None, False
    check_out_dir(out, suite)
    plan = plan_suite(suite, seeds)
    t_start = time.perf_counter()
    splits = _load_split(suite) if splits is None else splits
    environment = environment_info(resolve_device(suite.run.train.device))
    chosen = list(dict.fromkeys(p.seed for p in plan))
    state = SuiteRun(suite, SuitePaths(out), plan, splits, log or (lambda msg: None), environment,
                     chosen, t_start, primary=primary)  # fmt: skip
    mine = [
        (i, pr) for i, pr in enumerate(plan, 1) if shard is None or (i - 1) % shard[1] == shard[0]
    ]
    bar = tqdm(total=len(mine), desc=f"bench {suite.name}", unit="run",
               disable=None if progress is None else not progress)  # fmt: skip
    try:
        while mine:
            held = []
            for i, pr in mine:
                if state.run_one(i, pr):
                    bar.update(1)
                    state.write()
                else:
                    held.append((i, pr))
            if len(held) == len(mine):
                time.sleep(poll)  # everything left is held by other workers
            mine = held
    finally:
        bar.close()
    rows = state.write()
    report = BenchReport(
        state.paths.results, rows, [], time.perf_counter() - t_start, state.running
    )
    report.failures = _report_failures(state)
    return report


def _report_failures(state: SuiteRun) -> list[Failure]:
    """The failed runs of the suite as the results file lists them."""
    from ..report.results import read_results

    doc = read_results(state.paths.results)
    by_key = {(pr.arm.name, pr.seed): pr for pr in plan_suite(state.suite, doc.get("seeds"))}
    out = []
    for f in doc.get("failed", []):
        pr = by_key.get((f["arm"], f["seed"]))
        if pr is not None:
            out.append(Failure(pr, f["stage"], f["error"]))
    return out


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
