"""Kill -9 ``boosting-tickets train`` and ``bench run`` at random moments; check nothing is lost.

Each trial starts from an empty output directory and runs the same command up to three times,
killing every process with SIGKILL at a random moment: either after a random time (mostly
mid-epoch) or exactly in the middle of a checkpoint or results write, through the test-only hook
``BOOSTING_TICKETS_FAULT=after_tmp_write:FILE`` of ``boosting_tickets/storage.py`` (the temporary
file is complete, the rename has not happened). After every kill it loads and verifies every file a
later command would read and checks the invariants between them; then it reruns the command to
completion and compares the final metrics (every field but wall times), the test evaluation, the
weights and, for ``bench run``, results.json and the ticket masks with an uninterrupted reference
run, bit for bit (CPU, fixed seeds, one thread in every process).

Run (from the repository root; 5-15 minutes on two cores, depending on their load)::

    .venv/bin/python benchmarks/fault_injection.py              # 24 train + 8 bench kills
    .venv/bin/python benchmarks/fault_injection.py --kills 40 --bench-kills 0 --seed 1

It prints kills tried and landed, resumes completed, files corrupted, inconsistent run states,
mismatched final metrics and the most epochs redone after one kill, and exits with status 1 if a
figure that must be 0 is not. ``tests/test_fault_injection.py`` imports the helpers below.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boosting_tickets.core.claims import CLAIMS_DIR, read_holder
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.paths import MASK, REWIND, TICKET_META
from boosting_tickets.core.storage import FAULT_ENV, read_json, safe_torch_load
from boosting_tickets.models.checkpoints import read_model_checkpoint
from boosting_tickets.models.masks import Mask
from boosting_tickets.report.results import read_results
from boosting_tickets.training.callbacks import STATE_FORMAT

TICKET_FILES = (TICKET_META, MASK, REWIND)

# A PGD run that takes seconds on the CPU: 3 epochs of 4 batches, PGD-2 training, PGD-2 evaluation.
TRAIN_ARGS = (
    "train", "--dataset", "synthetic", "--model", "wrn-10-1", "--train-subset", "128",
    "--val-size", "32", "--test-subset", "32", "--batch-size", "32", "--epochs", "3",
    "--objective", "pgd", "--train-steps", "2", "--eval-steps", "2", "--lr", "0.05",
    "--no-progress",
)  # fmt: skip
THREADS = 1  # torch threads of every child process
CHECKSUMMED = frozenset({"metrics.json", "test_eval.json", "attempts.json"})
# Files of a run directory, in the order a run writes them.
RUN_FILES = (
    "hparams.json",
    "init.pt",
    "attempts.json",
    "best.pt",
    "last.pt",
    "metrics.json",
    "final.pt",
    "test_eval.json",
)
_EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ \|", re.MULTILINE)
_RESUME_LINE = re.compile(r"resuming after epoch (\d+)")
_EPOCH_SECONDS = re.compile(r"\| train ([\d.]+)s eval ([\d.]+)s")


@dataclass(frozen=True)
class Outcome:
    """How one CLI process ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    hung: bool = False

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL and not self.hung


