"""Boosting tickets: find (train, prune, rewind), load and retrain sparse subnetworks, with controls.

Li et al., "Towards Practical Lottery Ticket Hypothesis for Adversarial Training" (arXiv 2003.05733):
save θ0, train (natural, FGSM or PGD) at a *small* learning rate (0.01, no warmup), prune 80% of the
conv+linear weights once (global magnitude, each layer divided by its mean |w|, BN channels of fully
pruned filters masked), reset the survivors to θ0 and retrain with the mask fixed, warming the lr up
from the finding lr to the peak. Such a ticket converges faster under PGD training than the dense
network and than the same mask at a fresh init (the ``reinit`` control).

Also: iterative magnitude pruning (IMP, Frankle & Carbin 2019) with ``imp_rounds`` > 1, rewinding to
epoch/iteration k (Frankle et al. 2020) and to a pre-trained checkpoint (Chen et al. 2020).

A ticket directory ``<out>/ticket_<hash>/`` (hash of the non-default find settings)::

    hparams.json        the FindConfig and its hash
    level_0/train/      the dense finding run (a training run directory; its init.pt is θ0)
    rewind_epoch_K/     rewind epoch:K / iter:K only: the same run stopped after K epochs
                        (final.pt = θ_K; same seed and schedule, so the weights are those of epoch K)
    level_L/mask.pt     the mask after L pruning rounds, with level_L/prune.json (its report)
    level_L/train/      IMP only (L < R): training of the round-L subnetwork from the rewind point
    mask.pt             the ticket's mask (= level_R/mask.pt)
    rewind.pt           the rewind point θ_rewind as a dense model checkpoint (not yet masked)
    sparsity.json       per-layer and global sparsity (Mask.report) plus per-level sparsity
    find_metrics.json   the finding runs' per-epoch metrics with their protocols
    ticket.json         meta (hash, sparsity, find lr, objective, wall times); written last

Every stage is idempotent: a finished ticket returns at once without writing; an interrupted one skips
finished levels and resumes the interrupted training run from its ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import (
    MODEL_FORMAT,
    build_from_arch,
    load_state_dict_strict,
    read_model_checkpoint,
    save_model,
)
from .config import check_ranges, config_hash, non_default, setting, to_dict
from .environment import environment_info
from .errors import UserError
from .hparams import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from .masks import Mask
from .models import build_model, validate_model_name
from .pruning import SCOPES, magnitude_prune, output_layer_name, per_round_rate, random_mask
from .pruning import with_bn_channels as add_bn_channels
from .storage import atomic_write_json, file_sha256, read_json, safe_torch_load
from .training import RunResult, _check_hparams, run_dir_for, train

TICKET_FORMAT = "boosting-tickets/ticket"
CONTROLS = ("reinit", "random-mask", "random-mask-global")
TICKET_FILES = ("ticket.json", "mask.pt", "rewind.pt")
_REWIND_RE = re.compile(r"^(epoch|iter):(\d+)$")

Log = Callable[[str], None] | None


# ------------------------------------------------------------------------------------ configs


@dataclass(frozen=True)
class PruneConfig:
    """How the ticket is pruned and where it is rewound to."""

    sparsity: float = setting(
        0.8, "fraction of the prunable weights pruned in the end, in [0,1) (the paper: 0.8)"
    )
    prune_scope: str = setting(
        "global",
        "global: one threshold over all layers (the paper); layer: each layer alike",
        choices=SCOPES,
    )
    normalize_by_mean: bool = setting(
        True,
        "global pruning ranks |w| / mean |w| of each layer (the official boosting-ticket code)",
    )
    imp_rounds: int = setting(
        1,
        "pruning rounds: 1 = one-shot (the paper); R > 1 = iterative magnitude pruning, "
        "each round pruning 1-(1-sparsity)^(1/R) of the remaining weights",
        low=1,
    )
    output_rate: float = setting(
        1.0,
        "output layer's pruning rate relative to the others (0.5 = half rate, Frankle & Carbin)",
        low=0.0,
        high=1.0,
    )
    prune_ignore: tuple[str, ...] = setting(
        (), "weights never pruned: names or patterns, comma-separated (e.g. conv1.weight)"
    )
    mask_bn_channels: bool = setting(
        True, "mask BatchNorm weight/bias of channels whose whole filter is pruned (official code)"
    )
    rewind: str = setting(
        "init",
        "rewind point: init (θ0), epoch:K, iter:K (a whole number of epochs), or a model "
        "checkpoint path (a pre-trained init: the finding run also starts there)",
    )

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise UserError(
                f"--sparsity must be in [0, 1) (the fraction of weights pruned), got {self.sparsity}"
            )
        kind, _ = parse_rewind(self.rewind)
        if kind == "path" and not Path(self.rewind).is_file():
            raise UserError(
                f"--rewind '{self.rewind}' is neither init, epoch:K, iter:K nor an existing "
                "checkpoint file"
            )


@dataclass(frozen=True)
class FindTrainConfig(TrainConfig):
    """Training of the finding run: the paper finds tickets at a small lr (0.01) without warmup."""

    objective: str = setting(
        "natural",
        "objective of the finding run (the paper: natural, or cheap FGSM for robust tickets)",
        choices=("natural", "fgsm", "fgsm-rs", "pgd"),
    )
    lr: float = setting(
        0.01, "finding lr (the paper: small, 0.01 for VGG-16, no warmup)", low=0.0, low_open=True
    )


@dataclass(frozen=True)
class FindConfig:
    """A ticket search: the finding run's settings (as a training run) plus pruning and rewinding."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: FindTrainConfig = FindTrainConfig()
    eval: EvalConfig = EvalConfig()
    prune: PruneConfig = PruneConfig()

    def run_config(self) -> RunConfig:
        """The finding run as a plain :class:`RunConfig` (same values, TrainConfig type)."""
        tc = TrainConfig(
            **{f.name: getattr(self.train, f.name) for f in dataclasses.fields(TrainConfig)}
        )
        return RunConfig(data=self.data, model=self.model, train=tc, eval=self.eval)

    def validate(self) -> None:
        self.run_config().validate()
        self.prune.validate()
        kind, k = parse_rewind(self.prune.rewind)
        if kind == "epoch" and k >= self.train.epochs:
            raise UserError(
                f"--rewind epoch:{k} must be below --epochs ({self.train.epochs}): "
                "the rewind point lies inside the finding run"
            )
        if kind in ("epoch", "iter") and k > 0 and self.train.schedule == "cyclic":
            raise UserError(
                "--rewind epoch:K/iter:K needs a step or constant --schedule (the cyclic lr depends "
                "on the total length, so a K-epoch run would not reproduce epoch K); use init"
            )


