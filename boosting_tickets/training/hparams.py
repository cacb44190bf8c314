"""The settings of a training run, as typed dataclasses with defaults and help text.

TOML layout::

    [data]   dataset, train_subset, ...
    [model]  model, dropout, normalize
    [train]  objective, epochs, lr, schedule, train_eps, ...
    [eval]   eval_eps, eval_steps, ...

Every leaf is also a CLI flag of ``boosting-tickets train`` (``--epochs 5``). The defaults are the CPU
defaults (small WideResNet on Fashion-MNIST); the paper's CIFAR-10 recipes live in suite files.
Choices come from the registries (datasets, model families, objectives) when they are checked, and
the functions at the bottom derive, in one place each, what a run's settings imply: the training
attack, the evaluation protocol, the held-out size and the metric that selects the best checkpoint.
This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..adversarial.spec import BN_MODES, THREATS
from ..core.config import MAX_SEED, setting
from ..core.errors import UserError
from ..data.registry import dataset_names, get_spec
from ..models.registry import validate_model_name
from .objectives import objective_names, objectives
from .schedule import SCHEDULES

if TYPE_CHECKING:
    from ..adversarial.protocol import EvalProtocol
    from ..adversarial.spec import AttackSpec


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much of it, and how it is batched."""

    dataset: str = setting("fashion-mnist", "dataset name", choices=dataset_names)
    data_dir: str = setting("data", "directory holding the dataset files", hashed=False)
    download: bool = setting(
        False, "download missing dataset files (needs internet; never done silently)", hashed=False
    )
    train_subset: int | None = setting(
        None, "train on this many examples (deterministic, stratified); none = all", low=1
    )
    val_size: int = setting(
        1000, "held-out validation examples carved from the training set (model selection)", low=0
    )
    test_subset: int | None = setting(
        None, "evaluate on this many test examples (deterministic); none = all", low=1
    )
    data_seed: int = setting(0, "seed of the subset/validation selection (not the run seed)", low=0,
                        high=MAX_SEED)  # fmt: skip
    batch_size: int = setting(128, "training batch size", low=1)
    augment: bool = setting(True, "standard augmentation for the dataset (random crop, flip)")

    def load(self) -> Any:
        """The train / held-out / test splits these settings describe (``data.Splits``)."""
        from ..data.splits import load_splits

        return load_splits(
            self.dataset,
            self.data_dir,
            train_subset=self.train_subset,
            val_size=self.val_size,
            test_subset=self.test_subset,
            data_seed=self.data_seed,
            allow_download=self.download,
        )


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. Names: wrn-DEPTH-WIDTH, vgg16-bn, preact-resnet18, small-cnn."""

    model: str = setting("wrn-10-2", "architecture: wrn-D-K, vgg16-bn, preact-resnet18, small-cnn")
    dropout: float = setting(0.0, "dropout rate inside WideResNet blocks", low=0.0, high=0.99)
    normalize: bool = setting(
        True, "normalize inputs by the dataset mean/std inside the model (inputs stay in [0,1])"
    )

    def validate(self) -> None:
        validate_model_name(self.model)


@dataclass(frozen=True)
class TrainConfig:
    """Objective, optimizer, schedule and the training attack."""

    objective: str = setting("pgd", "training objective", choices=objective_names)
    epochs: int = setting(10, "training epochs", low=1)
    lr: float = setting(0.1, "peak learning rate (SGD)", low=0.0, low_open=True)
    momentum: float = setting(0.9, "SGD momentum", low=0.0, high=0.999)
    weight_decay: float = setting(1e-4, "L2 weight decay (the paper: 1e-4)", low=0.0)
    schedule: str = setting("step", "lr schedule after warmup", choices=SCHEDULES)
    milestones: tuple[float, ...] = setting(
        (0.5, 0.75), "step schedule: fractions of training where lr is multiplied by gamma"
    )
    gamma: float = setting(0.1, "step schedule: lr multiplier at each milestone", low=0.0)
    warmup_epochs: float = setting(0.0, "linear warmup length in epochs (0 = none)", low=0.0)
    warmup_lr: float | None = setting(
        None, "lr at the start of warmup (the paper: the ticket-finding lr); none = lr/10", low=0.0
    )
    train_eps: float | None = setting(
        None,
        "budget of the training attack, in its norm (L∞ for fgsm/pgd, L2 for fgm/pgd-l2); none = "
        "the dataset's default (L∞ 8/255 CIFAR, 0.1 Fashion-MNIST, 0.3 MNIST; L2 0.5 CIFAR-10)",
        low=0.0,
    )
    train_steps: int = setting(10, "PGD/TRADES steps of the training attack", low=1)
    train_step_size: float | None = setting(
        None, "training attack step; none = eps/4 (PGD), 1.25·eps (FGSM-RS), eps (FGSM)", low=0.0
    )
    train_random_start: bool | None = setting(
        None,
        "random start of the training attack; none = attack default (on for pgd/fgsm-rs, off for "
        "fgsm); the paper's code used none: pass --no-train-random-start to match it",
    )
    train_bn_mode: str = setting(
        "eval", "BatchNorm mode while crafting training attacks", choices=BN_MODES
    )
    trades_beta: float = setting(6.0, "TRADES robustness weight beta", low=0.0)
    class_weighted: bool = setting(
        False,
        "weight each image's cross-entropy by its class's inverse frequency in the training split "
        "(for imbalanced data such as DermaMNIST); the attacks are unchanged",
    )
    seed: int = setting(0, "run seed: init, data order, augmentation, attack starts", low=0,
                        high=MAX_SEED)  # fmt: skip
    noise_seed: int | None = setting(
        None,
        "seed of the SGD noise (data order, augmentation, attack starts, dropout) from "
        "--noise-step on; none = --seed (the init always comes from --seed)",
        low=0,
        high=MAX_SEED,
    )
    noise_step: int = setting(
        0, "optimizer step after which --noise-seed drives the noise (0: from the start)", low=0
    )
    select_metric: str = setting(
        "auto",
        "held-out metric choosing the best checkpoint; auto = pgd (clean for natural training)",
        choices=("auto", "pgd", "fgsm", "clean"),
    )
    stop_on_overfit: bool = setting(
        False, "stop FGSM-type training when catastrophic overfitting is detected"
    )
    device: str = setting("auto", "torch device: auto, cpu, cuda, cuda:N", hashed=False)
    amp: bool = setting(False, "bf16 autocast on CUDA (ignored on the CPU)")
    channels_last: bool | None = setting(
        None,
        "channels_last memory format; none = the measured choice for the device and model family "
        "(training/kernels.json: on for WideResNets on the CPU)",
        hashed=False,
    )
    compile: bool | None = setting(
        None,
        "torch.compile the model for the training step; none = the measured choice (off where "
        "not measured faster)",
        hashed=False,
    )
    fold_bn: bool | None = setting(
        None,
        "fold eval-mode BatchNorm into the convolutions for attacks crafted in BN eval mode and "
        "for evaluation (same results within float rounding); none = the measured choice "
        "(training/kernels.json)",
        hashed=False,
    )
    progress: bool = setting(True, "show progress bars", hashed=False)
    sync_bn: bool = setting(
        False,
        "with several processes (torchrun, --nproc): BatchNorm statistics over the global batch",
        hashed=False,
    )
    tensorboard: bool | None = setting(
        None,
        "write TensorBoard event files into the run directory; none = when the tensorboard "
        "package is installed",
        hashed=False,
    )

    def validate(self) -> None:
        if self.noise_step > 0 and self.noise_seed is None:
            raise UserError("--noise-step needs --noise-seed (the seed the noise switches to)")
        if any(not 0.0 < m < 1.0 for m in self.milestones):
            raise UserError(f"--milestones must be fractions in (0,1), got {self.milestones}")
        if tuple(sorted(self.milestones)) != self.milestones:
            raise UserError(f"--milestones must be increasing, got {self.milestones}")
        if self.warmup_epochs > self.epochs:
            raise UserError(
                f"--warmup-epochs ({self.warmup_epochs}) exceeds --epochs ({self.epochs})"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation every epoch and test evaluation at the end (PGD-20, step eps/4)."""

    threat: str = setting(
        "Linf",
        "threat model of the evaluation attacks: Linf (PGD + FGSM) or L2 (PGD-L2 + FGM)",
        choices=THREATS,
    )
    eval_eps: float | None = setting(
        None, "budget of evaluation attacks in --threat's norm; none = dataset default", low=0.0
    )
    eval_steps: int = setting(20, "PGD steps at evaluation", low=1)
    eval_step_size: float | None = setting(None, "PGD step at evaluation; none = eps/4", low=0.0)
    eval_restarts: int = setting(1, "PGD restarts at evaluation", low=1)
    eval_random_start: bool = setting(True, "random start of the evaluation PGD")
    eval_bn_mode: str = setting("eval", "BatchNorm mode during evaluation", choices=BN_MODES)
    val_examples: int | None = setting(
        None, "held-out examples evaluated per epoch; none = the whole validation split", low=1
    )
    eval_batch_size: int = setting(500, "evaluation batch size", low=1, hashed=False)
    eval_seed: int = setting(0, "seed of evaluation random starts (fixed across epochs)", low=0,
                             high=MAX_SEED)  # fmt: skip
    test_eval: bool = setting(True, "evaluate the best and last models on the test set at the end")


