"""``boosting-tickets bench run|list``: benchmark suites.

``bench run SUITE`` expands a suite (a packaged one, one in a suite directory, or a path to a .toml)
into arms x seeds, reuses finished runs, resumes interrupted ones and writes ``<out>/results.json``;
``--dry-run`` prints the plan and its cost estimate instead, without importing torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..adversarial.spec import THREATS
from ..bench.launch import LaunchConfig, worker_argv
from ..core.errors import RunFailure, UserError
from .common import check_creatable, console_log, set_threads
from .options import (
    Fraction,
    Int,
    RegistryChoice,
    config_options,
    dir_option,
    nproc_option,
    out_dir_option,
    threads_option,
)

_SUITE_DIR = click.option(
    "--suite-dir",
    "suite_dirs",
    type=click.Path(file_okay=False),
    multiple=True,
    help="Directory of your own suite files, searched before the packaged suites (repeatable; "
    "also BOOSTING_TICKETS_SUITES).",
)


@click.group(short_help="Benchmark suites: arms (dense, tickets, controls) x seeds.")
def bench() -> None:
    """Benchmark suites: arms (dense, tickets, controls) x seeds, with fair baselines."""


@bench.command("run", short_help="Run a suite (or plan it with --dry-run).")
@click.argument("suite", type=str)
@_SUITE_DIR
@click.option(
    "--seeds",
    type=Int(1),
    default=None,
    help="Run this many seeds: the suite's seed list, continued with the next integers "
    "[default: the suite's list].",
)
@out_dir_option(None, "Output directory [default: runs/bench/<suite>].")
@click.option("--dry-run", is_flag=True, help="Print the plan and its cost estimate; run nothing.")
@dir_option("data-dir", "Dataset directory [default: the suite's, 'data'].")
@click.option(
    "--device", type=str, default=None, help="torch device: auto, cpu, cuda[:N] [default: auto]."
)
@threads_option
@click.option(
    "--shard",
    type=str,
    default=None,
    help="i/n: this worker takes only every n-th planned run, from the i-th (a static split; "
    "without it, workers share the runs through claims).",
)
@nproc_option
@click.option(
    "--threat",
    type=RegistryChoice(lambda: THREATS, "threat", "threat"),
    default=None,
    help="Evaluate every arm under this threat model instead of the suite's (L2: PGD-L2 + FGM); "
    "the suite becomes <suite>-L2, in its own output directory.",
)
@click.option(
    "--eps",
    type=Fraction(0.0, float("inf")),
    default=None,
    help="With --threat: the evaluation budget [default: the suite's, else the dataset's].",
)
@click.option(
    "--allow-weak-stats",
    is_flag=True,
    help="Run a suite whose statistics cannot give verdicts (fewer than 3 seeds, or a target "
    "at chance), with a warning, instead of refusing it.",
)
@config_options(LaunchConfig)
def run_command(
    suite: str,
    suite_dirs: tuple[str, ...],
    seeds: int | None,
    out: str | None,
    dry_run: bool,
    data_dir: str | None,
    device: str | None,
    threads: int | None,
    shard: str | None,
    nproc: int | None,
    threat: str | None,
    eps: float | None,
    allow_weak_stats: bool,
    **launch_flags: Any,
) -> None:
    """Run SUITE (a packaged suite, one in --suite-dir, or a path to a .toml): every arm x seed,
    reusing finished runs by their hash and resuming interrupted ones; writes <out>/results.json.

    Any number of these commands (here, or on machines sharing the output directory) work through
    one suite together, each claiming the runs it trains; --launcher local|slurm starts such
    workers for you. With --dry-run, print the plan and its cost estimate and run nothing."""
    from ..bench.plan import check_statistics, format_plan, plan_suite
    from ..bench.runner import parse_shard

    s = _suite(suite, suite_dirs, data_dir, device)
    s = _with_threat(s, threat, eps)
    launch = _launch_config(s, launch_flags)
    chosen = s.seeds_for(seeds)
    weak = allow_weak_stats or s.compare.allow_weak_stats
    for line in check_statistics(s, chosen, allow=weak or dry_run):
        click.echo(line)  # on stdout with the run's log: stderr carries only the one-line errors
    static = parse_shard(shard) if shard is not None else None
    if static is not None and launch.launcher != "here":
        raise UserError(
            "--shard splits the runs among workers you start yourself; with --launcher the "
            "workers share the runs through claims, so drop --shard"
        )
    if dry_run:
        plan = plan_suite(s, chosen)
        click.echo(format_plan(s, plan))
        if launch.launcher != "here":
            click.echo(_launch_summary(s, launch, plan))
        return
    out_dir = Path(out) if out is not None else Path("runs") / "bench" / s.name
    check_creatable(out_dir / "results.json")
    argv = worker_argv(
        suite, suite_dirs=suite_dirs, seeds=seeds, out=str(out_dir), data_dir=data_dir,
        device=device, threads=threads or 1, nproc=nproc or 1, allow_weak_stats=weak,
        threat=threat, eps=eps,
    )  # fmt: skip
    if launch.launcher == "local":
        _run_local(s, launch, argv, out_dir, nproc)
    elif launch.launcher in ("slurm", "submitit-local"):
        _run_array(s, launch, argv, out_dir, nproc)
    else:
        _run_here(s, chosen, out_dir, threads, static, nproc)


def _with_threat(s: Any, threat: str | None, eps: float | None) -> Any:
    """The suite evaluated under ``threat`` (and ``eps``): renamed ``<suite>-<threat>`` when the
    threat model changes, so its results never land in (or replace) the original suite's."""
    if threat is None:
        if eps is not None:
            raise UserError("--eps needs --threat (set the suite's own budget in [run.eval])")
        return s
    from ..training.hparams import RunConfig

    ev = dataclasses.replace(s.run.eval, threat=threat,
                             eval_eps=eps if eps is not None else (
                                 s.run.eval.eval_eps if threat == s.run.eval.threat else None))  # fmt: skip
    run: RunConfig = dataclasses.replace(s.run, eval=ev)
    run.validate()  # an L2 budget the dataset has no default for is one line here
    name = s.name if threat == s.run.eval.threat else f"{s.name}-{threat}"
    return dataclasses.replace(s, run=run, name=name)