def parse_rewind(text: str) -> tuple[str, int]:
    """``"init"`` -> ("init", 0); ``"epoch:3"`` -> ("epoch", 3); ``"iter:500"`` -> ("iter", 500);
    anything else is a checkpoint path -> ("path", 0)."""
    if text == "init":
        return "init", 0
    m = _REWIND_RE.match(text)
    if m:
        return m.group(1), int(m.group(2))
    if text.startswith(("epoch", "iter")) and ":" in text:
        raise UserError(f"--rewind '{text}' is malformed; use epoch:K or iter:K with K >= 0")
    return "path", 0


# ------------------------------------------------------------------------------------ tickets


@dataclass
class Ticket:
    """A found ticket: its directory, mask, rewind point θ_rewind (unmasked, CPU) and meta.

    The ticket's weights are ``rewind_state ⊙ mask`` (:meth:`weights`); ``rewind_state`` keeps the
    pruned entries' values too, which the random-mask controls need. ``meta`` holds at least
    ``hash``, ``sparsity``, ``find_lr``, ``objective``, ``find_train_seconds`` (training wall time of
    all finding runs), ``find_wall_seconds``, ``arch`` and ``input_shape``.
    """

    dir: Path
    mask: Mask
    rewind_state: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta["arch"]

    def weights(self) -> dict[str, torch.Tensor]:
        """θ_rewind ⊙ mask: the ticket's starting weights as a dense state_dict."""
        out = {k: v.clone() for k, v in self.rewind_state.items()}
        for name, m in self.mask.items():
            out[name].mul_(m.to(out[name].dtype))
        return out

    def build_model(self) -> nn.Module:
        """A fresh model of the ticket's architecture holding :meth:`weights` (CPU)."""
        model = build_from_arch(self.arch)
        load_state_dict_strict(model, self.weights(), f"ticket {self.dir}")
        return model


