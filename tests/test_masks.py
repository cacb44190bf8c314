"""Masks: persistence, reports, channel entries, dense export/import and zeros that stay zero."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boosting_tickets.core.errors import UserError
from boosting_tickets.models.layers import prunable_parameters
from boosting_tickets.models.masks import (
    Mask,
    dense_state_dict,
    import_dense,
    mask_from_dense,
    prunable_weights,
)
from boosting_tickets.models.registry import build_model
from boosting_tickets.tickets.pruning import magnitude_prune, with_bn_channels


def _pruned(model, fraction: float = 0.8) -> Mask:
    w = {n: p.detach() for n, p in prunable_parameters(model).items()}
    return magnitude_prune(w, Mask.ones(w), fraction)


def _rb_wide_resnet():
    """RobustBench's WideResNet class (robustbench imports `autoattack`, shipped as pyautoattack)."""
    aa = pytest.importorskip("pyautoattack")
    sys.modules.setdefault("autoattack", aa)
    try:
        mod = importlib.import_module("robustbench.model_zoo.architectures.wide_resnet")
    except Exception as exc:  # a broken install fails in many ways (pkg_resources, clobbered files)
        pytest.skip(f"robustbench unusable: {exc}")
    return mod.WideResNet


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.95))
def test_save_load_round_trip_keeps_bits_kinds_and_digest(tmp_path_factory, seed, frac):
    g = torch.Generator().manual_seed(seed)
    weights = {"a.weight": torch.randn(6, 3, 3, 3, generator=g), "b.weight": torch.randn(4, 6)}
    mask = magnitude_prune(weights, Mask.ones(weights), frac)
    mask = mask.with_channels({"bn.weight": (torch.rand(6, generator=g) > 0.3).float()})
    path = tmp_path_factory.mktemp("m") / "mask.pt"
    mask.save(path)
    back = Mask.load(path)
    assert back.digest() == mask.digest()
    assert back.channel_names == {"bn.weight"}
    assert all(torch.equal(back[n], mask[n]) for n in mask)
    assert back.counts() == mask.counts()


def test_report_counts_weights_and_lists_channels_separately():
    mask = Mask({"w": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "v": torch.ones(2, 3)})
    mask = mask.with_channels({"bn.weight": torch.tensor([1.0, 0.0])})
    rep = json.loads(json.dumps(mask.report()))  # JSON-ready
    assert rep["global"] == {"total": 10, "kept": 7, "pruned": 3, "sparsity": pytest.approx(0.3)}
    assert rep["layers"]["w"]["sparsity"] == 0.75 and rep["layers"]["v"]["sparsity"] == 0.0
    assert set(rep["layers"]) == {"w", "v"}
    assert rep["channels"]["bn.weight"]["kept"] == 1
    assert mask.weights_only().digest() != mask.digest()
    with pytest.raises(UserError, match="weight entry"):
        mask.with_channels({"w": torch.ones(2, 2)})


def test_prunable_weights_ignore_list():
    model = build_model("wrn-10-1", num_classes=10, in_channels=1)
    every = prunable_weights(model)
    assert list(every) == list(prunable_parameters(model))
    kept = prunable_weights(model, ("conv1.weight", "*.convShortcut.weight"))
    assert "conv1.weight" not in kept and not any("convShortcut" in n for n in kept)
    assert "block1.layer.0.conv1.weight" in kept and "fc.weight" in kept
    assert set(Mask.for_model(model, ("fc.weight",))) == set(every) - {"fc.weight"}
    with pytest.raises(UserError, match="matches no prunable weight"):
        prunable_weights(model, ("conv_1.weight",))


def test_mask_from_another_architecture_is_refused(tmp_path):
    small = build_model("small-cnn", num_classes=10, in_channels=1)
    wrn = build_model("wrn-10-1", num_classes=10, in_channels=1)
    _pruned(small).save(tmp_path / "m.pt")
    with pytest.raises(UserError, match="another architecture"):
        Mask.load(tmp_path / "m.pt", wrn)
    wider = build_model("wrn-10-2", num_classes=10, in_channels=1)
    with pytest.raises(UserError, match="another architecture"):
        _pruned(wrn).apply_(wider)


