"""The boosting-ticket paper's published numbers, as reference rows for the results tables.

Source: Li, Wang, Jia, Lu, Zhong, Carin, Jana, "Towards Practical Lottery Ticket Hypothesis for
Adversarial Training" (arXiv 2003.05733), Tables 2 and 3, plus the dense VGG-16 run with the tickets'
own schedule found in the official repository's raw logs (github.com/boosting-ticket/ticket_robust).
Accuracies are fractions in [0, 1]; times are seconds on the paper's 2x V100.

Each table carries the protocol it was measured under. ``tables`` shows a published row only next to
measured results whose protocol, dataset and model match it (:func:`matching_tables`), labelled
``kind="reference"``, ``source="published"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

PAPER = "Li et al. 2020 (arXiv 2003.05733)"


@dataclass(frozen=True)
class PublishedRow:
    """One published model: its accuracies (fractions) and, where reported, its total time."""

    arm: str
    label: str
    epochs: int | None
    clean_acc: float | None
    pgd_acc: float | None
    total_seconds: float | None = None
    find_seconds: float | None = None
    sparsity: float = 0.0
    extra: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""


@dataclass(frozen=True)
class PublishedTable:
    """A published table and the protocol its numbers were measured under."""

    name: str
    source: str
    dataset: str
    model: str
    protocol: Mapping[str, Any]
    rows: tuple[PublishedRow, ...]


def _protocol(pgd_steps: int) -> Mapping[str, Any]:
    # Only the fields the paper states; random start and restarts are not reported for evaluation.
    return MappingProxyType(
        {
            "threat_model": "Linf",
            "eps": 8 / 255,
            "pgd_steps": pgd_steps,
            "step_size": 2 / 255,
            "n_examples": 10000,
        }
    )


_T2 = f"{PAPER}, Table 2"
_T3 = f"{PAPER}, Table 3"

TABLES: Mapping[str, PublishedTable] = MappingProxyType(
    {
        "li2020-table2": PublishedTable(
            name="li2020-table2",
            source=_T2,
            dataset="cifar10",
            model="vgg16-bn",
            protocol=_protocol(10),
            rows=(
                *(
                    PublishedRow(
                        arm=f"paper:ticket-fgsm@{ep}ep",
                        label=f"published: FGSM-found ticket, PGD-10 training, {ep} epochs",
                        epochs=ep,
                        clean_acc=clean,
                        pgd_acc=robust,
                        sparsity=0.8,
                    )
                    for ep, robust, clean in (
                        (20, 0.4449, 0.7515),
                        (40, 0.4527, 0.7628),
                        (60, 0.4573, 0.7648),
                        (80, 0.4520, 0.7760),
                        (100, 0.4453, 0.7807),
                    )
                ),
                PublishedRow(
                    arm="paper:dense-weak",
                    label="published: dense baseline (lr 0.01, no warmup: the weaker schedule)",
                    epochs=100,
                    clean_acc=0.7721,
                    pgd_acc=0.4478,
                    note="the official logs show this baseline ran at lr 0.01 without warmup",
                ),
                PublishedRow(
                    arm="paper:dense-ticket-schedule",
                    label="official logs: dense with the tickets' schedule (fair baseline)",
                    epochs=100,
                    clean_acc=0.8080,
                    pgd_acc=0.4597,
                    note="from the official repository's raw logs, not a paper table",
                ),
            ),
        ),
        "li2020-table3": PublishedTable(
            name="li2020-table3",
            source=_T3,
            dataset="cifar10",
            model="wrn-34-10",
            protocol=_protocol(20),
            rows=(
                PublishedRow(
                    arm="paper:dense",
                    label="published: Madry dense, 100 epochs",
                    epochs=100,
                    clean_acc=0.8621,
                    pgd_acc=0.5007,
                    total_seconds=134764.0,
                    extra=MappingProxyType({"pgd100_acc": 0.4932, "cw_acc": 0.5046}),
                ),
                *(
                    PublishedRow(
                        arm=f"paper:ticket-fgsm@{ep}ep",
                        label=f"published: FGSM-found ticket, retrained {ep} epochs",
                        epochs=ep,
                        clean_acc=clean,
                        pgd_acc=pgd,
                        total_seconds=total,
                        find_seconds=15462.0,
                        sparsity=0.8,
                        extra=MappingProxyType({"pgd100_acc": pgd100, "cw_acc": cw}),
                    )
                    for ep, clean, pgd, pgd100, cw, total in (
                        (40, 0.8772, 0.5037, 0.4928, 0.5092, 69552.0),
                        (70, 0.8785, 0.5048, 0.4958, 0.5082, 110258.0),
                        (100, 0.8735, 0.4992, 0.4911, 0.5037, 152567.0),
                    )
                ),
            ),
        ),
    }
)


def protocol_matches(published: Mapping[str, Any], measured: Mapping[str, Any]) -> bool:
    """True when every field the paper states agrees with the measured protocol (floats to 1e-9)."""
    for key, want in published.items():
        got = measured.get(key)
        if isinstance(want, float) and isinstance(got, int | float):
            if abs(want - float(got)) > 1e-9:
                return False
        elif got != want:
            return False
    return True


def matching_tables(protocol: Mapping[str, Any], dataset: str, model: str) -> list[PublishedTable]:
    """Published tables measured under ``protocol`` on ``dataset`` with ``model``."""
    return [
        t
        for t in TABLES.values()
        if t.dataset == dataset and t.model == model and protocol_matches(t.protocol, protocol)
    ]
