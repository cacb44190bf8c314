"""Finding a boosting ticket: train from θ0, prune, rewind the survivors.

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
    level_0/train/      the dense finding run (a training run directory; its init.pt is θ0); for
                        an iter:K inside an epoch, its step_K.pt is θ_K (weights after step K)
    rewind_epoch_K/     rewind epoch:K (or iter:K at an epoch's end) only: the same run stopped
                        after K epochs (final.pt = θ_K; same seed and schedule, so the weights
                        are those of epoch K)
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
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import check_ranges, config_hash, non_default, to_dict
from ..core.distributed import Distributed, current
from ..core.environment import environment_info
from ..core.errors import UserError
from ..core.paths import TICKET_PREFIX, RunPaths, TicketPaths, hashed_dir
from ..core.storage import atomic_write_json, read_json, safe_torch_load
from ..models.checkpoints import load_state_dict_strict, read_model_checkpoint, save_model
from ..models.masks import Mask
from ..models.registry import build_model
from ..training.callbacks import SNAPSHOT_FORMAT, StepSnapshot
from ..training.directories import check_hparams, claimed, create_claimed
from ..training.hparams import RunConfig
from ..training.run import RunResult, train
from .config import FindConfig, parse_rewind
from .criteria import criteria
from .pruning import output_layer_name, per_round_rate, prune_by_scores, with_bn_channels
from .ticket import TICKET_FORMAT, Ticket, external_state, load_ticket, rewind_identity

Log = Callable[[str], None] | None


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


@dataclass(frozen=True)
class RewindAt:
    """Where the rewind point lies in the finding run: ``epochs`` whole epochs (0 = θ0 itself, or
    the checkpoint of ``--rewind PATH``), or, for an ``iter:K`` inside an epoch, optimizer step
    ``step`` of the level-0 run itself (a step snapshot; ``epochs`` is then 0)."""

    epochs: int = 0
    step: int | None = None


def rewind_at(run_cfg: RunConfig, kind: str, k: int, n_train: int) -> RewindAt:
    """The rewind point of ``--rewind`` (parsed: ``kind``, ``k``) in a finding run on ``n_train``
    images; one-line UserError if it lies beyond the run's optimizer steps."""
    from ..data.batching import epoch_layout

    if kind in ("init", "path"):
        return RewindAt()
    if kind == "epoch":
        return RewindAt(epochs=k)
    spe = epoch_layout(n_train, run_cfg.data.batch_size).steps
    total = spe * run_cfg.train.epochs
    if k >= total:
        raise UserError(
            f"--rewind iter:{k} lies beyond the finding run's {total} optimizer steps "
            f"({run_cfg.train.epochs} epochs of {spe}); use K < {total} or more --epochs"
        )
    return RewindAt(epochs=k // spe) if k % spe == 0 else RewindAt(step=k)


def run_summary(result: RunResult, root: Path) -> dict[str, Any]:
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


@dataclass
class _Search:
    """One ticket search in progress: its settings, directory, data and the runs so far."""

    cfg: FindConfig
    paths: TicketPaths
    digest: str
    splits: Any
    probe: nn.Module
    log: Log
    dist: Distributed
    runs: list[RunResult] = field(default_factory=list)

    def say(self, msg: str, prefix: str | None = None) -> None:
        if self.log is not None and self.dist.primary:
            self.log(msg if prefix is None else f"[{prefix}] {msg}")

    def logger(self, prefix: str) -> Callable[[str], None]:
        return lambda msg: self.say(msg, prefix)

    def train(self, run_dir: Path, cfg: RunConfig, prefix: str, **kw: Any) -> RunResult:
        res = train(cfg, run_dir, splits=self.splits, log=self.logger(prefix), dist=self.dist, **kw)
        self.runs.append(res)
        return res

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training split in file order, unaugmented: the data a criterion may score on."""
        from ..data.batching import BatchLoader

        train_set = self.splits.train
        yield from BatchLoader(
            train_set.images,
            train_set.labels,
            batch_size=self.cfg.data.batch_size,
            shuffle=False,
            generator=torch.Generator(),
        )


def find_ticket(
    cfg: FindConfig,
    out: str | Path,
    *,
    log: Log = None,
    splits: Any = None,
    dist: Distributed | None = None,
    wait: float | None = None,
) -> Ticket:
    """Find a boosting ticket in ``out/ticket_<hash>/`` (see the module docstring for the layout).

    Trains the dense network from θ0 with ``cfg.train`` (default: natural, lr 0.01, no warmup),
    prunes ``cfg.prune.sparsity`` of the prunable weights in ``imp_rounds`` rounds by the pruning
    criterion (each IMP round retrains the subnetwork from the rewind point before pruning again),
    and stores the mask with the rewind point. ``splits`` (from ``data.load_splits``) avoids
    reloading the data. Idempotent: a finished ticket is returned without any work or write.

    The ticket directory is claimed during the search (``core.claims``; ``wait`` as in
    :func:`training.run.train`). Under ``torchrun`` every rank trains its shard of every finding
    run and computes the same mask; only rank 0 writes.
    """
    dist = current() if dist is None else dist
    if not dist.primary:
        log = None
    check_ranges(cfg)
    cfg.validate()
    extra = rewind_identity(cfg.prune)
    digest = config_hash(cfg, extra)
    paths = TicketPaths(hashed_dir(out, TICKET_PREFIX, digest))
    if paths.meta.exists():
        if log is not None:
            log(f"{paths.dir.name}: ticket already found, nothing to do")
        return load_ticket(paths.dir)
    # Everything that can reject the input runs before the ticket directory is created.
    splits = cfg.data.load() if splits is None else splits
    pc, run_cfg = cfg.prune, cfg.run_config()
    kind, k = parse_rewind(pc.rewind)
    where = rewind_at(run_cfg, kind, k, len(splits.train.labels))
    spec = splits.spec
    probe = build_model(cfg.model.model, num_classes=spec.num_classes, in_channels=spec.channels)
    base_mask = Mask.for_model(probe, pc.prune_ignore)  # rejects unknown --prune-ignore patterns
    start = external_state(pc.rewind) if kind == "path" else None
    if start is not None:
        load_state_dict_strict(probe, start, f"rewind checkpoint {pc.rewind}")
    record = {"kind": "ticket", "hash": digest, "non_default": non_default(cfg)}
    record = {**record, "config": to_dict(cfg), "extra": extra}
    if paths.hparams.exists():
        check_hparams(paths.hparams, record, write=False)
    search = _Search(cfg, paths, digest, splits, probe, log, dist)
    with claimed(paths.dir, f"finding {paths.dir.name}", dist, wait):
        if paths.meta.exists():  # found by another process while we waited
            return load_ticket(paths.dir)
        create_claimed(paths.dir, paths.hparams, record, dist, "ticket directory")
        _search(search, start, where, base_mask)
    return load_ticket(paths.dir)


def _search(search: _Search, start: Any, where: RewindAt, base_mask: Mask) -> None:
    """The finding runs, the pruning rounds and the ticket's files."""
    paths, digest, run_cfg = search.paths, search.digest, search.cfg.run_config()
    search.say(f"ticket directory: {paths.dir}")
    snapshot = RunPaths(paths.level_run(0)).step_snapshot(where.step or 0)
    level0 = search.train(
        paths.level_run(0),
        run_cfg,
        "level 0",
        init_state=start,
        extra={"ticket": digest, "level": 0},
        callbacks=[StepSnapshot(snapshot, where.step, search.dist.primary)] if where.step else [],
    )
    init_ckpt = read_model_checkpoint(level0.paths.init)
    if where.step:
        rewind_state, rewind_run = _step_snapshot(snapshot, where.step, init_ckpt), None
    else:
        rewind_state, rewind_run = _rewind_point(search, where.epochs, init_ckpt["state_dict"])
    if search.cfg.prune.structure == "channels":
        from .structured import find_structured

        find_structured(search, level0, rewind_state, init_ckpt["arch"], rewind_run)
        return
    mask, levels, prune_seconds = _prune_levels(search, base_mask, level0, rewind_state)
    meta = ticket_meta(search, mask, levels, rewind_run, prune_seconds)
    if search.dist.primary:
        write_ticket(search, init_ckpt["arch"], mask, rewind_state, meta, levels)
    search.dist.barrier()
    search.say(f"ticket: {paths.dir} (sparsity {mask.sparsity():.2%})")


def _step_snapshot(path: Path, step: int, init_ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """θ_rewind of a mid-epoch ``iter:K``: the level-0 run's snapshot after step K, checked."""
    fix = f"delete {path.parent} and rerun find-ticket"
    if not path.is_file():
        raise UserError(f"the finding run has no snapshot of step {step} ({path.name}); {fix}")
    snap = safe_torch_load(path, what="step snapshot")
    sd = snap.get("state_dict") if isinstance(snap, dict) else None
    if (
        not isinstance(snap, dict)
        or snap.get("format") != SNAPSHOT_FORMAT
        or snap.get("step") != step
        or not isinstance(sd, dict)
        or not all(torch.is_tensor(v) for v in sd.values())
    ):
        raise UserError(f"{path} is not the snapshot of step {step} (damaged); {fix}")
    theta0 = init_ckpt["state_dict"]
    bad = [k for k in theta0 if k not in sd or sd[k].shape != theta0[k].shape] + [
        k for k in sd if k not in theta0
    ]
    if bad or any(v.is_floating_point() and not v.isfinite().all() for v in sd.values()):
        raise UserError(f"{path} does not hold this model's finite weights (damaged); {fix}")
    return {k: v.detach().cpu() for k, v in sd.items()}


def _rewind_point(
    search: _Search, k: int, theta0: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], RunResult | None]:
    """θ_rewind after ``k`` epochs and the run that produced it (None when it is θ0 itself)."""
    if k == 0:
        return theta0, None
    res = search.train(
        search.paths.rewind_run(k),
        prefix_config(search.cfg.run_config(), k),
        f"rewind {search.cfg.prune.rewind}",
        extra={"ticket": search.digest, "rewind_epoch": k},
    )
    start = read_model_checkpoint(res.paths.init)["state_dict"]
    if any(not torch.equal(start[n], theta0[n]) for n in theta0):
        raise UserError(
            f"{res.run_dir} did not start from the finding run's θ0; delete it and rerun"
        )
    return read_model_checkpoint(res.paths.final)["state_dict"], res


def _prune_levels(
    search: _Search, mask: Mask, level0: RunResult, rewind_state: dict[str, torch.Tensor]
) -> tuple[Mask, list[dict[str, Any]], float]:
    """Every pruning round (IMP retrains between rounds); returns the mask, levels, prune time."""
    pc, spec = search.cfg.prune, search.splits.spec
    rate = per_round_rate(pc.sparsity, pc.imp_rounds)
    out_name = output_layer_name(search.probe)
    overrides = {out_name: rate * pc.output_rate} if pc.output_rate != 1.0 else {}
    overrides = {n: f for n, f in overrides.items() if n in mask}
    example = torch.rand(2, spec.channels, spec.size, spec.size, generator=torch.Generator())
    trained_path = level0.paths.final
    levels: list[dict[str, Any]] = [
        {"level": 0, "sparsity": 0.0, **run_summary(level0, search.paths.dir)}
    ]
    prune_seconds = 0.0
    for level in range(1, pc.imp_rounds + 1):
        mask, info = _prune_level(search, mask, trained_path, rate, overrides, example, level)
        prune_seconds += info["prune_seconds"]
        entry: dict[str, Any] = {"level": level, "sparsity": mask.sparsity()}
        if level < pc.imp_rounds:
            res = search.train(
                search.paths.level_run(level),
                search.cfg.run_config(),
                f"level {level}",
                mask=mask,
                init_state=rewind_state,
                extra={"ticket": search.digest, "level": level, "mask": mask.digest()},
            )
            entry.update(run_summary(res, search.paths.dir))
            trained_path = res.paths.final
        levels.append(entry)
    return mask, levels, prune_seconds


def _prune_level(
    search: _Search,
    mask: Mask,
    trained_path: Path,
    rate: float,
    overrides: Mapping[str, float],
    example: torch.Tensor,
    level: int,
) -> tuple[Mask, dict[str, Any]]:
    """Prune ``rate`` of ``mask``'s survivors by the criterion's scores of ``trained_path`` (once)."""
    pc, paths, probe = search.cfg.prune, search.paths, search.probe
    mask_path, info_path = paths.level_mask(level), paths.level_prune_record(level)
    if mask_path.exists() and info_path.exists():
        search.dist.barrier()  # the same number of barriers on every rank, found or computed
        return Mask.load(mask_path, probe), read_json(info_path, what="pruning record")
    t0 = time.perf_counter()
    trained = read_model_checkpoint(trained_path)["state_dict"]
    criterion = criteria().get(pc.criterion, flag="--criterion")
    if criterion.needs_data:
        load_state_dict_strict(probe, trained, f"trained checkpoint {trained_path}")
        probe.eval()
    weights = mask.weights_only()
    scores = criterion.score(trained, weights, model=probe, batches=search.batches, config=pc)
    new = prune_by_scores(scores, weights, rate, scope=pc.prune_scope, layer_fractions=overrides)
    if pc.mask_bn_channels:
        new = with_bn_channels(probe, new, example)
    info = {
        "level": level,
        "rate": rate,
        "layer_rates": dict(overrides),
        "scope": pc.prune_scope,
        "criterion": pc.criterion,
        "normalize_by_mean": pc.normalize_by_mean,
        "pruned_from": str(trained_path.relative_to(paths.dir)),
        "prune_seconds": time.perf_counter() - t0,
        **new.report(),
    }
    # prune.json first: mask.pt is the marker of a finished level. Every rank computed the same
    # mask from the same checkpoint; the primary writes it.
    if search.dist.primary:
        atomic_write_json(info_path, info)
        new.save(mask_path)
    search.dist.barrier()
    search.say(f"level {level}: pruned to sparsity {new.sparsity():.2%}")
    return new, info


def ticket_meta(
    search: _Search,
    mask: Mask,
    levels: list[dict[str, Any]],
    rewind_run: RunResult | None,
    prune_seconds: float,
) -> dict[str, Any]:
    """``ticket.json``: what was found, how, and what it cost (wall times of every finding run)."""
    cfg, pc, spec, runs = search.cfg, search.cfg.prune, search.splits.spec, search.runs
    flagged = [(lv["level"], lv["overfit_epochs"]) for lv in levels if lv.get("overfit_epochs")]
    for level, epochs in flagged:
        search.say(
            f"level {level}: catastrophic overfitting flagged at epoch(s) {epochs}; the ticket is "
            "still usable (the paper's FGSM-found ticket came from such a model)"
        )
    wall = sum(sum(row["train_seconds"] + row["eval_seconds"] for row in r.metrics) for r in runs)
    return {
        "format": TICKET_FORMAT,
        "schema": 1,
        "hash": search.digest,
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
        "rate_per_round": per_round_rate(pc.sparsity, pc.imp_rounds),
        "output_layer": output_layer_name(search.probe),
        "mask_sha256": mask.digest(),
        "levels": levels,
        "rewind_run": run_summary(rewind_run, search.paths.dir) if rewind_run else None,
        "find_train_seconds": sum(r.train_seconds for r in runs),
        "find_work_flops": sum(_run_work(r) for r in runs),
        "find_wall_seconds": wall + prune_seconds,
        "find_wall_seconds_covers": "training + per-epoch held-out evaluation of every finding "
        "run + pruning (not data loading or test-set evaluation)",
        "catastrophic_overfitting": bool(flagged),
        "non_default": non_default(cfg),
        "environment": environment_info(),
    }


def _run_work(run: Any) -> float:
    """Training FLOPs of one finding run (0 for a run written before work was recorded)."""
    return float(run.metrics[-1].get("cum_work_flops", 0.0)) if run.metrics else 0.0


def write_ticket(
    search: _Search,
    arch: dict[str, Any],
    mask: Mask,
    rewind_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    levels: list[dict[str, Any]],
    probe: Any = None,
) -> None:
    """Write the ticket's files; ``ticket.json`` last, as the marker of a finished search
    (``probe``: the ticket's own network when it is not the searched one, a structured ticket)."""
    paths, probe = search.paths, (search.probe if probe is None else probe)
    load_state_dict_strict(probe, rewind_state, "rewind point")
    save_model(paths.rewind, probe, arch, kind="rewind", rewind=meta["rewind"])
    mask.save(paths.mask)
    atomic_write_json(
        paths.sparsity,
        {
            "ticket": meta["hash"],
            **mask.report(),
            "levels": [{"level": lv["level"], "sparsity": lv["sparsity"]} for lv in levels],
        },
    )
    runs = [
        {
            "run_dir": str(r.run_dir.relative_to(paths.dir)),
            **read_json(r.paths.metrics, what="metrics file"),
        }
        for r in search.runs
    ]
    atomic_write_json(paths.find_metrics, {"ticket": meta["hash"], "runs": runs})
    atomic_write_json(paths.meta, meta, checksum=True)
