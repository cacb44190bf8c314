"""A training run in its own directory: set-up, resume, the loop with its callbacks, the end.

Objectives come from the registry (:mod:`.objectives`): natural, FGSM, FGSM-RS, PGD, TRADES, with
or without a pruning mask. A run lives in one directory (names in ``core.paths``)::

    hparams.json   the settings (and their hash, which names the directory)
    init.pt        θ0, the weights training started from (after masking)
    last.pt        full training state after the last finished epoch (resume point)
    best.pt        the model with the best held-out metric (never chosen on test data)
    final.pt       the weights after the last epoch
    metrics.json   per-epoch rows, status, wall times
    attempts.json  every process (group) that trained here: host, pid, ranks, from which epoch
    test_eval.json best and final models on the test set (clean / FGSM / PGD-k, per class)
    tensorboard/   TensorBoard event files (when enabled)

Every file is written atomically. Re-running the same command resumes from ``last.pt`` and, on the
CPU with fixed seeds, gives exactly the metrics of an uninterrupted run; a finished run does no work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import config_hash, non_default, to_dict
from ..core.distributed import Distributed, check_global_batch, current
from ..core.environment import environment_info, resolve_device
from ..core.errors import UserError
from ..core.paths import TRAIN_PREFIX, RunPaths, hashed_dir
from ..core.storage import atomic_write_json, read_json, safe_torch_load
from ..models.checkpoints import (
    arch_meta,
    build_from_arch,
    load_model,
    load_state_dict_strict,
    save_model,
)
from ..models.fold_bn import fold_batchnorm
from ..models.masks import Mask
from .callbacks import (
    STATE_FORMAT,
    TrainingFailed,
    set_rng_state,
    standard_callbacks,
    write_metrics,
)
from .directories import check_hparams, claimed, create_claimed
from .hparams import RunConfig, eval_protocol, train_attack_spec
from .kernels import KernelChoice, choose, prepare, recorded, recorded_record
from .loop import Callback, TrainState, fit
from .noise import run_generators
from .objectives import objectives
from .schedule import learning_rate

__all__ = ["RunResult", "STATE_FORMAT", "TrainingFailed", "run_dir_for", "train"]

FINISHED = ("complete", "stopped_overfit")


@dataclass
class RunResult:
    """What a finished (or stopped) run produced; :meth:`load_model` brings its model back."""

    run_dir: Path
    status: str
    metrics: list[dict[str, Any]]
    test: dict[str, Any] | None
    paths: RunPaths = field(init=False)

    def __post_init__(self) -> None:
        self.paths = RunPaths(Path(self.run_dir))

    @property
    def train_seconds(self) -> float:
        return self.metrics[-1]["cum_train_seconds"] if self.metrics else 0.0

    def load_model(self, which: str = "best", device: torch.device | str = "cpu") -> nn.Module:
        """The ``best`` (held-out selected), ``final`` or ``init`` model of this run."""
        files = {"best": self.paths.best, "final": self.paths.final, "init": self.paths.init}
        if which not in files:
            raise UserError(f"unknown checkpoint '{which}'; choose one of: {', '.join(files)}")
        return load_model(files[which], device)[0]


def run_dir_for(
    cfg: RunConfig, root: str | Path, *, prefix: str = TRAIN_PREFIX, extra: dict | None = None
) -> Path:
    """``root/<prefix>_<hash of non-default settings (+extra)>``."""
    return hashed_dir(root, prefix, config_hash(cfg, extra))


def finished_result(paths: RunPaths) -> RunResult | None:
    """The result of a run that already finished in ``paths.dir``, else None."""
    if not paths.metrics.exists():
        return None
    done = read_json(paths.metrics, what="metrics file", require_checksum=True)
    if done.get("status") not in FINISHED:
        return None
    test = None
    if paths.test_eval.exists():
        test = read_json(paths.test_eval, what="test evaluation", require_checksum=True)
    return RunResult(paths.dir, done["status"], done["epochs"], test)


def _initial_model(
    cfg: RunConfig,
    paths: RunPaths,
    arch: Mapping[str, Any],
    mask: Mask | None,
    init_state: Mapping[str, torch.Tensor] | None,
    dist: Distributed,
) -> nn.Module:
    """θ0: from ``init.pt`` when resuming, else a seeded init (or ``init_state``), masked."""
    torch.manual_seed(cfg.train.seed)
    model = build_from_arch(arch)
    if paths.init.exists():
        ckpt = safe_torch_load(paths.init, what="init checkpoint")
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
            raise UserError(
                f"{paths.init} is not a model checkpoint (no state_dict); delete the run "
                f"directory {paths.dir} to restart it"
            )
        load_state_dict_strict(model, ckpt["state_dict"], f"init checkpoint {paths.init}")
    else:
        if init_state is not None:
            load_state_dict_strict(model, init_state, "initial weights")
        if mask is not None:
            mask.apply_(model)
        if dist.primary:
            save_model(paths.init, model, arch, epoch=0, kind="init")
    if mask is not None:
        mask.check_compatible(model)
    return model


def _resume(state: TrainState, paths: RunPaths, run_hash: str, gens: dict, ctx: Any) -> None:
    """Restore weights, optimizer, RNG streams and rows from ``last.pt`` when it exists."""
    if not paths.last.exists():
        return
    saved = safe_torch_load(paths.last, what="training state")
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UserError(f"{paths.last} is not a training state; delete it to restart the run")
    if saved.get("hash") != run_hash:
        raise UserError(f"{paths.last} belongs to another run; delete it to restart")
    check_state(saved, paths.last, state.epochs)
    load_state_dict_strict(state.model, saved["model"], f"training state {paths.last}")
    state.optimizer.load_state_dict(saved["optimizer"])
    per_rank = saved.get("rng_ranks")
    if per_rank is not None and len(per_rank) == ctx.dist.world:
        set_rng_state(gens, per_rank[ctx.dist.rank])
    elif ctx.dist.primary:
        set_rng_state(gens, saved["rng"])
    state.rows = list(saved["metrics"])
    state.best = saved.get("best")
    state.epoch = int(saved["epoch"])
    state.step = state.epoch * state.steps_per_epoch
    ctx.say(f"{paths.dir.name}: resuming after epoch {state.epoch}")


def check_state(saved: Mapping[str, Any], path: Path, epochs: int) -> None:
    """A resume state needs every entry, an epoch in [0, epochs], rows 1..epoch, finite weights."""
    missing = [k for k in ("model", "optimizer", "rng", "metrics", "epoch") if k not in saved]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (damaged); delete it to restart")
    epoch, rows = saved["epoch"], saved["metrics"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise UserError(
            f"{path} says epoch {epoch!r}, outside 0..{epochs} (damaged); delete it to restart"
        )
    if not isinstance(rows, list) or [r.get("epoch") if isinstance(r, dict) else None
                                      for r in rows] != list(range(1, epoch + 1)):  # fmt: skip
        raise UserError(f"{path} has metrics rows that do not match epoch {epoch}; delete it")
    weights = saved["model"]
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise UserError(f"{path} holds no tensor weights (damaged); delete it to restart")
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()),
               None)  # fmt: skip
    if bad is not None:
        raise UserError(
            f"{path} holds NaN/inf weights (in '{bad}'); delete it (and the run directory's "
            "final.pt, if any) to restart the run from scratch"
        )


def _record_attempt(paths: RunPaths, from_epoch: int, dist: Distributed, device: Any) -> None:
    """Append this invocation to ``attempts.json`` (who trained here, from which epoch)."""
    import os
    import socket
    import time

    doc = {"schema": 1, "attempts": []}
    if paths.attempts.exists():
        doc = read_json(paths.attempts, what="attempts file", require_checksum=True)
        if not isinstance(doc.get("attempts"), list):
            raise UserError(f"{paths.attempts} is not an attempts file; delete it")
    entry = {"started": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
             "world": dist.world, "backend": dist.backend, "device": str(device),
             "from_epoch": from_epoch}  # fmt: skip
    doc["attempts"] = [*doc["attempts"], entry]
    atomic_write_json(paths.attempts, doc, checksum=True)


def masked_step(optimizer: torch.optim.Optimizer, model: nn.Module, mask: Mask | None) -> Callable:
    """``optimizer.step`` that keeps pruned weights, their gradients and momentum exactly zero."""
    if mask is None:
        return optimizer.step

    def step() -> None:
        mask.mask_grads_(model)
        optimizer.step()
        mask.apply_(model)
        mask.mask_optimizer_state_(optimizer, model)

    return step


@dataclass
class _Context:
    """What one invocation of :func:`train` works with."""

    cfg: RunConfig
    paths: RunPaths
    splits: Any
    record: Mapping[str, Any]
    device: torch.device
    dist: Distributed
    say: Callable[[str], None]
    kernels: KernelChoice = KernelChoice()


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    splits: Any = None,
    mask: Mask | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Callback] = (),
    dist: Distributed | None = None,
    wait: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train (or resume, or just return) the run ``cfg`` in exactly ``run_dir``.

    ``mask`` keeps pruned weights, their gradients and momentum exactly zero; ``init_state`` sets the
    starting weights (a ticket's rewind point) instead of a fresh seeded init; ``extra`` is recorded
    in hparams.json and the hash (e.g. the ticket a retraining run came from); ``callbacks`` run
    after the standard ones; ``details`` is recorded in hparams.json but not hashed (what follows
    from the hashed settings, e.g. how a transfer adapted the output layer).
    ``boosting_tickets.train`` names the directory by the hash instead.

    The run is claimed while it trains (``core.claims``): a run another live process trains is a
    one-line error, or, with ``wait`` seconds, waited for. Under ``torchrun`` (``dist``: default
    the process group this process is in) every rank trains its shard of each global batch and
    only rank 0 writes files or prints.
    """
    dist = current() if dist is None else dist
    paths = RunPaths(Path(run_dir))
    say = (log or (lambda msg: None)) if dist.primary else (lambda msg: None)
    record = {
        "kind": "train",
        "hash": config_hash(cfg, extra),
        "non_default": non_default(cfg),
        "config": to_dict(cfg),
        "extra": extra or {},
        **({"details": dict(details)} if details else {}),
    }
    check_global_batch(cfg.data.batch_size, dist.world)
    if paths.hparams.exists():
        check_hparams(paths.hparams, record, write=False)  # another run's directory: refuse now
    done = finished_result(paths)
    if done is not None:
        say(f"{paths.dir.name}: already complete, nothing to do")
        return done
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and dist.active:
        device = torch.device("cuda", dist.local_rank)
    splits = cfg.data.load() if splits is None else splits
    if len(splits.train.labels) == 0:
        raise UserError("the training split is empty; raise --train-subset or lower --val-size")
    kernels = _kernels(paths, cfg, device)
    if not paths.hparams.exists():
        record["details"] = {**record.get("details", {}), "kernels": kernels.record()}
    say(kernels.describe())
    ctx = _Context(cfg, paths, splits, record, device, dist, say, kernels)
    with claimed(paths.dir, f"training {paths.dir.name}", dist, wait):
        done = finished_result(paths)  # another process may have finished it while we waited
        if done is not None:
            return done
        # Only now that device and data are known to work: a refused run leaves no directory.
        create_claimed(paths.dir, paths.hparams, record, dist, "run directory")
        result = _run(ctx, mask, init_state, callbacks)
    return result


