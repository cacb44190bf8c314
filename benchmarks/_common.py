"""Helpers shared by the speed benchmarks (``attack_speed.py``, ``train_speed.py``).

What lives here: the settings both scripts share, reference models trained with our own
:func:`boosting_tickets.training.train` and cached under ``benchmarks/.cache/`` (git-ignored),
interleaved timing (rounds alternate A, B, … and …, B, A; medians and paired ratios, because the
machines are shared and noisy), a probe for stalled multi-threaded operators on a busy CPU,
analytic FLOP counting, the measured fp32 matmul peak, and the click entry point that turns a
:class:`UserError` into ``error: ...`` and exit status 2.

The scripts are run as files (``python benchmarks/attack_speed.py``), so this module is imported as
the top-level module ``_common``.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from boosting_tickets.adversarial.steps import bn_mode
from boosting_tickets.cli.options import config_options
from boosting_tickets.core.config import build_config, setting
from boosting_tickets.core.environment import environment_info, resolve_device
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import atomic_write_json
from boosting_tickets.data.registry import dataset_names
from boosting_tickets.training.hparams import DataConfig, EvalConfig, ModelConfig, RunConfig
from boosting_tickets.training.hparams import TrainConfig as RunTrainConfig

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
RESULTS_KIND = "boosting-tickets/benchmark"


# --------------------------------------------------------------------------------------------------
# Settings shared by both benchmarks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """Settings common to the speed benchmarks (each script adds its own)."""

    device: str = setting("cpu", "torch device: cpu, cuda, cuda:N or auto")
    amp: bool = setting(False, "bf16 autocast on CUDA, same for both sides (ignored on the CPU)")
    channels_last: bool = setting(
        False,
        "channels_last memory format, same for both sides (attack_speed: model and inputs; "
        "train_speed: adds plain-cl and ours-cl arms)",
    )
    threads: int | None = setting(
        None, "torch CPU threads for both sides; none = torch's default (all cores)", low=1
    )
    quick: bool = setting(False, "short run: fewer images and repetitions (a smoke check)")
    reps: int | None = setting(
        None, "timed repetitions per arm, interleaved; none = 5 (3 with --quick)", low=1
    )
    dataset: str = setting("fashion-mnist", "dataset", choices=dataset_names)
    data_dir: str = setting("data", "directory holding the dataset files")
    model: str = setting("small-cnn", "architecture (small-cnn, wrn-10-1, ...)")
    batch_size: int = setting(128, "batch size, same for both sides", low=1)
    seed: int = setting(0, "seed of model init, data order and attack random starts", low=0)
    json_out: str | None = setting(None, "also write the measurements as JSON to this file")
    overwrite: bool = setting(False, "replace an existing --json-out file")

    def validate(self) -> None:
        ModelConfig(model=self.model).validate()
        if self.json_out is not None:
            out = Path(self.json_out)
            if out.is_dir():
                raise UserError(f"--json-out {out} is a directory; name a file")
            # Checked before any timing, so a long run never ends in a refused write.
            if out.exists() and not self.overwrite:
                raise UserError(
                    f"{out} exists; pass --overwrite to replace it or another --json-out"
                )

    def repetitions(self) -> int:
        """Timed repetitions per arm: ``reps`` if given, else 5 (3 with ``quick``)."""
        if self.reps is not None:
            return self.reps
        return 3 if self.quick else 5


def setup_runtime(cfg: BenchConfig) -> torch.device:
    """Apply the thread count, resolve the device, and return it."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.amp and device.type != "cuda":
        print("note: --amp only applies on CUDA; running fp32 on the CPU")
    return device


#: A small elementwise op slower than this means parallel ops wait for descheduled threads.
SLOW_OP_SECONDS = 1e-3


