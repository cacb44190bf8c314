"""The Python API: what the CLI does, as functions with one convention for output directories.

Every function that trains takes ``out``, the root under which it creates a directory named by
the hash of the non-default settings -- ``out/train_<hash>`` (:func:`train`), ``out/ticket_<hash>``
(:func:`find_ticket`), ``out/retrain_<hash>`` (:func:`retrain_ticket`) -- or, for a suite, the
suite's own directory (:func:`run_suite`, default ``runs/bench/<suite>``). Rerunning with the same
settings resumes or returns the finished result without work. Results carry their model:
``RunResult.load_model()``, ``Ticket.build_model()``.

Example (``docs/api.md``)::

    import boosting_tickets as bt

    data = bt.DataConfig(dataset="synthetic", train_subset=64, val_size=16, test_subset=16)
    run = bt.train(bt.RunConfig(data=data, train=bt.TrainConfig(epochs=1)), out="runs")
    print(run.test["best"]["pgd_acc"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.errors import UserError
from .core.paths import RunPaths

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .bench.runner import BenchReport
    from .bench.suites import Suite
    from .report.build import Report
    from .tickets.config import FindConfig
    from .tickets.ticket import Ticket
    from .training.hparams import RunConfig
    from .training.run import RunResult

Log = Callable[[str], None] | None


def train(
    cfg: RunConfig, out: str | Path = "runs", *, log: Log = None, splits: Any = None
) -> RunResult:
    """Train (or resume, or return) run ``cfg`` in ``out/train_<hash>``."""
    from .training.run import run_dir_for
    from .training.run import train as train_in

    return train_in(cfg, run_dir_for(cfg, out), log=log, splits=splits)


def find_ticket(
    cfg: FindConfig, out: str | Path = "runs", *, log: Log = None, splits: Any = None
) -> Ticket:
    """Find (or return) the ticket ``cfg`` describes in ``out/ticket_<hash>``."""
    from .tickets.finding import find_ticket as find

    return find(cfg, out, log=log, splits=splits)


def retrain_ticket(
    cfg: RunConfig,
    ticket: str | Path | Ticket,
    out: str | Path = "runs",
    *,
    control: str | None = None,
    log: Log = None,
    splits: Any = None,
) -> RunResult:
    """Retrain ``ticket`` (or a control of it) with ``cfg`` in ``out/retrain_<hash>``."""
    from .tickets.retrain import retrain_ticket as retrain

    return retrain(cfg, ticket, out=out, control=control, log=log, splits=splits)


def run_suite(
    suite: str | Path | Suite,
    out: str | Path | None = None,
    *,
    seeds: Sequence[int] | None = None,
    log: Log = None,
    progress: bool | None = False,
) -> BenchReport:
    """Run suite ``suite`` (a name, a .toml path or a loaded suite) in ``out`` (default
    ``runs/bench/<suite>``) and write its ``results.json``."""
    from .bench.runner import run_suite as run
    from .bench.suites import Suite, load_suite

    s = suite if isinstance(suite, Suite) else load_suite(suite)
    target = Path("runs") / "bench" / s.name if out is None else Path(out)
    return run(s, out=target, seeds=seeds, log=log, progress=progress)


def regenerate_tables(results_dir: str | Path, out: str | Path = "results", **kw: Any) -> Report:
    """Every table, figure and the README under ``out`` from the results files in ``results_dir``."""
    from .report.build import regenerate

    return regenerate(results_dir, out, **kw)


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """The model of a checkpoint (``best.pt`` when ``path`` is a run directory)."""
    from .models.checkpoints import load_model as load

    p = Path(path)
    return load(RunPaths(p).best if p.is_dir() else p, device)[0]


def _split_of_run(path: Path, split: str) -> tuple[int, int]:
    """(val_size, data_seed) of the run a checkpoint belongs to, for its held-out split."""
    from .core.storage import read_json

    if split == "test":
        return 0, 0
    # The held-out split is defined by the run that trained the model: reproduce it exactly.
    hp = RunPaths(path.parent).hparams
    if not hp.exists():
        raise UserError(
            f"--split val needs a checkpoint inside a run directory ({hp} not found), "
            "because the run's settings define its held-out split; use --split test"
        )
    data_cfg = read_json(hp, what="hparams file").get("config", {}).get("data", {})
    val_size, data_seed = int(data_cfg.get("val_size", 0)), int(data_cfg.get("data_seed", 0))
    if val_size == 0:
        raise UserError(f"the run in {path.parent} held out no validation data; use --split test")
    return val_size, data_seed


def _run_config(path: Path) -> Any:
    """The RunConfig of the run a checkpoint lies in (its hparams.json), or None."""
    from .core.config import from_dict
    from .core.storage import read_json
    from .training.hparams import RunConfig

    hp = RunPaths(path.parent).hparams
    if not hp.is_file():
        return None
    record = read_json(hp, what="hparams file")
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"{hp} holds no run settings (damaged); re-create the run")
    return from_dict(RunConfig, config, source=str(hp))


def _protocol(run: Any, spec: Any, given: dict, autoattack: bool, attacks: tuple) -> Any:
    """The run's evaluation protocol (or the standard one) with the arguments given applied; a
    threat model other than the run's takes the dataset's eps for it unless ``eps`` is given."""
    import dataclasses

    from .adversarial.protocol import EvalProtocol
    from .adversarial.spec import check_threat
    from .training.hparams import eval_protocol

    changes = {k: v for k, v in given.items() if v is not None}
    norm = check_threat(changes.get("norm", "Linf" if run is None else run.eval.threat))
    changes["norm"] = norm
    if run is None or norm != run.eval.threat:
        changes.setdefault("eps", spec.eps_for(norm))
    base = EvalProtocol(eps=changes["eps"], norm=norm) if run is None else eval_protocol(run)
    return dataclasses.replace(base, **changes, autoattack=autoattack, attacks=attacks)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path = "data",
    split: str = "test",
    n_examples: int | None = None,
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    restarts: int | None = None,
    random_start: bool | None = None,
    bn_mode: str | None = None,
    seed: int | None = None,
    threat: str | None = None,
    channels_last: bool | None = None,
    fold_bn: bool | None = None,
    autoattack: bool = False,
    attacks: Sequence[str] = (),
    batch_size: int = 500,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Clean, FGSM, PGD-k (and further registered attacks, optionally AutoAttack) accuracy of a
    checkpoint (a run directory means its ``best.pt``) on the first ``n_examples`` images of its
    dataset's ``split`` (``test``, or ``val``: the run's own held-out split). A checkpoint inside a
    run directory is evaluated by default on the run's own data (its test subset and data seed)
    under the run's evaluation protocol, so the result equals the run's ``test_eval.json``; every
    protocol argument left None takes the run's value, else the standard one (the dataset's eps,
    PGD-20, step eps/4, 1 random restart, BN eval, seed 0). ``threat`` ``"L2"`` measures PGD-L2 and
    FGM (and AutoAttack L2) at the L2 ``eps`` (default: the dataset's, CIFAR-10 0.5) instead of
    the run's L∞ attacks. ``channels_last``, ``fold_bn`` (eval-mode BatchNorm folded into the
    convolutions): None = the run's kernels, else the measured choice. Returns the evaluation
    dict with the checkpoint, dataset, split, architecture, kernels and environment recorded."""
    from .adversarial.evaluation import evaluate
    from .core.environment import environment_info, resolve_device
    from .data.registry import get_spec
    from .models.checkpoints import load_model as load

    path = Path(checkpoint)
    path = RunPaths(path).best if path.is_dir() else path
    dev = resolve_device(str(device))
    model, ckpt = load(path, dev)
    name = dataset or ckpt["arch"].get("dataset")
    if name is None:
        raise UserError(f"{path} does not name its dataset; pass --dataset")
    spec = get_spec(name)
    run = _run_config(path)
    kernels, model = _eval_kernels(
        model, path, run, ckpt["arch"]["model"], dev, channels_last, fold_bn
    )
    given = {"eps": eps, "pgd_steps": steps, "step_size": step_size, "restarts": restarts,
             "random_start": random_start, "bn_mode": bn_mode, "seed": seed,
             "norm": threat}  # fmt: skip
    protocol = _protocol(run, spec, given, autoattack, tuple(attacks))
    splits = _eval_splits(path, run, dataset, name, data_dir, split)
    if spec.channels != ckpt["arch"]["in_channels"]:
        raise UserError(
            f"{path} expects {ckpt['arch']['in_channels']}-channel inputs but {name} has "
            f"{spec.channels}; pass the right --dataset"
        )
    data = splits.test if split == "test" else splits.val
    images, labels = data.images[:n_examples], data.labels[:n_examples]
    result = evaluate(
        model, images, labels, protocol, batch_size=batch_size, num_classes=spec.num_classes,
        per_class=True, device=dev, progress=progress,
    )  # fmt: skip
    result.update(
        checkpoint=str(path), dataset=name, split=split, arch=ckpt["arch"],
        kernels=kernels.record(), environment=environment_info(dev),
    )  # fmt: skip
    return result