@dataclass(frozen=True)
class RunConfig:
    """A complete training run: data, model, training and evaluation settings."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()
        get_spec(self.data.dataset)
        # Resolving the budgets refuses, before any directory exists, an L2 run without an eps
        # on a dataset that has no customary one, and an eps out of its norm's range.
        if objectives().get(self.train.objective).attack is not None:
            _check_budget("--train-eps", self.train_eps, self.train_norm, "an L2 objective (fgm, "
                          "pgd-l2)")  # fmt: skip
        _check_budget("--eval-eps", self.eval_eps, self.eval.threat, "--threat L2")

    @property
    def train_norm(self) -> str:
        """The threat model of the training attack (``Linf`` for natural training: no attack)."""
        attack = objectives().get(self.train.objective).attack
        if attack is None:
            return "Linf"
        from ..adversarial.registry import attacks

        return attacks().get(attack).norm

    @property
    def train_eps(self) -> float:
        """The training budget with the dataset default for the attack's norm filled in."""
        e = self.train.train_eps
        return get_spec(self.data.dataset).eps_for(self.train_norm) if e is None else e

    @property
    def eval_eps(self) -> float:
        """The evaluation budget with the dataset default for ``eval.threat`` filled in."""
        e = self.eval.eval_eps
        return get_spec(self.data.dataset).eps_for(self.eval.threat) if e is None else e


