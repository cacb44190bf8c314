"""PGD-10 adversarial-training speed: our training loop against a plain reference loop.

Arms, interleaved in one process on the same model (same seeded init), the same images (a
Fashion-MNIST training subset, no augmentation on either side), batch 128, the same attack
(L∞ PGD-10, eps 0.1, step eps/4, uniform random start, crafted in eval mode) and the same SGD
settings, with the same thread count:

* ``plain``: the loop one would write by hand (float images already in memory; per batch: PGD-10
  with ``torch.autograd.grad``, then forward, backward, ``optimizer.step()``).
* ``ours``: :func:`boosting_tickets.training.train` for one epoch (uint8 images converted per batch
  by our loader, lr schedule, divergence check, running loss/accuracy); its time is the epoch's
  ``train_seconds`` (the batch loop only, not checkpoint writing).
* with ``--channels-last`` both again in the channels_last memory format (``plain-cl``, ``ours-cl``;
  ours through its ``channels_last`` setting).
* ``ours-fold`` (``ours-cl-fold`` with ``--channels-last``): ours with eval-mode BatchNorm folded
  into the convolutions while the attack is crafted (``--fold-bn``; the update step is unchanged).
* ``ours-default``: ours with every kernel left to the measured table (``training/kernels.json``),
  i.e. what ``boosting-tickets train`` does without kernel flags.
* a 2048×2048 matmul in the compute dtype (fp32, or bf16 with ``--amp``): the machine's peak.

FLOPs are counted analytically (see ``_common.forward_flops``): F = forward FLOPs per image of all
conv and linear layers; one PGD-10 training step costs (2·10 + 3)·F per image (10 × [forward +
input-only backward] + forward + full backward). Achieved FLOP/s = 23·F × images/s, reported as a
share of the matmul peak measured in the same rounds.

Targets: ours ≥ 1.0× plain (≥ 1.3× if channels_last helps on the CPU) and ≥ 50 % of the matmul
peak (issue #2); at the default settings, ours-default ≥ 1.4× plain and ≥ 65 % of the peak
(issue #14).

Run: ``python benchmarks/train_speed.py [--quick] [--channels-last] [--device cuda --amp]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import (
    Arm,
    BenchConfig,
    Measurement,
    amp_dtype,
    config_command,
    describe_load,
    fmt_ratio,
    forward_flops,
    interleave,
    machine_load,
    matmul_peak,
    median_rate,
    paired_ratio,
    paired_ratios,
    pgd_training_flops_per_image,
    run_command,
    setup_runtime,
    spread,
    timed,
    verdict,
    write_results,
)

from boosting_tickets.adversarial.spec import AttackSpec
from boosting_tickets.core.config import non_default, setting
from boosting_tickets.data.splits import ImageSet, Splits, load_splits, to_unit_float
from boosting_tickets.models.checkpoints import arch_meta, build_from_arch
from boosting_tickets.report.formats import markdown_table
from boosting_tickets.training.hparams import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    train_attack_spec,
)
from boosting_tickets.training.kernels import choose
from boosting_tickets.training.run import train

TARGET_RATIO = 1.0
TARGET_RATIO_CHANNELS_LAST = 1.3
TARGET_PEAK_SHARE = 0.5
TARGET_RATIO_DEFAULT = 1.4
TARGET_PEAK_SHARE_DEFAULT = 0.65


@dataclass(frozen=True)
class TrainSpeedConfig(BenchConfig):
    """Settings of the training-speed benchmark (plus the shared ones)."""

    n_images: int | None = setting(
        None, "training images per repetition (one epoch); none = 512 (256 with --quick)", low=1
    )
    steps: int = setting(10, "PGD steps of the training attack (step eps/4)", low=1)
    lr: float = setting(0.05, "SGD learning rate (constant), same for both loops", low=0.0)
    fold_arm: bool = setting(True, "also time ours with eval-mode BatchNorm folded (ours-fold)")

    def images(self) -> int:
        if self.n_images is not None:
            return self.n_images
        return 256 if self.quick else 512


def run_config(
    cfg: TrainSpeedConfig,
    device: torch.device,
    channels_last: bool | None,
    fold_bn: bool | None = False,
) -> RunConfig:
    """Our one-epoch PGD training run: no held-out or test evaluation, no augmentation; kernels
    as given (None: the measured table's choice)."""
    return RunConfig(
        data=DataConfig(
            dataset=cfg.dataset,
            data_dir=cfg.data_dir,
            val_size=0,
            batch_size=cfg.batch_size,
            augment=False,
        ),
        model=ModelConfig(model=cfg.model),
        train=TrainConfig(
            objective="pgd",
            epochs=1,
            lr=cfg.lr,
            schedule="constant",
            train_steps=cfg.steps,
            seed=cfg.seed,
            device=str(device),
            amp=cfg.amp,
            channels_last=channels_last,
            fold_bn=fold_bn,
            progress=False,
        ),
        eval=EvalConfig(test_eval=False),
    )


def plain_pgd_epoch(
    model: torch.nn.Module,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    attack: AttackSpec,
    *,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> float:
    """One epoch of PGD adversarial training written plainly; returns the mean training loss.

    x_all: float (N, C, H, W) in [0, 1] on ``device`` (any memory format); y_all: (N,) int64.
    The attack is made in eval mode with ``attack``'s eps, step size, steps and random start.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))
    eps, alpha = attack.eps, float(attack.step_size)
    amp = (
        torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    )
    loss_sum = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size].to(device)
        x, y = x_all[idx], y_all[idx]
        model.eval()
        x_adv = x.clone()
        if attack.random_start:
            x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(attack.steps):
            x_adv.requires_grad_(True)
            with amp:
                loss = F.cross_entropy(model(x_adv).float(), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
        model.train()
        with amp:
            loss = F.cross_entropy(model(x_adv).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.item()) * len(y)
    return loss_sum / len(order)


def _subset(splits: Splits, n: int) -> Splits:
    train_set = splits.train
    return dataclasses.replace(
        splits,
        train=ImageSet(train_set.images[:n], train_set.labels[:n], train_set.indices[:n]),
    )


def _arms(cfg: TrainSpeedConfig, splits: Splits, device: torch.device, workdir: Path) -> list[Arm]:
    spec = splits.spec
    arch = arch_meta(
        cfg.model,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        mean=spec.mean,
        std=spec.std,
        dataset=spec.name,
    )
    dtype = amp_dtype(cfg, device)
    n = len(splits.train)
    warm_n = min(n, cfg.batch_size)
    counter = iter(range(10**9))
    arms: list[Arm] = []

    def ours_arm(name: str, channels_last: bool | None, fold_bn: bool | None = False) -> Arm:
        rc = run_config(cfg, device, channels_last, fold_bn)

        def one(part: Splits) -> Measurement:
            # A fresh run directory each time: train() on a finished run does no work.
            res = train(rc, workdir / f"{name}-{next(counter)}", splits=part)
            row = res.metrics[-1]
            return Measurement(row["train_seconds"], len(part.train), {"loss": row["train_loss"]})

        return Arm(name, lambda: one(splits), warmup=lambda: one(_subset(splits, warm_n)))

    def plain_arm(name: str, channels_last: bool) -> Arm:
        rc = run_config(cfg, device, channels_last)
        attack = train_attack_spec(rc)
        assert attack is not None
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x_all = to_unit_float(splits.train.images.to(device)).contiguous(memory_format=fmt)
        y_all = splits.train.labels.to(device)

        def one(count: int) -> Measurement:
            torch.manual_seed(cfg.seed)
            model = build_from_arch(arch).to(device).to(memory_format=fmt)
            seconds, loss = timed(
                lambda: plain_pgd_epoch(
                    model,
                    x_all[:count],
                    y_all[:count],
                    attack,
                    batch_size=cfg.batch_size,
                    lr=rc.train.lr,
                    momentum=rc.train.momentum,
                    weight_decay=rc.train.weight_decay,
                    seed=cfg.seed,
                    device=device,
                    dtype=dtype,
                ),
                device,
            )
            return Measurement(seconds, count, {"loss": loss})

        return Arm(name, lambda: one(n), warmup=lambda: one(warm_n))

    arms += [plain_arm("plain", False), ours_arm("ours", False)]
    if cfg.channels_last:
        arms += [plain_arm("plain-cl", True), ours_arm("ours-cl", True)]
    if cfg.fold_arm:
        cl = bool(cfg.channels_last)
        arms.append(ours_arm("ours-cl-fold" if cl else "ours-fold", cl, True))
    arms.append(ours_arm("ours-default", None, None))
    arms.append(matmul_peak(device, dtype or torch.float32))
    return arms


def main(cfg: TrainSpeedConfig) -> None:
    """Interleave plain loop, our loop and the matmul peak; print rates, ratios and FLOP shares."""
    device = setup_runtime(cfg)
    n = cfg.images()
    splits = load_splits(cfg.dataset, cfg.data_dir, train_subset=n, test_subset=1)
    n = len(splits.train)
    spec = splits.spec
    probe = build_from_arch(
        arch_meta(
            cfg.model, num_classes=spec.num_classes, in_channels=spec.channels, mean=None, std=None
        )
    )
    per_layer = forward_flops(probe, spec.image_shape)
    fwd = sum(per_layer.values())
    step_flops = pgd_training_flops_per_image(fwd, cfg.steps)
    rc = run_config(cfg, device, False)
    attack = train_attack_spec(rc)
    assert attack is not None
    print(
        f"PGD-{attack.steps} training (eps {attack.eps:.4g}, step {attack.step_size:.4g}, "
        f"random start {attack.random_start}), {cfg.model} on {n} {cfg.dataset} images, "
        f"batch {cfg.batch_size}, device {device}, {torch.get_num_threads()} threads, "
        f"amp={amp_dtype(cfg, device)}, {cfg.repetitions()} interleaved repetitions"
    )
    print(
        f"forward {fwd / 1e6:.2f} MFLOP/image (conv+linear); one PGD-{cfg.steps} training step "
        f"≈ {2 * cfg.steps + 3}·F = {step_flops / 1e9:.3f} GFLOP/image"
    )
    chosen = choose(device.type, cfg.model, channels_last=None, compile=None, fold_bn=None)
    print(f"ours-default {chosen.describe()}")
    load_before = machine_load()
    print(describe_load(load_before))
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        runs = interleave(_arms(cfg, splits, device, Path(tmp)), cfg.repetitions(), desc="train")
    load_after = machine_load()
    peak_name = next(k for k in runs if "matmul" in k)
    peak = median_rate(runs[peak_name])
    arms = [k for k in runs if k != peak_name]

    table, rows = [], []
    for k in arms:
        rate = median_rate(runs[k])
        lo, hi = spread(runs[k])
        flops = rate * step_flops
        rows.append(
            {
                "arm": k,
                "images_per_s": rate,
                "images_per_s_range": [lo, hi],
                "gflop_per_s": flops / 1e9,
                "peak_share": flops / peak,
                "ratio_vs_plain": paired_ratio(runs[k], runs["plain"]),
                "ratios_per_round": paired_ratios(runs[k], runs["plain"]),
                "mean_train_loss": runs[k][0].extra["loss"],
            }
        )
        table.append(
            [
                k,
                f"{rate:.1f} ({lo:.1f}–{hi:.1f})",
                fmt_ratio(runs[k], runs["plain"]),
                f"{flops / 1e9:.1f}",
                f"{100 * flops / peak:.0f}%",
                f"{rows[-1]['mean_train_loss']:.4f}",
            ]
        )
    print(
        markdown_table(
            ["arm", "img/s", "vs plain", "GFLOP/s", "of peak", "epoch loss"],
            table,
        )
    )
    lo, hi = spread(runs[peak_name])
    print(
        f"{peak_name} peak: {peak / 1e9:.1f} GFLOP/s median ({lo / 1e9:.1f}–{hi / 1e9:.1f}); "
        "img/s: median (min–max) over rounds; vs plain: median (min–max) of per-round ratios"
    )
    by = {r["arm"]: r for r in rows}
    checks = [("ours ≥ 1.0× plain", by["ours"]["ratio_vs_plain"] >= TARGET_RATIO)]
    if "ours-cl" in by:
        checks.append(
            (
                "ours-cl ≥ 1.3× plain",
                by["ours-cl"]["ratio_vs_plain"] >= TARGET_RATIO_CHANNELS_LAST,
            )
        )
    best = max(rows, key=lambda r: r["peak_share"] if r["arm"].startswith("ours") else 0)
    checks.append((f"{best['arm']} ≥ 50% of peak", best["peak_share"] >= TARGET_PEAK_SHARE))
    default = by["ours-default"]
    checks.append(("ours-default ≥ 1.4× plain", default["ratio_vs_plain"] >= TARGET_RATIO_DEFAULT))
    checks.append(
        ("ours-default ≥ 65% of peak", default["peak_share"] >= TARGET_PEAK_SHARE_DEFAULT)
    )
    for what, ok in checks:
        print(f"target {what}: {verdict(ok)}")
    print(describe_load(load_after))
    if not all(math.isfinite(r["mean_train_loss"]) for r in rows):
        print("warning: a loop produced a non-finite loss")
    write_results(
        cfg.json_out,
        {
            "benchmark": "train_speed",
            "protocol": {
                "train_attack": attack.protocol(),
                "flops": {
                    "forward_per_image": fwd,
                    "per_layer": per_layer,
                    "train_step_per_image": step_flops,
                    "accounting": f"(2*steps+3)*F, steps={cfg.steps}; conv+linear MACs x2",
                },
                "peak": {"arm": peak_name, "flop_per_s": peak},
                "run_config": non_default(rc),
            },
            "settings": {
                "n_images": n,
                "batch_size": cfg.batch_size,
                "threads": torch.get_num_threads(),
                "repetitions": cfg.repetitions(),
                "amp": cfg.amp,
            },
            "machine_load": {"before": load_before, "after": load_after},
            "rows": rows,
            "targets": {what: ok for what, ok in checks},
        },
        device,
    )


command = config_command(TrainSpeedConfig, main, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    run_command(command)