def _suite(suite: str, suite_dirs: Sequence[str], data_dir: str | None, device: str | None) -> Any:
    """The suite, with --data-dir and --device applied."""
    from ..bench.suite_files import suite_dirs as search_dirs
    from ..bench.suites import load_suite

    s = load_suite(suite, search_dirs(suite_dirs))
    if data_dir is None and device is None:
        return s
    data = s.run.data if data_dir is None else dataclasses.replace(s.run.data, data_dir=data_dir)
    train = s.run.train if device is None else dataclasses.replace(s.run.train, device=device)
    return dataclasses.replace(s, run=dataclasses.replace(s.run, data=data, train=train))


def _launch_config(s: Any, flags: dict[str, Any]) -> LaunchConfig:
    """The suite's [launch] table, overridden by the flags given."""
    from ..core.config import apply_flat, check_ranges

    launch = apply_flat(s.launch, {k: v for k, v in flags.items() if v is not None})
    check_ranges(launch)
    return launch


def _launch_summary(s: Any, launch: LaunchConfig, plan: Any) -> str:
    """What --launcher would start, and the cost model's wall time for it."""
    from ..bench.launch import slurm_parameters
    from ..bench.plan import launch_estimate

    estimate = launch_estimate(plan, launch.workers, launch.gpus_per_run)
    if launch.launcher == "local":
        return f"launch: {launch.workers} local worker process(es)\n{estimate}"
    params = slurm_parameters(launch, f"bench-{s.name}")
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    return (
        f"launch: a {launch.launcher} job array of {launch.workers} worker(s): {text}\n{estimate}"
    )


def _batches(s: Any, seeds: Any) -> list[int]:
    """Every global batch size the suite trains with (dense, retraining and finding runs)."""
    from ..bench.plan import plan_suite

    plan = plan_suite(s, seeds)
    sizes = {p.run.data.batch_size for p in plan}
    sizes |= {p.find.data.batch_size for p in plan if p.find is not None}
    return sorted(sizes)


def _run_here(
    s: Any, chosen: Any, out_dir: Path, threads: int | None, shard: Any, nproc: int | None
) -> None:
    """This process is one worker (or, with --nproc, one DDP group of ranks)."""
    from ..bench.runner import run_suite
    from .torchrun import joined, relaunch

    if nproc is not None and nproc > 1:
        relaunch(nproc, s.run.train.device, _batches(s, chosen))
    set_threads(threads)
    with joined(s.run.train.device) as dist:
        if dist.primary:
            _warn_gpu_sized(s)
            click.echo(f"suite {s.name}: {len(s.arms)} arms x {len(chosen)} seeds -> {out_dir}")
        report = run_suite(s, out=out_dir, seeds=chosen, log=console_log, shard=shard)
        if dist.primary:
            failed = [
                {"arm": f.planned.arm.name, "seed": f.planned.seed, "stage": f.stage,
                 "error": f.error} for f in report.failures
            ]  # fmt: skip
            _print_report(report.rows, failed, report.running, report.results_path,
                          report.wall_seconds)  # fmt: skip
    if report.failures:
        raise RunFailure(
            f"{len(report.failures)} run(s) failed (listed above and under 'failed' in "
            f"{report.results_path}); the other runs' results were written"
        )


def _warn_gpu_sized(s: Any) -> None:
    if s.device != "gpu":
        return
    import torch

    if not torch.cuda.is_available():
        click.echo(
            f"warning: suite {s.name} is GPU-sized and no GPU is visible; see "
            f"'boosting-tickets bench run {s.name} --dry-run' for its cost",
            err=True,
        )


