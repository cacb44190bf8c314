"""Where a suite's workers run: this process, N processes here, or a SLURM job array (submitit).

Every worker is the same ``bench run SUITE`` (see :mod:`.runner`): it claims a run, trains it,
moves on, and rebuilds ``results.json`` from the disk, so workers need nothing from each other but
a shared output directory. The launchers only start them:

* ``here`` (default): this process is the one worker;
* ``local``: ``workers`` processes on this machine, each with its own thread count (default 1, so
  that N workers on N cores do not fight over them) and, with ``gpus_per_run``, its own GPUs;
  their lines are prefixed ``[worker k]``;
* ``slurm``: a job array of ``workers`` jobs through submitit (``pip install submitit``), each job
  one worker with ``gpus_per_run`` GPUs (more than one: the worker trains every run with DDP over
  them, ``--nproc``), ``cpus_per_run`` CPUs, a ``time`` limit and at most ``max_parallel`` jobs
  at once; a job that reaches its time limit is requeued and resumes (``last.pt``);
* ``submitit-local``: the slurm code path on submitit's local executor (jobs are local
  processes): for testing a launch configuration on a machine without SLURM.

The settings come from the suite file's ``[launch]`` table and the ``bench run`` flags.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import setting
from ..core.errors import UserError

LAUNCHERS = ("here", "local", "slurm", "submitit-local")
SUBMITIT_HINT = "pip install submitit (or: pip install 'boosting-tickets[slurm]')"


@dataclass(frozen=True)
class LaunchConfig:
    """How ``bench run`` starts its workers (the suite file's ``[launch]`` table, or flags)."""

    launcher: str = setting(
        "here",
        "where the workers run: here (this process), local (--workers processes on this "
        "machine), slurm (a SLURM job array through submitit), submitit-local (the slurm path on "
        "submitit's local executor, for testing)",
        choices=LAUNCHERS,
        hashed=False,
    )
    workers: int = setting(1, "number of workers (local processes, or SLURM array jobs)", low=1,
                           hashed=False)  # fmt: skip
    slurm_partition: str | None = setting(None, "SLURM partition of the array jobs", hashed=False)
    gpus_per_run: int = setting(
        0, "GPUs per worker (local: its own; SLURM: per array job); above 1 every run trains "
        "with DDP over them", low=0, hashed=False,
    )  # fmt: skip
    cpus_per_run: int = setting(1, "CPUs per worker (SLURM)", low=1, hashed=False)
    time: int = setting(24 * 60, "time limit of each array job in minutes (SLURM)", low=1,
                        hashed=False)  # fmt: skip
    max_parallel: int | None = setting(
        None, "at most this many array jobs at once (SLURM; none: all)", low=1, hashed=False
    )
    wait: bool = setting(
        False, "slurm: wait for the array to finish and print the results", hashed=False
    )


def worker_argv(
    suite: str,
    *,
    suite_dirs: Sequence[str],
    seeds: int | None,
    out: str,
    data_dir: str | None,
    device: str | None,
    threads: int,
    nproc: int = 1,
    allow_weak_stats: bool = False,
    threat: str | None = None,
    eps: float | None = None,
) -> list[str]:
    """The ``bench run`` arguments of one worker. ``--launcher here`` always: a suite whose
    ``[launch]`` table asks for workers must not make each worker launch workers of its own."""
    argv = ["bench", "run", suite, "--out", out, "--threads", str(threads), "--launcher", "here"]
    for d in suite_dirs:
        argv += ["--suite-dir", d]
    if seeds is not None:
        argv += ["--seeds", str(seeds)]
    if data_dir is not None:
        argv += ["--data-dir", data_dir]
    if device is not None:
        argv += ["--device", device]
    if nproc > 1:
        argv += ["--nproc", str(nproc)]
    if allow_weak_stats:
        argv += ["--allow-weak-stats"]
    if threat is not None:
        argv += ["--threat", threat]
    if eps is not None:
        argv += ["--eps", repr(eps)]
    return argv


def _pump(stream: Any, prefix: str, sink: Any) -> None:
    for line in iter(stream.readline, ""):
        sink.write(f"{prefix}{line}")
        sink.flush()


def gpu_groups(workers: int, per_worker: int, visible: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each local worker: its own ``per_worker`` of the ``visible``
    GPUs (numbered within an existing ``CUDA_VISIBLE_DEVICES``)."""
    if workers * per_worker > visible:
        raise UserError(
            f"--workers {workers} x --gpus-per-run {per_worker} needs {workers * per_worker} "
            f"GPUs; {visible} are visible here"
        )
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = outer.split(",") if outer else [str(i) for i in range(visible)]
    return [",".join(ids[k * per_worker : (k + 1) * per_worker]) for k in range(workers)]


def run_local_workers(
    argv: Sequence[str], workers: int, gpus: Sequence[str] | None = None
) -> list[int]:
    """Start ``workers`` processes of ``python -m boosting_tickets *argv`` here (worker k sees the
    GPUs ``gpus[k]``, when given); their exit codes."""
    procs, pumps = [], []
    for k in range(workers):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus[k]
        proc = subprocess.Popen(
            [sys.executable, "-m", "boosting_tickets", *argv], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {k}] ", sys.stdout))
        pump.start()
        pumps.append(pump)
    codes = [proc.wait() for proc in procs]
    for pump in pumps:
        pump.join()
    return codes


class Worker:
    """One array job: a ``bench run`` process; requeued by submitit when its time runs out."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self) -> int:
        code = subprocess.call([sys.executable, "-m", "boosting_tickets", *self.argv])
        if code:
            raise RuntimeError(f"bench worker exited with status {code}")
        return 0

    def checkpoint(self) -> Any:
        """Called by submitit at the time limit: resubmit (the runs resume from ``last.pt``)."""
        import submitit

        return submitit.helpers.DelayedSubmission(Worker(self.argv))


def import_submitit() -> Any:
    """submitit, or a one-line UserError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError(
            f"--launcher slurm needs submitit, which is not installed; {SUBMITIT_HINT}"
        ) from None
    return submitit


def slurm_parameters(cfg: LaunchConfig, name: str) -> dict[str, Any]:
    """What the array jobs ask SLURM for (submitit's ``update_parameters`` names)."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": cfg.time,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": cfg.cpus_per_run,
        "slurm_array_parallelism": cfg.max_parallel or cfg.workers,
    }
    if cfg.gpus_per_run:
        params["gpus_per_node"] = cfg.gpus_per_run
    if cfg.slurm_partition:
        params["slurm_partition"] = cfg.slurm_partition
    return params


def submit_array(cfg: LaunchConfig, argv: Sequence[str], folder: Path, name: str) -> list[Any]:
    """Submit ``cfg.workers`` array jobs, each running ``bench run *argv``; the submitit jobs."""
    submitit = import_submitit()
    try:
        if cfg.launcher == "slurm":
            executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
            executor.update_parameters(**slurm_parameters(cfg, name))
        else:
            executor = submitit.LocalExecutor(folder=folder / "%j")
            executor.update_parameters(timeout_min=cfg.time, gpus_per_node=cfg.gpus_per_run)
    except RuntimeError as exc:  # no srun/sbatch: not a SLURM machine
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"--launcher {cfg.launcher}: {detail}; submit from a SLURM login node, or use "
            "--launcher local here"
        ) from None
    try:
        with executor.batch():
            jobs = [executor.submit(Worker(argv)) for _ in range(cfg.workers)]
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"could not submit the job array ({detail})") from None
    return jobs


def wait_for(jobs: Sequence[Any]) -> list[str]:
    """Wait for every job; the one-line problems of those that failed."""
    problems = []
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's failure
            last = " ".join(str(exc).split())[-300:]
            problems.append(f"job {job.job_id}: {last}")
    return problems
