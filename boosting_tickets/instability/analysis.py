"""Training the second copy of a run and measuring the path between the two (Frankle et al. 2020).

A source is a finished training run: a dense ``train_<hash>`` run, or a ``retrain_<hash>`` run of a
ticket or one of its controls (a suite's ``results.json`` names them all). Copy 1 is the source
itself. Copy 2 is the same run from the same init with one difference: from optimizer step K on,
its SGD noise (data order, augmentation, attack starts, dropout) comes from another seed
(``training.noise``). On the CPU with fixed seeds, the two share their weights exactly up to step
K. The path between their final weights is measured by :mod:`.path`; every row of
``instability.json`` records its protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import from_dict
from ..core.environment import environment_info, resolve_device
from ..core.errors import UserError
from ..core.paths import RETRAIN_PREFIX, TRAIN_PREFIX, RunPaths
from ..core.storage import atomic_write_json, read_json
from ..report.instability import FORMAT, RESULTS_NAME, SCHEMA, read_instability
from .config import MAX_SEED, NOISE_OFFSET, InstabilityConfig
from .path import alphas, path_errors, summary

Log = Callable[[str], None] | None


@dataclass
class Source:
    """One finished run whose instability is measured (copy 1)."""

    run_dir: Path
    label: str  # the arm of a suite, or the run directory's name
    kind: str  # dense, ticket, or a control's row kind
    cfg: Any  # its RunConfig
    record: dict[str, Any]  # its hparams.json
    ticket_dir: Path | None = None


def _source(run_dir: Path, label: str, kind: str | None, ticket_dir: Path | None) -> Source:
    from ..training.hparams import RunConfig

    paths = RunPaths(run_dir)
    record = read_json(paths.hparams, what="hparams file")
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"{paths.hparams} holds no run settings (damaged); re-create the run")
    cfg = from_dict(RunConfig, config, source=str(paths.hparams))
    extra = record.get("extra") or {}
    if not paths.final.is_file():
        raise UserError(f"{run_dir} has no final.pt: finish the run first (rerun its command)")
    if extra.get("ticket") and ticket_dir is None:
        ticket_dir = _find_ticket(run_dir, extra["ticket"])
    if kind is None:
        kind = "dense" if not extra.get("ticket") else (extra.get("control") or "ticket")
    return Source(run_dir, label, kind, cfg, record, ticket_dir)


def _find_ticket(run_dir: Path, digest: str) -> Path:
    """The ticket a retraining run came from: ``ticket_<hash>`` beside it or in ``../tickets``."""
    name = f"ticket_{digest}"
    for place in (run_dir.parent, run_dir.parent.parent / "tickets", run_dir.parent.parent):
        if (place / name).is_dir():
            return place / name
    raise UserError(
        f"{run_dir} retrains ticket {name}, which is neither beside it nor in ../tickets; "
        "pass --ticket DIR"
    )


def sources(path: str | Path, ticket: str | Path | None = None) -> list[Source]:
    """The runs to measure: every finished measured row of a suite directory's ``results.json``,
    or the one run directory ``path``."""
    from ..report.results import read_results

    root = Path(path)
    if (root / "results.json").is_file():
        doc = read_results(root / "results.json")
        out = []
        for row in doc["rows"]:
            if row.get("source") != "measured" or not row.get("run_dir"):
                continue
            t = root / row["ticket_dir"] if row.get("ticket_dir") else None
            out.append(_source(root / row["run_dir"], row["arm"], row["kind"], t))
        if not out:
            raise UserError(f"{root}/results.json lists no finished runs")
        return out
    if RunPaths(root).hparams.is_file():
        return [_source(root, root.name, None, Path(ticket) if ticket else None)]
    raise UserError(
        f"{root} is neither a run directory (hparams.json) nor a suite directory (results.json)"
    )


def _start(src: Source) -> tuple[Any, dict[str, torch.Tensor]]:
    """(mask, init weights) the source trained from: its init.pt, and for a retraining the mask
    its control derives from the ticket (checked against the init's pruned zeros)."""
    from ..models.checkpoints import read_model_checkpoint

    init = read_model_checkpoint(RunPaths(src.run_dir).init)["state_dict"]
    extra = src.record.get("extra") or {}
    if not extra.get("ticket"):
        return None, init
    from ..tickets.retrain import retrain_start
    from ..tickets.ticket import load_ticket
    from ..tickets.transfer import HEADS

    assert src.ticket_dir is not None
    ticket = load_ticket(src.ticket_dir)
    if ticket.meta["hash"] != extra["ticket"]:
        raise UserError(f"{src.ticket_dir} is not the ticket {src.run_dir} retrains")
    head = (extra.get("transfer") or {}).get("head")  # "kept" when the shapes agree
    mask, _, _ = retrain_start(ticket, extra.get("control"), src.cfg, head if head in HEADS
                               else HEADS[0])  # fmt: skip
    for name in mask.weight_names():
        if bool((init[name][~mask[name].bool()] != 0).any()):
            raise UserError(f"{src.run_dir}/init.pt does not fit the mask of {src.ticket_dir}")
    return mask, init


def _copy(
    src: Source, start: tuple[Any, dict[str, torch.Tensor]], k: int, noise_seed: int, out: Path,
    splits: Any, log: Log,
) -> Any:  # fmt: skip
    """Train copy 2 of ``src`` from ``start`` = (mask, init) (noise from ``noise_seed`` after step
    ``k``) under ``out``."""
    from ..training.run import run_dir_for, train

    cfg = src.cfg
    cfg2 = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, noise_seed=noise_seed, noise_step=k),
        eval=dataclasses.replace(cfg.eval, test_eval=False),
    )
    mask, init = start
    extra = {**(src.record.get("extra") or {}), "instability_of": src.record.get("hash")}
    prefix = RETRAIN_PREFIX if mask is not None else TRAIN_PREFIX
    run_dir = run_dir_for(cfg2, out / "copies", prefix=prefix, extra=extra)
    res = train(cfg2, run_dir, splits=splits, mask=mask, init_state=init, extra=extra, log=log)
    from ..models.checkpoints import read_model_checkpoint

    mine = read_model_checkpoint(RunPaths(run_dir).init)["state_dict"]
    if any(not torch.equal(mine[n], v) for n, v in init.items()):
        raise UserError(f"{run_dir} did not start from {src.run_dir}'s init; delete it and rerun")
    return res