def _check_budget(flag: str, eps: float, norm: str, l2_hint: str) -> None:
    """One line naming ``flag`` for a budget outside its norm's range (L∞: [0, 1])."""
    from ..adversarial.spec import check_eps

    if norm == "Linf" and eps > 1.0:
        raise UserError(
            f"{flag} must be <= 1.0 for an L∞ budget (inputs lie in [0, 1]), got {eps}; e.g. 8/255 "
            f"not 8, or {l2_hint} for an L2 radius"
        )
    check_eps(eps, norm)


def train_attack_spec(cfg: RunConfig) -> AttackSpec | None:
    """The attack crafting training inputs, from the objective's registry entry (None: natural)."""
    return objectives().get(cfg.train.objective).attack_spec(cfg)


def eval_protocol(cfg: RunConfig) -> EvalProtocol:
    """The held-out/test protocol of a run (PGD-k, step eps/4 unless set)."""
    from ..adversarial.protocol import EvalProtocol

    ec = cfg.eval
    return EvalProtocol(
        eps=cfg.eval_eps,
        pgd_steps=ec.eval_steps,
        step_size=ec.eval_step_size,
        restarts=ec.eval_restarts,
        random_start=ec.eval_random_start,
        bn_mode=ec.eval_bn_mode,
        seed=ec.eval_seed,
        norm=ec.threat,
    )


def held_out_size(cfg: RunConfig) -> int:
    """Held-out images evaluated each epoch: ``val_examples`` capped by the validation split."""
    return min(cfg.eval.val_examples or cfg.data.val_size, cfg.data.val_size)


def select_key(cfg: RunConfig) -> str:
    """The metrics-row key choosing the best checkpoint: ``val_pgd`` (``val_clean`` when natural)."""
    sel = cfg.train.select_metric
    if sel == "auto":
        sel = "clean" if cfg.train.objective == "natural" else "pgd"
    return f"val_{sel}"


def select_label(cfg: RunConfig) -> str:
    """How the selection metric is named in tables: ``clean``, ``PGD-20``, ``fgsm``."""
    sel = cfg.train.select_metric
    if sel == "auto":
        sel = "clean" if cfg.train.objective == "natural" else f"PGD-{cfg.eval.eval_steps}"
    return sel