def load_ticket(ticket_dir: str | Path) -> Ticket:
    """Read a ticket directory written by :func:`find_ticket`; one-line UserError if incomplete."""
    d = Path(ticket_dir)
    if not d.is_dir():
        raise UserError(f"ticket directory not found: {d}; pass a directory made by find-ticket")
    for name in TICKET_FILES:
        if not (d / name).is_file():
            raise UserError(
                f"ticket directory {d} lacks {name} (unfinished or damaged find-ticket run); "
                "rerun find-ticket with the same settings"
            )
    meta = read_json(d / "ticket.json", what="ticket file")
    if not isinstance(meta, dict) or meta.get("format") != TICKET_FORMAT:
        raise UserError(f"{d / 'ticket.json'} is not a boosting-tickets ticket file")
    ckpt = read_model_checkpoint(d / "rewind.pt")
    model = build_from_arch(ckpt["arch"])
    mask = Mask.load(d / "mask.pt", model)
    if mask.digest() != meta.get("mask_sha256"):
        raise UserError(
            f"{d / 'mask.pt'} is not the mask this ticket was found with (replaced or edited); "
            "rerun find-ticket"
        )
    load_state_dict_strict(model, ckpt["state_dict"], f"rewind checkpoint {d / 'rewind.pt'}")
    state = {k: v.detach().cpu() for k, v in ckpt["state_dict"].items()}
    return Ticket(dir=d, mask=mask, rewind_state=state, meta={**meta, "arch": ckpt["arch"]})


def ticket_dir_for(cfg: FindConfig, out: str | Path) -> Path:
    """``out/ticket_<hash>``; a checkpoint rewind target's bytes are part of the hash."""
    return Path(out) / f"ticket_{config_hash(cfg, _rewind_identity(cfg.prune))}"


def _rewind_identity(pc: PruneConfig) -> dict[str, Any]:
    kind, _ = parse_rewind(pc.rewind)
    if kind != "path":
        return {}
    # The path alone would let another file under the same name reuse this ticket.
    return {"rewind_sha256": file_sha256(pc.rewind)}


