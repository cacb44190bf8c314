"""How fast the CLI starts, next to a bare Python start-up, measured side by side in one run.

Each command is started as a fresh process (the way a user or a shell completion starts it) in
interleaved rounds, and the script prints the median wall time of each next to ``python -c pass``
and ``python -c "import torch"`` (the cost every command paid before the CLI stopped importing
torch at start-up). Targets: ``--help``, ``<command> --help`` and a TAB completion within 0.5 s;
``bench run quick --dry-run`` (plans the suite and prices it with the cost model) within 2 s.

Usage: ``.venv/bin/python benchmarks/cli_startup.py [--rounds 7]``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import click

COMPLETION = {
    "_BOOSTING_TICKETS_COMPLETE": "bash_complete",
    "COMP_WORDS": "boosting-tickets train --objective ",
    "COMP_CWORD": "3",
}
CASES: tuple[tuple[str, list[str], dict[str, str], float | None], ...] = (
    ("python -c pass", ["-c", "pass"], {}, None),
    ('python -c "import torch"', ["-c", "import torch"], {}, None),
    ("boosting-tickets --help", ["-m", "boosting_tickets", "--help"], {}, 0.5),
    ("boosting-tickets train --help", ["-m", "boosting_tickets", "train", "--help"], {}, 0.5),
    (
        "boosting-tickets bench run --help",
        ["-m", "boosting_tickets", "bench", "run", "--help"],
        {},
        0.5,
    ),  # fmt: skip
    ("TAB after 'train --objective '", ["-m", "boosting_tickets"], COMPLETION, 0.5),
    (
        "boosting-tickets bench run quick --dry-run",
        ["-m", "boosting_tickets", "bench", "run", "quick", "--dry-run"],
        {},
        2.0,
    ),  # fmt: skip
)


def _time(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, env={**os.environ, **env}, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise click.ClickException(f"{args} failed: {proc.stderr.decode()[-300:]}")
    return elapsed


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=7, show_default=True)
def main(rounds: int) -> None:
    """Print the median start-up time of each command next to a bare Python start."""
    times: dict[str, list[float]] = {name: [] for name, *_ in CASES}
    for r in range(rounds):
        order = CASES if r % 2 == 0 else tuple(reversed(CASES))  # interleaved, both directions
        for name, args, env, _ in order:
            times[name].append(_time(args, env))
    bare = statistics.median(times["python -c pass"])
    click.echo(f"{rounds} rounds, interleaved; median wall time per fresh process")
    click.echo(f"{'command':46s} {'median s':>9s} {'- python':>9s} {'target s':>9s}  met")
    for name, _, _, target in CASES:
        med = statistics.median(times[name])
        met = "" if target is None else ("yes" if med <= target else "NO")
        shown = "–" if target is None else f"{target:.1f}"
        click.echo(f"{name:46s} {med:9.3f} {med - bare:9.3f} {shown:>9s}  {met}")


if __name__ == "__main__":
    main()