def cli_env(fault: str | None = None) -> dict[str, str]:
    """Environment of a CLI child: unbuffered (lines survive SIGKILL), THREADS threads, a fault."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    # Same thread count in every process: float reductions, hence the metrics, depend on it. One
    # thread also wastes no time spin-waiting when other jobs share the cores.
    env["OMP_NUM_THREADS"] = str(THREADS)
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return env


def _sigkill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)


def run_cli(
    args: Sequence[str],
    *,
    cwd: str | Path | None = None,
    fault: str | None = None,
    kill_after: float | None = None,
    kill_on: str | None = None,
    kill_delay: float = 0.0,
    timeout: float = 600.0,
) -> Outcome:
    """Run ``boosting-tickets ARGS`` in a child process and wait for it.

    ``fault`` sets ``BOOSTING_TICKETS_FAULT`` (e.g. ``after_tmp_write:last.pt``); ``kill_after``
    SIGKILLs the child after that many seconds; ``kill_on`` SIGKILLs it ``kill_delay`` seconds after
    the first stdout line containing that text. A child still running after ``timeout`` seconds is
    killed and marked hung.
    """
    t0 = time.perf_counter()
    hung = threading.Event()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "boosting_tickets", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=cwd,
            env=cli_env(fault),
        )

        def watchdog() -> None:
            hung.set()
            _sigkill(proc)

        timers = [threading.Timer(timeout, watchdog)]
        if kill_after is not None:
            timers.append(threading.Timer(kill_after, _sigkill, (proc,)))
        for t in timers:
            t.start()
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if kill_on is not None and kill_on in line:
                kill_on = None  # the first matching line arms the kill
                timers.append(threading.Timer(kill_delay, _sigkill, (proc,)))
                timers[-1].start()
        rc = proc.wait()
        for t in timers:
            t.cancel()
        err.seek(0)
        stderr = err.read()
    return Outcome(rc, "".join(lines), stderr, time.perf_counter() - t0, hung.is_set())


def is_temp_file(path: Path) -> bool:
    """A temporary file of an interrupted atomic write (never read by any command)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def check_files(root: Path) -> list[str]:
    """Load and verify every file under ``root`` that a later command reads; returns the problems.

    JSON must parse, and a file carrying a SHA-256 must match it (results files must carry one);
    ``last.pt`` must be a training state, ``mask.pt`` a mask and every other ``.pt`` a finite model
    checkpoint, all loaded with weights_only=True. Temp files of interrupted writes are skipped:
    no command opens them; so are TensorBoard event files, append-only logs for people that no
    command reads back (a killed run may leave a partial last record, which TensorBoard skips).
    Claims (``.claims/``) a killed process held must be readable claims (or empty: killed while
    creating one); the next process takes them over.
    """
    problems = []
    for p in sorted(root.rglob("*")):
        if p.is_dir() or is_temp_file(p):
            continue
        rel = p.relative_to(root).as_posix()
        if p.parent.name == "tensorboard" and p.name.startswith("events.out.tfevents."):
            continue
        if p.parent.name == CLAIMS_DIR:  # a killed holder's claim (taken over by the next run)
            if p.name != ".lock" and p.stat().st_size and read_holder(p) is None:
                problems.append(f"{rel}: not a claim")
            continue
        try:
            if p.name == "results.json":
                read_results(p)
            elif p.suffix == ".json":
                doc = read_json(p, what=rel)
                if p.name in CHECKSUMMED and "sha256" not in doc:
                    problems.append(f"{rel}: no checksum")
            elif p.name == "last.pt":
                state = safe_torch_load(p, what=rel)
                if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                    problems.append(f"{rel}: not a training state")
            elif p.name == "mask.pt":
                Mask.load(p)
            elif p.suffix == ".pt":
                read_model_checkpoint(p)
            else:
                problems.append(f"{rel}: unexpected file")
        except UserError as exc:
            problems.append(f"{rel}: {exc}")
    return problems


def state_epoch(run_dir: Path | None) -> int:
    """Epochs held by the resume point ``last.pt`` (0 when there is none)."""
    if run_dir is None or not (run_dir / "last.pt").exists():
        return 0
    return int(safe_torch_load(run_dir / "last.pt", what="last.pt")["epoch"])


def check_consistency(run_dir: Path, epochs: int | None = None) -> list[str]:
    """Cross-file invariants of a training run directory (call after :func:`check_files` passed).

    metrics.json never lists epochs that last.pt does not hold; a run marked complete has its best
    and final weights and its test evaluation (and ``epochs`` rows, if given); no file exists
    without the hparams.json naming the run.
    """
    out = []
    present = {p.name for p in run_dir.iterdir() if not is_temp_file(p)}
    if present and "hparams.json" not in present:
        out.append(f"{run_dir.name}: {sorted(present)} written without hparams.json")
    held = state_epoch(run_dir)
    if "metrics.json" in present:
        doc = read_json(run_dir / "metrics.json")
        rows = len(doc["epochs"])
        if rows > held:
            out.append(f"{run_dir.name}: metrics.json lists {rows} epochs, last.pt holds {held}")
        if doc["status"] == "complete":
            out += [f"{run_dir.name}: complete without {n}" for n in RUN_FILES if n not in present]
            if epochs is not None and rows != epochs:
                out.append(f"{run_dir.name}: complete after {rows} of {epochs} epochs")
    return out


