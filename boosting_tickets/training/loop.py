"""The one training loop, with callbacks at named hook points.

:func:`fit` runs epochs of optimizer steps and nothing else: held-out evaluation, checkpoint
selection, checkpointing, the catastrophic-overfitting flag, the non-finite guard, progress bars,
console and TensorBoard logging are :class:`Callback` objects (``training.callbacks``) called at

* ``on_run_start(state)`` -- before the first epoch (also after a resume);
* ``on_epoch_start(state)`` -- before an epoch's first step;
* ``on_step_end(state, step)`` -- after every optimizer step (:class:`StepEnd`);
* ``on_epoch_end(state, row)`` -- after an epoch; ``row`` is the epoch's metrics row, already the
  last entry of ``state.rows``, and callbacks add their keys to it in order;
* ``on_run_end(state)`` -- after the last epoch, or after a callback asked to stop.

A callback stops training after the current epoch by setting ``state.stop`` to a status string.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class TrainState:
    """What the loop and its callbacks share: the model, optimizer and progress so far.

    ``epoch`` counts finished epochs and ``step`` optimizer steps taken (both 0 at the start, or
    restored from a checkpoint); ``rows`` holds one metrics row per finished epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stop: str | None = None
    epoch_sums: tuple[float, int, int] = (0.0, 0, 0)  # (loss sum, correct, images) of the epoch


@dataclass(frozen=True)
class StepEnd:
    """One optimizer step: its position, lr, loss and the batch's logits and labels."""

    epoch: int
    index: int
    lr: float
    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


class Callback:
    """Base class: every hook does nothing unless overridden."""

    def on_run_start(self, state: TrainState) -> None:
        """Before the first epoch of this invocation."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before an epoch's first step."""

    def on_step_end(self, state: TrainState, step: StepEnd) -> None:
        """After every optimizer step."""

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        """After an epoch; add keys to ``row``."""

    def on_run_end(self, state: TrainState) -> None:
        """After the last epoch or a stop."""


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def fit(
    state: TrainState,
    *,
    batches: Batches,
    lr_at: Callable[[int], float],
    step: Step,
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """Train ``state.model`` from epoch ``state.epoch`` to ``state.epochs``.

    ``batches(epoch)`` yields the epoch's (x, y) on the model's device; ``lr_at(step)`` is the
    schedule; ``step(x, y)`` does one optimizer step -- the objective (attack included), the
    backward pass and the update (masking pruned weights, averaging over ranks) -- and returns
    (loss, logits) of the batch. Each epoch appends a row (epoch, lr, train_loss, train_acc,
    train_seconds, cum_train_seconds, images; loss, accuracy and images of this process, which
    ``state.epoch_sums`` holds for callbacks that combine ranks) that the callbacks extend.
    Returns ``state``.
    """
    model, optimizer = state.model, state.optimizer
    device = next(model.parameters()).device
    for cb in callbacks:
        cb.on_run_start(state)
    for epoch in range(state.epoch, state.epochs):
        for cb in callbacks:
            cb.on_epoch_start(state)
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen, lr = 0.0, 0, 0, 0.0
        for it, (x, y) in enumerate(batches(epoch)):
            lr = lr_at(state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, logits = step(x, y)
            state.step += 1
            loss_sum += float(loss.item()) * len(y)
            correct += int((logits.argmax(1) == y).sum().item())
            seen += len(y)
            for cb in callbacks:
                cb.on_step_end(state, StepEnd(epoch, it, lr, loss, logits, y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        cum = (state.rows[-1]["cum_train_seconds"] if state.rows else 0.0) + seconds
        state.epoch_sums = (loss_sum, correct, seen)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(seen, 1)}
        row.update(train_acc=correct / max(seen, 1), train_seconds=seconds, cum_train_seconds=cum)
        row["images"] = seen
        state.rows.append(row)
        state.epoch = epoch + 1
        for cb in callbacks:
            cb.on_epoch_end(state, row)
        if state.stop:
            break
    for cb in callbacks:
        cb.on_run_end(state)
    return state
