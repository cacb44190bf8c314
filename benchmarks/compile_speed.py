"""torch.compile against eager for the PGD-10 training step, with the compile time on its own line.

Two persistent, identically seeded models of ``--model`` (default wrn-10-1), one run eagerly and
one through ``torch.compile(model, dynamic=True)`` exactly as ``boosting-tickets train --compile``
does (the training step's attack and update forwards both go through the compiled module). Each
timed repetition is one epoch over the same ``--n-images`` Fashion-MNIST training images in
batches of ``--batch-size``: the ``pgd`` objective's loss from the objective registry (L∞ PGD-10,
eps 0.1, step eps/4, random start, crafted in eval mode, the update in train mode), backward and an
SGD step. Repetitions of the two arms are interleaved (A, B then B, A); the compiled arm's first
epoch, in which inductor compiles, is timed separately and reported as the compile cost, and
the number of epochs after which compiling has paid for itself is printed (never, if it loses).

The kernel table (``training/kernels.json``) turns ``compile`` on for a device and model family
only where the steady-state ratio is at least its ``threshold`` (1.1×). Both arms use the same
memory format (``--channels-last``) and the same thread count. Their epoch losses are printed
side by side with the largest relative difference: inductor reorders float sums, and PGD's sign()
turns a rounding difference in an input gradient into a different step, so two persistent models
drift apart over epochs the way two seeds do (equality within float tolerance over a few steps is
tested in ``tests/test_kernels.py``).

Run: ``python benchmarks/compile_speed.py --threads 1 [--model small-cnn] [--channels-last]``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from _common import (
    Arm,
    BenchConfig,
    Measurement,
    config_command,
    describe_load,
    fmt_ratio,
    interleave,
    machine_load,
    median_rate,
    paired_ratio,
    paired_ratios,
    run_command,
    setup_runtime,
    spread,
    timed,
    verdict,
    write_results,
)
from train_speed import TrainSpeedConfig, run_config

from boosting_tickets.core.config import non_default, setting
from boosting_tickets.data.splits import load_splits, to_unit_float
from boosting_tickets.models.checkpoints import arch_meta, build_from_arch
from boosting_tickets.report.formats import markdown_table
from boosting_tickets.training.hparams import RunConfig, train_attack_spec
from boosting_tickets.training.kernels import threshold as kernel_threshold
from boosting_tickets.training.objectives import objectives


@dataclass(frozen=True)
class CompileSpeedConfig(BenchConfig):
    """Settings of the compile benchmark (plus the shared ones)."""

    model: str = setting("wrn-10-1", "architecture (small-cnn, wrn-10-1, ...)")
    n_images: int | None = setting(
        None, "training images per repetition (one epoch); none = 384 (256 with --quick)", low=1
    )
    steps: int = setting(10, "PGD steps of the training attack (step eps/4)", low=1)
    lr: float = setting(0.05, "SGD learning rate (constant), same for both arms", low=0.0)

    def images(self) -> int:
        if self.n_images is not None:
            return self.n_images
        return 256 if self.quick else 384


def _rc(cfg: CompileSpeedConfig, device: torch.device) -> RunConfig:
    """The run config whose training step both arms take (kernels as given, no folding)."""
    return run_config(
        TrainSpeedConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, model=cfg.model,
                         batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed),
        device,
        cfg.channels_last,
    )  # fmt: skip


def _epoch_fn(cfg: CompileSpeedConfig, device: torch.device, compiled: bool, data: tuple) -> tuple:
    """(model, one-epoch function) for one arm: the training step of ``train`` on a persistent
    model, forwards through ``torch.compile(model, dynamic=True)`` when ``compiled``."""
    x_all, y_all, arch = data
    rc = _rc(cfg, device)
    attack = train_attack_spec(rc)
    objective = objectives().get("pgd")
    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_from_arch(arch).to(device).to(memory_format=fmt).train()
    fast = torch.compile(model, dynamic=True) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=rc.train.momentum,
                          weight_decay=rc.train.weight_decay)  # fmt: skip
    gen = torch.Generator(device=device)

    def epoch() -> float:
        gen.manual_seed(cfg.seed)
        total = 0.0
        for start in range(0, len(y_all), cfg.batch_size):
            x, y = x_all[start : start + cfg.batch_size], y_all[start : start + cfg.batch_size]
            loss, _ = objective.loss(fast, x, y, cfg=rc, attack=attack, generator=gen,
                                     use_amp=False, class_weights=None)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
        return total / len(y_all)

    return rc, epoch


def _arms(cfg: CompileSpeedConfig, device: torch.device, data: tuple) -> tuple[list[Arm], dict]:
    n = len(data[1])
    first: dict[str, float] = {}
    arms = []
    for name, compiled in (("eager", False), ("compile", True)):
        rc, epoch = _epoch_fn(cfg, device, compiled, data)

        def one(epoch=epoch) -> Measurement:
            seconds, loss = timed(epoch, device)
            return Measurement(seconds, n, {"loss": loss})

        def warm(name=name, epoch=epoch) -> None:
            first[name] = timed(epoch, device)[0]  # eager: caches; compile: inductor compiles

        arms.append(Arm(name, one, warmup=warm))
    return arms, {"first_epoch_seconds": first, "run_config": non_default(rc)}


def _payback(first: dict[str, float], eager_s: float, compile_s: float) -> float | None:
    """Epochs after which the compile cost is repaid (None when compiling does not speed up)."""
    saved = eager_s - compile_s
    if saved <= 0:
        return None
    return (first["compile"] - first["eager"]) / saved


def main(cfg: CompileSpeedConfig) -> None:
    """Interleave eager and compiled epochs; print compile cost, rates, ratio and the verdict."""
    device = setup_runtime(cfg)
    splits = load_splits(cfg.dataset, cfg.data_dir, train_subset=cfg.images(), test_subset=1)
    spec = splits.spec
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x_all = to_unit_float(splits.train.images.to(device)).contiguous(memory_format=fmt)
    y_all = splits.train.labels.to(device)
    arch = arch_meta(cfg.model, num_classes=spec.num_classes, in_channels=spec.channels,
                     mean=spec.mean, std=spec.std, dataset=spec.name)  # fmt: skip
    n = len(y_all)
    print(
        f"PGD-{cfg.steps} training step, {cfg.model} on {n} {cfg.dataset} images, batch "
        f"{cfg.batch_size}, device {device}, {torch.get_num_threads()} threads, channels_last="
        f"{cfg.channels_last}, eager vs torch.compile(dynamic=True) "
        f"(torch {torch.__version__}), {cfg.repetitions()} interleaved repetitions"
    )
    load_before = machine_load()
    print(describe_load(load_before))
    arms, info = _arms(cfg, device, (x_all, y_all, arch))
    runs = interleave(arms, cfg.repetitions(), desc="compile")
    load_after = machine_load()
    summary = _summarize(runs, info["first_epoch_seconds"], kernel_threshold())
    print(describe_load(load_after))
    write_results(
        cfg.json_out,
        {
            "benchmark": "compile_speed",
            "protocol": {
                "train_attack": train_attack_spec(_rc(cfg, device)).protocol(),
                "compile": "torch.compile(model, dynamic=True), inductor defaults",
                "run_config": info["run_config"],
            },
            "settings": {
                "n_images": n,
                "batch_size": cfg.batch_size,
                "model": cfg.model,
                "threads": torch.get_num_threads(),
                "repetitions": cfg.repetitions(),
                "channels_last": cfg.channels_last,
            },
            "machine_load": {"before": load_before, "after": load_after},
            **summary,
        },
        device,
    )


def _summarize(runs: dict, first: dict[str, float], threshold: float) -> dict:
    """Print the table, the compile cost, loss agreement and the verdict; return them."""
    eager, comp = runs["eager"], runs["compile"]
    table = []
    for name, ms in runs.items():
        lo, hi = spread(ms)
        table.append([name, f"{first[name]:.1f}", f"{median_rate(ms):.1f} ({lo:.1f}–{hi:.1f})",
                      fmt_ratio(ms, eager), f"{ms[0].extra['loss']:.4f}"])  # fmt: skip
    print(markdown_table(["arm", "first epoch s", "img/s", "vs eager", "epoch loss"], table))
    eager_s = statistics.median(m.seconds for m in eager)
    payback = _payback(first, eager_s, statistics.median(m.seconds for m in comp))
    print(
        f"compile cost: first epoch {first['compile']:.1f} s vs {first['eager']:.1f} s eager; "
        + (f"repaid after {payback:.1f} epochs" if payback is not None else "never repaid")
    )
    drift = max(abs(c.extra["loss"] - e.extra["loss"]) / abs(e.extra["loss"])
                for c, e in zip(comp, eager, strict=True))  # fmt: skip
    print(
        "epoch losses, eager / compile: "
        + ", ".join(
            f"{e.extra['loss']:.4f}/{c.extra['loss']:.4f}" for e, c in zip(eager, comp, strict=True)
        )
        + f"; largest relative difference {drift:.1e} (PGD's sign() amplifies rounding)"
    )
    wins = paired_ratio(comp, eager) >= threshold
    print(f"target compile ≥ {threshold:g}× eager (kernel table threshold): {verdict(wins)}")
    rows = [
        {
            "arm": k,
            "images_per_s": median_rate(ms),
            "images_per_s_range": list(spread(ms)),
            "ratio_vs_eager": paired_ratio(ms, eager),
            "ratios_per_round": paired_ratios(ms, eager),
            "epoch_losses": [m.extra["loss"] for m in ms],
        }
        for k, ms in runs.items()
    ]
    return {"first_epoch_seconds": first, "rows": rows, "payback_epochs": payback,
            "loss_max_relative_difference": drift,
            "targets": {f"compile ≥ {threshold:g}× eager": wins}}  # fmt: skip


command = config_command(CompileSpeedConfig, main, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    run_command(command)