def check_bench_consistency(out_dir: Path) -> list[str]:
    """Invariants of a ``bench run`` output directory: every run directory is consistent, every
    finished ticket has its mask and rewind point, and every row of results.json points to a run
    that is complete with the same number of epochs."""
    out = []
    run_dirs = {p.parent for p in out_dir.rglob("hparams.json") if (p.parent / "init.pt").exists()}
    for d in sorted(run_dirs):
        out += check_consistency(d)
    for t in sorted(out_dir.glob("tickets/ticket_*")):
        if (t / "ticket.json").exists():
            out += [
                f"{t.name}: ticket.json without {n}" for n in TICKET_FILES if not (t / n).exists()
            ]
    if (out_dir / "results.json").exists():
        for row in read_results(out_dir / "results.json")["rows"]:
            run = out_dir / row["run_dir"]
            metrics = read_json(run / "metrics.json") if (run / "metrics.json").exists() else {}
            if metrics.get("status") != "complete" or len(metrics["epochs"]) != row["epochs"]:
                out.append(f"results.json row {row['arm']} points to an unfinished run {run.name}")
    return out


def _tensor_digest(state_dict: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def final_fingerprint(run_dir: Path) -> dict[str, Any]:
    """What must be identical to an uninterrupted run: every metric but wall times, and weights."""
    metrics = read_json(run_dir / "metrics.json", what="metrics.json")
    test = read_json(run_dir / "test_eval.json", what="test_eval.json")
    return {
        "status": metrics["status"],
        "epochs": without_times(metrics["epochs"]),
        "best": metrics["best"],
        "test": {k: test[k] for k in ("best", "final")},
        "weights": {
            n: _tensor_digest(read_model_checkpoint(run_dir / n)["state_dict"])
            for n in ("init.pt", "best.pt", "final.pt")
        },
    }


def without_times(obj: Any) -> Any:
    """``obj`` without wall-time fields (any key naming seconds), the machine's load and
    environment records."""
    if isinstance(obj, dict):
        return {
            k: without_times(v)
            for k, v in obj.items()
            if "seconds" not in k and k not in ("environment", "sha256", "load1")
        }
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def bench_fingerprint(out_dir: Path) -> dict[str, Any]:
    """results.json without wall times, plus the fingerprint of every run it tabulates."""
    doc = read_results(out_dir / "results.json")
    return {
        "results": without_times(doc),
        "runs": {r["run_dir"]: final_fingerprint(out_dir / r["run_dir"]) for r in doc["rows"]},
        "mask": {
            # ticket_* only: a claim left by a killed finder lives in tickets/.claims/
            t.name: Mask.load(t / "mask.pt").digest()
            for t in sorted(out_dir.glob("tickets/ticket_*"))
        },
    }


def epochs_announced(outcome: Outcome, resumed_from: int) -> int:
    """Epochs the process reported finished before it died (its log line precedes the save)."""
    done = [int(m) for m in _EPOCH_LINE.findall(outcome.stdout)]
    start = _RESUME_LINE.search(outcome.stdout)
    return max(done, default=int(start.group(1)) if start else resumed_from)


@dataclass(frozen=True)
class Scenario:
    """A command to kill and what to check in its output directory.

    ``train`` writes one run directory under ``--out``; ``bench`` writes a suite's whole tree
    (runs, tickets, results.json) into ``--out``. ``fresh_faults`` may strike a first run;
    ``resumed_faults`` only files that a resumed run writes again.
    """

    name: str
    args: tuple[str, ...]
    fresh_faults: tuple[str, ...]
    resumed_faults: tuple[str, ...]

    @property
    def is_bench(self) -> bool:
        return self.args[:2] == ("bench", "run")

    def target(self, out: Path) -> Path | None:
        """The directory to check: the run directory (train) or the output directory (bench)."""
        if self.is_bench:
            return out if out.exists() else None
        if not out.exists():
            return None
        # Dot-names are bookkeeping (.claims/ of a run a killed process held), not runs.
        return next(iter(sorted(p for p in out.iterdir() if not p.name.startswith("."))), None)

    def problems(self, target: Path) -> tuple[list[str], list[str]]:
        """(corrupt files, broken invariants) of ``target``."""
        bad = check_files(target)
        if bad:
            return bad, []
        if self.is_bench:
            return [], check_bench_consistency(target)
        return [], check_consistency(target, epochs_of(self.args))

    def fingerprint(self, target: Path) -> dict[str, Any]:
        return bench_fingerprint(target) if self.is_bench else final_fingerprint(target)


def epochs_of(args: Sequence[str]) -> int:
    """The ``--epochs`` value of a ``train`` command line."""
    return int(args[list(args).index("--epochs") + 1])


def train_scenario(args: Sequence[str] = TRAIN_ARGS) -> Scenario:
    """Kills of ``boosting-tickets train``."""
    faults = tuple(f"after_tmp_write:{n}" for n in RUN_FILES)
    resumed = tuple(f for f in faults if not f.endswith(("hparams.json", "init.pt")))
    return Scenario("train", tuple(args), faults, resumed)


def bench_scenario(suite: Path) -> Scenario:
    """Kills of ``boosting-tickets bench run SUITE`` (dense, ticket and reinit arms)."""
    files = ("last.pt", "best.pt", "metrics.json", "test_eval.json", "mask.pt", "rewind.pt",
             "ticket.json", "results.json")  # fmt: skip
    faults = tuple(f"after_tmp_write:{n}" for n in files)
    return Scenario("bench run", ("bench", "run", str(suite)), faults, faults)


@dataclass
class Tally:
    """The figures printed at the end."""

    kills_tried: int = 0
    kills_landed: int = 0
    landed_by_kind: Counter = field(default_factory=Counter)
    landed_by_command: Counter = field(default_factory=Counter)
    resumes_completed: int = 0
    trials: int = 0
    files_corrupted: int = 0
    inconsistent: int = 0
    mismatched: int = 0
    failed_commands: int = 0
    max_epochs_redone: int = 0
    orphaned_temp_files: int = 0
    stale_claims: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.files_corrupted == 0
            and self.inconsistent == 0
            and self.mismatched == 0
            and self.failed_commands == 0
            and self.max_epochs_redone <= 1
            and self.resumes_completed == self.trials
        )