def external_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint used as rewind target: a boosting-tickets model checkpoint, a
    ``{"state_dict": ...}`` dict or a plain state_dict (``module.`` prefixes of DataParallel are
    removed). Loaded with ``weights_only=True``."""
    obj = safe_torch_load(path, what="rewind checkpoint")
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"rewind checkpoint {path} holds no state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    # Mirrors training.train: a trailing batch of one is dropped.
    drop_last = n_train % batch_size == 1 and n_train > 1
    return n_train // batch_size if drop_last else math.ceil(n_train / batch_size)


def prefix_config(run_cfg: RunConfig, k: int) -> RunConfig:
    """The first ``k`` epochs of ``run_cfg`` as a run of its own, with the same lr at every step.

    Step milestones (fractions of all epochs) that fall inside the first ``k`` epochs are rescaled
    to fractions of ``k``; later ones are dropped. Warmup depends only on ``warmup_epochs``, so it is
    kept as is (it may exceed ``k``: this config is built directly, not through validation). The
    prefix skips the test-set evaluation.
    """
    tc = run_cfg.train
    if tc.schedule == "cyclic":
        raise UserError("rewinding to epoch K needs a step or constant schedule, not cyclic")
    total = tc.epochs
    kept = tuple(m * total / k for m in tc.milestones if math.ceil(m * total - 1e-9) < k)
    train_cfg = dataclasses.replace(tc, epochs=k, milestones=kept)
    eval_cfg = dataclasses.replace(run_cfg.eval, test_eval=False)
    return dataclasses.replace(run_cfg, train=train_cfg, eval=eval_cfg)


def _say(log: Log, prefix: str) -> Callable[[str], None]:
    if log is None:
        return lambda msg: None
    return lambda msg: log(f"[{prefix}] {msg}")


def _run_summary(result: RunResult, root: Path) -> dict[str, Any]:
    rows = result.metrics
    return {
        "run_dir": str(result.run_dir.relative_to(root)),
        "status": result.status,
        "epochs": len(rows),
        "train_seconds": result.train_seconds,
        "wall_seconds": sum(r["train_seconds"] + r["eval_seconds"] for r in rows),
        "overfit_epochs": [r["epoch"] for r in rows if r.get("overfit")],
        "last": {k: rows[-1].get(k) for k in ("val_clean", "val_fgsm", "val_pgd")} if rows else {},
    }


def find_ticket(cfg: FindConfig, out: str | Path, *, log: Log = None, splits: Any = None) -> Ticket:
    """Find a boosting ticket in ``out/ticket_<hash>/`` (see the module docstring for the layout).

    Trains the dense network from θ0 with ``cfg.train`` (default: natural, lr 0.01, no warmup),
    prunes ``cfg.prune.sparsity`` of the prunable weights in ``imp_rounds`` rounds (each IMP round
    retrains the subnetwork from the rewind point before pruning again), and stores the mask with
    the rewind point. ``splits`` (from ``data.load_splits``) avoids reloading the data. Idempotent:
    a finished ticket is returned without any work or write.
    """
    check_ranges(cfg)
    cfg.validate()
    extra = _rewind_identity(cfg.prune)
    h = config_hash(cfg, extra)
    tdir = Path(out) / f"ticket_{h}"
    say = log or (lambda msg: None)
    if (tdir / "ticket.json").exists():
        say(f"{tdir.name}: ticket already found, nothing to do")
        return load_ticket(tdir)
    # Everything that can reject the input runs before the ticket directory is created.
    if splits is None:
        splits = cfg.data.load()
    pc = cfg.prune
    run_cfg = cfg.run_config()
    kind, k = parse_rewind(pc.rewind)
    k_epochs = rewind_epochs(run_cfg, kind, k, len(splits.train.labels))
    spec = splits.spec
    probe = build_model(cfg.model.model, num_classes=spec.num_classes, in_channels=spec.channels)
    base_mask = Mask.for_model(probe, pc.prune_ignore)  # rejects unknown --prune-ignore patterns
    start = external_state(pc.rewind) if kind == "path" else None
    if start is not None:
        load_state_dict_strict(probe, start, f"rewind checkpoint {pc.rewind}")
    try:
        tdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create ticket directory {tdir}: {exc.strerror}") from None
    _check_hparams(
        tdir,
        {
            "kind": "ticket",
            "hash": h,
            "non_default": non_default(cfg),
            "config": to_dict(cfg),
            "extra": extra,
        },
    )
    say(f"ticket directory: {tdir}")

    runs: list[RunResult] = []
    level0 = train(
        run_cfg,
        tdir / "level_0" / "train",
        splits=splits,
        init_state=start,
        extra={"ticket": h, "level": 0},
        log=_say(log, "level 0"),
    )
    runs.append(level0)
    init_ckpt = read_model_checkpoint(level0.run_dir / "init.pt")
    arch, theta0 = init_ckpt["arch"], init_ckpt["state_dict"]
    example = torch.rand(2, spec.channels, spec.size, spec.size, generator=torch.Generator())

    rewind_state, rewind_run = _rewind_point(
        run_cfg, tdir, k_epochs, theta0, splits, h, _say(log, f"rewind {pc.rewind}")
    )
    if rewind_run is not None:
        runs.append(rewind_run)

    rate = per_round_rate(pc.sparsity, pc.imp_rounds)
    out_name = output_layer_name(probe)
    mask = base_mask
    overrides = {out_name: rate * pc.output_rate} if pc.output_rate != 1.0 else {}
    overrides = {n: f for n, f in overrides.items() if n in mask}
    trained_path = level0.run_dir / "final.pt"
    levels: list[dict[str, Any]] = [{"level": 0, "sparsity": 0.0, **_run_summary(level0, tdir)}]
    prune_seconds = 0.0
    for level in range(1, pc.imp_rounds + 1):
        ldir = tdir / f"level_{level}"
        mask, info = _prune_level(
            ldir, probe, mask, trained_path, rate, overrides, pc, example, level, say
        )
        prune_seconds += info["prune_seconds"]
        entry: dict[str, Any] = {"level": level, "sparsity": mask.sparsity()}
        if level < pc.imp_rounds:
            res = train(
                run_cfg,
                ldir / "train",
                splits=splits,
                mask=mask,
                init_state=rewind_state,
                extra={"ticket": h, "level": level, "mask": mask.digest()},
                log=_say(log, f"level {level}"),
            )
            runs.append(res)
            entry.update(_run_summary(res, tdir))
            trained_path = res.run_dir / "final.pt"
        levels.append(entry)

    flagged = [(lv["level"], lv["overfit_epochs"]) for lv in levels if lv.get("overfit_epochs")]
    for level, epochs in flagged:
        say(
            f"level {level}: catastrophic overfitting flagged at epoch(s) {epochs}; the ticket is "
            "still usable (the paper's FGSM-found ticket came from such a model)"
        )
    meta = {
        "format": TICKET_FORMAT,
        "schema": 1,
        "hash": h,
        "sparsity": mask.sparsity(),
        "find_lr": cfg.train.lr,
        "objective": cfg.train.objective,
        "find_seed": cfg.train.seed,
        "find_epochs": cfg.train.epochs,
        "model": cfg.model.model,
        "dataset": cfg.data.dataset,
        "input_shape": [spec.channels, spec.size, spec.size],
        "rewind": pc.rewind,
        "imp_rounds": pc.imp_rounds,
        "rate_per_round": rate,
        "output_layer": out_name,
        "mask_sha256": mask.digest(),
        "levels": levels,
        "rewind_run": _run_summary(rewind_run, tdir) if rewind_run is not None else None,
        "find_train_seconds": sum(r.train_seconds for r in runs),
        "find_wall_seconds": sum(
            sum(row["train_seconds"] + row["eval_seconds"] for row in r.metrics) for r in runs
        )
        + prune_seconds,
        "find_wall_seconds_covers": "training + per-epoch held-out evaluation of every finding "
        "run + pruning (not data loading or test-set evaluation)",
        "catastrophic_overfitting": bool(flagged),
        "non_default": non_default(cfg),
        "environment": environment_info(),
    }
    _write_ticket(tdir, probe, arch, mask, rewind_state, meta, levels, runs)
    say(f"ticket: {tdir} (sparsity {mask.sparsity():.2%})")
    return load_ticket(tdir)


def rewind_epochs(run_cfg: RunConfig, kind: str, k: int, n_train: int) -> int:
    """The rewind point in whole epochs of the finding run (0 = θ0 itself).

    ``iter:K`` must be a whole number of epochs: a mid-epoch checkpoint would need a per-step hook
    in ``training.train``.
    """
    if kind in ("init", "path"):
        return 0
    if kind == "epoch":
        return k
    spe = _steps_per_epoch(n_train, run_cfg.data.batch_size)
    if k % spe:
        raise UserError(
            f"--rewind iter:{k} falls inside an epoch ({spe} iterations per epoch); use a multiple "
            f"of {spe} or epoch:K (mid-epoch checkpoints need a per-step hook in training.train)"
        )
    if k // spe >= run_cfg.train.epochs:
        raise UserError(
            f"--rewind iter:{k} is epoch {k // spe}, not inside the {run_cfg.train.epochs}-epoch "
            "finding run"
        )
    return k // spe


def _rewind_point(
    run_cfg: RunConfig,
    tdir: Path,
    k: int,
    theta0: dict[str, torch.Tensor],
    splits: Any,
    h: str,
    say: Callable[[str], None],
) -> tuple[dict[str, torch.Tensor], RunResult | None]:
    """θ_rewind after ``k`` epochs and the run that produced it (None when it is θ0 itself)."""
    if k == 0:
        return theta0, None
    res = train(
        prefix_config(run_cfg, k),
        tdir / f"rewind_epoch_{k}",
        splits=splits,
        extra={"ticket": h, "rewind_epoch": k},
        log=say,
    )
    start = read_model_checkpoint(res.run_dir / "init.pt")["state_dict"]
    if any(not torch.equal(start[n], theta0[n]) for n in theta0):
        raise UserError(
            f"{res.run_dir} did not start from the finding run's θ0; delete it and rerun"
        )
    return read_model_checkpoint(res.run_dir / "final.pt")["state_dict"], res


def _prune_level(
    ldir: Path,
    probe: nn.Module,
    mask: Mask,
    trained_path: Path,
    rate: float,
    overrides: Mapping[str, float],
    pc: PruneConfig,
    example: torch.Tensor,
    level: int,
    say: Callable[[str], None],
) -> tuple[Mask, dict[str, Any]]:
    """Prune ``rate`` of ``mask``'s survivors by the magnitudes in ``trained_path`` (once)."""
    mask_path, info_path = ldir / "mask.pt", ldir / "prune.json"
    if mask_path.exists() and info_path.exists():
        return Mask.load(mask_path, probe), read_json(info_path, what="pruning record")
    t0 = time.perf_counter()
    trained = read_model_checkpoint(trained_path)["state_dict"]
    new = magnitude_prune(
        trained,
        mask.weights_only(),
        rate,
        scope=pc.prune_scope,
        normalize_by_mean=pc.normalize_by_mean,
        layer_fractions=overrides,
    )
    if pc.mask_bn_channels:
        new = add_bn_channels(probe, new, example)
    info = {
        "level": level,
        "rate": rate,
        "layer_rates": dict(overrides),
        "scope": pc.prune_scope,
        "normalize_by_mean": pc.normalize_by_mean,
        "pruned_from": str(trained_path.relative_to(ldir.parent)),
        "prune_seconds": time.perf_counter() - t0,
        **new.report(),
    }
    # prune.json first: mask.pt is the marker of a finished level.
    atomic_write_json(info_path, info)
    new.save(mask_path)
    say(f"level {level}: pruned to sparsity {new.sparsity():.2%}")
    return new, info


