"""The GPU path, measured in one run (issue #14, part 5): PGD-10 training throughput of WRN-34-10
with bf16 autocast, channels_last and ``torch.compile``, its share of the GPU's bf16 dense peak,
bf16 against fp32 robust accuracy, and the projected wall time of the ``paper-wrn34-10`` suite.

Measured on ``--device`` (default ``cuda``), on synthetic CIFAR-shaped data (3×32×32, 10 classes;
there is no CIFAR-10 on the GPU machine):

1. **Training**: images/s of PGD-10 training steps (L∞ eps 8/255, step 2/255, uniform random start,
   attack in eval BN mode; then forward, backward and SGD), our attack and our model, for each of
   ``fp32``, ``bf16`` (autocast), ``bf16+cl`` (and channels_last), ``bf16+cl+fold`` (and the attack
   through eval-mode BatchNorm folded into the convolutions, ``--fold-bn``) and ``bf16+cl+compile``
   (``torch.compile`` of the model); the ratios fill the CUDA rows of ``training/kernels.json``.
   Achieved FLOP/s = (2·10 + 3) × forward FLOPs × images/s (the cost model of ``bench``); its
   share of ``--peak-tflops`` (default: the bf16 dense peak of the
   device, from a table of datasheet values, or give it).
2. **AMP accuracy**: a small CNN trained briefly with PGD on synthetic data; PGD-20 robust accuracy
   with and without bf16 autocast on the same images and random starts; target within 0.5 pp.
3. **Projection**: the north star, the ``ticket-fgsm-40`` run (the paper's FGSM ticket: PGD-20
   50.37% after 40 PGD epochs, finding included, 69,552 s on 2× V100) in ≤ 2 h on this GPU; and
   the whole ``paper-wrn34-10`` suite's FLOPs (``bench run paper-wrn34-10 --dry-run``'s
   cost model, finding included) at the best measured training rate, next to the paper's 134,764 s
   for dense WRN-34-10 alone on 2× V100.

``--dry-run`` runs the same code on the CPU at a toy size (WRN-10-1, batch 8, 2 steps, no
compile) to check the script end to end; its numbers mean nothing and say so.

Run on a GPU machine: ``python benchmarks/gpu_path.py --json-out gpu.json`` (about 5 minutes);
``python benchmarks/attack_speed.py --device cuda --amp`` measures the evaluator there.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    config_command,
    forward_flops,
    pgd_training_flops_per_image,
    run_command,
    timed,
    write_results,
)

from boosting_tickets.core.config import setting
from boosting_tickets.core.errors import UserError

#: Datasheet bf16 dense tensor-core peaks (TFLOP/s, without sparsity), by device-name substring.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
                    "V100": 125.0, "RTX 4090": 165.0}  # fmt: skip
PAPER_SECONDS = 134764.0
#: The north star (issue #14): the paper's 40-epoch FGSM ticket (PGD-20 50.37%, finding included:
#: 69,552 s on 2x V100) in at most 2 h on one GPU.
NORTH_STAR_ARM, NORTH_STAR_PAPER_SECONDS, NORTH_STAR_SECONDS = "ticket-fgsm-40", 69552.0, 7200.0


@dataclass(frozen=True)
class GpuConfig:
    """Settings of the GPU-path benchmark."""

    device: str = setting("cuda", "torch device (cuda, cuda:N); --dry-run uses the CPU")
    model: str = setting("wrn-34-10", "architecture whose PGD-10 training is timed")
    batch: int = setting(128, "training batch size", low=1)
    steps: int = setting(20, "timed training steps per variant (after 3 warm-up steps)", low=1)
    peak_tflops: float | None = setting(
        None, "the device's bf16 dense peak in TFLOP/s; none = from the datasheet table"
    )
    amp_images: int = setting(1000, "test images of the AMP accuracy check", low=10)
    dry_run: bool = setting(
        False, "check the script on the CPU at a toy size (numbers mean nothing)"
    )
    json_out: str | None = setting(None, "also write the measurements as JSON to this file")


def _train_step(model: Any, opt: Any, x: Any, y: Any, amp: bool, attack_model: Any = None) -> None:
    """One PGD-10 training step; the attack runs through ``attack_model`` (default ``model``:
    e.g. its BatchNorm-folded view, which shares the parameters)."""
    from boosting_tickets.adversarial.attacks import pgd

    dtype = torch.bfloat16 if amp else None
    x_adv = pgd(attack_model if attack_model is not None else model, x, y, 8 / 255,
                step_size=2 / 255, steps=10, autocast_dtype=dtype)  # fmt: skip
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x_adv).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _throughput(
    cfg: GpuConfig, device: torch.device, amp: bool, cl: bool, compile_: bool, fold: bool = False
) -> float:
    from boosting_tickets.models.fold_bn import fold_batchnorm
    from boosting_tickets.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=10, in_channels=3, mean=None, std=None).to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run_model = torch.compile(model) if compile_ else model
    attack_model = fold_batchnorm(model) if fold else None
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.rand(cfg.batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (cfg.batch,), generator=g).to(device)

    def step() -> None:
        _train_step(run_model, opt, x, y, amp, attack_model)

    for _ in range(3):  # warm-up: kernels chosen, graphs compiled
        step()
    seconds, _ = timed(lambda: [step() for _ in range(cfg.steps)], device)
    return cfg.batch * cfg.steps / seconds


def _amp_accuracy(cfg: GpuConfig, device: torch.device) -> tuple[float, float]:
    """PGD-20 accuracy (fp32, bf16) of a briefly PGD-trained small CNN on synthetic images."""
    from boosting_tickets.adversarial.evaluator import accuracy_under_attack
    from boosting_tickets.adversarial.spec import AttackSpec
    from boosting_tickets.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=3, mean=None, std=None).to(device)
    g = torch.Generator(device="cpu").manual_seed(2)
    # Learnable synthetic data: class c brightens channel c % 3 in a class-specific quadrant.
    n = 20 * cfg.batch + cfg.amp_images
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.4 * torch.rand(n, 3, 32, 32, generator=g)
    for c in range(10):
        r, q = (c // 5) * 16, (c % 5) * 6
        x[y == c, c % 3, r : r + 16, q : q + 8] += 0.5
    x, y = x.to(device), y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for s in range(0, n - cfg.amp_images, cfg.batch):
        _train_step(model, opt, x[s : s + cfg.batch], y[s : s + cfg.batch], amp=False)
    model.eval()
    xt, yt = x[-cfg.amp_images :], y[-cfg.amp_images :]
    spec = AttackSpec("pgd", 8 / 255, steps=20)
    out = []
    for dtype in (None, torch.bfloat16):
        gen = torch.Generator(device=device).manual_seed(3)
        out.append(accuracy_under_attack(model, xt, yt, spec, 250, gen, autocast_dtype=dtype))
    return out[0], out[1]


def _suite_flops() -> dict[str, float]:
    """FLOPs by the cost model of every run of the ``paper-wrn34-10`` suite (``bench run
    paper-wrn34-10 --dry-run``), finding included where the run finds its ticket; keyed
    ``arm/seed``."""
    from boosting_tickets.bench.plan import cost_plan, plan_suite
    from boosting_tickets.bench.suites import load_suite

    lines = cost_plan(plan_suite(load_suite("paper-wrn34-10")))
    return {f"{ln.run.arm.name}/{ln.run.seed}": ln.retrain["total"]
            + (ln.find["total"] if ln.find else 0.0) for ln in lines}  # fmt: skip


def _peak(cfg: GpuConfig, device: torch.device) -> tuple[float | None, str]:
    if cfg.peak_tflops is not None:
        return cfg.peak_tflops, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak on the CPU"
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops, f"datasheet bf16 dense peak of {key}"
    return None, f"unknown device {name!r}: pass --peak-tflops"


def main(cfg: GpuConfig) -> None:
    if cfg.dry_run:
        cfg = dataclasses.replace(cfg, device="cpu", model="wrn-10-1", batch=8, steps=2,
                                  amp_images=40)  # fmt: skip
        print("DRY RUN on the CPU at a toy size: the numbers below check the script, not a GPU")
    elif not cfg.device.startswith("cuda") or not torch.cuda.is_available():
        raise UserError("no CUDA device here; run on a GPU machine, or pass --dry-run")
    device = torch.device(cfg.device)
    from boosting_tickets.models.registry import build_model

    probe = build_model(cfg.model, num_classes=10, in_channels=3, mean=None, std=None)
    per_image = pgd_training_flops_per_image(sum(forward_flops(probe, (3, 32, 32)).values()), 10)
    peak, peak_src = _peak(cfg, device)
    variants = [("fp32", False, False, False, False), ("bf16", True, False, False, False),
                ("bf16+cl", True, True, False, False), ("bf16+cl+fold", True, True, False, True)]  # fmt: skip
    if not cfg.dry_run:
        variants.append(("bf16+cl+compile", True, True, True, False))
    print(f"{cfg.model} PGD-10 training, batch {cfg.batch}, {cfg.steps} timed steps, "
          f"{per_image / 1e9:.3g} GFLOP per image-step; peak: "
          f"{'?' if peak is None else f'{peak:g} TFLOP/s'} ({peak_src})")  # fmt: skip
    print("| variant | images/s | TFLOP/s | share of bf16 peak |")
    print("|---|---|---|---|")
    rates = {}
    for name, amp, cl, comp, fold in variants:
        ips = _throughput(cfg, device, amp and device.type == "cuda", cl, comp, fold)
        rates[name] = ips
        tf = ips * per_image / 1e12
        share = "–" if peak is None else f"{100 * tf / peak:.1f}%"
        label = name if device.type == "cuda" or not amp else f"{name} (no bf16 on the CPU: fp32)"
        print(f"| {label} | {ips:.1f} | {tf:.2f} | {share} |")
    best = max(rates, key=rates.get)  # type: ignore[arg-type]
    fp32_acc, bf16_acc = _amp_accuracy(cfg, device)
    gap = 100 * abs(fp32_acc - bf16_acc)
    print(f"AMP check: PGD-20 accuracy fp32 {100 * fp32_acc:.2f}% vs bf16 {100 * bf16_acc:.2f}% "
          f"({gap:.2f} pp; target <= 0.5 pp: {'met' if gap <= 0.5 else 'NOT met'})")  # fmt: skip
    runs = _suite_flops()
    total = sum(runs.values())
    seconds = total / (rates[best] * per_image)
    star = next(v for k, v in runs.items() if k.startswith(f"{NORTH_STAR_ARM}/"))
    star_s = star / (rates[best] * per_image)
    print(f"paper-wrn34-10 suite: {total / 1e15:.1f} PFLOP by the cost model (finding included) "
          f"-> {seconds / 3600:.2f} h at the {best} rate on this device; the paper: "
          f"{PAPER_SECONDS:,.0f} s = {PAPER_SECONDS / 3600:.1f} h for dense WRN-34-10 alone on 2x "
          "V100 (the cost model counts every evaluation PGD step, so this errs long)")  # fmt: skip
    print(f"north star, {NORTH_STAR_ARM} (finding + 40 PGD epochs) in <= 2 h on one GPU: "
          f"{star_s / 3600:.2f} h projected, the paper {NORTH_STAR_PAPER_SECONDS:,.0f} s on 2x V100: "
          f"{'met' if star_s <= NORTH_STAR_SECONDS else 'NOT met'}"
          + (" (dry run: meaningless)" if cfg.dry_run else ""))  # fmt: skip
    for name in rates:
        print(f"{name}: {rates[name] / rates['bf16']:.2f}x bf16")
    write_results(cfg.json_out, {
        "benchmark": "gpu_path", "config": dataclasses.asdict(cfg), "images_per_s": rates,
        "flops_per_image_step": per_image, "peak_tflops": peak, "peak_source": peak_src,
        "amp_pgd20": {"fp32": fp32_acc, "bf16": bf16_acc},
        "paper_suite_flops": total, "projected_seconds": seconds, "run_flops": runs,
        "north_star": {"arm": NORTH_STAR_ARM, "flops": star, "projected_seconds": star_s,
                       "target_seconds": NORTH_STAR_SECONDS, "met": star_s <= NORTH_STAR_SECONDS},
        "median_rate": statistics.median(rates.values()), "dry_run": cfg.dry_run,
    }, device)  # fmt: skip


COMMAND = config_command(GpuConfig, main, __doc__ or "")

if __name__ == "__main__":
    run_command(COMMAND)
