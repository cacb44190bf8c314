"""``--nproc N``: run the same command as N ranks of one process group, through ``torchrun``.

``boosting-tickets train ... --nproc 2`` re-runs itself (without ``--nproc``) as
``python -m torch.distributed.run --standalone --nproc_per_node 2 -m boosting_tickets train ...``
after the checks that need no process group (the device count, the global batch). The ranks then
join the group (:func:`join`, NCCL on GPUs, gloo on the CPU) and train one run together (see
``core.distributed``). Launching ``torchrun`` yourself works the same way and also gives elastic
restarts (``--max-restarts``) and several nodes (``--nnodes``, ``--rdzv-endpoint``).

Run through this module (``python -m boosting_tickets.cli.torchrun ...`` takes torchrun's own
arguments), a failed rank is reported in one line with its exit status instead of torchrun's
traceback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import click

from ..core.errors import UserError


def argv_without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def command_argv() -> list[str]:
    """The arguments this command was called with (recorded by ``cli.main``)."""
    root = click.get_current_context().find_root()
    argv = (root.obj or {}).get("argv")
    return list(sys.argv[1:] if argv is None else argv)


def relaunch(nproc: int, device: str, batch_sizes: Sequence[int] = ()) -> None:
    """Check ``--nproc`` and the global batches, then run this command as ``nproc`` ranks; exits
    with the launcher's status (0 when every rank finished)."""
    from ..core.distributed import check_global_batch, check_nproc

    check_nproc(nproc, device)
    for b in batch_sizes:
        check_global_batch(b, nproc)
    cmd = [
        sys.executable, "-m", "boosting_tickets.cli.torchrun", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "boosting_tickets", *argv_without_nproc(command_argv()),
    ]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its warning
    raise SystemExit(subprocess.call(cmd, env=env))


@contextlib.contextmanager
def joined(device: str) -> Iterator[object]:
    """Join the process group when ``torchrun`` started this process (else rank 0 of 1), and
    leave it at the end."""
    from ..core.distributed import init_from_env, launched_by_torchrun

    dist = init_from_env(device)
    try:
        yield dist
    finally:
        if launched_by_torchrun():
            import torch.distributed

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """``torch.distributed.run`` with a one-line report of failed ranks."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        codes = {f.exitcode for _, f in failures}
        ranks = ", ".join(f"rank {r} (exit {f.exitcode})" for r, f in failures)
        click.echo(f"error: {ranks} failed; their messages are above", err=True)
        # One rank's bad input (exit 2) is every rank's: keep its status.
        return codes.pop() if len(codes) == 1 and codes <= {1, 2, 3} else 1
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
