"""The objective registry: name -> training loss, training attack, and cost per image.

Built-in objectives:

* ``natural`` -- clean cross-entropy;
* ``fgsm`` -- cross-entropy on FGSM inputs (Goodfellow et al. 2015; no random start, as in the
  boosting-ticket code);
* ``fgsm-rs`` -- FGSM from a uniform random start, step 1.25·eps (Wong, Rice & Kolter 2020);
* ``pgd`` -- cross-entropy on PGD-k inputs (Madry et al. 2018; step eps/4 by default);
* ``fgm``, ``pgd-l2`` -- the same on L2 attacks: one L2-normalized gradient step (Miyato et al.
  2017), or PGD-k in the L2 ball (step eps/4); ``--train-eps`` is then an L2 radius;
* ``trades`` -- clean cross-entropy + beta · KL(clean ‖ adversarial) (Zhang et al. 2019).

The cost is counted in forward-equivalent passes per training image (a backward through the whole
network costs 2 forwards, an attack's input-gradient backward 1): natural 3, FGSM 2 + 3 = 5,
PGD-k 2k + 3, TRADES-k 2k + 7; the cost model of ``bench`` reads it from here. Plugins add
objectives by declaring ``OBJECTIVES``, a tuple of :class:`ObjectiveEntry`. This module imports no
torch: the losses import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.registry import Entry, Registry, build_registry

if TYPE_CHECKING:
    from ..adversarial.spec import AttackSpec
    from .hparams import RunConfig, TrainConfig

Loss = Callable[..., Any]


@dataclass(frozen=True)
class ObjectiveEntry(Entry):
    """One registry entry: ``name`` (e.g. ``"pgd"``), ``description`` (the objective and its
    paper), and

    Attributes:
        attack: the registered attack crafting its training inputs (None: none).
        multi_step: the attack takes ``train_steps`` steps (else one).
        passes: ``passes(train_config)`` -> forward-equivalent passes per image per epoch.
        loss: ``loss(model, x, y, *, cfg, attack, generator, use_amp)`` -> (loss, logits), where
            ``attack`` is :meth:`attack_spec` of the run and ``logits`` are the clean or
            adversarial logits the training accuracy is computed from.
        finds_tickets: offered to ``find-ticket`` for the finding run.
    """

    attack: str | None
    multi_step: bool
    passes: Callable[[TrainConfig], float]
    loss: Loss
    finds_tickets: bool = True

    def attack_spec(self, cfg: RunConfig) -> AttackSpec | None:
        """The training attack of run ``cfg`` under this objective, defaults resolved."""
        if self.attack is None:
            return None
        from ..adversarial.spec import AttackSpec

        tc = cfg.train
        return AttackSpec(
            name=self.attack,
            eps=cfg.train_eps,
            steps=tc.train_steps if self.multi_step else 1,
            step_size=tc.train_step_size,
            random_start=tc.train_random_start,
            bn_mode=tc.train_bn_mode,
        ).resolved()


def _natural(model: Any, x: Any, y: Any, **kw: Any) -> tuple[Any, Any]:
    from .losses import natural_loss

    return natural_loss(model, x, y, **kw)


def _adversarial(model: Any, x: Any, y: Any, **kw: Any) -> tuple[Any, Any]:
    from .losses import adversarial_loss

    return adversarial_loss(model, x, y, **kw)


def _trades(model: Any, x: Any, y: Any, **kw: Any) -> tuple[Any, Any]:
    from .losses import trades_loss

    return trades_loss(model, x, y, **kw)


BUILTIN_OBJECTIVES: tuple[ObjectiveEntry, ...] = (
    ObjectiveEntry("natural", "clean cross-entropy", None, False, lambda tc: 3.0, _natural),
    ObjectiveEntry(
        "fgsm",
        "FGSM training (Goodfellow et al. 2015)",
        "fgsm",
        False,
        lambda tc: 5.0,
        _adversarial,
    ),
    ObjectiveEntry(
        "fgsm-rs",
        "FGSM from a random start (Wong, Rice & Kolter 2020)",
        "fgsm-rs",
        False,
        lambda tc: 5.0,
        _adversarial,
    ),
    ObjectiveEntry(
        "pgd",
        "PGD-k adversarial training (Madry et al. 2018)",
        "pgd",
        True,
        lambda tc: 2.0 * tc.train_steps + 3.0,
        _adversarial,
    ),
    ObjectiveEntry(
        "fgm",
        "L2 FGM training (Miyato et al. 2017): one L2-normalized gradient step of eps",
        "fgm",
        False,
        lambda tc: 5.0,
        _adversarial,
    ),
    ObjectiveEntry(
        "pgd-l2",
        "L2 PGD-k adversarial training (Madry et al. 2018)",
        "pgd-l2",
        True,
        lambda tc: 2.0 * tc.train_steps + 3.0,
        _adversarial,
    ),
    ObjectiveEntry(
        "trades",
        "TRADES (Zhang et al. 2019): clean CE + beta · KL(clean || adversarial)",
        "pgd",
        True,
        # clean forward + k attack steps + clean and adversarial forward/backward
        lambda tc: 2.0 * tc.train_steps + 7.0,
        _trades,
        finds_tickets=False,
    ),
)


def objectives() -> Registry[ObjectiveEntry]:
    """The built-in objectives plus those of plugins (``OBJECTIVES``)."""
    return build_registry("objective", BUILTIN_OBJECTIVES, "OBJECTIVES")


def objective_names() -> tuple[str, ...]:
    """Registered objective names, for CLI choices and validation."""
    return objectives().names


def finding_objective_names() -> tuple[str, ...]:
    """The objectives a ticket's finding run may use."""
    return tuple(o.name for o in objectives() if o.finds_tickets)