def kill_kind(plan: str) -> str:
    """Where a kill plan strikes (see :func:`kill_once`)."""
    if plan.startswith("time:"):
        return "random time (start-up to finish)"
    if plan.startswith("line:"):
        return "mid-epoch (delay after an epoch's log line)"
    return "mid-checkpoint write (.pt)" if plan.endswith(".pt") else "mid-results write (.json)"


def kill_once(scenario: Scenario, out: Path, cwd: Path, plan: str, tally: Tally) -> bool:
    """Run the command once under ``plan``; True if it was killed.

    ``plan`` is ``time:SECONDS`` (SIGKILL after that long), ``line:TEXT@SECONDS`` (SIGKILL that long
    after the first stdout line containing TEXT: 0 lands in the save that follows an epoch's log
    line, more in the next epoch) or a ``BOOSTING_TICKETS_FAULT`` spec such as
    ``after_tmp_write:last.pt``. After a
    kill every file is verified; for ``train`` the work lost is measured too: epochs the process had
    announced as finished minus epochs the resume point holds (at most the epoch in flight).
    """
    args = [*scenario.args, "--out", str(out)]
    before = state_epoch(scenario.target(out))
    if plan.startswith("time:"):
        outcome = run_cli(args, cwd=cwd, kill_after=float(plan[5:]))
    elif plan.startswith("line:"):
        text, _, delay = plan[5:].rpartition("@")
        outcome = run_cli(args, cwd=cwd, kill_on=text, kill_delay=float(delay))
    else:
        outcome = run_cli(args, cwd=cwd, fault=plan)
    tally.kills_tried += 1
    if not outcome.killed:
        if outcome.returncode != 0:
            tally.failed_commands += 1
            tally.notes.append(
                f"{plan}: exit {outcome.returncode}: {outcome.stderr.strip()[-300:]}"
            )
        return False
    tally.kills_landed += 1
    tally.landed_by_kind[kill_kind(plan)] += 1
    tally.landed_by_command[scenario.name] += 1
    target = scenario.target(out)
    if target is None:
        return True
    corrupt, broken = scenario.problems(target)
    tally.files_corrupted += len(corrupt)
    tally.inconsistent += len(broken)
    tally.notes += [f"{scenario.name} {plan}: {p}" for p in corrupt + broken]
    if not scenario.is_bench and not corrupt:
        redone = epochs_announced(outcome, before) - state_epoch(target)
        tally.max_epochs_redone = max(tally.max_epochs_redone, redone)
    return True