def _write_ticket(
    tdir: Path,
    probe: nn.Module,
    arch: dict[str, Any],
    mask: Mask,
    rewind_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    levels: list[dict[str, Any]],
    runs: list[RunResult],
) -> None:
    load_state_dict_strict(probe, rewind_state, "rewind point")
    save_model(tdir / "rewind.pt", probe, arch, kind="rewind", rewind=meta["rewind"])
    mask.save(tdir / "mask.pt")
    atomic_write_json(
        tdir / "sparsity.json",
        {
            "ticket": meta["hash"],
            **mask.report(),
            "levels": [{"level": lv["level"], "sparsity": lv["sparsity"]} for lv in levels],
        },
    )
    atomic_write_json(
        tdir / "find_metrics.json",
        {
            "ticket": meta["hash"],
            "runs": [
                {
                    "run_dir": str(r.run_dir.relative_to(tdir)),
                    **read_json(r.run_dir / "metrics.json", what="metrics file"),
                }
                for r in runs
            ],
        },
    )
    atomic_write_json(tdir / "ticket.json", meta, checksum=True)


# ------------------------------------------------------------------------------- retraining


def _derived_seed(what: str, ticket_hash: str, seed: int) -> int:
    digest = hashlib.sha256(f"{what}:{ticket_hash}:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def control_start(
    ticket: Ticket, control: str | None, seed: int = 0
) -> tuple[Mask, dict[str, torch.Tensor]]:
    """The (mask, initial weights) a retraining run starts from.

    ``None``: the ticket (its mask, θ_rewind). ``"reinit"``: the same mask at a fresh init drawn
    from another seed (derived from the ticket and ``seed``; the official code used init seed 7,
    reinit seed 9). ``"random-mask"`` / ``"random-mask-global"``: the ticket's θ_rewind under the
    ticket's mask shuffled per layer (every layer keeps its sparsity) or over all layers (the
    global sparsity is kept); BN channel entries are recomputed for the new mask when the ticket
    has them. Initial weights are unmasked: ``training.train`` applies the mask.
    """
    if control is None:
        return ticket.mask, ticket.rewind_state
    if control not in CONTROLS:
        raise UserError(f"unknown control '{control}'; choose one of: {', '.join(CONTROLS)}")
    derived = _derived_seed(control, ticket.meta["hash"], seed)
    if control == "reinit":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived)
            fresh = build_from_arch(ticket.arch)
        return ticket.mask, {k: v.detach().cpu() for k, v in fresh.state_dict().items()}
    scope = "global" if control == "random-mask-global" else "layer"
    mask = random_mask(ticket.mask, scope, torch.Generator().manual_seed(derived))
    if ticket.mask.channel_names:
        example = torch.rand(2, *ticket.meta["input_shape"], generator=torch.Generator())
        mask = add_bn_channels(build_from_arch(ticket.arch), mask, example)
    return mask, ticket.rewind_state