def _kernels(paths: RunPaths, cfg: RunConfig, device: torch.device) -> KernelChoice:
    """The run's kernels: those its directory recorded (a resumed run keeps them), else chosen
    now for the device and model by the flags and the measured table (``training.kernels``)."""
    if paths.hparams.exists():
        return recorded(recorded_record(paths.dir), bool(cfg.train.channels_last))
    return choose(device.type, cfg.model.model, channels_last=cfg.train.channels_last,
                  compile=cfg.train.compile, fold_bn=cfg.train.fold_bn)  # fmt: skip


def _run(
    ctx: _Context,
    mask: Mask | None,
    init_state: Mapping[str, torch.Tensor] | None,
    extra_callbacks: Sequence[Callback],
) -> RunResult:
    from ..data.batching import epoch_layout

    cfg, tc, spec, device, dist = ctx.cfg, ctx.cfg.train, ctx.splits.spec, ctx.device, ctx.dist
    norm = cfg.model.normalize
    arch = arch_meta(cfg.model.model, num_classes=spec.num_classes, in_channels=spec.channels,
                     mean=tuple(spec.mean) if norm else None, std=tuple(spec.std) if norm else None,
                     dropout=cfg.model.dropout, dataset=spec.name)  # fmt: skip
    model = _initial_model(cfg, ctx.paths, arch, mask, init_state, dist).to(device)
    if tc.sync_bn and dist.active:
        from .sync_bn import convert

        convert(model)
    if ctx.kernels.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    gens = run_generators(cfg, device, dist)
    layout = epoch_layout(len(ctx.splits.train.labels), cfg.data.batch_size, dist.world)
    state = TrainState(model, optimizer, tc.epochs, layout.steps)
    _resume(state, ctx.paths, ctx.record["hash"], gens, ctx)
    if dist.primary:
        _record_attempt(ctx.paths, state.epoch, dist, device)
    dist.broadcast_parameters([*model.parameters(), *model.buffers()])
    # Eval-mode forward passes (attacks crafted in BN eval mode, held-out evaluation) through the
    # folded view when chosen; it shares the model's parameters and is never saved.
    folded = fold_batchnorm(model) if ctx.kernels.fold_bn else model
    batches, step = _batches_and_step(ctx, model, folded, optimizer, mask, gens, layout)
    n_val = min(cfg.eval.val_examples or len(ctx.splits.val.labels), len(ctx.splits.val.labels))
    watched = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    hparams = {"hash": ctx.record["hash"], **ctx.record["non_default"], **ctx.record["extra"]}
    val = ctx.splits.val
    callbacks = standard_callbacks(
        cfg, ctx.paths, arch=arch, run_hash=ctx.record["hash"], gens=gens, watched=watched,
        device=device, val_images=val.images[:n_val], val_labels=val.labels[:n_val], say=ctx.say,
        hparams=hparams, dist=dist, eval_model=folded,
    )  # fmt: skip
    fit(
        state,
        batches=batches,
        lr_at=lambda i: learning_rate(tc, i, layout.steps),
        step=step,
        callbacks=[*callbacks, *extra_callbacks],
    )
    return _finish(ctx, state, arch)