def _run_local(
    s: Any, launch: LaunchConfig, argv: list[str], out_dir: Path, nproc: int | None
) -> None:
    """--launcher local: --workers processes here (each with its own GPUs when
    --gpus-per-run is set), then the results they wrote."""
    from ..bench.launch import gpu_groups, run_local_workers

    gpus = None
    if launch.gpus_per_run:
        import torch

        gpus = gpu_groups(launch.workers, launch.gpus_per_run, torch.cuda.device_count())
        if launch.gpus_per_run > 1 and nproc is None:
            argv = [*argv, "--nproc", str(launch.gpus_per_run)]
    click.echo(f"suite {s.name}: {launch.workers} local workers -> {out_dir}")
    codes = run_local_workers(argv, launch.workers, gpus)
    problems = [f"worker {k} exited with status {c}" for k, c in enumerate(codes) if c]
    _report_from_file(out_dir, problems)


def _run_array(
    s: Any, launch: LaunchConfig, argv: list[str], out_dir: Path, nproc: int | None
) -> None:
    """--launcher slurm | submitit-local: a job array of workers through submitit."""
    from ..bench.launch import import_submitit, submit_array, wait_for

    import_submitit()  # not installed: one line, before anything is written
    if launch.gpus_per_run > 1 and nproc is None:
        argv = [*argv, "--nproc", str(launch.gpus_per_run)]
    folder = out_dir / ".submitit"
    jobs = submit_array(launch, argv, folder, f"bench-{s.name}")
    ids = ", ".join(str(j.job_id) for j in jobs)
    click.echo(f"submitted {len(jobs)} worker job(s) ({ids}); logs in {folder}")
    if launch.launcher == "slurm" and not launch.wait:
        click.echo(
            f"follow with squeue; {out_dir / 'results.json'} is rebuilt as runs finish; rerun "
            "this command to add workers"
        )
        return
    _report_from_file(out_dir, wait_for(jobs))


def _report_from_file(out_dir: Path, problems: list[str]) -> None:
    """Print the results file the workers wrote; RunFailure if a worker or a run failed."""
    from ..core.paths import SuitePaths
    from ..report.results import read_results

    path = SuitePaths(out_dir).results
    if not path.exists():
        raise RunFailure(f"no worker wrote {path}: {'; '.join(problems) or 'no runs'}")
    doc = read_results(path)
    wall = float((doc.get("wall_seconds") or {}).get("this_invocation", 0.0))
    failed = doc.get("failed", [])
    _print_report(doc["rows"], failed, doc.get("running", []), path, wall)
    if failed:
        problems = [*problems, f"{len(failed)} run(s) failed (listed above and in {path})"]
    if problems:
        raise RunFailure("; ".join(problems))


def _print_report(
    rows: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    running: list[dict[str, Any]],
    path: Path,
    wall: float,
) -> None:
    """The suite's rows, its failed runs and those other workers are running."""
    from ..report.formats import fmt_cell, markdown_table

    table = []
    for r in rows:
        conv = r.get("convergence") or {}
        table.append([r["arm"], r["seed"], r["status"], fmt_cell(r["clean_acc"], pct=True),
                      fmt_cell(r["pgd_acc"], pct=True), fmt_cell(conv.get("epochs_to_target")),
                      fmt_cell(conv.get("total_seconds_to_target"), digits=0),
                      fmt_cell(r["train_seconds"], digits=0)])  # fmt: skip
    if table:
        headers = ["arm", "seed", "status", "best clean %", "best PGD %", "epochs to target",
                   "total s to target", "train s"]  # fmt: skip
        click.echo(markdown_table(headers, table))
    for f in failed:
        click.echo(f"failed: {f['arm']} seed {f['seed']} ({f['stage']}): {f['error']}")
    for r in running:
        click.echo(f"running elsewhere: {r['arm']} seed {r['seed']} ({r['stage']}), {r['holder']}")
    click.echo(f"results: {path} (wall time {wall:.0f} s)")


@bench.command("list", short_help="List the suites with their arms, seeds and device.")
@_SUITE_DIR
def list_command(suite_dirs: tuple[str, ...]) -> None:
    """List the suites found (your --suite-dir directories, BOOSTING_TICKETS_SUITES, then the
    packaged suites) with their arms, seeds, runs and intended device."""
    from ..bench.runner import list_suites
    from ..bench.suite_files import suite_dirs as search_dirs
    from ..report.formats import markdown_table

    dirs = search_dirs(suite_dirs)
    entries = list_suites(dirs)
    if not entries:
        raise UserError(f"no suite files in {', '.join(map(str, dirs))}")
    rows = [
        [e["name"], "invalid", "–", "–", "–", e["error"]]
        if "error" in e
        else [e["name"], e["device"], e["arms"], e["seeds"], e["runs"], e["description"]]
        for e in entries
    ]
    click.echo(markdown_table(["suite", "device", "arms", "seeds", "runs", "description"], rows))