def _tiny_conv_bn_net() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 10),
    )


def test_zeros_stay_zero_through_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    model = _tiny_conv_bn_net()
    mask = _pruned(model, 0.7)
    keep = {n: mask[n].clone() for n in mask}
    keep["0.weight"][:3] = 0.0  # dead filters -> masked BN channels
    mask = with_bn_channels(model, Mask(keep), torch.rand(2, 1, 10, 10))
    assert mask.channel_names == {"1.weight", "1.bias", "4.weight", "4.bias"}
    mask.apply_(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        x, y = torch.rand(16, 1, 10, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        mask.mask_grads_(model)
        opt.step()
        mask.apply_(model)
        mask.mask_optimizer_state_(opt, model)
    params = dict(model.named_parameters())
    for name, m in mask.items():
        assert torch.all(params[name][m == 0] == 0), name
        assert torch.all(opt.state[params[name]]["momentum_buffer"][m == 0] == 0), name
    # the kept weights did train, and the sparsity read back from the weights is unchanged
    assert not torch.equal(params["3.weight"], before["3.weight"])
    assert mask_from_dense(dense_state_dict(model), mask.weight_names()).counts() == mask.counts()


def test_dense_export_loads_strictly_into_robustbench_with_identical_logits():
    rb_cls = _rb_wide_resnet()
    torch.manual_seed(0)
    ours = build_model("wrn-10-1", num_classes=10, in_channels=3)  # identity normalization
    mask = with_bn_channels(ours, _pruned(ours, 0.8))
    sd = dense_state_dict(ours, mask)
    assert set(sd) == set(ours.state_dict())  # no weight_orig / weight_mask keys
    rb = rb_cls(depth=10, num_classes=10, widen_factor=1)
    rb.load_state_dict(sd, strict=True)
    mask.apply_(ours)
    ours.eval()
    rb.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), rb(x), atol=1e-6, rtol=1e-5)
    # and back: importing RobustBench's state_dict recovers the mask of the weights
    fresh = build_model("wrn-10-1", num_classes=10, in_channels=3)
    back = import_dense(fresh, rb.state_dict())
    assert all(torch.equal(back[n], mask[n]) for n in back)
    assert back.counts() == mask.counts()


def test_dense_export_with_normalization_matches_robustbench_on_normalized_input():
    rb_cls = _rb_wide_resnet()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    ours = build_model("wrn-10-2", num_classes=10, in_channels=3, mean=mean, std=std)
    mask = _pruned(ours, 0.5)
    rb = rb_cls(depth=10, num_classes=10, widen_factor=2)
    rb.load_state_dict(dense_state_dict(ours, mask), strict=True)
    mask.apply_(ours)
    ours.eval()
    rb.eval()
    x = torch.rand(2, 3, 32, 32)
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), rb(xn), atol=1e-5, rtol=1e-5)


def test_import_dense_from_another_architecture_is_one_line_error():
    small = build_model("small-cnn", num_classes=10, in_channels=1)
    wrn = build_model("wrn-10-1", num_classes=10, in_channels=1)
    with pytest.raises(UserError, match="another architecture") as info:
        import_dense(wrn, dense_state_dict(small), source="foreign.pt")
    assert "\n" not in str(info.value)


def test_damaged_mask_files_are_refused(tmp_path):
    torch.save({"format": "boosting-tickets/mask", "masks": {"a": torch.ones(2)}, "channels": 3},
               tmp_path / "bad.pt")  # fmt: skip
    with pytest.raises(UserError, match="damaged"):
        Mask.load(tmp_path / "bad.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a boosting-tickets mask"):
        Mask.load(tmp_path / "other.pt")
