"""Helpers shared by the tests: tiny configs on the synthetic dataset, a CLI runner, tree digests."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import torch

from boosting_tickets.training.hparams import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

# Two threads everywhere: the CI machine has two cores; results must not depend on more.
torch.set_num_threads(2)


def tiny_config(**train_overrides) -> RunConfig:
    """A run that trains in a couple of seconds on the synthetic dataset (1x16x16, 10 classes)."""
    return RunConfig(
        data=DataConfig(
            dataset="synthetic", train_subset=256, val_size=64, test_subset=64, batch_size=64
        ),
        model=ModelConfig(model="small-cnn"),
        train=dataclasses.replace(
            TrainConfig(objective="pgd", epochs=2, lr=0.05, train_steps=2, progress=False),
            **train_overrides,
        ),
        eval=EvalConfig(eval_steps=3, eval_batch_size=64),
    )


def small_config(epochs: int = 1, objective: str = "natural", **train_overrides) -> RunConfig:
    """:func:`tiny_config` on less data with a 78k-parameter WRN-10-1: 4 steps of 16 images an
    epoch, PGD-1 evaluation on 16 held-out and 16 test images; a run takes a second or two."""
    cfg = tiny_config(epochs=epochs, objective=objective, **train_overrides)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, train_subset=64, val_size=16, test_subset=16, batch_size=16
        ),
        model=dataclasses.replace(cfg.model, model="wrn-10-1"),
        eval=dataclasses.replace(cfg.eval, eval_steps=1),
    )


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``boosting-tickets ARGS`` in a subprocess (real exit codes, real stderr)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "boosting_tickets", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=600,
    )


def tree_digest(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, to show a command modified nothing."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def cli_call(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``boosting_tickets.cli.main(args)`` in-process; returns (exit code, stdout, stderr)."""
    from boosting_tickets.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


# The data and model flags of a one-epoch CLI ticket on 64 synthetic images.
TICKET_CLI_DATA = ["--dataset", "synthetic", "--train-subset", "64", "--val-size", "16",
                   "--test-subset", "16", "--batch-size", "16", "--model", "wrn-10-1"]  # fmt: skip


def cli_find_ticket(out: Path, capsys) -> tuple[Path, str]:
    """``find-ticket`` with :data:`TICKET_CLI_DATA` for one epoch into ``out``, in-process;
    returns (the ticket directory, stdout)."""
    code, stdout, err = cli_call(
        ["find-ticket", *TICKET_CLI_DATA, "--epochs", "1", "--no-progress", "--out", str(out)],
        capsys,
    )
    assert code == 0, err
    (ticket_dir,) = Path(out).glob("ticket_*")
    return ticket_dir, stdout


def tiny_suite(arms: str, description: str = "a tiny suite") -> str:
    """A suite file of one seed on 64 synthetic images (WRN-10-1, one PGD-1 epoch, PGD-1
    evaluation, tickets found by one natural epoch); ``arms`` holds its [[arms]] tables. It
    allows weak statistics: one seed gives numbers, not verdicts."""
    return (
        f'description = "{description}"\nseeds = [0]\n'
        "[compare]\nallow_weak_stats = true\n"
        '[run.data]\ndataset = "synthetic"\ntrain_subset = 64\nval_size = 16\ntest_subset = 16\n'
        "batch_size = 16\n"
        '[run.model]\nmodel = "wrn-10-1"\n'
        "[run.train]\nepochs = 1\ntrain_steps = 1\nprogress = false\n"
        "[run.eval]\neval_steps = 1\n"
        "[find.train]\nepochs = 1\n" + arms
    )


def ddp_reference_config(sync_bn: bool = False) -> RunConfig:
    """The run ``tests/ddp_checks.py`` trains on 2 ranks and the DDP test on 1: PGD-2 training
    without random start (so that ranks and batch splits cannot change the attack), 2 epochs of
    4 steps of 16 images, evaluation with random starts."""
    cfg = small_config(epochs=2, objective="pgd", train_random_start=False, sync_bn=sync_bn)
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, eval_steps=2))


def ddp_reference_protocol():  # noqa: ANN201 - adversarial.EvalProtocol
    """A protocol whose random streams decide points: one step of eps from a random start (so
    where it starts matters), 2 restarts, FGSM too."""
    from boosting_tickets.adversarial.protocol import EvalProtocol

    return EvalProtocol(eps=0.1, pgd_steps=1, step_size=0.1, restarts=2, seed=3)


def torchrun(*args: str, nproc: int = 2, env: dict | None = None, extra: tuple[str, ...] = ()):
    """``python -m torch.distributed.run --standalone --nproc_per_node N ARGS`` (one thread per
    rank); returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *extra, *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=600)