def _key(row: dict[str, Any]) -> tuple:
    p = row["protocol"]
    return (row["source_run"], row["rewind_step"], row["noise_seed_b"], len(row["alphas"]),
            p["n"], p["bn_images"])  # fmt: skip


def measure_source(
    src: Source, cfg: InstabilityConfig, out: Path, root: Path, *, log: Log = None
) -> list[dict[str, Any]]:
    """Rows (one per K of ``cfg.steps``) of one source: train copy 2, measure the path."""
    from ..adversarial.evaluation import evaluate
    from ..data.batching import epoch_layout
    from ..data.splits import to_unit_float
    from ..models.checkpoints import build_from_arch, read_model_checkpoint
    from ..training.hparams import eval_protocol

    say = log or (lambda msg: None)
    run = src.cfg
    splits = run.data.load()
    spe = epoch_layout(len(splits.train.labels), run.data.batch_size).steps
    total = spe * run.train.epochs
    late = [k for k in cfg.steps if k >= total]
    if late:
        raise UserError(
            f"{src.run_dir} has no state at step {late[0]}: it took {total} optimizer steps "
            f"({run.train.epochs} epochs of {spe}); use --steps below {total}"
        )
    seed_b = _noise_seed(src, cfg)
    if seed_b > MAX_SEED or seed_b == run.train.seed:
        raise UserError(f"--noise-seed {seed_b} must differ from the run seed and be < 2^63")
    device = resolve_device(cfg.device)
    final = read_model_checkpoint(RunPaths(src.run_dir).final)
    model = build_from_arch(final["arch"]).to(device)
    protocol = dataclasses.replace(eval_protocol(run), fgsm=False)
    n = min(cfg.n_examples or len(splits.test.labels), len(splits.test.labels))
    images, labels = splits.test.images[:n], splits.test.labels[:n]
    bn = None
    if cfg.bn_images:
        raw = splits.train.images[: cfg.bn_images]
        bn = to_unit_float(raw) if raw.dtype == torch.uint8 else raw.float()

    def measure(m: Any) -> dict[str, float]:
        return evaluate(m, images, labels, protocol, batch_size=cfg.eval_batch_size, device=device)

    start = _start(src)  # read once: every K starts from the same mask and init
    commit = environment_info().get("git_commit")
    rows = []
    for k in cfg.steps:
        say(f"{src.label}: copy 2 with noise seed {seed_b} after step {k} of {total}")
        copy = _copy(src, start, k, seed_b, out, splits, log if cfg.progress else None)
        w2 = read_model_checkpoint(RunPaths(copy.run_dir).final)["state_dict"]
        pts = path_errors(model, final["state_dict"], w2, alphas(cfg.alphas), measure, bn)
        rows.append({
            "arm": src.label, "kind": src.kind, "seed": run.train.seed,
            "model": run.model.model, "dataset": run.data.dataset,
            "source_run": _rel(src.run_dir, root), "source_hash": src.record.get("hash"),
            "copy_run": _rel(copy.run_dir, root), "rewind_step": k, "steps_total": total,
            "steps_per_epoch": spe, "noise_seed_a": run.train.seed, "noise_seed_b": seed_b,
            "alphas": [p["alpha"] for p in pts], "clean_err": [p["clean_err"] for p in pts],
            "pgd_err": [p["pgd_err"] for p in pts], **summary(pts),
            "protocol": {**protocol.record(n), "norm": "Linf", "n": n,
                         "bn_images": cfg.bn_images if bn is not None else 0,
                         "bn_recomputed": bn is not None, "split": "test",
                         "commit": commit},
        })  # fmt: skip
        r = rows[-1]
        say(f"{src.label} K={k}: instability clean {r['instability_clean']:.2%}, PGD "
            f"{r['instability_pgd']:.2%}")  # fmt: skip
    return rows


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def run_instability(
    source: str | Path,
    cfg: InstabilityConfig,
    out: str | Path,
    *,
    ticket: str | Path | None = None,
    log: Log = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Measure every source of ``source`` at every K of ``cfg``; rows already in
    ``<out>/instability.json`` under the same settings are kept, not measured again.
    Returns (the results file, all its rows)."""
    cfg.validate()
    found = sources(source, ticket)
    out = Path(out)
    results = out / RESULTS_NAME
    rows = read_instability(results)["rows"] if results.exists() else []
    done = {_key(r) for r in rows}
    for src in found:
        want = [k for k in cfg.steps if not _is_done(src, k, cfg, done, out)]
        if not want:
            continue
        new = measure_source(src, dataclasses.replace(cfg, steps=tuple(want)), out, out, log=log)
        rows = [r for r in rows if _key(r) not in {_key(x) for x in new}] + new
        rows.sort(key=lambda r: (r["arm"], r["seed"], r["rewind_step"]))
        atomic_write_json(
            results,
            {"format": FORMAT, "schema": SCHEMA, "rows": rows, "environment": environment_info()},
            checksum=True,
        )
    return results, rows


def _noise_seed(src: Source, cfg: InstabilityConfig) -> int:
    """Copy 2's noise seed: ``--noise-seed``, else the run's seed + NOISE_OFFSET."""
    return cfg.noise_seed if cfg.noise_seed is not None else src.cfg.train.seed + NOISE_OFFSET


def _is_done(src: Source, k: int, cfg: InstabilityConfig, done: set, out: Path) -> bool:
    seed_b = _noise_seed(src, cfg)
    n_test = src.cfg.data.test_subset
    n = cfg.n_examples if cfg.n_examples is not None else n_test
    return any(
        d[0] == _rel(src.run_dir, out) and d[1] == k and d[2] == seed_b and d[3] == cfg.alphas
        and (n is None or d[4] == n) and d[5] == cfg.bn_images
        for d in done
    )  # fmt: skip
