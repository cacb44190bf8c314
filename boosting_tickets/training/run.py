"""A training run in its own directory: set-up, resume, the loop with its callbacks, the end.

Objectives come from the registry (:mod:`.objectives`): natural, FGSM, FGSM-RS, PGD, TRADES, with
or without a pruning mask. A run lives in one directory (names in ``core.paths``)::

    hparams.json   the settings (and their hash, which names the directory)
    init.pt        θ0, the weights training started from (after masking)
    last.pt        full training state after the last finished epoch (resume point)
    best.pt        the model with the best held-out metric (never chosen on test data)
    final.pt       the weights after the last epoch
    metrics.json   per-epoch rows, status, wall times
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
from ..models.masks import Mask
from .callbacks import (
    STATE_FORMAT,
    TrainingFailed,
    set_rng_state,
    standard_callbacks,
    write_metrics,
)
from .hparams import RunConfig, eval_protocol, train_attack_spec
from .loop import Callback, TrainState, fit
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


def check_hparams(path: Path, record: Mapping[str, Any]) -> None:
    """Refuse a directory holding another run's settings; write ``hparams.json`` if absent."""
    if path.exists():
        old = read_json(path, what="hparams file")
        if old.get("hash") != record["hash"] or old.get("non_default") != record["non_default"]:
            raise UserError(
                f"{path.parent} holds a run with other settings (hash {old.get('hash')}); "
                "use another --out directory or delete it"
            )
    else:
        atomic_write_json(path, dict(record))


def _finished(paths: RunPaths) -> RunResult | None:
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
) -> nn.Module:
    """θ0: from ``init.pt`` when resuming, else a seeded init (or ``init_state``), masked."""
    torch.manual_seed(cfg.train.seed)
    model = build_from_arch(arch)
    if paths.init.exists():
        ckpt = safe_torch_load(paths.init, what="init checkpoint")
        load_state_dict_strict(model, ckpt["state_dict"], f"init checkpoint {paths.init}")
    else:
        if init_state is not None:
            load_state_dict_strict(model, init_state, "initial weights")
        if mask is not None:
            mask.apply_(model)
        save_model(paths.init, model, arch, epoch=0, kind="init")
    if mask is not None:
        mask.check_compatible(model)
    return model


def _resume(state: TrainState, paths: RunPaths, run_hash: str, gens: dict, say: Callable) -> None:
    """Restore weights, optimizer, RNG streams and rows from ``last.pt`` when it exists."""
    if not paths.last.exists():
        return
    saved = safe_torch_load(paths.last, what="training state")
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UserError(f"{paths.last} is not a training state; delete it to restart the run")
    if saved.get("hash") != run_hash:
        raise UserError(f"{paths.last} belongs to another run; delete it to restart")
    load_state_dict_strict(state.model, saved["model"], f"training state {paths.last}")
    state.optimizer.load_state_dict(saved["optimizer"])
    set_rng_state(gens, saved["rng"])
    state.rows = list(saved["metrics"])
    state.best = saved.get("best")
    state.epoch = int(saved["epoch"])
    state.step = state.epoch * state.steps_per_epoch
    say(f"{paths.dir.name}: resuming after epoch {state.epoch}")


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
) -> RunResult:
    """Train (or resume, or just return) the run ``cfg`` in exactly ``run_dir``.

    ``mask`` keeps pruned weights, their gradients and momentum exactly zero; ``init_state`` sets the
    starting weights (a ticket's rewind point) instead of a fresh seeded init; ``extra`` is recorded
    in hparams.json and the hash (e.g. the ticket a retraining run came from); ``callbacks`` run
    after the standard ones. ``boosting_tickets.train`` names the directory by the hash instead.
    """
    paths, say = RunPaths(Path(run_dir)), log or (lambda msg: None)
    record = {
        "kind": "train",
        "hash": config_hash(cfg, extra),
        "non_default": non_default(cfg),
        "config": to_dict(cfg),
        "extra": extra or {},
    }
    if paths.hparams.exists():
        check_hparams(paths.hparams, record)  # refuses another run's directory before any work
    done = _finished(paths)
    if done is not None:
        say(f"{paths.dir.name}: already complete, nothing to do")
        return done
    device = resolve_device(cfg.train.device)
    splits = cfg.data.load() if splits is None else splits
    if len(splits.train.labels) == 0:
        raise UserError("the training split is empty; raise --train-subset or lower --val-size")
    # Only now that device and data are known to work: a refused run leaves no directory behind.
    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory {paths.dir}: {exc.strerror}") from None
    check_hparams(paths.hparams, record)
    return _run(cfg, paths, splits, mask, init_state, record, device, say, callbacks)