def op_latency() -> float:
    """Median seconds of one multi-threaded elementwise op on 10⁵ floats (≈ 10 µs when idle).

    On an oversubscribed CPU every parallel region waits for all of torch's threads to be
    scheduled: measured here at load ~6 on 2 cores, 16 ms with 2 threads vs 14 µs with 1. Then
    run time counts operator launches, not work, and early exit cannot show; ``--threads 1``
    avoids it.
    """
    x = torch.ones(100_000)
    times = []
    for _ in range(21):
        t0 = time.perf_counter()
        x.mul_(1.0)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_load() -> dict[str, Any]:
    """Load average, CPU count, torch threads and op latency, stored next to every timing.

    A load above the core count means other processes shared the cores: absolute rates are then
    low and noisy (paired ratios of interleaved arms hold up much better), and with more than one
    torch thread parallel ops may stall (see :func:`op_latency`).
    """
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpus = os.cpu_count()
    return {
        "load_average_1min": load,
        "cpu_count": cpus,
        "torch_threads": torch.get_num_threads(),
        "contended": load is not None and cpus is not None and load > cpus,
        "op_latency_s": op_latency(),
    }


def describe_load(load: dict[str, Any]) -> str:
    """One line on how busy the machine was (and a warning when parallel ops stall)."""
    if load["load_average_1min"] is None:
        line = "machine load: unknown"
    else:
        line = f"machine load: {load['load_average_1min']:.1f} on {load['cpu_count']} cores"
        if load["contended"]:
            line += " (shared with other work: absolute rates are depressed)"
    line += f"; small-op latency {1e6 * load['op_latency_s']:.0f} µs"
    if load["op_latency_s"] > SLOW_OP_SECONDS and load["torch_threads"] > 1:
        line += (
            " — parallel ops are stalling on this busy machine, so timings count op launches, "
            "not work; rerun with --threads 1 or when it is idle"
        )
    return line