def retrain_ticket(
    cfg: RunConfig,
    ticket: str | Path | Ticket,
    *,
    out: str | Path,
    control: str | None = None,
    log: Log = None,
    splits: Any = None,
) -> RunResult:
    """Retrain a ticket (or a control) with ``cfg`` in ``out/retrain_<hash>``.

    The hash covers the run settings plus the ticket's hash, its mask digest and the control. When
    ``cfg`` has warmup (``warmup_epochs`` > 0) but no ``warmup_lr``, the warmup starts at the
    ticket's finding lr, as in the paper (warm up from the finding lr to the peak lr); give the dense
    baseline ``--warmup-lr`` explicitly for the identical schedule. ``cfg.model.model`` must be the
    ticket's architecture.
    """
    if control is not None and control not in CONTROLS:
        raise UserError(f"unknown control '{control}'; choose one of: {', '.join(CONTROLS)}")
    t = ticket if isinstance(ticket, Ticket) else load_ticket(ticket)
    say = log or (lambda msg: None)
    found_with = t.arch["model"]
    if validate_model_name(cfg.model.model) != found_with:
        raise UserError(
            f"ticket {t.dir} was found with {found_with} but --model is {cfg.model.model}; "
            f"pass --model {found_with} (a mask only fits its architecture)"
        )
    if cfg.train.warmup_epochs > 0 and cfg.train.warmup_lr is None:
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, warmup_lr=t.meta["find_lr"])
        )
        say(
            f"warmup starts at the ticket's finding lr {t.meta['find_lr']:g}; pass --warmup-lr "
            f"{t.meta['find_lr']:g} to the dense baseline for the identical schedule"
        )
    mask, init_state = control_start(t, control, cfg.train.seed)
    extra = {"ticket": t.meta["hash"], "ticket_mask": t.mask.digest(), "control": control}
    run_dir = run_dir_for(cfg, out, prefix="retrain", extra=extra)
    say(
        f"run directory: {run_dir} (ticket {t.dir.name}, control {control or 'none'}, "
        f"sparsity {mask.sparsity():.2%})"
    )
    return train(
        cfg, run_dir, splits=splits, mask=mask, init_state=init_state, extra=extra, log=log
    )
