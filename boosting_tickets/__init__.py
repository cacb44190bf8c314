"""boosting-tickets: sparse subnetworks that make PGD adversarial training converge faster.

Li et al., "Towards Practical Lottery Ticket Hypothesis for Adversarial Training" (arXiv 2003.05733).

The API (see ``docs/api.md``) is re-exported here lazily, so ``import boosting_tickets`` is instant:
``train``, ``find_ticket``, ``retrain_ticket``, ``run_suite``, ``evaluate_checkpoint``,
``evaluate``, ``load_model``, ``load_ticket``, ``load_suite``, ``regenerate_tables`` and the config
classes ``RunConfig``, ``DataConfig``, ``ModelConfig``, ``TrainConfig``, ``EvalConfig``,
``FindConfig``, ``FindTrainConfig``, ``PruneConfig``, ``EvalProtocol``.
"""

from .core.lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".api": (
            "train find_ticket retrain_ticket run_suite evaluate_checkpoint load_model "
            "regenerate_tables"
        ),
        ".adversarial.evaluation": "evaluate",
        ".adversarial.protocol": "EvalProtocol",
        ".tickets.ticket": "load_ticket",
        ".bench.suites": "load_suite",
        ".training.hparams": "RunConfig DataConfig ModelConfig TrainConfig EvalConfig",
        ".tickets.config": "FindConfig FindTrainConfig PruneConfig",
        ".core.errors": "UserError RunFailure",
    },
)
