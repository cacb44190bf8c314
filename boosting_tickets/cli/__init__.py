"""The ``boosting-tickets`` command line: one module per command group, loaded when asked for.

Every command answers bad input with one line ``error: ...`` on stderr and exit status 2, a runtime
failure (a diverged run, failed arms of a suite) with one line and exit 1, and an internal error
with one line and exit 3 (set ``BOOSTING_TICKETS_DEBUG=1`` to see its traceback); never a
traceback otherwise. ``--help``, every ``<command> --help`` and shell completion import no torch.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import click

from .. import __version__
from ..core.errors import RunFailure, UserError

DEBUG_ENV = "BOOSTING_TICKETS_DEBUG"
#: command name -> "module:attribute" of its click command, imported on first use.
COMMANDS = {
    "train": "boosting_tickets.cli.train:train_command",
    "evaluate": "boosting_tickets.cli.evaluate:evaluate_command",
    "find-ticket": "boosting_tickets.cli.tickets:find_ticket_command",
    "bench": "boosting_tickets.cli.bench:bench",
    "tables": "boosting_tickets.cli.tables:tables_command",
    "runs": "boosting_tickets.cli.runs:runs_command",
    "instability": "boosting_tickets.cli.instability:instability_command",
    "compare": "boosting_tickets.cli.compare:compare",
    "doctor": "boosting_tickets.cli.doctor:doctor_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported only when a command is needed."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


def _echo_err(msg: str) -> None:
    # Under torchrun every rank may fail alike: name the rank of all but the first.
    rank = os.environ.get("RANK", "0") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "0"
    where = "" if rank == "0" else f"[rank {rank}] "
    click.echo(f"error: {where}{' '.join(msg.split())}", err=True)


def _lost_peer(exc: BaseException) -> bool:
    """A collective failed because another rank of this torchrun group died."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(k in text for k in ("gloo", "NCCL", "Connection"))
    )


# click >= 8.2 raises this for a group called without a command; older clicks print help themselves.
_NO_ARGS_IS_HELP = getattr(
    click.exceptions, "NoArgsIsHelpError", getattr(click.exceptions, "NoArgsIsHelp", ())
)


class Terminated(BaseException):
    """SIGTERM arrived: stop like Ctrl-C (the resume state of the last finished epoch stays)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the group, map every failure to one line + exit code."""
    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread (an embedding application): leave it be
            pass
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        rv = cli.main(
            args=args, prog_name="boosting-tickets", standalone_mode=False, obj={"argv": args}
        )
    except UserError as exc:
        _echo_err(str(exc))
        sys.exit(2)
    except RunFailure as exc:
        _echo_err(str(exc))
        sys.exit(1)
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _echo_err(exc.format_message() + hint)
        sys.exit(2)
    except click.ClickException as exc:
        _echo_err(exc.format_message())
        sys.exit(exc.exit_code or 1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _echo_err("interrupted; rerun the same command to resume")
        sys.exit(128 + signal.SIGINT)
    except Terminated:
        _echo_err("terminated (SIGTERM); rerun the same command to resume")
        sys.exit(128 + signal.SIGTERM)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        if _lost_peer(exc):
            _echo_err(
                f"lost contact with another rank ({' '.join(str(exc).split())[:200]}); under "
                "torchrun --max-restarts the group restarts from the last finished epoch"
            )
            sys.exit(1)
        detail = " ".join(str(exc).split())[:300]
        _echo_err(
            f"internal error ({type(exc).__name__}: {detail}); please report it, and rerun with "
            f"{DEBUG_ENV}=1 to see the traceback"
        )
        sys.exit(3)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="boosting-tickets")
def cli() -> None:
    """Boosting tickets: find sparse subnetworks that make PGD adversarial training faster,
    benchmark them against dense baselines and RobustBench models, and tabulate the results."""