def _batches_and_step(
    ctx: _Context,
    model: nn.Module,
    folded: nn.Module,
    optimizer: Any,
    mask: Mask | None,
    gens: dict,
    layout: Any,
) -> tuple[Callable, Callable]:
    """This rank's shard of every global batch, and one optimizer step on it (forward passes
    through ``folded``: ``model``, or its BN-folded view).

    Every rank draws the same permutation and augmentation (the data generator is shared), cuts
    the global batch into ``world`` contiguous shards and trains on its own; the step scales this
    rank's mean loss by its share of the global batch, so that after the gradients are averaged
    over the ranks they are those of the global batch's mean loss (SyncBatchNorm included).
    """
    from ..data.batching import BatchLoader

    cfg, tc, dist, device = ctx.cfg, ctx.cfg.train, ctx.dist, ctx.device
    splits, spec = ctx.splits, ctx.splits.spec
    objective, attack = objectives().get(tc.objective), train_attack_spec(cfg)
    use_amp = tc.amp and device.type == "cuda"
    dev_mask = mask.on_device(device) if mask is not None else None
    update = masked_step(optimizer, model, dev_mask)
    params = [p for p in model.parameters() if p.requires_grad]
    global_size = {"n": 0}
    channels_last = ctx.kernels.channels_last
    # The step's forward passes (attack and update) through the folded and/or compiled module;
    # the weights and checkpoints are the plain module's (the same parameters).
    fast = torch.compile(folded, dynamic=True) if ctx.kernels.compile else folded

    def batches(epoch: int) -> Any:
        loader = BatchLoader(splits.train.images, splits.train.labels, batch_size=cfg.data.batch_size,
                             shuffle=True, augment=spec if cfg.data.augment else None,
                             generator=gens["data"], drop_last=layout.drop_last, device=device)  # fmt: skip
        for x, y in loader:
            global_size["n"] = len(y)
            part = dist.shard(len(y))
            x, y = x[part], y[part]
            yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    weights = (
        class_weights(splits.train.labels, spec.num_classes, device) if tc.class_weighted else None
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = objective.loss(fast, x, y, cfg=cfg, attack=attack, generator=gens["attack"],
                                      use_amp=use_amp, class_weights=weights)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        if dist.active:
            (loss * (len(y) * dist.world / global_size["n"])).backward()
            dist.average_gradients(params, 1)
        else:
            loss.backward()
        update()
        return loss, logits

    return batches, step


def class_weights(labels: torch.Tensor, k: int, device: Any) -> torch.Tensor:
    """Inverse class frequency of ``labels`` (N,), ``N / (k_present · n_c)``: mean 1 over the
    images, so the weighted loss keeps the unweighted one's scale (0 for absent classes)."""
    counts = torch.bincount(labels.cpu(), minlength=k).double()
    present = int((counts > 0).sum())
    w = torch.where(counts > 0, counts.sum() / (present * counts.clamp(min=1)), 0.0)
    return w.to(device=device, dtype=torch.float32)


def _finish(ctx: _Context, state: TrainState, arch: Mapping[str, Any]) -> RunResult:
    """``final.pt``, ``best.pt`` when nothing was held out, the test evaluation, final metrics."""
    cfg, paths, dist = ctx.cfg, ctx.paths, ctx.dist
    if dist.primary and not paths.best.exists():
        # No held-out split: the last model is the only candidate.
        save_model(paths.best, state.model, arch, epoch=len(state.rows), selected_by="last")
    if dist.primary:
        save_model(paths.final, state.model, arch, epoch=len(state.rows))
    dist.barrier()
    test = None
    if cfg.eval.test_eval:
        test = _test_eval(ctx, state.model, arch)
    status = state.stop or "complete"
    if dist.primary:
        write_metrics(paths, state.rows, status, state.best, cfg, ctx.device)
    dist.barrier()
    return RunResult(paths.dir, status, state.rows, test)


def _test_eval(ctx: _Context, model: nn.Module, arch: Mapping[str, Any]) -> dict[str, Any]:
    """The best and final models on the test set, per class, with the protocol (once; sharded
    over the ranks, written by the primary)."""
    from ..adversarial.evaluation import evaluate

    paths, splits, cfg, device = ctx.paths, ctx.splits, ctx.cfg, ctx.device
    if paths.test_eval.exists():
        return read_json(paths.test_eval, what="test evaluation", require_checksum=True)
    test = splits.test
    out: dict[str, Any] = {"dataset": splits.spec.name, "split": "test"}
    best_ckpt = safe_torch_load(paths.best, what="best checkpoint")
    best_model = build_from_arch(arch)
    load_state_dict_strict(best_model, best_ckpt["state_dict"], "best checkpoint")
    best_model.to(device)
    for name, m, epoch in (("best", best_model, best_ckpt.get("epoch")), ("final", model, None)):
        res = evaluate(
            prepare(m, ctx.kernels),
            test.images,
            test.labels,
            eval_protocol(cfg),
            batch_size=cfg.eval.eval_batch_size,
            num_classes=splits.spec.num_classes,
            per_class=True,
            device=device,
            progress=cfg.train.progress and ctx.dist.primary,
            desc=f"test eval ({name})",
            dist=ctx.dist,
        )
        res["epoch"] = epoch
        out[name] = res
    out["environment"] = environment_info(device)
    if ctx.dist.primary:
        atomic_write_json(paths.test_eval, out, checksum=True)
    return out