def _eval_splits(
    path: Path, run: Any, dataset: str | None, name: str, data_dir: str | Path, split: str
) -> Any:
    """The data ``evaluate_checkpoint`` reads: the run's own splits when the checkpoint is a run's
    and ``dataset`` is its own, else dataset ``name`` split as the checkpoint's run split it."""
    import dataclasses

    from .data.splits import load_splits

    if run is not None and dataset in (None, run.data.dataset):
        splits = dataclasses.replace(run.data, data_dir=str(data_dir)).load()
        if split == "val" and not len(splits.val.labels):
            raise UserError(
                f"the run in {path.parent} held out no validation data; use --split test"
            )
        return splits
    val_size, data_seed = _split_of_run(path, split)
    return load_splits(name, data_dir, val_size=val_size, data_seed=data_seed)


def _eval_kernels(
    model: nn.Module,
    path: Path,
    run: Any,
    name: str,
    dev: Any,
    channels_last: bool | None,
    fold_bn: bool | None = None,
) -> tuple[Any, nn.Module]:
    """The evaluation's kernels and ``model`` prepared with them (``training.kernels.prepare``):
    each flag given, else those the checkpoint's run recorded (so that the result equals its
    test_eval.json), else the measured choice for the model ``name`` on ``dev``. Evaluation is
    never compiled."""
    from .training.kernels import KernelChoice, choose, prepare, recorded, recorded_record

    chosen = choose(dev.type, name, channels_last=channels_last, compile=None, fold_bn=fold_bn)
    if run is not None:
        rec = recorded(recorded_record(path.parent), bool(run.train.channels_last))
        cl = rec.channels_last if channels_last is None else channels_last
        fold = rec.fold_bn if fold_bn is None else fold_bn
        source = chosen.source if channels_last is not None and fold_bn is not None else (
            f"the run's: {rec.source}")  # fmt: skip
        kernels = KernelChoice(cl, False, source, fold)
    else:
        kernels = KernelChoice(chosen.channels_last, False, chosen.source, chosen.fold_bn)
    return kernels, prepare(model, kernels)