def run_trial(
    scenario: Scenario,
    work: Path,
    plans: Sequence[str],
    reference: dict[str, Any],
    tally: Tally,
) -> None:
    """Kill the command under each plan in turn (stopping early if it completes), then rerun it to
    completion and compare with ``reference`` (from :func:`reference_run`)."""
    work.mkdir(parents=True)
    out = work / "out"
    tally.trials += 1
    for plan in plans:
        if not kill_once(scenario, out, work, plan, tally):
            break
    final = run_cli([*scenario.args, "--out", str(out)], cwd=work)
    if final.returncode != 0:
        tally.failed_commands += 1
        tally.notes.append(f"resume failed: exit {final.returncode}: {final.stderr.strip()[-300:]}")
        return
    tally.resumes_completed += 1
    target = scenario.target(out)
    assert target is not None
    tally.orphaned_temp_files += sum(1 for p in target.rglob("*") if is_temp_file(p))
    tally.stale_claims += sum(1 for p in target.rglob(f"{CLAIMS_DIR}/*.claim"))
    corrupt, broken = scenario.problems(target)
    tally.files_corrupted += len(corrupt)
    tally.inconsistent += len(broken)
    got = scenario.fingerprint(target)
    if got != reference["fingerprint"]:
        tally.mismatched += 1
        diff = [k for k in got if got[k] != reference["fingerprint"].get(k)]
        tally.notes.append(f"{scenario.name} plans {list(plans)}: final output differs in {diff}")


def reference_run(scenario: Scenario, work: Path) -> dict[str, Any]:
    """Run the command uninterrupted; returns its wall time, its median epoch (training plus
    held-out evaluation, from its log) and its fingerprint."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    outcome = run_cli([*scenario.args, "--out", str(out)], cwd=work)
    if outcome.returncode != 0:
        raise SystemExit(
            f"reference {scenario.name} failed ({outcome.returncode}):\n{outcome.stderr}"
        )
    target = scenario.target(out)
    assert target is not None
    epochs = [float(a) + float(b) for a, b in _EPOCH_SECONDS.findall(outcome.stdout)]
    return {
        "seconds": outcome.seconds,
        "epoch_seconds": statistics.median(epochs) if epochs else 1.0,
        "fingerprint": scenario.fingerprint(target),
    }


def make_plans(
    scenario: Scenario, rng: random.Random, n_kills: int, reference: dict[str, Any]
) -> list[list[str]]:
    """Chains of 1-3 kill plans totalling ``n_kills``, each plan drawn with equal odds: a random
    time within the reference run's length, a random delay within one epoch after an epoch's log
    line, or a write fault. The first kill of a chain may hit any file; later ones only files that
    a resumed run writes again.
    """
    chains: list[list[str]] = []
    left = n_kills
    while left > 0:
        length = min(left, rng.choice((1, 2, 3)))
        chain = []
        for i in range(length):
            draw = rng.random()
            if draw < 1 / 3:
                chain.append(f"time:{rng.uniform(0.5, reference['seconds']):.2f}")
            elif draw < 2 / 3:
                chain.append(f"line:| loss @{rng.uniform(0.0, reference['epoch_seconds']):.2f}")
            else:
                chain.append(
                    rng.choice(scenario.fresh_faults if i == 0 else scenario.resumed_faults)
                )
        chains.append(chain)
        left -= length
    return chains


def campaign(scenario: Scenario, work: Path, kills: int, rng: random.Random, tally: Tally) -> None:
    """Land ``kills`` kills of ``scenario`` (random-time kills may miss a finished run: retry)."""
    ref = reference_run(scenario, work / "reference")
    print(f"{scenario.name}: uninterrupted reference run {ref['seconds']:.1f} s", flush=True)
    landed0, tried0, trial = tally.kills_landed, tally.kills_tried, 0
    while tally.kills_landed - landed0 < kills and tally.kills_tried - tried0 < 3 * kills:
        for chain in make_plans(scenario, rng, kills - (tally.kills_landed - landed0), ref):
            trial += 1
            before = tally.kills_landed
            run_trial(scenario, work / f"trial{trial:03d}", chain, ref, tally)
            print(
                f"  {scenario.name} trial {trial:3d}: {', '.join(chain)} -> "
                f"{tally.kills_landed - before} landed; resumes {tally.resumes_completed}/"
                f"{tally.trials}, mismatches {tally.mismatched}, corrupt {tally.files_corrupted}",
                flush=True,
            )


def print_report(tally: Tally, title: str, seconds: float) -> None:
    """The figures, one per line, with what each must be."""
    rows = [
        ("trials (each: 1-3 kills, then one clean rerun)", tally.trials, ""),
        ("kills tried", tally.kills_tried, ""),
        ("kills landed (process died of SIGKILL)", tally.kills_landed, ""),
        *((f"  of '{c}'", n, "") for c, n in sorted(tally.landed_by_command.items())),
        *((f"  {kind}", n, "") for kind, n in sorted(tally.landed_by_kind.items())),
        ("resumes completed", f"{tally.resumes_completed}/{tally.trials}", "(must be all)"),
        ("files corrupted", tally.files_corrupted, "(must be 0)"),
        ("inconsistent run states", tally.inconsistent, "(must be 0)"),
        ("mismatched final metrics", tally.mismatched, "(must be 0)"),
        ("commands failed", tally.failed_commands, "(must be 0)"),
        ("most epochs redone after one kill (train)", tally.max_epochs_redone, "(must be <= 1)"),
        ("orphaned temp files (never read)", tally.orphaned_temp_files, ""),
        ("stale claims left (taken over when needed)", tally.stale_claims, ""),
        ("wall time (s)", f"{seconds:.0f}", ""),
    ]
    print(title)
    for name, value, must in rows:
        print(f"  {name:48s} {value!s:>8s} {must}".rstrip())
    for note in tally.notes:
        print(f"  note: {note}")
    print("PASS" if tally.ok else "FAIL")


BENCH_SUITE = """\
description = "fault injection: dense vs ticket vs reinit on synthetic data, seconds on the CPU"
seeds = [0]
device = "cpu"

