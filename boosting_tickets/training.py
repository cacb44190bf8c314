"""One training loop for natural, FGSM, FGSM-RS, PGD and TRADES training, with or without a mask.

Objectives: ``natural`` (clean cross-entropy); ``fgsm`` (Goodfellow et al. 2015, no random start, as in
the boosting-ticket code); ``fgsm-rs`` (Wong, Rice & Kolter 2020: uniform start, step 1.25·eps);
``pgd`` (Madry et al. 2018: PGD-k, step eps/4 by default); ``trades`` (Zhang et al. 2019).

A run lives in one directory::

    hparams.json   the settings (and their hash, which names the directory)
    init.pt        θ0, the weights training started from (after masking)
    last.pt        full training state after the last finished epoch (resume point)
    best.pt        the model with the best held-out metric (never chosen on test data)
    final.pt       the weights after the last epoch
    metrics.json   per-epoch rows, status, wall times
    test_eval.json best and final models on the test set (clean / FGSM / PGD-k, per class)

Every file is written atomically. Re-running the same command resumes from ``last.pt`` and, on the
CPU with fixed seeds, gives exactly the metrics of an uninterrupted run; a finished run does no work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import AttackSpec, perturb, trades_perturb
from .checkpoints import arch_meta, build_from_arch, load_state_dict_strict, save_model
from .config import config_hash, non_default, to_dict
from .environment import environment_info, resolve_device
from .errors import UserError
from .evaluation import EvalProtocol, evaluate
from .hparams import RunConfig, TrainConfig
from .masks import Mask
from .storage import atomic_torch_save, atomic_write_json, read_json, safe_torch_load

STATE_FORMAT = "boosting-tickets/train-state"
ADVERSARIAL = ("fgsm", "fgsm-rs", "pgd", "trades")


class TrainingFailed(UserError):
    """Training stopped on a non-finite loss; the last good checkpoint is kept."""


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    status: str
    metrics: list[dict[str, Any]]
    test: dict[str, Any] | None

    @property
    def train_seconds(self) -> float:
        return self.metrics[-1]["cum_train_seconds"] if self.metrics else 0.0


def run_dir_for(
    cfg: RunConfig, root: str | Path, *, prefix: str = "train", extra: dict | None = None
) -> Path:
    """``root/<prefix>_<hash of non-default settings (+extra)>``."""
    return Path(root) / f"{prefix}_{config_hash(cfg, extra)}"


def learning_rate(tc: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warmup from ``warmup_lr`` (default lr/10) to ``lr`` over ``warmup_epochs``, per step; then
    ``step``: lr·gamma^(milestones passed), milestones as fractions of all epochs, applied at epoch
    boundaries (like MultiStepLR); ``constant``; or ``cyclic``: one triangle from 0 up to lr at 40% of
    training and back to 0 (Wong et al. 2020), per step.
    """
    epoch_f = step / steps_per_epoch
    if tc.warmup_epochs > 0 and epoch_f < tc.warmup_epochs:
        start = tc.lr / 10 if tc.warmup_lr is None else tc.warmup_lr
        return start + (tc.lr - start) * epoch_f / tc.warmup_epochs
    if tc.schedule == "constant":
        return tc.lr
    if tc.schedule == "cyclic":
        total = tc.epochs * steps_per_epoch
        peak = 0.4 * total
        t = step + 1
        return tc.lr * (t / peak if t <= peak else max(0.0, (total - t) / (total - peak)))
    epoch = step // steps_per_epoch
    passed = sum(1 for m in tc.milestones if epoch >= math.ceil(m * tc.epochs - 1e-9))
    return tc.lr * tc.gamma**passed


def train_attack_spec(cfg: RunConfig) -> AttackSpec | None:
    """The attack crafting training inputs (None for natural training)."""
    tc = cfg.train
    if tc.objective == "natural":
        return None
    name = "pgd" if tc.objective == "trades" else tc.objective
    steps = tc.train_steps if name == "pgd" else 1
    return AttackSpec(
        name=name,
        eps=cfg.train_eps,
        steps=steps,
        step_size=tc.train_step_size,
        random_start=tc.train_random_start,
        bn_mode=tc.train_bn_mode,
    ).resolved()


