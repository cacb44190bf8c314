"""The pruning-criterion registry: name -> score function.

A criterion scores every prunable weight; pruning removes the lowest scores
(:func:`pruning.prune_by_scores`). Built in:

* ``magnitude`` -- ``|w|`` of the trained weights; for global pruning each layer is first divided by
  its mean ``|w|`` over surviving weights (the official boosting-ticket code's "normalization
  (important)"; ``--no-normalize-by-mean`` ranks plain ``|w|`` like
  ``torch.nn.utils.prune.global_unstructured``).

``score(weights, mask, *, model, batches, config)`` gets the trained weights by name, the current
mask (its weight entries are what may be pruned), the trained model (on the CPU, eval mode), a
function ``batches()`` yielding a fixed sequence of training batches ``(x, y)`` for criteria that
need data, and the :class:`config.PruneConfig`; it returns one score tensor per weight entry, of
the weight's shape. Plugins add criteria by declaring ``PRUNING_CRITERIA``, a tuple of
:class:`CriterionEntry`. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.registry import Entry, Registry, build_registry

Score = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class CriterionEntry(Entry):
    """One registry entry: ``score`` (see the module docstring); ``needs_data`` says whether it
    reads ``batches`` (then the finding run's training split is batched for it)."""

    score: Score
    needs_data: bool = False


def _magnitude(weights: Any, mask: Any, *, config: Any, **_: Any) -> dict[str, Any]:
    from .pruning import magnitude_scores

    normalize = config.normalize_by_mean and config.prune_scope == "global"
    return magnitude_scores(weights, mask, normalize_by_mean=normalize)


BUILTIN_CRITERIA: tuple[CriterionEntry, ...] = (
    CriterionEntry(
        "magnitude",
        "|w| of the trained weights (per-layer mean-normalized for global pruning, Li et al. 2020)",
        _magnitude,
    ),
)


def criteria() -> Registry[CriterionEntry]:
    """The built-in pruning criteria plus those of plugins (``PRUNING_CRITERIA``)."""
    return build_registry("pruning criterion", BUILTIN_CRITERIA, "PRUNING_CRITERIA")


def criterion_names() -> tuple[str, ...]:
    """Registered criterion names, for CLI choices and validation."""
    return criteria().names
