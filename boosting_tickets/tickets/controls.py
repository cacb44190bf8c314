"""The control registry: ways to retrain a ticket's ingredients apart, to see where a boost comes from.

A control starts a retraining run from something derived from a ticket instead of the ticket
itself (its mask at θ_rewind). Built in (Frankle & Carbin 2019; Li et al. 2020):

* ``reinit`` -- the same mask at a fresh init drawn from another seed (the official code used
  init seed 7, reinit seed 9);
* ``random-mask`` -- θ_rewind under the ticket's mask shuffled within each layer (every layer
  keeps its sparsity);
* ``random-mask-global`` -- the same, shuffled over all layers (the global sparsity is kept);
* ``reinit-rescaled`` -- ``reinit``'s fresh init (the very same draw), each masked layer scaled
  so that its surviving weights have the ticket's L2 norm: a ticket found at a small lr keeps
  roughly the largest weights of θ0, so its init is larger than a fresh one under the same mask,
  and this control separates that scale effect from the ticket's values;
* ``shuffled-ticket`` -- the ticket's own surviving θ_rewind values permuted within each layer over
  the same mask positions (Frankle, Dziugaite, Roy & Carbin 2021, "Pruning neural networks at
  initialization: why are we missing the mark?"): same mask, same per-layer value distribution and
  scale, but no weight keeps its value.

``start(ticket, seed)`` returns ``(mask, initial weights)``; the weights are unmasked
(``training.train`` applies the mask) and every random draw comes from a seed derived from the
ticket's hash, the control and ``seed`` (:func:`derived_seed`). ``row_kind`` is the kind its rows
get in results files. Each control is also an arm kind of suites (``bench.arms``). Plugins add
controls by declaring ``CONTROLS``, a tuple of :class:`ControlEntry`. This module imports no torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.registry import Entry, Registry, build_registry

Start = Callable[[Any, int], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class ControlEntry(Entry):
    """One registry entry (see the module docstring)."""

    row_kind: str
    start: Start


def derived_seed(what: str, ticket_hash: str, seed: int) -> int:
    """A 32-bit seed from a control's name, the ticket's hash and the run seed."""
    digest = hashlib.sha256(f"{what}:{ticket_hash}:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _fresh_state(ticket: Any, seed: int) -> dict[str, Any]:
    """``reinit``'s fresh init of the ticket's architecture (CPU tensors, unmasked)."""
    import torch

    from ..models.checkpoints import build_from_arch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed("reinit", ticket.meta["hash"], seed))
        fresh = build_from_arch(ticket.arch)
    return {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}


def _reinit(ticket: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    return ticket.mask, _fresh_state(ticket, seed)


def _reinit_rescaled(ticket: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    """``reinit``'s draw with every masked layer scaled to the ticket's per-layer norm of
    surviving weights, ``||θ_rewind ⊙ m||₂ / ||θ_fresh ⊙ m||₂`` (1 where either is zero)."""
    state = _fresh_state(ticket, seed)
    for name in ticket.mask.weight_names():
        kept = ticket.mask[name].to(state[name].dtype)
        want = float((ticket.rewind_state[name] * kept).norm())
        have = float((state[name] * kept).norm())
        if want > 0 and have > 0:
            state[name].mul_(want / have)
    return ticket.mask, state


def _shuffled_ticket(ticket: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    """θ_rewind with each layer's surviving values permuted among the surviving positions."""
    import torch

    gen = torch.Generator().manual_seed(derived_seed("shuffled-ticket", ticket.meta["hash"], seed))
    state = {k: v.clone() for k, v in ticket.rewind_state.items()}
    for name in ticket.mask.weight_names():
        where = ticket.mask[name].bool()
        survivors = state[name][where]
        state[name][where] = survivors[torch.randperm(survivors.numel(), generator=gen)]
    return ticket.mask, state


def shuffled_mask_start(name: str, scope: str) -> Start:
    """A random-mask control: the ticket's mask shuffled within layers or over all of them."""

    def start(ticket: Any, seed: int) -> tuple[Any, dict[str, Any]]:
        import torch

        from ..models.checkpoints import build_from_arch
        from .pruning import random_mask, with_bn_channels

        gen = torch.Generator().manual_seed(derived_seed(name, ticket.meta["hash"], seed))
        mask = random_mask(ticket.mask, scope, gen)
        if ticket.mask.channel_names:
            example = torch.rand(2, *ticket.meta["input_shape"], generator=torch.Generator())
            mask = with_bn_channels(build_from_arch(ticket.arch), mask, example)
        return mask, ticket.rewind_state

    return start


BUILTIN_CONTROLS: tuple[ControlEntry, ...] = (
    ControlEntry("reinit", "same mask, fresh init (another seed)", "reinit", _reinit),
    ControlEntry(
        "random-mask",
        "θ_rewind under the mask shuffled within each layer",
        "random-mask",
        shuffled_mask_start("random-mask", "layer"),
    ),
    ControlEntry(
        "random-mask-global",
        "θ_rewind under the mask shuffled across layers",
        "random-mask",
        shuffled_mask_start("random-mask-global", "global"),
    ),
    ControlEntry(
        "reinit-rescaled",
        "reinit's fresh init scaled to the ticket's per-layer norm of surviving weights",
        "reinit-rescaled",
        _reinit_rescaled,
    ),
    ControlEntry(
        "shuffled-ticket",
        "the ticket's surviving θ_rewind values permuted within each layer (same mask)",
        "shuffled-ticket",
        _shuffled_ticket,
    ),
)


def controls() -> Registry[ControlEntry]:
    """The built-in controls plus those of plugins (``CONTROLS``)."""
    return build_registry("control", BUILTIN_CONTROLS, "CONTROLS")


def control_names() -> tuple[str, ...]:
    """Registered control names, for CLI choices and validation."""
    return controls().names