def eval_protocol(cfg: RunConfig) -> EvalProtocol:
    """The held-out/test protocol of a run (PGD-k, step eps/4 unless set)."""
    ec = cfg.eval
    return EvalProtocol(
        eps=cfg.eval_eps,
        pgd_steps=ec.eval_steps,
        step_size=ec.eval_step_size,
        restarts=ec.eval_restarts,
        random_start=ec.eval_random_start,
        bn_mode=ec.eval_bn_mode,
        seed=ec.eval_seed,
    )


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


def _select_key(cfg: RunConfig) -> str:
    sel = cfg.train.select_metric
    if sel == "auto":
        sel = "clean" if cfg.train.objective == "natural" else "pgd"
    return f"val_{sel}"


def _rng_state(gens: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    state = {k: g.get_state() for k, g in gens.items()}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(gens: Mapping[str, torch.Generator], state: Mapping[str, torch.Tensor]) -> None:
    for k, g in gens.items():
        g.set_state(state[k])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _check_hparams(run_dir: Path, record: dict[str, Any]) -> None:
    path = run_dir / "hparams.json"
    if path.exists():
        old = read_json(path, what="hparams file")
        if old.get("hash") != record["hash"] or old.get("non_default") != record["non_default"]:
            raise UserError(
                f"{run_dir} holds a run with other settings (hash {old.get('hash')}); "
                "use another --out directory or delete it"
            )
    else:
        atomic_write_json(path, record)


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    splits: Any = None,
    mask: Mask | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train (or resume, or just return) the run ``cfg`` in ``run_dir``.

    ``mask`` keeps pruned weights, their gradients and momentum exactly zero; ``init_state`` sets the
    starting weights (a ticket's rewind point) instead of a fresh seeded init; ``extra`` is recorded in
    hparams.json and the hash (e.g. the ticket a retraining run came from).
    """
    run_dir = Path(run_dir)
    say = log or (lambda msg: None)
    record = {
        "kind": "train",
        "hash": config_hash(cfg, extra),
        "non_default": non_default(cfg),
        "config": to_dict(cfg),
        "extra": extra or {},
    }
    if (run_dir / "hparams.json").exists():
        _check_hparams(run_dir, record)  # refuses another run's directory before any work

    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        done = read_json(metrics_path, what="metrics file", require_checksum=True)
        if done.get("status") in ("complete", "stopped_overfit"):
            say(f"{run_dir.name}: already complete, nothing to do")
            test = (
                read_json(run_dir / "test_eval.json", what="test evaluation", require_checksum=True)
                if (run_dir / "test_eval.json").exists()
                else None
            )
            return RunResult(run_dir, done["status"], done["epochs"], test)

    from .data import BatchLoader

    dc, tc = cfg.data, cfg.train
    device = resolve_device(tc.device)
    if splits is None:
        splits = dc.load()
    spec = splits.spec
    # Only now that device and data are known to work: a refused run leaves no directory behind.
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    _check_hparams(run_dir, record)
    arch = arch_meta(
        cfg.model.model,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        mean=tuple(spec.mean) if cfg.model.normalize else None,
        std=tuple(spec.std) if cfg.model.normalize else None,
        dropout=cfg.model.dropout,
        dataset=spec.name,
    )

    torch.manual_seed(tc.seed)
    model = build_from_arch(arch)
    init_path = run_dir / "init.pt"
    if init_path.exists():
        ckpt = safe_torch_load(init_path, what="init checkpoint")
        load_state_dict_strict(model, ckpt["state_dict"], f"init checkpoint {init_path}")
    else:
        if init_state is not None:
            load_state_dict_strict(model, init_state, "initial weights")
        if mask is not None:
            mask.apply_(model)
        save_model(init_path, model, arch, epoch=0, kind="init")
    if mask is not None:
        mask.check_compatible(model)

    model.to(device)
    use_amp = tc.amp and device.type == "cuda"
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    dev_mask = mask.on_device(device) if mask is not None else None
    watched = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    gens = {"data": torch.Generator(), "attack": torch.Generator(device=device)}
    gens["data"].manual_seed(tc.seed)
    gens["attack"].manual_seed(tc.seed + 1)

    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 0
    state_path = run_dir / "last.pt"
    if state_path.exists():
        state = safe_torch_load(state_path, what="training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserError(f"{state_path} is not a training state; delete it to restart the run")
        if state.get("hash") != record["hash"]:
            raise UserError(f"{state_path} belongs to another run; delete it to restart")
        load_state_dict_strict(model, state["model"], f"training state {state_path}")
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(gens, state["rng"])
        rows = list(state["metrics"])
        best = state.get("best")
        start_epoch = int(state["epoch"])
        say(f"{run_dir.name}: resuming after epoch {start_epoch}")

    attack = train_attack_spec(cfg)
    protocol = eval_protocol(cfg)
    select = _select_key(cfg)
    val = splits.val
    n_val = len(val.labels) if cfg.eval.val_examples is None else cfg.eval.val_examples
    n_val = min(n_val, len(val.labels))
    n_train = len(splits.train.labels)
    if n_train == 0:
        raise UserError("the training split is empty; raise --train-subset or lower --val-size")
    # A trailing batch of one breaks BatchNorm in train mode: drop it (it is a different one each
    # epoch, since the order is reshuffled).
    drop_last = n_train % dc.batch_size == 1 and n_train > 1
    steps_per_epoch = n_train // dc.batch_size if drop_last else math.ceil(n_train / dc.batch_size)
    status = "running"

    from tqdm import tqdm

    for epoch in range(start_epoch, tc.epochs):
        loader = BatchLoader(
            splits.train.images,
            splits.train.labels,
            batch_size=dc.batch_size,
            shuffle=True,
            augment=spec if dc.augment else None,
            generator=gens["data"],
            drop_last=drop_last,
            device=device,
        )
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader,
            total=len(loader),
            desc=f"epoch {epoch + 1}/{tc.epochs} [{tc.objective}]",
            leave=False,
            disable=None if tc.progress else True,
        )
        for it, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + it
            lr = learning_rate(tc, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, logits = _objective_loss(model, x, y, cfg, attack, gens["attack"], use_amp)
            if not torch.isfinite(loss):
                _fail(run_dir, rows, epoch, it, lr, f"loss became {float(loss.item())}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dev_mask is not None:
                dev_mask.mask_grads_(model)
            optimizer.step()
            if dev_mask is not None:
                dev_mask.apply_(model)
                dev_mask.mask_optimizer_state_(optimizer, model)
            # A finite loss can still leave NaN/inf weights or BN statistics (e.g. after the last
            # step of an epoch); they must never reach the held-out evaluation or a checkpoint.
            bad = _first_non_finite(watched)
            if bad is not None:
                _fail(run_dir, rows, epoch, it, lr, f"weights became non-finite (in '{bad}')")
            loss_sum += float(loss.item()) * len(y)
            correct += int((logits.argmax(1) == y).sum().item())
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0

        t1 = time.perf_counter()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "train_seconds": train_seconds,
            "cum_train_seconds": (rows[-1]["cum_train_seconds"] if rows else 0.0) + train_seconds,
        }
        if n_val > 0:
            res = evaluate(
                model,
                val.images[:n_val],
                val.labels[:n_val],
                protocol,
                batch_size=cfg.eval.eval_batch_size,
                device=device,
                progress=tc.progress,
                desc="held-out eval",
            )
            row.update(val_clean=res["clean_acc"], val_fgsm=res["fgsm_acc"], val_pgd=res["pgd_acc"])
        row["eval_seconds"] = time.perf_counter() - t1
        row["overfit"] = tc.objective in ("fgsm", "fgsm-rs") and detect_catastrophic_overfitting(
            [*rows, row]
        )
        rows.append(row)
        say(_epoch_line(row, tc.epochs))
        if row["overfit"]:
            say(
                f"catastrophic overfitting at epoch {row['epoch']}: held-out FGSM "
                f"{row['val_fgsm']:.1%} vs PGD {row['val_pgd']:.1%}"
            )

        score = row.get(select)
        if score is not None and (best is None or score > best["score"]):
            best = {"epoch": row["epoch"], "metric": select, "score": score}
            save_model(run_dir / "best.pt", model, arch, epoch=row["epoch"], selected_by=select)
        atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "hash": record["hash"],
                "epoch": epoch + 1,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(gens),
                "metrics": rows,
                "best": best,
            },
            state_path,
        )
        _write_metrics(run_dir, rows, "running", best, cfg, device)
        if row["overfit"] and tc.stop_on_overfit:
            status = "stopped_overfit"
            say("stopping: --stop-on-overfit is set")
            break

    if not (run_dir / "best.pt").exists():
        # No held-out split: the last model is the only candidate.
        save_model(run_dir / "best.pt", model, arch, epoch=len(rows), selected_by="last")
    save_model(run_dir / "final.pt", model, arch, epoch=len(rows))
    test = None
    if cfg.eval.test_eval:
        test = _test_eval(run_dir, model, splits, protocol, cfg, device, arch)
    final_status = "complete" if status == "running" else status
    _write_metrics(run_dir, rows, final_status, best, cfg, device)
    return RunResult(run_dir, final_status, rows, test)


def _objective_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: RunConfig,
    attack: AttackSpec | None,
    gen: torch.Generator,
    use_amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of one batch and the logits it was computed from."""
    amp_dtype = torch.bfloat16 if use_amp else None
    objective = cfg.train.objective

    def forward(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            return model(inp).float()

    if objective == "trades":
        assert attack is not None
        x_adv = trades_perturb(
            model,
            x,
            attack.eps,
            step_size=attack.step_size,
            steps=attack.steps,
            bn_mode=attack.bn_mode,
            generator=gen,
        )
        model.train()
        logits = forward(x)
        adv_logits = forward(x_adv)
        robust = F.kl_div(
            F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits, y) + cfg.train.trades_beta * robust, logits
    if attack is not None:
        x = perturb(model, x, y, attack, generator=gen, autocast_dtype=amp_dtype)
        model.train()
    logits = forward(x)
    return F.cross_entropy(logits, y), logits


def _first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the first tensor holding a NaN or inf, or None (one device sync for all of them)."""
    names = list(tensors)
    # The max-abs norm cannot overflow, so only a real NaN/inf entry makes it non-finite.
    norms = torch._foreach_norm(list(tensors.values()), float("inf"))
    ok = torch.isfinite(torch.stack(norms)).cpu()
    return None if bool(ok.all()) else names[int((~ok).nonzero()[0])]


def _fail(run_dir: Path, rows: list, epoch: int, step: int, lr: float, problem: str) -> None:
    reason = f"training diverged: {problem} at epoch {epoch + 1} step {step + 1} (lr {lr:.4g})"
    prev = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    atomic_write_json(
        run_dir / "metrics.json",
        {**prev, "status": "failed", "failure": reason, "epochs": rows},
        checksum=True,
    )
    kept = f"epoch {len(rows)}" if rows else "the initial weights"
    raise TrainingFailed(f"{reason}; the last good checkpoint ({kept}) is kept; lower --lr")


def _epoch_line(row: Mapping[str, Any], epochs: int) -> str:
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


def _write_metrics(
    run_dir: Path,
    rows: list[dict[str, Any]],
    status: str,
    best: dict[str, Any] | None,
    cfg: RunConfig,
    device: torch.device,
) -> None:
    atomic_write_json(
        run_dir / "metrics.json",
        {
            "schema": 1,
            "status": status,
            "epochs": rows,
            "best": best,
            "train_attack": (a.protocol() if (a := train_attack_spec(cfg)) else None),
            "eval_protocol": eval_protocol(cfg).record(
                len(rows) and min(cfg.eval.val_examples or cfg.data.val_size, cfg.data.val_size)
            ),
            "environment": environment_info(device),
        },
        checksum=True,
    )


def _test_eval(
    run_dir: Path,
    model: nn.Module,
    splits: Any,
    protocol: EvalProtocol,
    cfg: RunConfig,
    device: torch.device,
    arch: Mapping[str, Any],
) -> dict[str, Any]:
    path = run_dir / "test_eval.json"
    if path.exists():
        return read_json(path, what="test evaluation", require_checksum=True)
    test = splits.test
    out: dict[str, Any] = {"dataset": splits.spec.name, "split": "test"}
    best_ckpt = safe_torch_load(run_dir / "best.pt", what="best checkpoint")
    best_model = build_from_arch(arch)
    load_state_dict_strict(best_model, best_ckpt["state_dict"], "best checkpoint")
    best_model.to(device)
    for name, m, epoch in (
        ("best", best_model, best_ckpt.get("epoch")),
        ("final", model, None),
    ):
        res = evaluate(
            m,
            test.images,
            test.labels,
            protocol,
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
    atomic_write_json(path, out, checksum=True)
    return out
