"""The standard callbacks of a training run (see :mod:`.loop` for the hook points).

In the order :func:`standard_callbacks` installs them, each epoch: the work done (FLOPs, with the
machine's load; ``training.work``), held-out evaluation, the
catastrophic-overfitting flag, the console line, best-checkpoint selection, the resume state
(``last.pt``), ``metrics.json`` and TensorBoard; after every step the non-finite guard and the
progress bar. Every file goes through the atomic writers of ``core.storage``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..core.distributed import Distributed
from ..core.environment import environment_info
from ..core.errors import RunFailure, UserError
from ..core.paths import RunPaths
from ..core.storage import FAULT_ENV, atomic_torch_save, atomic_write_json, read_json
from ..models.checkpoints import save_model
from .hparams import RunConfig, eval_protocol, held_out_size, train_attack_spec
from .loop import Callback, StepEnd, TrainState
from .noise import NoiseSwitch
from .work import meter as work_meter

STATE_FORMAT = "boosting-tickets/train-state"
SNAPSHOT_FORMAT = "boosting-tickets/step-snapshot"
Say = Callable[[str], None]


class TrainingFailed(RunFailure):
    """Training stopped on a non-finite loss or weights; the last good checkpoint is kept."""


def detect_catastrophic_overfitting(
    rows: Sequence[Mapping[str, Any]],
    *,
    gap: float = 0.3,
    ratio: float = 0.25,
    collapse: float = 0.5,
) -> bool:
    """Catastrophic overfitting (Wong et al. 2020) at the last row of a metric history.

    Fires when held-out PGD accuracy is far below FGSM accuracy (``fgsm - pgd >= gap`` and
    ``pgd <= ratio * fgsm``: the seed's case, 89% FGSM vs 0.4% PGD-20), or when PGD accuracy
    collapsed below ``collapse`` × its best earlier value while FGSM accuracy did not fall.
    """
    if not rows:
        return False
    last = rows[-1]
    fgsm, pgd = last.get("val_fgsm"), last.get("val_pgd")
    if fgsm is None or pgd is None:
        return False
    if fgsm - pgd >= gap and pgd <= ratio * fgsm:
        return True
    earlier = [r for r in rows[:-1] if r.get("val_pgd") is not None]
    if earlier:
        best = max(earlier, key=lambda r: r["val_pgd"])
        if (
            best["val_pgd"] >= 0.05
            and pgd < collapse * best["val_pgd"]
            and fgsm >= (best.get("val_fgsm") or 0.0) - 0.02
        ):
            return True
    return False


def write_metrics(
    paths: RunPaths,
    rows: list[dict[str, Any]],
    status: str,
    best: dict[str, Any] | None,
    cfg: RunConfig,
    device: Any,
) -> None:
    """``metrics.json``: status, per-epoch rows, best epoch, both protocols and the environment."""
    atomic_write_json(
        paths.metrics,
        {
            "schema": 1,
            "status": status,
            "epochs": rows,
            "best": best,
            "train_attack": (a.protocol() if (a := train_attack_spec(cfg)) else None),
            "eval_protocol": eval_protocol(cfg).record(len(rows) and held_out_size(cfg)),
            "environment": environment_info(device),
        },
        checksum=True,
    )


def divergence_advice(cfg: RunConfig) -> str:
    """The setting that most likely made a run diverge: a weight decay or TRADES beta far above
    its default, else the learning rate."""
    tc, default = cfg.train, type(cfg.train)()
    if tc.weight_decay >= 10 * default.weight_decay:
        return f"lower --weight-decay (now {tc.weight_decay:g}, default {default.weight_decay:g})"
    if tc.objective == "trades" and tc.trades_beta >= 2 * default.trades_beta:
        return f"lower --trades-beta (now {tc.trades_beta:g}, default {default.trades_beta:g})"
    return f"lower --lr (now {tc.lr:g})"


def epoch_line(row: Mapping[str, Any], epochs: int) -> str:
    """The console line of one epoch."""
    parts = [
        f"epoch {row['epoch']}/{epochs}",
        f"loss {row['train_loss']:.4f}",
        f"train acc {row['train_acc']:.1%}",
    ]
    if "val_clean" in row:
        parts.append(
            f"held-out clean {row['val_clean']:.1%} FGSM {row['val_fgsm']:.1%} "
            f"PGD {row['val_pgd']:.1%}"
        )
    parts.append(f"train {row['train_seconds']:.1f}s eval {row['eval_seconds']:.1f}s")
    return " | ".join(parts)


class NonFiniteGuard(Callback):
    """Stop with :class:`TrainingFailed` as soon as the loss, a weight or a BN statistic is NaN/inf.

    Non-finite values must never reach the held-out evaluation or a checkpoint: ``metrics.json``
    is marked failed (epoch and step named, by the primary) and the last good checkpoint is kept.
    Every rank sees the same averaged gradients, hence the same weights, and stops alike.
    """

    def __init__(
        self,
        paths: RunPaths,
        watched: Mapping[str, torch.Tensor],
        dist: Distributed | None = None,
        advice: str = "lower --lr",
    ) -> None:
        self.advice = advice
        self.paths, self.watched, self.dist = paths, dict(watched), dist or Distributed()

    def on_step_end(self, state: TrainState, step: StepEnd) -> None:
        if not torch.isfinite(step.loss):
            self._fail(state, step, f"loss became {float(step.loss.item())}")
        # A finite loss can still leave NaN/inf weights or BN statistics.
        names = list(self.watched)
        # The max-abs norm cannot overflow, so only a real NaN/inf entry makes it non-finite.
        norms = torch._foreach_norm(list(self.watched.values()), float("inf"))
        ok = torch.isfinite(torch.stack(norms)).cpu()
        if not bool(ok.all()):
            bad = names[int((~ok).nonzero()[0])]
            self._fail(state, step, f"weights became non-finite (in '{bad}')")

    def _fail(self, state: TrainState, step: StepEnd, problem: str) -> None:
        reason = (
            f"training diverged: {problem} at epoch {step.epoch + 1} step {step.index + 1} "
            f"(lr {step.lr:.4g})"
        )
        metrics = self.paths.metrics
        if self.dist.primary:
            prev = read_json(metrics) if metrics.exists() else {}
            atomic_write_json(
                metrics,
                {**prev, "status": "failed", "failure": reason, "epochs": state.rows},
                checksum=True,
            )
        kept = f"epoch {len(state.rows)}" if state.rows else "the initial weights"
        raise TrainingFailed(f"{reason}; the last good checkpoint ({kept}) is kept; {self.advice}")


class ProgressBar(Callback):
    """A tqdm bar per epoch (hidden unless on a terminal, or when disabled)."""

    def __init__(self, objective: str, enabled: bool) -> None:
        self.objective, self.enabled = objective, enabled
        self.bar: Any = None

    def on_epoch_start(self, state: TrainState) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=state.steps_per_epoch,
            desc=f"epoch {state.epoch + 1}/{state.epochs} [{self.objective}]",
            leave=False,
            disable=None if self.enabled else True,
        )

    def on_step_end(self, state: TrainState, step: StepEnd) -> None:
        self.bar.update(1)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        self.bar.close()


class HeldOutEval(Callback):
    """Held-out clean / FGSM / PGD accuracy after every epoch (``val_*`` and ``eval_seconds``) of
    the state's model, or of ``model`` (a view of it with the run's kernels, e.g. BN folded)."""

    def __init__(self, images: Any, labels: Any, protocol: Any, *, batch_size: int, device: Any,
                 progress: bool, dist: Distributed | None = None, model: Any = None) -> None:  # fmt: skip
        self.images, self.labels, self.protocol = images, labels, protocol
        self.batch_size, self.device, self.progress = batch_size, device, progress
        self.dist, self.model = dist or Distributed(), model

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        from ..adversarial.evaluation import evaluate

        t0 = time.perf_counter()
        if len(self.labels) > 0:
            model = state.model if self.model is None else self.model
            res = evaluate(model, self.images, self.labels, self.protocol,
                           batch_size=self.batch_size, device=self.device, progress=self.progress,
                           desc="held-out eval", dist=self.dist)  # fmt: skip
            row.update(val_clean=res["clean_acc"], val_fgsm=res["fgsm_acc"], val_pgd=res["pgd_acc"])
        row["eval_seconds"] = time.perf_counter() - t0


class OverfitMonitor(Callback):
    """Flag catastrophic overfitting of FGSM-type runs (``overfit``); optionally stop."""

    def __init__(self, watch: bool, stop: bool) -> None:
        self.watch, self.stop = watch, stop

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        row["overfit"] = self.watch and detect_catastrophic_overfitting(state.rows)
        if row["overfit"] and self.stop:
            state.stop = "stopped_overfit"


class ConsoleLog(Callback):
    """One line per epoch, plus the overfitting warning and the reason for stopping."""

    def __init__(self, say: Say) -> None:
        self.say = say

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        self.say(epoch_line(row, state.epochs))
        if row.get("overfit"):
            self.say(
                f"catastrophic overfitting at epoch {row['epoch']}: held-out FGSM "
                f"{row['val_fgsm']:.1%} vs PGD {row['val_pgd']:.1%}"
            )
        if state.stop == "stopped_overfit":
            self.say("stopping: --stop-on-overfit is set")


class BestCheckpoint(Callback):
    """``best.pt``: the model with the best held-out ``key`` so far (never chosen on test data).
    Every rank tracks the choice (it is in the resume state); only the ``writer`` saves."""

    def __init__(
        self, paths: RunPaths, arch: Mapping[str, Any], key: str, writer: bool = True
    ) -> None:
        self.paths, self.arch, self.key, self.writer = paths, arch, key, writer

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        score = row.get(self.key)
        if score is not None and (state.best is None or score > state.best["score"]):
            state.best = {"epoch": row["epoch"], "metric": self.key, "score": score}
            if not self.writer:
                return
            save_model(
                self.paths.best, state.model, self.arch, epoch=row["epoch"], selected_by=self.key
            )


class StateCheckpoint(Callback):
    """``last.pt``: everything a resume needs (weights, optimizer, RNG streams, rows, best).

    With several ranks, every rank's RNG streams are gathered (``rng_ranks``) so that a resume with
    the same number of processes continues each rank's streams; the primary writes the file.
    """

    def __init__(
        self, paths: RunPaths, run_hash: str, gens: Mapping[str, torch.Generator], dist: Distributed
    ) -> None:
        self.paths, self.run_hash, self.gens, self.dist = paths, run_hash, gens, dist

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        streams = self.dist.gather(rng_state(self.gens))
        if not self.dist.primary:
            return
        saved = {
            "format": STATE_FORMAT,
            "hash": self.run_hash,
            "epoch": state.epoch,
            "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
            "optimizer": state.optimizer.state_dict(),
            "rng": streams[0],
            "metrics": state.rows,
            "best": state.best,
        }
        if self.dist.active:
            saved["rng_ranks"] = streams
        atomic_torch_save(saved, self.paths.last)


class RankStats(Callback):
    """With several ranks: the epoch's training loss and accuracy over every rank's images (the
    loop measures its own shard), so every rank's row is the primary's."""

    def __init__(self, dist: Distributed) -> None:
        self.dist = dist

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        sums = self.dist.sum_(torch.tensor(state.epoch_sums, dtype=torch.float64))
        loss_sum, correct, seen = (float(v) for v in sums)
        row.update(train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1))
        row["images"] = int(seen)
        # Wall time: the slowest rank's, which the others waited for.
        slowest = self.dist.gather(row["train_seconds"])
        row["train_seconds"] = max(slowest)
        row["cum_train_seconds"] = (
            state.rows[-2]["cum_train_seconds"] if len(state.rows) > 1 else 0.0
        ) + row["train_seconds"]


class StepSnapshot(Callback):
    """``step_<K>.pt``: the weights right after optimizer step ``step`` (1-based count of steps
    since the run's start), for rewinding inside an epoch (Frankle et al. 2020's iteration K).

    A run resumed from an epoch's end replays the interrupted epoch from that epoch's state, so a
    snapshot lost to a kill is written again, with the same weights on the CPU (fixed seeds). The
    primary (``writer``) writes ``{"format", "step", "epoch", "state_dict"}``.
    """

    def __init__(self, path: Any, step: int, writer: bool = True) -> None:
        self.path, self.step, self.writer = path, step, writer

    def on_step_end(self, state: TrainState, step: StepEnd) -> None:
        if state.step != self.step or not self.writer:
            return
        weights = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
        atomic_torch_save(
            {"format": SNAPSHOT_FORMAT, "step": self.step, "epoch": step.epoch,
             "state_dict": weights},
            self.path,
        )  # fmt: skip


class KillAtStep(Callback):
    """Test-only fault: ``BOOSTING_TICKETS_FAULT=kill_at_step:EPOCH.STEP:RANK`` SIGKILLs that rank
    after that optimizer step (1-based), in the first attempt of an elastic run only."""

    def __init__(self, spec: str, dist: Distributed) -> None:
        _, where, rank = spec.split(":")
        epoch, step = where.split(".")
        self.epoch, self.step, self.rank, self.dist = int(epoch), int(step), int(rank), dist

    def on_step_end(self, state: TrainState, step: StepEnd) -> None:
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        hit = (step.epoch + 1, step.index + 1) == (self.epoch, self.step)
        if first_attempt and hit and self.dist.rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)


class MetricsWriter(Callback):
    """``metrics.json`` with status ``running`` after every epoch."""

    def __init__(self, paths: RunPaths, cfg: RunConfig, device: Any) -> None:
        self.paths, self.cfg, self.device = paths, cfg, device

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        write_metrics(self.paths, state.rows, "running", state.best, self.cfg, self.device)


class TensorBoardLog(Callback):
    """TensorBoard event files in ``<run>/tensorboard``: per-epoch train loss/accuracy, held-out
    clean/FGSM/PGD, lr and wall times (tags ``train/*``, ``held_out/*``, ``lr``, ``seconds/*``),
    and the run's settings (text ``hparams`` and the HParams plugin)."""

    def __init__(self, paths: RunPaths, hparams: Mapping[str, Any]) -> None:
        self.paths, self.hparams = paths, dict(hparams)
        self.writer: Any = None

    def on_run_start(self, state: TrainState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events of epochs an interrupted run logged after its last checkpoint.
        self.writer = SummaryWriter(str(self.paths.tensorboard), purge_step=state.epoch + 1)
        if state.epoch == 0:
            text = json.dumps(self.hparams, indent=2, sort_keys=True)
            self.writer.add_text("hparams", f"```\n{text}\n```", 0)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        tags = {
            "train/loss": "train_loss",
            "train/accuracy": "train_acc",
            "held_out/clean": "val_clean",
            "held_out/fgsm": "val_fgsm",
            "held_out/pgd": "val_pgd",
            "lr": "lr",
            "seconds/train": "train_seconds",
            "seconds/eval": "eval_seconds",
        }
        for tag, key in tags.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], row["epoch"])
        self.writer.flush()

    def on_run_end(self, state: TrainState) -> None:
        flat = {k: (v if isinstance(v, int | float | str | bool) else str(v))
                for k, v in self.hparams.items()}  # fmt: skip
        best = {f"best/{state.best['metric']}": state.best["score"]} if state.best else {}
        self.writer.add_hparams(flat, best, run_name=".")
        self.writer.close()


def tensorboard_enabled(setting_value: bool | None) -> bool:
    """Whether to write TensorBoard events: the setting, or (None) whether tensorboard is installed."""
    import importlib.util

    installed = importlib.util.find_spec("tensorboard") is not None
    if setting_value and not installed:
        raise UserError(
            "--tensorboard needs the tensorboard package; pip install tensorboard (or run "
            "'make setup'), or pass --no-tensorboard"
        )
    return installed if setting_value is None else setting_value


def rng_state(gens: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """The states of the run's generators and of torch's global CPU (and CUDA) generators."""
    state = {k: g.get_state() for k, g in gens.items()}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(gens: Mapping[str, torch.Generator], state: Mapping[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` saved."""
    for k, g in gens.items():
        g.set_state(state[k])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def standard_callbacks(
    cfg: RunConfig,
    paths: RunPaths,
    *,
    arch: Mapping[str, Any],
    run_hash: str,
    val_images: Any,
    val_labels: Any,
    gens: Mapping[str, torch.Generator],
    watched: Mapping[str, torch.Tensor],
    device: Any,
    say: Say,
    hparams: Mapping[str, Any],
    dist: Distributed | None = None,
    eval_model: Any = None,
) -> list[Callback]:
    """The callbacks every training run gets, in hook order (see the module docstring). With
    several ranks every rank evaluates its shard and saves its streams; only the primary shows
    progress, prints and writes. ``eval_model``: the view of the model held-out evaluation uses
    (the run's kernels), default the model itself."""
    from .hparams import select_key

    tc, dist = cfg.train, dist or Distributed()
    primary = dist.primary
    out: list[Callback] = [RankStats(dist)] if dist.active else []
    out.append(work_meter(cfg))
    fault = os.environ.get(FAULT_ENV, "")
    if fault.startswith("kill_at_step:"):
        out.append(KillAtStep(fault, dist))
    if tc.noise_seed is not None and tc.noise_step > 0:
        out.append(NoiseSwitch(tc.noise_seed, tc.noise_step, dict(gens), dist))
    out += [
        NonFiniteGuard(paths, watched, dist, divergence_advice(cfg)),
        ProgressBar(tc.objective, tc.progress and primary),
        HeldOutEval(
            val_images,
            val_labels,
            eval_protocol(cfg),
            batch_size=cfg.eval.eval_batch_size,
            device=device,
            progress=tc.progress and primary,
            dist=dist,
            model=eval_model,
        ),  # fmt: skip
        OverfitMonitor(tc.objective in ("fgsm", "fgsm-rs"), tc.stop_on_overfit),
        ConsoleLog(say),
        BestCheckpoint(paths, arch, select_key(cfg), primary),
        StateCheckpoint(paths, run_hash, gens, dist),
    ]
    if primary:
        out.append(MetricsWriter(paths, cfg, device))
    if primary and tensorboard_enabled(tc.tensorboard):
        out.append(TensorBoardLog(paths, hparams))
    return out