def _run(
    cfg: RunConfig,
    paths: RunPaths,
    splits: Any,
    mask: Mask | None,
    init_state: Mapping[str, torch.Tensor] | None,
    record: Mapping[str, Any],
    device: torch.device,
    say: Callable[[str], None],
    extra_callbacks: Sequence[Callback],
) -> RunResult:
    from ..data.batching import BatchLoader, epoch_layout

    dc, tc, spec = cfg.data, cfg.train, splits.spec
    norm = cfg.model.normalize
    arch = arch_meta(cfg.model.model, num_classes=spec.num_classes, in_channels=spec.channels,
                     mean=tuple(spec.mean) if norm else None, std=tuple(spec.std) if norm else None,
                     dropout=cfg.model.dropout, dataset=spec.name)  # fmt: skip
    model = _initial_model(cfg, paths, arch, mask, init_state).to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    dev_mask = mask.on_device(device) if mask is not None else None
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    gens = {"data": torch.Generator(), "attack": torch.Generator(device=device)}
    gens["data"].manual_seed(tc.seed)
    gens["attack"].manual_seed(tc.seed + 1)
    layout = epoch_layout(len(splits.train.labels), dc.batch_size)
    state = TrainState(model, optimizer, tc.epochs, layout.steps)
    _resume(state, paths, record["hash"], gens, say)

    def batches(epoch: int) -> Any:
        loader = BatchLoader(splits.train.images, splits.train.labels, batch_size=dc.batch_size,
                             shuffle=True, augment=spec if dc.augment else None,
                             generator=gens["data"], drop_last=layout.drop_last, device=device)  # fmt: skip
        for x, y in loader:
            yield (x.contiguous(memory_format=torch.channels_last) if tc.channels_last else x), y

    objective, attack = objectives().get(tc.objective), train_attack_spec(cfg)
    use_amp = tc.amp and device.type == "cuda"
    n_val = min(cfg.eval.val_examples or len(splits.val.labels), len(splits.val.labels))
    watched = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    hparams = {"hash": record["hash"], **record["non_default"], **record["extra"]}
    val = splits.val
    callbacks = standard_callbacks(
        cfg, paths, arch=arch, run_hash=record["hash"], gens=gens, watched=watched, device=device,
        val_images=val.images[:n_val], val_labels=val.labels[:n_val], say=say, hparams=hparams,
    )  # fmt: skip
    fit(
        state,
        batches=batches,
        lr_at=lambda step: learning_rate(tc, step, layout.steps),
        loss_of=lambda x, y: objective.loss(
            model, x, y, cfg=cfg, attack=attack, generator=gens["attack"], use_amp=use_amp
        ),  # fmt: skip
        optimizer_step=masked_step(optimizer, model, dev_mask),
        callbacks=[*callbacks, *extra_callbacks],
    )
    return _finish(cfg, paths, state, splits, arch, device)


def _finish(
    cfg: RunConfig,
    paths: RunPaths,
    state: TrainState,
    splits: Any,
    arch: Mapping[str, Any],
    device: torch.device,
) -> RunResult:
    """``final.pt``, ``best.pt`` when nothing was held out, the test evaluation, final metrics."""
    if not paths.best.exists():
        # No held-out split: the last model is the only candidate.
        save_model(paths.best, state.model, arch, epoch=len(state.rows), selected_by="last")
    save_model(paths.final, state.model, arch, epoch=len(state.rows))
    test = None
    if cfg.eval.test_eval:
        test = _test_eval(paths, state.model, splits, cfg, device, arch)
    status = state.stop or "complete"
    write_metrics(paths, state.rows, status, state.best, cfg, device)
    return RunResult(paths.dir, status, state.rows, test)


def _test_eval(
    paths: RunPaths,
    model: nn.Module,
    splits: Any,
    cfg: RunConfig,
    device: torch.device,
    arch: Mapping[str, Any],
) -> dict[str, Any]:
    """The best and final models on the test set, per class, with the protocol (once)."""
    from ..adversarial.evaluation import evaluate

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
            m,
            test.images,
            test.labels,
            eval_protocol(cfg),
            batch_size=cfg.eval.eval_batch_size,
            num_classes=splits.spec.num_classes,
            per_class=True,
            device=device,
            progress=cfg.train.progress,
            desc=f"test eval ({name})",
        )
        res["epoch"] = epoch
        out[name] = res
    out["environment"] = environment_info(device)
    atomic_write_json(paths.test_eval, out, checksum=True)
    return out