[compare]
allow_weak_stats = true

[run.data]
dataset = "synthetic"
train_subset = 64
val_size = 16
test_subset = 16
batch_size = 16

[run.model]
model = "wrn-10-1"

[run.train]
objective = "pgd"
epochs = 2
train_steps = 2
progress = false

[run.eval]
eval_steps = 1

[find.train]
epochs = 1

[[arms]]
name = "dense"
kind = "dense"

[[arms]]
name = "ticket"
kind = "ticket"

[[arms]]
name = "reinit"
kind = "reinit"
ticket_of = "ticket"
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=24, help="kills of 'train' to land (default 24)")
    ap.add_argument(
        "--bench-kills", type=int, default=8, help="kills of 'bench run' to land (default 8)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of kill times and fault choices")
    ap.add_argument(
        "--work", type=Path, default=None, help="scratch directory (default: a temp dir)"
    )
    opts = ap.parse_args(argv)
    if opts.kills < 0 or opts.bench_kills < 0 or opts.kills + opts.bench_kills == 0:
        ap.error("--kills and --bench-kills must be >= 0, and not both 0")
    rng = random.Random(opts.seed)
    work = opts.work or Path(tempfile.mkdtemp(prefix="bt-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tally = Tally()
    try:
        if opts.kills:
            campaign(train_scenario(), work / "train", opts.kills, rng, tally)
        if opts.bench_kills:
            suite = work / "faultsuite.toml"
            suite.write_text(BENCH_SUITE)
            campaign(bench_scenario(suite), work / "bench", opts.bench_kills, rng, tally)
        title = (
            "fault injection: kill -9 of 'boosting-tickets train' (synthetic, wrn-10-1, PGD-2, "
            f"{epochs_of(TRAIN_ARGS)} epochs) and 'bench run' (dense + ticket + reinit), "
            f"seed {opts.seed}"
        )
        print_report(tally, title, time.perf_counter() - t0)
        return 0 if tally.ok else 1
    finally:
        if opts.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
