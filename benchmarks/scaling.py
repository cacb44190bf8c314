"""Scaling out on this machine, measured side by side in one run: suite workers and DDP ranks.

Three measurements, in interleaved rounds (A, B, then B, A, ...; medians and the ratio of medians,
because the machine is shared and noisy):

* **suite throughput**: a synthetic suite of six dense runs (about 15 s each, so that a worker's
  start-up of a few seconds is a small part of it) with ``bench run --launcher local`` and 1 vs 2
  workers, one thread each (runs per minute; target: 2 workers >= 1.7x on 2 cores);
* **DDP images/s**: one epoch of PGD-3 training of a WRN-10-2 with 1 vs 2 gloo processes
  (``train --nproc``), one thread each, the global batch unchanged (target >= 1.5x), from the
  epoch's training time in ``metrics.json``;
* **communication share** of a 2-rank DDP step: the gradient all-reduce
  (``Distributed.average_gradients`` on the WRN-10-2's gradients, timed alone under torchrun)
  divided by the 2-rank step time.

Every process gets ``OMP_NUM_THREADS=1`` and ``--threads 1``, so "2 workers" and "2 ranks" use
the two cores and "1" uses one. Results go to stdout, and with ``--json-out`` to a file.

Usage: ``.venv/bin/python benchmarks/scaling.py [--rounds 3] [--quick] [--json-out FILE]``
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "boosting_tickets", *args], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise click.ClickException(f"boosting-tickets {' '.join(args[:3])} failed:\n{proc.stderr}")
    return proc


def _suite_file(root: Path, runs: int, images: int) -> Path:
    """A suite of ``runs`` dense PGD-2 runs (one seed each) on synthetic data."""
    text = (
        f'description = "scaling benchmark"\nseeds = {runs}\n'
        f'[run.data]\ndataset = "synthetic"\ntrain_subset = {images}\nval_size = 64\n'
        "test_subset = 64\nbatch_size = 64\n"
        '[run.model]\nmodel = "wrn-10-1"\n'
        '[run.train]\nobjective = "pgd"\nepochs = 2\ntrain_steps = 2\nprogress = false\n'
        "tensorboard = false\n[run.eval]\neval_steps = 2\n"
        '[[arms]]\nname = "dense"\nkind = "dense"\n'
    )
    path = root / "scaling.toml"
    path.write_text(text)
    return path


def suite_seconds(suite: Path, out: Path, workers: int) -> float:
    """Wall seconds of the whole suite with ``workers`` local workers (fresh output directory)."""
    t0 = time.perf_counter()
    _cli("bench", "run", str(suite), "--out", str(out), "--launcher", "local", "--workers",
         str(workers), "--threads", "1")  # fmt: skip
    return time.perf_counter() - t0


def ddp_images_per_second(out: Path, nproc: int, images: int) -> float:
    """Training images per second of one PGD-3 epoch of WRN-10-2 with ``nproc`` ranks."""
    _cli("train", "--dataset", "synthetic", "--train-subset", str(images), "--val-size", "64",
         "--test-subset", "64", "--batch-size", "128", "--model", "wrn-10-2", "--objective",
         "pgd", "--train-steps", "3", "--epochs", "1", "--no-test-eval", "--no-progress",
         "--no-tensorboard", "--threads", "1", "--nproc", str(nproc), "--out", str(out))  # fmt: skip
    (run,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    metrics = json.loads((run / "metrics.json").read_text())
    return images / metrics["epochs"][0]["train_seconds"]


PROBE = """
import os, sys, time, torch
from boosting_tickets.core.distributed import init_from_env
from boosting_tickets.models.registry import build_model
torch.set_num_threads(1)
dist = init_from_env("cpu")
model = build_model("wrn-10-2", num_classes=10, in_channels=1)
x = torch.rand(64, 1, 16, 16)
model(x).sum().backward()
params = [p for p in model.parameters() if p.requires_grad]
for _ in range(3):
    dist.average_gradients(params, 1)
reps = int(sys.argv[1])
dist.barrier()
t0 = time.perf_counter()
for _ in range(reps):
    dist.average_gradients(params, 1)
dist.barrier()
if dist.primary:
    print((time.perf_counter() - t0) / reps)
torch.distributed.destroy_process_group()
"""


def allreduce_seconds(reps: int) -> float:
    """Seconds of one gradient all-reduce of WRN-10-2 over 2 gloo ranks."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--no-python", sys.executable, "-c", PROBE, str(reps)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"all-reduce probe failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _median_pair(rounds: int, a, b) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """``rounds`` interleaved measurements of ``a`` and ``b`` (a, b, then b, a, ...)."""
    xs, ys = [], []
    for r in range(rounds):
        order = ((a, xs), (b, ys)) if r % 2 == 0 else ((b, ys), (a, xs))
        for fn, sink in order:
            sink.append(fn(r))
    return xs, ys


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--quick", is_flag=True, help="Tiny sizes (a smoke check, numbers meaningless).")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None,
              help="Also write the measurements as JSON here.")  # fmt: skip
def main(rounds: int, quick: bool, json_out: str | None) -> None:
    """Print suite throughput (1 vs 2 workers), DDP images/s (1 vs 2 ranks) and the
    communication share of a DDP step, side by side."""
    runs, suite_images, ddp_images, reps = (2, 64, 256, 5) if quick else (6, 1536, 1920, 50)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        suite = _suite_file(root, runs, suite_images)
        one, two = _median_pair(
            rounds,
            lambda r: suite_seconds(suite, root / f"w1-{r}", 1),
            lambda r: suite_seconds(suite, root / f"w2-{r}", 2),
        )
        d1, d2 = _median_pair(
            rounds,
            lambda r: ddp_images_per_second(root / f"d1-{r}", 1, ddp_images),
            lambda r: ddp_images_per_second(root / f"d2-{r}", 2, ddp_images),
        )
        comm = statistics.median(allreduce_seconds(reps) for _ in range(rounds))
    s1, s2 = statistics.median(one), statistics.median(two)
    i1, i2 = statistics.median(d1), statistics.median(d2)
    step2 = 128 / i2  # seconds of one 2-rank step of the global batch
    found = {
        "suite_runs": runs,
        "suite_seconds": {"1_worker": one, "2_workers": two},
        "suite_speedup": s1 / s2,
        "ddp_images_per_second": {"1_rank": d1, "2_ranks": d2},
        "ddp_speedup": i2 / i1,
        "allreduce_seconds": comm,
        "comm_share": comm / step2,
        "cpu_count": os.cpu_count(),
    }
    click.echo(f"suite of {runs} runs, --launcher local, one thread per worker ({rounds} rounds):")
    click.echo(f"  1 worker : {s1:7.1f} s  ({60 * runs / s1:5.2f} runs/min)")
    click.echo(f"  2 workers: {s2:7.1f} s  ({60 * runs / s2:5.2f} runs/min)  "
               f"-> {s1 / s2:.2f}x (target >= 1.7x)")  # fmt: skip
    click.echo("DDP, WRN-10-2 PGD-3 epoch, global batch 128, gloo, one thread per rank:")
    click.echo(f"  1 rank : {i1:7.1f} images/s")
    click.echo(f"  2 ranks: {i2:7.1f} images/s  -> {i2 / i1:.2f}x (target >= 1.5x)")
    click.echo(f"  gradient all-reduce {1000 * comm:.1f} ms of a {1000 * step2:.0f} ms step: "
               f"communication share {comm / step2:.1%}")  # fmt: skip
    if json_out is not None:
        from boosting_tickets.core.storage import atomic_write_json

        atomic_write_json(json_out, found)


if __name__ == "__main__":
    main()
