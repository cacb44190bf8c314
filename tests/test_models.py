"""Tests for boosting_tickets.models: shapes, registry, RobustBench compatibility, helpers."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from boosting_tickets.core.errors import UserError
from boosting_tickets.models.layers import Normalize, count_parameters, prunable_parameters
from boosting_tickets.models.preact_resnet import PreActResNet18
from boosting_tickets.models.registry import build_model, validate_model_name
from boosting_tickets.models.small_cnn import SmallCNN
from boosting_tickets.models.vgg import VGG16BN
from boosting_tickets.models.wide_resnet import WideResNet

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
MODEL_NAMES = ("vgg16-bn", "preact-resnet18", "small-cnn")  # the fixed-name families
ALL_NAMES = ("wrn-10-1", "wrn-16-2", *MODEL_NAMES)


def _robustbench_arch(module: str):
    """Import a robustbench architecture module, skipping the test when robustbench is unusable."""
    # robustbench imports `autoattack`, which PyPI ships as `pyautoattack`.
    aa = pytest.importorskip("pyautoattack")
    sys.modules.setdefault("autoattack", aa)
    try:
        return importlib.import_module(f"robustbench.model_zoo.architectures.{module}")
    except Exception as exc:  # broken installs fail in many ways (pkg_resources, clobbered files)
        pytest.skip(f"robustbench unusable: {exc}")


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Give every BN non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def _same_keys_and_shapes(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)


# ---------------------------------------------------------------- RobustBench compatibility


def test_wrn_state_dict_round_trips_with_robustbench() -> None:
    rb_wrn = _robustbench_arch("wide_resnet")
    torch.manual_seed(0)
    ours = WideResNet(depth=16, widen_factor=2, num_classes=10, in_channels=3)
    _randomize_bn(ours, 1)
    rb = rb_wrn.WideResNet(depth=16, num_classes=10, widen_factor=2)
    _same_keys_and_shapes(ours, rb)

    rb.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    rb.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), rb(x), atol=1e-6, rtol=1e-5)

    # Reverse direction: a RobustBench checkpoint loads strictly into ours.
    torch.manual_seed(5)
    rb2 = rb_wrn.WideResNet(depth=16, num_classes=10, widen_factor=2)
    _randomize_bn(rb2, 2)
    ours2 = build_model("wrn-16-2", num_classes=10, in_channels=3)
    ours2.load_state_dict(rb2.state_dict(), strict=True)
    ours2.eval()
    rb2.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours2(x), rb2(x), atol=1e-6, rtol=1e-5)


def test_wrn_with_normalization_matches_robustbench_on_normalized_input() -> None:
    rb_wrn = _robustbench_arch("wide_resnet")
    ours = build_model("wrn-10-2", num_classes=7, in_channels=3, mean=CIFAR_MEAN, std=CIFAR_STD)
    _randomize_bn(ours, 3)
    rb = rb_wrn.WideResNet(depth=10, num_classes=7, widen_factor=2)
    rb.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    rb.eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), rb((x - mean) / std), atol=1e-5, rtol=1e-5)


def test_wrn_dropout_matches_robustbench_in_train_mode() -> None:
    rb_wrn = _robustbench_arch("wide_resnet")
    ours = WideResNet(depth=10, widen_factor=1, dropout=0.3)
    rb = rb_wrn.WideResNet(depth=10, num_classes=10, widen_factor=1, dropRate=0.3)
    rb.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(4, 3, 32, 32)
    torch.manual_seed(11)
    a = ours(x)
    torch.manual_seed(11)
    b = rb(x)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_preact_resnet18_state_dict_round_trips_with_robustbench() -> None:
    rb_resnet = _robustbench_arch("resnet")
    torch.manual_seed(0)
    ours = PreActResNet18()
    _randomize_bn(ours, 4)
    rb = rb_resnet.PreActResNet18()
    _same_keys_and_shapes(ours, rb)
    rb.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    ours.eval()
    rb.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), rb(x), atol=1e-6, rtol=1e-5)

    rb2 = rb_resnet.PreActResNet18()
    _randomize_bn(rb2, 5)
    ours2 = build_model("preact-resnet18", num_classes=10, in_channels=3)
    ours2.load_state_dict(rb2.state_dict(), strict=True)
    ours2.eval()
    rb2.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours2(x), rb2(x), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- shapes and gradients


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32)])
def test_output_shapes_and_input_gradient(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    c = shape[1]
    model = build_model(name, num_classes=7, in_channels=c, mean=[0.5] * c, std=[0.25] * c)
    assert model.arch == name
    x = torch.rand(shape, requires_grad=True)
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()  # attacks need input gradients
    assert x.grad is not None and torch.isfinite(x.grad).all()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


def test_direct_constructors_carry_arch() -> None:
    assert WideResNet(10, 1).arch == "wrn-10-1"
    assert VGG16BN().arch == "vgg16-bn"
    assert PreActResNet18().arch == "preact-resnet18"
    assert SmallCNN().arch == "small-cnn"
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    assert not any("arch" in k for k in model.state_dict())


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(("name", "millions"), [("wrn-28-10", 36.48), ("wrn-34-10", 46.16)])
def test_wrn_parameter_counts(name: str, millions: float) -> None:
    total, nonzero = count_parameters(build_model(name, num_classes=10, in_channels=3))
    assert abs(total / 1e6 - millions) < 0.005
    assert 0 < nonzero <= total


def test_count_parameters_counts_zeros() -> None:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = 1.0
        model.bias.fill_(2.0)
    assert count_parameters(model) == (15, 4)


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "bad", ["wrn-15-4", "wrn-4-1", "wrn-16-0", "wrn-16", "resnet50", "", "vgg16", 42]
)
def test_bad_names_raise_user_error(bad: object) -> None:
    with pytest.raises(UserError):
        validate_model_name(bad)  # type: ignore[arg-type]
    with pytest.raises(UserError):
        build_model(bad, num_classes=10, in_channels=3)  # type: ignore[arg-type]


def test_unknown_name_message_lists_valid_forms() -> None:
    with pytest.raises(UserError) as info:
        validate_model_name("resnet50")
    message = str(info.value)
    assert "\n" not in message
    for name in ("wrn-D-K", *MODEL_NAMES):
        assert name in message
    with pytest.raises(UserError, match="depth"):
        validate_model_name("wrn-15-4")


def test_names_are_canonicalized() -> None:
    assert validate_model_name(" WRN-016-4 ") == "wrn-16-4"
    assert validate_model_name("Small-CNN") == "small-cnn"
    assert build_model("WRN-10-1", num_classes=3, in_channels=1).arch == "wrn-10-1"


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(0, 200), widen=st.integers(0, 30))
def test_wrn_name_validity_rule(depth: int, widen: int) -> None:
    name = f"wrn-{depth}-{widen}"
    if depth >= 10 and (depth - 4) % 6 == 0 and widen >= 1:
        assert validate_model_name(name) == name
    else:
        with pytest.raises(UserError):
            validate_model_name(name)


def test_wrn_constructor_rejects_bad_depth() -> None:
    with pytest.raises(UserError):
        WideResNet(depth=15, widen_factor=4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0, "in_channels": 3},
        {"num_classes": 10, "in_channels": 0},
        {"num_classes": 10, "in_channels": 3, "dropout": 1.0},
        {"num_classes": 10, "in_channels": 3, "mean": [0.5, 0.5]},
        {"num_classes": 10, "in_channels": 1, "mean": [0.5], "std": [0.0]},
        {"num_classes": 10, "in_channels": 1, "mean": [0.5], "std": [0.1, 0.2]},
        {"num_classes": 10, "in_channels": 1, "mean": ["a"]},
    ],
)
def test_bad_build_arguments_raise_user_error(kwargs: dict) -> None:
    with pytest.raises(UserError):
        build_model("small-cnn", **kwargs)


# ---------------------------------------------------------------- Normalize


def test_normalize_buffers_not_in_state_dict() -> None:
    model = build_model("wrn-10-1", num_classes=10, in_channels=3, mean=CIFAR_MEAN, std=CIFAR_STD)
    keys = list(model.state_dict())
    assert not any(k.startswith("normalize") for k in keys)
    buffers = dict(model.named_buffers())
    assert "normalize.mean" in buffers and "normalize.std" in buffers
    # They still follow dtype/device moves.
    assert model.double().normalize.mean.dtype == torch.float64


def test_normalize_math_and_identity_fast_path() -> None:
    x = torch.rand(2, 3, 4, 4)
    norm = Normalize(CIFAR_MEAN, CIFAR_STD)
    assert not norm.is_identity
    expected = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(norm(x), expected)
    identity = Normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert identity.is_identity
    assert identity(x) is x
    assert norm.state_dict() == {}


@pytest.mark.parametrize(
    ("mean", "std"), [([0.1, 0.2], [0.3]), ([], []), ([0.1], [-1.0]), ([float("nan")], [1.0])]
)
def test_normalize_rejects_bad_values(mean: list[float], std: list[float]) -> None:
    with pytest.raises(UserError):
        Normalize(mean, std)


# ---------------------------------------------------------------- prunable parameters


@pytest.mark.parametrize("name", ALL_NAMES)
def test_prunable_parameters_are_conv_and_linear_weights(name: str) -> None:
    model = build_model(name, num_classes=10, in_channels=3)
    prunable = prunable_parameters(model)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(prunable) == len(layers)
    assert {id(p) for p in prunable.values()} == {id(m.weight) for m in layers}
    named = dict(model.named_parameters())
    assert all(named[k] is p for k, p in prunable.items())
    assert all(k.endswith(".weight") and p.dim() in (2, 4) for k, p in prunable.items())
    # named_parameters order, and the classifier is included (last).
    order = [k for k in named if k in prunable]
    assert list(prunable) == order
    assert prunable[order[-1]].dim() == 2


def test_prunable_parameter_names_for_wrn() -> None:
    prunable = prunable_parameters(build_model("wrn-16-2", num_classes=10, in_channels=3))
    names = list(prunable)
    assert names[0] == "conv1.weight"
    assert "block1.layer.0.conv1.weight" in names
    assert "block1.layer.0.convShortcut.weight" in names
    assert names[-1] == "fc.weight"
    assert not any(".bn" in k or k.endswith("bias") for k in names)
    # 1 stem + 3 stages x 2 blocks x 2 convs + 3 shortcuts + fc
    assert len(names) == 1 + 12 + 3 + 1


@pytest.mark.parametrize("name", ["wrn-10-1", "wrn-16-4", "wrn-34-10", *MODEL_NAMES])
@pytest.mark.parametrize("shape", [(1, 28, 10), (3, 32, 10), (1, 16, 7), (3, 32, 100)])
def test_analytic_flops_equal_torch_flop_counter(name: str, shape: tuple[int, int, int]) -> None:
    # The cost model counts FLOPs without torch (so --dry-run needs none); torch's own counter
    # on the meta device is the reference.
    from torch.utils.flop_counter import FlopCounterMode

    from boosting_tickets.models.registry import forward_flops

    channels, size, classes = shape
    with torch.device("meta"):
        net = build_model(name, num_classes=classes, in_channels=channels)
        x = torch.empty(1, channels, size, size)
    net.eval()
    with FlopCounterMode(display=False) as counter:
        net(x)
    assert forward_flops(name, channels, size, classes) == counter.get_total_flops()