def amp_dtype(cfg: BenchConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when ``--amp`` is set on a CUDA device, else None (fp32)."""
    return torch.bfloat16 if cfg.amp and device.type == "cuda" else None


def prepare_model(model: nn.Module, cfg: BenchConfig, device: torch.device) -> nn.Module:
    """Move to ``device`` and, with ``--channels-last``, to the channels_last memory format."""
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_images(x: torch.Tensor, cfg: BenchConfig, device: torch.device) -> torch.Tensor:
    """uint8 or float images -> float32 in [0, 1] on ``device`` (channels_last if asked)."""
    x = x.to(device)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def run_command(command: Any, argv: list[str] | None = None) -> None:
    """Run a click command; bad input prints one ``error: ...`` line and exits with status 2."""
    import click

    try:
        command.main(args=argv, standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)


def config_command(cls: type, body: Callable[[Any], None], doc: str) -> Any:
    """A click command with one flag per setting of ``cls`` (plus ``--config FILE.toml``)."""
    import click

    @click.command(help=doc, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--config", "config_path", default=None, help="TOML file of settings.")
    @config_options(cls)
    def command(config_path: str | None, **kw: Any) -> None:
        body(build_config(cls, config_path=config_path, cli_values=kw))

    return command


# --------------------------------------------------------------------------------------------------
# Reference models, trained with our own training loop and cached
# --------------------------------------------------------------------------------------------------

#: How the cached reference models are trained (Fashion-MNIST, batch 128, lr 0.05, our own loop):
#: the natural model long enough to reach a typical clean accuracy for a small CNN (~89 %), since
#: a half-trained model is not what "naturally trained" means; the PGD model (L∞ eps 0.1, PGD-10,
#: step eps/4) only a few epochs on a few thousand images, enough to be somewhat robust.
#: kind -> (training images, epochs)
REFERENCE_RECIPES = {"natural": (10000, 5), "pgd": (4000, 3)}


def reference_run_config(kind: str, cfg: BenchConfig) -> RunConfig:
    """The run config of the cached ``kind`` ("natural" or "pgd") reference model."""
    if kind not in REFERENCE_RECIPES:
        raise UserError(f"unknown reference model {kind!r}; use natural or pgd")
    subset, epochs = REFERENCE_RECIPES[kind]
    if cfg.dataset == "synthetic":
        subset = 512  # the synthetic set is small; used for smoke runs only
    return RunConfig(
        data=DataConfig(
            dataset=cfg.dataset,
            data_dir=cfg.data_dir,
            train_subset=subset,
            val_size=0,
            batch_size=128,
        ),
        model=ModelConfig(model=cfg.model),
        train=RunTrainConfig(
            objective=kind,
            epochs=epochs,
            lr=0.05,
            seed=cfg.seed,
            device=cfg.device,
            progress=True,
        ),
        eval=EvalConfig(test_eval=False),
    )


def reference_model(kind: str, cfg: BenchConfig, device: torch.device) -> tuple[nn.Module, dict]:
    """Train (once; later calls reuse the cache) and load the ``kind`` reference model.

    Returns the model on ``device`` in eval mode and a description (run dir, checkpoint sha256,
    the run's non-default settings) to store next to the numbers.
    """
    from boosting_tickets.core.config import non_default
    from boosting_tickets.core.storage import file_sha256
    from boosting_tickets.models.checkpoints import load_model
    from boosting_tickets.training.run import run_dir_for, train

    run_cfg = reference_run_config(kind, cfg)
    run_dir = run_dir_for(run_cfg, CACHE_DIR / "models", prefix=f"{kind}-{cfg.model}")
    final = run_dir / "final.pt"
    if not final.exists():
        print(f"training the {kind} reference model into {run_dir} (cached for later runs)")
    train(run_cfg, run_dir, log=print)
    model, _ = load_model(final, device)
    info = {
        "kind": kind,
        "checkpoint": str(final),
        "sha256": file_sha256(final),
        "trained_with": non_default(run_cfg),
    }
    return model.eval(), info


def checkpoint_model(path: str, device: torch.device) -> tuple[nn.Module, dict]:
    """Load a user-given model checkpoint (weights_only) and describe it."""
    from boosting_tickets.core.storage import file_sha256
    from boosting_tickets.models.checkpoints import load_model

    model, ckpt = load_model(path, device)
    return model.eval(), {
        "checkpoint": str(path),
        "sha256": file_sha256(path),
        "arch": ckpt["arch"],
    }


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    """One timed repetition of one arm: ``work`` units (images or FLOPs) in ``seconds``."""

    seconds: float
    work: float
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.work / self.seconds


@dataclass
class Arm:
    """One side of a comparison: ``run`` does one repetition and returns its measurement;
    ``warmup`` (optional, untimed) primes caches and kernels before the first repetition."""

    name: str
    run: Callable[[], Measurement]
    warmup: Callable[[], Any] | None = None


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of ``fn()``, synchronizing the device before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def round_order(n_arms: int, round_index: int) -> list[int]:
    """Arm order in one round: A, B, C in even rounds and C, B, A in odd ones.

    Reversing every other round cancels a steady drift in machine speed between neighbours,
    which a fixed A, B order would turn into a bias for whichever arm runs first.
    """
    order = list(range(n_arms))
    return order if round_index % 2 == 0 else order[::-1]


def interleave(arms: Sequence[Arm], reps: int, *, desc: str) -> dict[str, list[Measurement]]:
    """Run every arm's warmup, then ``reps`` rounds with one repetition of every arm each.

    Interleaving makes slow phases of a shared machine hit every arm alike; the caller compares
    medians and per-round (paired) ratios. Rounds alternate A, B, ... and ..., B, A
    (:func:`round_order`). Returns ``{arm name: [measurement per round]}``.
    """
    from tqdm import tqdm

    for arm in arms:
        if arm.warmup is not None:
            arm.warmup()
    out: dict[str, list[Measurement]] = {arm.name: [] for arm in arms}
    for r in tqdm(range(reps), desc=desc, leave=False):
        for i in round_order(len(arms), r):
            out[arms[i].name].append(arms[i].run())
    return out


def median_rate(ms: Sequence[Measurement]) -> float:
    """Median of ``work / seconds`` over repetitions."""
    return statistics.median(m.rate for m in ms)


def paired_ratios(a: Sequence[Measurement], b: Sequence[Measurement]) -> list[float]:
    """rate(a) / rate(b) for every round, each ratio from measurements of the same round."""
    return [x.rate / y.rate for x, y in zip(a, b, strict=True)]


def paired_ratio(a: Sequence[Measurement], b: Sequence[Measurement]) -> float:
    """Median over rounds of rate(a) / rate(b) (see :func:`paired_ratios`)."""
    return statistics.median(paired_ratios(a, b))


def fmt_ratio(a: Sequence[Measurement], b: Sequence[Measurement]) -> str:
    """``"1.23× (1.10–1.31)"``: the median paired ratio and its range over rounds."""
    ratios = paired_ratios(a, b)
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def spread(ms: Sequence[Measurement]) -> tuple[float, float]:
    """(min, max) rate over repetitions, to show how noisy the machine was."""
    rates = [m.rate for m in ms]
    return min(rates), max(rates)


# --------------------------------------------------------------------------------------------------
# FLOPs and the matmul peak
# --------------------------------------------------------------------------------------------------


def forward_flops(model: nn.Module, image_shape: Sequence[int]) -> dict[str, int]:
    """Forward FLOPs per image of every Conv2d and Linear layer, counted analytically.

    A convolution producing ``out`` elements costs ``out · (C_in / groups) · k_h · k_w`` multiply-
    adds, a linear layer ``out · in_features``; FLOPs = 2 × multiply-adds. Biases, BatchNorm,
    ReLU, pooling and the normalization layer are left out (memory-bound, well under 2 % of the
    FLOPs of the models here). Measured with forward hooks on a batch of two zero images of shape
    ``image_shape`` (C, H, W) in eval mode (the model's modes are restored). Returns
    ``{layer name: FLOPs per image}``; their sum is the forward cost F.
    """
    names = {m: n for n, m in model.named_modules()}
    flops: dict[str, int] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        batch = output.shape[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs = output.numel() * module.in_features
        flops[names[module]] = 2 * macs // batch

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        param = next(model.parameters())
        x = torch.zeros(2, *image_shape, device=param.device, dtype=torch.float32)
        with bn_mode(model, "eval"), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return flops


def pgd_training_flops_per_image(forward: int, steps: int) -> int:
    """FLOPs of one PGD-``steps`` adversarial training step per image, from forward cost F.

    Each attack step is a forward (F) plus a backward to the input only (≈ F: the transposed
    convolutions; no weight gradients); the weight update is a forward (F) plus a full backward
    (≈ 2F: input and weight gradients). Total (2·steps + 3)·F, e.g. 23·F for PGD-10. The first
    layer's input gradient, unneeded in the update step, is counted anyway (< 1 % here).
    """
    return (2 * steps + 3) * forward


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> Arm:
    """An arm timing one ``n × n`` matmul (2·n³ FLOPs): the machine's dense-compute ceiling."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)

    def run() -> Measurement:
        seconds, _ = timed(lambda: a @ b, device)
        return Measurement(seconds, 2.0 * n**3)

    name = f"{str(dtype).removeprefix('torch.')} matmul {n}x{n}"
    return Arm(name, run, warmup=lambda: [a @ b for _ in range(2)])


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def write_results(path: str | None, payload: dict[str, Any], device: torch.device) -> None:
    """Atomically write ``payload`` plus the environment as checksummed JSON (when ``path``)."""
    if path is None:
        return
    atomic_write_json(
        path,
        {"kind": RESULTS_KIND, **payload, "environment": environment_info(device)},
        checksum=True,
    )
    print(f"wrote {path}")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
