"""Magnitude pruning (global / per layer / IMP), BN channel masking and the random-mask controls."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as tprune

from boosting_tickets.core.errors import UserError
from boosting_tickets.models.layers import prunable_parameters
from boosting_tickets.models.masks import Mask
from boosting_tickets.models.registry import build_model
from boosting_tickets.tickets.pruning import (
    bn_channel_masks,
    conv_bn_pairs,
    magnitude_prune,
    output_layer_name,
    per_round_rate,
    random_mask,
    with_bn_channels,
)

SHAPES = st.lists(
    st.tuples(st.integers(1, 6), st.integers(1, 5), st.sampled_from([1, 3])), min_size=1, max_size=4
)


def _weights(shapes, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Distinct layer scales so that normalizing by the layer mean matters.
    return {
        f"l{i}.weight": torch.randn(o, c, k, k, generator=g) * (0.1 + i)
        for i, (o, c, k) in enumerate(shapes)
    }


def _kept(mask: Mask) -> int:
    return mask.counts()[1]


@settings(max_examples=40, deadline=None)
@given(SHAPES, st.floats(0.0, 0.99), st.integers(0, 10_000), st.booleans())
def test_global_prune_removes_exactly_round_fraction_of_remaining(shapes, frac, seed, norm):
    w = _weights(shapes, seed)
    full = Mask.ones(w)
    total = full.counts()[0]
    once = magnitude_prune(w, full, frac, scope="global", normalize_by_mean=norm)
    assert _kept(once) == total - round(frac * total)
    twice = magnitude_prune(w, once, frac, scope="global", normalize_by_mean=norm)
    assert _kept(twice) == _kept(once) - round(frac * _kept(once))
    for n in w:  # never un-prunes
        assert torch.all(twice[n] <= once[n])


@settings(max_examples=40, deadline=None)
@given(SHAPES, st.floats(0.0, 0.99), st.integers(0, 10_000))
def test_layer_prune_removes_exactly_round_fraction_per_layer(shapes, frac, seed):
    w = _weights(shapes, seed)
    mask = magnitude_prune(w, Mask.ones(w), frac, scope="layer")
    for n, t in w.items():
        assert int(mask[n].sum()) == t.numel() - round(frac * t.numel())
        # the survivors of a layer are its largest magnitudes
        kept, gone = t.abs()[mask[n].bool()], t.abs()[~mask[n].bool()]
        if kept.numel() and gone.numel():
            assert kept.min() >= gone.max()


@pytest.mark.parametrize("amount", [0.2, 0.5, 0.8, 0.95])
def test_global_mask_equals_torch_global_unstructured(amount):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=10, in_channels=1)
    params = prunable_parameters(model)
    weights = {n: p.detach().clone() for n, p in params.items()}
    ours = magnitude_prune(weights, Mask.ones(weights), amount, normalize_by_mean=False)

    modules = dict(model.named_modules())
    targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in params]
    tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=amount)
    for (module, _), name in zip(targets, params, strict=True):
        assert torch.equal(module.weight_mask, ours[name]), name


def test_normalized_global_mask_equals_torch_with_mean_scaled_importance():
    torch.manual_seed(1)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    params = prunable_parameters(model)
    weights = {n: p.detach().clone() for n, p in params.items()}
    ours = magnitude_prune(weights, Mask.ones(weights), 0.8, normalize_by_mean=True)

    modules = dict(model.named_modules())
    targets = [(modules[n.rsplit(".", 1)[0]], "weight") for n in params]
    scores = {
        t: weights[n].abs() / weights[n].abs().mean() for t, n in zip(targets, params, strict=True)
    }
    tprune.global_unstructured(
        targets, pruning_method=tprune.L1Unstructured, importance_scores=scores, amount=0.8
    )
    for (module, _), name in zip(targets, params, strict=True):
        assert torch.equal(module.weight_mask, ours[name]), name
    # normalization changes the per-layer distribution (the large linear layer is not wiped out)
    plain = magnitude_prune(weights, Mask.ones(weights), 0.8, normalize_by_mean=False)
    assert any(not torch.equal(plain[n], ours[n]) for n in params)


@settings(max_examples=15, deadline=None)
@given(st.floats(0.1, 0.95), st.integers(2, 5), st.integers(0, 1000))
def test_imp_rounds_never_unprune_and_hit_the_sparsity_of_each_round(sparsity, rounds, seed):
    shapes = [(8, 4, 3), (16, 8, 3), (10, 16, 1)]
    rate = per_round_rate(sparsity, rounds)
    mask = Mask.ones(_weights(shapes, seed))
    total = mask.counts()[0]
    remaining = total
    for r in range(1, rounds + 1):
        trained = _weights(shapes, seed + r)  # new magnitudes each round, as after retraining
        new = magnitude_prune(trained, mask, rate)
        for n in new:
            assert torch.all(new[n] <= mask[n]), "a pruned weight came back"
        remaining -= round(rate * remaining)
        assert _kept(new) == remaining
        # the configured schedule: 1 - (1 - rate)^r, up to one weight of rounding per round
        assert abs(new.sparsity() - (1 - (1 - rate) ** r)) <= r / total
        mask = new
    assert abs(mask.sparsity() - sparsity) <= rounds / total


def test_output_layer_at_half_rate():
    model = build_model("wrn-10-1", num_classes=10, in_channels=1)
    w = {n: p.detach() for n, p in prunable_parameters(model).items()}
    out = output_layer_name(model)
    assert out == "fc.weight"
    mask = magnitude_prune(w, Mask.ones(w), 0.6, layer_fractions={out: 0.3})
    assert int(mask[out].sum()) == w[out].numel() - round(0.3 * w[out].numel())
    rest = [n for n in w if n != out]
    n_rest = sum(w[n].numel() for n in rest)
    assert sum(int(mask[n].sum()) for n in rest) == n_rest - round(0.6 * n_rest)


def test_bad_fractions_and_foreign_weights_are_refused():
    w = _weights([(4, 2, 3)], 0)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        magnitude_prune(w, Mask.ones(w), 1.0)
    with pytest.raises(UserError, match="another architecture"):
        magnitude_prune({"l0.weight": torch.ones(3, 3)}, Mask.ones(w), 0.5)
    with pytest.raises(UserError, match="NaN"):
        magnitude_prune({"l0.weight": w["l0.weight"] * float("nan")}, Mask.ones(w), 0.5)
    with pytest.raises(UserError):
        per_round_rate(1.0, 2)


def test_per_round_rate():
    assert per_round_rate(0.8, 1) == pytest.approx(0.8)
    assert (1 - per_round_rate(0.8, 3)) ** 3 == pytest.approx(0.2)
    assert per_round_rate(0.0, 4) == 0.0


def test_bn_pairs_follow_the_data_flow_of_a_preactivation_wrn():
    model = build_model("wrn-10-1", num_classes=10, in_channels=3)
    pairs = dict(conv_bn_pairs(model))
    # the stem conv feeds the first block's bn1; conv1 of a block feeds its bn2
    assert pairs["conv1.weight"] == "block1.layer.0.bn1"
    assert pairs["block2.layer.0.conv1.weight"] == "block2.layer.0.bn2"
    # conv2 feeds a residual sum, not a BN; fc feeds nothing
    assert "block1.layer.0.conv2.weight" not in pairs
    assert "fc.weight" not in pairs
    assert model.training  # the probe restores the mode


def test_bn_channels_of_dead_filters_are_masked_and_stay_zero_in_the_output():
    torch.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    w = {n: p.detach() for n, p in prunable_parameters(model).items()}
    mask = Mask.ones(w)
    keep = {n: mask[n].clone() for n in mask}
    keep["features.0.weight"][[1, 5]] = 0.0  # two whole filters of the first conv
    keep["features.3.weight"][7, :3] = 0.0  # a partial filter: its channel stays
    mask = with_bn_channels(model, Mask(keep))
    # every BN fed directly by a conv gets channel entries; only dead filters zero them
    assert mask.channel_names == {
        f"features.{i}.{p}" for i in (1, 4, 8, 11) for p in ("weight", "bias")
    }
    assert sum(int((mask[n] == 0).sum()) for n in mask.channel_names) == 4
    assert torch.equal(
        torch.nonzero(mask["features.1.weight"] == 0).flatten(), torch.tensor([1, 5])
    )
    assert int(mask["features.4.bias"].sum()) == 32
    assert mask.sparsity() == Mask(keep).sparsity()  # channel entries are not counted

    with torch.no_grad():  # non-trivial BN so that an unmasked dead channel would output beta
        model.features[1].bias.fill_(0.7)
    mask.apply_(model)
    acts = {}
    model.features[2].register_forward_hook(lambda m, i, o: acts.setdefault("relu", o.clone()))
    model.eval()
    model(torch.rand(2, 1, 28, 28))
    assert torch.all(acts["relu"][:, [1, 5]] == 0)
    assert torch.any(acts["relu"][:, 0] != 0)


def test_vgg_classifier_linear_feeds_batchnorm1d():
    model = build_model("vgg16-bn", num_classes=10, in_channels=3)
    pairs = dict(conv_bn_pairs(model))
    assert pairs["classifier.0.weight"] == "classifier.1"
    w = {n: p.detach() for n, p in prunable_parameters(model).items()}
    keep = {n: torch.ones_like(t) for n, t in w.items()}
    keep["classifier.0.weight"][3] = 0.0
    chans = bn_channel_masks(model, Mask(keep))
    assert chans["classifier.1.weight"][3] == 0 and chans["classifier.1.weight"].sum() == 511


@settings(max_examples=30, deadline=None)
@given(SHAPES, st.floats(0.05, 0.95), st.integers(0, 10_000))
def test_random_mask_controls_keep_their_promised_sparsity(shapes, frac, seed):
    w = _weights(shapes, seed)
    ticket = magnitude_prune(w, Mask.ones(w), frac)
    per_layer = random_mask(ticket, "layer", torch.Generator().manual_seed(seed))
    for n in w:
        assert int(per_layer[n].sum()) == int(ticket[n].sum())
    glob = random_mask(ticket, "global", torch.Generator().manual_seed(seed))
    assert glob.counts() == ticket.counts()
    assert set(glob) == set(ticket)


def test_random_masks_differ_from_the_ticket():
    w = _weights([(32, 16, 3), (16, 32, 3)], 3)
    ticket = magnitude_prune(w, Mask.ones(w), 0.8)
    g = torch.Generator().manual_seed(0)
    for scope in ("layer", "global"):
        shuffled = random_mask(ticket, scope, g)
        assert shuffled.digest() != ticket.digest()
        overlap = sum(int((shuffled[n] * ticket[n]).sum()) for n in w)
        assert overlap < 0.5 * ticket.counts()[1]  # chance overlap is ~20% of the kept weights


def test_model_without_batchnorm_has_no_channel_entries():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    w = {n: p.detach() for n, p in prunable_parameters(model).items()}
    mask = with_bn_channels(model, Mask.ones(w), torch.rand(1, 1, 8, 8))
    assert not mask.channel_names and math.isclose(mask.sparsity(), 0.0)
