"""Structured tickets: how much less work and time per epoch? (issue #14, part 3)

For each ``--models`` WideResNet, the slim network a structured ticket at ``--channel-sparsity``
makes (every block keeps the same fraction of its inner channels, the ``layer`` scope) against
the dense one, with the unstructured 80% ticket in between (the same dense network with a mask):

* **work per epoch**: the cost model's FLOPs per PGD-10 training image, (2·10 + 3) × forward FLOPs
  (analytic, equal to torch's FlopCounterMode), slim / dense; target ≤ 0.5× at 75%;
* **time per epoch**: PGD-10 training steps (L∞ eps 0.1, step eps/4, random start) on batches of
  ``--batch`` synthetic 1×28×28 images, dense, masked (80% of the weights zero, masks applied
  after every step as training does) and slim, interleaved in one process with one thread;
  median time ratio to dense.

Run: ``python benchmarks/structured.py [--quick]``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _common import Arm, Measurement, config_command, interleave, run_command, timed, write_results

from boosting_tickets.core.config import setting
from boosting_tickets.core.errors import UserError


@dataclass(frozen=True)
class StructuredConfig:
    """Settings of the structured-ticket benchmark."""

    models: tuple[str, ...] = setting(("wrn-10-2", "wrn-16-4"), "plain WideResNets to measure")
    channel_sparsity: float = setting(0.75, "fraction of every block's inner channels pruned")
    batch: int = setting(64, "training batch size", low=1)
    steps: int = setting(3, "training steps per timed repetition", low=1)
    reps: int | None = setting(None, "interleaved repetitions; none = 5 (2 with --quick)", low=1)
    threads: int | None = setting(1, "torch CPU threads", low=1)
    quick: bool = setting(False, "short run: one step of a smaller batch per repetition")
    json_out: str | None = setting(None, "also write the measurements as JSON to this file")

    def validate(self) -> None:
        if not 0.0 <= self.channel_sparsity < 1.0:
            raise UserError(f"--channel-sparsity must lie in [0, 1), got {self.channel_sparsity}")


def _slim(model: str, sparsity: float) -> str:
    from boosting_tickets.models.registry import wrn_block_widths
    from boosting_tickets.tickets.structured import check_structured_model

    base = check_structured_model(model)
    depth, widen = (int(v) for v in base.split("-")[1:3])
    mids = [max(1, round((1.0 - sparsity) * w)) for w in wrn_block_widths(depth, widen)]
    return f"{base}-mid-" + "-".join(map(str, mids))


def _arm(name: str, model_name: str, cfg: StructuredConfig, masked: bool) -> Arm:
    from boosting_tickets.adversarial.attacks import pgd
    from boosting_tickets.models.masks import Mask, prunable_weights
    from boosting_tickets.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=1).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mask = None
    if masked:
        g = torch.Generator().manual_seed(1)
        mask = Mask({n: (torch.rand(p.shape, generator=g) >= 0.8).float()
                     for n, p in prunable_weights(model).items()})  # fmt: skip
        mask.apply_(model)
    batch, steps = (max(8, cfg.batch // 4), 1) if cfg.quick else (cfg.batch, cfg.steps)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def step() -> None:
        x_adv = pgd(model, x, y, 0.1, step_size=0.025, steps=10)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if mask is not None:
            mask.mask_grads_(model)
        opt.step()
        if mask is not None:
            mask.apply_(model)

    def run() -> Measurement:
        seconds, _ = timed(lambda: [step() for _ in range(steps)], torch.device("cpu"))
        return Measurement(seconds, float(batch * steps))

    return Arm(name, run, warmup=step)


def main(cfg: StructuredConfig) -> None:
    from boosting_tickets.models.registry import forward_flops

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    reps = cfg.reps or (2 if cfg.quick else 5)
    print(f"PGD-10 training, {torch.get_num_threads()} thread(s), {reps} interleaved rounds; "
          f"structured ticket: {cfg.channel_sparsity:.0%} of every block's inner channels "
          "pruned")  # fmt: skip
    print("| model | slim network | work / epoch (slim / dense) | time / epoch: 80% masked / dense "
          "| time / epoch: slim / dense | work target <= 0.5x |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    records = []
    for model in cfg.models:
        slim = _slim(model, cfg.channel_sparsity)
        work = forward_flops(slim, 1, 28, 10) / forward_flops(model, 1, 28, 10)
        arms = [_arm("dense", model, cfg, False), _arm("masked", model, cfg, True),
                _arm("slim", slim, cfg, False)]  # fmt: skip
        ms = interleave(arms, reps, desc=model)

        t_mask, t_slim = (
            statistics.median(
                a.seconds / d.seconds for a, d in zip(ms[n], ms["dense"], strict=True)
            )
            for n in ("masked", "slim")
        )
        print(f"| {model} | {slim} | {work:.2f}x | {t_mask:.2f}x | {t_slim:.2f}x | "
              f"{'met' if work <= 0.5 else 'NOT met'} |")  # fmt: skip
        records.append({"model": model, "slim": slim, "work_ratio": work,
                        "time_ratio_masked": t_mask, "time_ratio_slim": t_slim})  # fmt: skip
    write_results(cfg.json_out, {"benchmark": "structured", "rows": records}, torch.device("cpu"))


COMMAND = config_command(StructuredConfig, main, __doc__ or "")

if __name__ == "__main__":
    run_command(COMMAND)
