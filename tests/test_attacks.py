"""Tests for boosting_tickets.attacks on a tiny seeded CNN and random data (CPU, a few seconds)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from boosting_tickets.adversarial.attacks import fgsm, perturb, pgd, trades_perturb
from boosting_tickets.adversarial.evaluator import (
    accuracy_under_attack,
    robust_correct,
    robust_correct_with_stats,
)
from boosting_tickets.adversarial.spec import AttackSpec
from boosting_tickets.adversarial.steps import bn_mode
from boosting_tickets.core.errors import UserError

SETTINGS = settings(max_examples=12, deadline=None)


class TinyCNN(nn.Module):
    """conv + BN + ReLU + dropout + linear on 1×8×8 inputs, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.relu(self.bn(self.conv(x))))
        return self.fc(h.flatten(1))


def make_model(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN()
    # Non-trivial BN statistics so eval and train mode differ.
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def make_data(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def make_fitted(seed: int = 0, n: int = 32) -> tuple[TinyCNN, torch.Tensor, torch.Tensor]:
    """A model that classifies most of its random training points correctly (clean)."""
    model = make_model(seed)
    x, y = make_data(seed, n)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, x, y


@pytest.fixture(scope="module")
def fitted() -> tuple[TinyCNN, torch.Tensor, torch.Tensor]:
    return make_fitted(0)


def attack(name: str, model, x, y, eps, steps, gen, bn="eval"):
    if name == "fgsm":
        return fgsm(model, x, y, eps, bn_mode=bn, generator=gen)
    if name == "fgsm-rs":
        return fgsm(model, x, y, eps, random_start=True, bn_mode=bn, generator=gen)
    return pgd(model, x, y, eps, step_size=eps / 3, steps=steps, bn_mode=bn, generator=gen)


names = st.sampled_from(["fgsm", "fgsm-rs", "pgd"])
epsilons = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)


@SETTINGS
@given(name=names, eps=epsilons, steps=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_output_in_ball_and_box(name, eps, steps, seed):
    model = make_model(seed % 3)
    x, y = make_data(seed, n=6)
    x_adv = attack(name, model, x, y, eps, steps, torch.Generator().manual_seed(seed))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


@SETTINGS
@given(name=names, start_train=st.booleans(), bn=st.sampled_from(["eval", "train"]))
def test_model_modes_and_bn_stats_restored(name, start_train, bn):
    model = make_model(1)
    model.train(start_train)
    model.drop.eval()  # mixed modes must be restored module by module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x, y = make_data(1, n=6)
    attack(name, model, x, y, 0.1, 2, None, bn=bn)
    trades_perturb(model, x, 0.1, step_size=0.03, steps=2, bn_mode=bn)
    robust_correct(model, x, y, AttackSpec("pgd", 0.1, steps=2, bn_mode=bn))
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bn_mode_context_restores_on_exception():
    model = make_model(0)
    model.train()
    model.bn.eval()
    with pytest.raises(RuntimeError):
        with bn_mode(model, "eval"):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert model.training and model.conv.training and not model.bn.training
    with bn_mode(model, "train"):
        assert all(m.training for m in model.modules())
    assert not model.bn.training


def test_attack_in_train_bn_mode_uses_batch_stats():
    model = make_model(0)
    x, y = make_data(0, n=8)
    a = pgd(model, x, y, 0.1, step_size=0.03, steps=3, random_start=False, bn_mode="eval")
    b = pgd(model, x, y, 0.1, step_size=0.03, steps=3, random_start=False, bn_mode="train")
    assert not torch.equal(a, b)


@SETTINGS
@given(name=names, seed=st.integers(0, 2**16))
def test_deterministic_given_generator_seed(name, seed):
    model = make_model(0)
    x, y = make_data(seed % 5, n=6)
    a = attack(name, model, x, y, 0.1, 3, torch.Generator().manual_seed(seed))
    b = attack(name, model, x, y, 0.1, 3, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    if name != "fgsm":
        c = attack(name, model, x, y, 0.1, 3, torch.Generator().manual_seed(seed + 1))
        assert not torch.equal(a, c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_matches_torchattacks(seed):
    torchattacks = pytest.importorskip("torchattacks")
    model = make_model(seed)
    x, y = make_data(seed, n=10)
    eps, alpha, steps = 0.1, 0.02, 7
    torch.manual_seed(100 + seed)
    ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(100 + seed)
    ours = pgd(model, x, y, eps, step_size=alpha, steps=steps, random_start=True)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
    # Same random stream through the spec-level dispatcher.
    torch.manual_seed(100 + seed)
    ours2 = perturb(model, x, y, AttackSpec("pgd", eps, steps=steps, step_size=alpha))
    assert torch.allclose(ours2, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_fgsm_matches_torchattacks(seed):
    torchattacks = pytest.importorskip("torchattacks")
    model = make_model(seed)
    x, y = make_data(seed, n=10)
    ref = torchattacks.FGSM(model, eps=0.05)(x, y)
    assert torch.allclose(fgsm(model, x, y, 0.05), ref, atol=1e-6, rtol=0)
    assert torch.allclose(perturb(model, x, y, AttackSpec("fgsm", 0.05)), ref, atol=1e-6, rtol=0)


def test_parameter_grads_untouched():
    model = make_model(0)
    x, y = make_data(0, n=6)
    fgsm(model, x, y, 0.1, random_start=True)
    pgd(model, x, y, 0.1, step_size=0.03, steps=2, restarts=2)
    trades_perturb(model, x, 0.1, step_size=0.03, steps=2)
    robust_correct(model, x, y, AttackSpec("pgd", 0.1, steps=2, restarts=2))
    assert all(p.grad is None for p in model.parameters())


def test_attacks_work_inside_no_grad():
    model = make_model(0)
    x, y = make_data(0, n=4)
    with torch.no_grad():
        x_adv = pgd(model, x, y, 0.1, step_size=0.03, steps=2)
    assert (x_adv - x).abs().max() > 0


def test_pgd_increases_loss_and_restarts_pick_best(fitted):
    model, x, y = fitted

    def per_point_loss(x_in):
        with torch.no_grad():
            return F.cross_entropy(model(x_in), y, reduction="none")

    adv1 = pgd(
        model, x, y, 0.1, step_size=0.025, steps=5, generator=torch.Generator().manual_seed(3)
    )
    gen3 = torch.Generator().manual_seed(3)
    adv3 = pgd(model, x, y, 0.1, step_size=0.025, steps=5, restarts=3, generator=gen3)
    assert per_point_loss(adv1).mean() > per_point_loss(x).mean()
    with torch.no_grad():
        fooled1 = model(adv1).argmax(1) != y
        fooled3 = model(adv3).argmax(1) != y
    assert bool((fooled3 | ~fooled1).all())  # a point fooled by restart 1 stays fooled
    not_fooled = ~fooled1 & ~fooled3
    assert bool((per_point_loss(adv3)[not_fooled] >= per_point_loss(adv1)[not_fooled] - 1e-6).all())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_early_exit_no_better_than_plain_pgd(seed):
    model, x, y = make_fitted(seed, n=24)
    y = y.clone()
    y[:4] = (y[:4] + 1) % 10  # some clean-misclassified points
    eps, steps = 0.1, 5  # eps where some points survive and some do not
    spec = AttackSpec("pgd", eps, steps=steps, step_size=eps / 4)
    robust, stats = robust_correct_with_stats(
        model, x, y, spec, generator=torch.Generator().manual_seed(seed)
    )
    gen = torch.Generator().manual_seed(seed)
    x_adv = pgd(model, x, y, eps, step_size=eps / 4, steps=steps, generator=gen)
    with torch.no_grad():
        plain = model(x_adv).argmax(1) == y
        clean = model(x).argmax(1) == y
    assert robust.dtype == torch.bool and robust.shape == (x.shape[0],)
    assert robust.float().mean() <= plain.float().mean()
    assert bool((~robust | plain).all())  # same random start per point: robust ⇒ plain-correct
    assert 0 < int(robust.sum()) < int(clean.sum()) < x.shape[0]  # the test is not vacuous
    assert bool((~robust | clean).all())  # clean-misclassified points are never robust
    assert stats["robust_correct"] == int(robust.sum())
    assert stats["clean_correct"] == int(clean.sum())
    assert stats["backward_images"] <= stats["full_backward_images"]
    assert stats["clean_correct"] - stats["robust_correct"] == sum(stats["fooled_at"])


def test_restarts_never_increase_robust_accuracy(fitted):
    model, x, y = fitted
    prev, counts = None, []
    for restarts in (1, 2, 4):
        spec = AttackSpec("pgd", 0.1, steps=3, restarts=restarts)
        robust = robust_correct(model, x, y, spec, generator=torch.Generator().manual_seed(7))
        if prev is not None:
            assert bool((prev | ~robust).all())  # robust now ⇒ robust with fewer restarts
        prev = robust
        counts.append(int(robust.sum()))
    assert counts[-1] < counts[0]  # restarts do find more adversarial points here


def test_early_exit_saves_work_on_weak_model():
    model = make_model(0)  # untrained: eps 0.3 fools almost everything quickly
    x, y = make_data(0, n=32)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point clean-correct
    spec = AttackSpec("pgd", 0.3, steps=10)
    robust, stats = robust_correct_with_stats(model, x, y, spec)
    assert stats["clean_correct"] == 32
    assert stats["backward_images"] < stats["full_backward_images"] / 2
    assert stats["forward_images"] < stats["full_forward_images"] / 2
    assert int(robust.sum()) == stats["robust_correct"]


class Bump(nn.Module):
    """Two classes; logit margin d(v) = 0.1 − 10 (v − 0.65)² of the image mean v, peak at 0.65.

    From x = 0.5, one step of 0.2 goes to 0.7 (d > 0: fooled), the next step goes back to 0.5
    (d < 0: correct), so PGD's final iterate is correct but an intermediate one was fooled.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1).mean(1)
        d = 0.1 - 10.0 * (v - 0.65) ** 2
        return torch.stack([torch.zeros_like(d), d], dim=1)


def test_intermediate_fool_counts_as_not_robust():
    model = Bump()
    x = torch.full((3, 1, 1, 1), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    spec = AttackSpec("pgd", 0.3, steps=2, step_size=0.2, random_start=False)
    x_adv = perturb(model, x, y, spec)
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all())
        assert bool((model(x_adv).argmax(1) == y).all())  # final iterate looks robust
    robust, stats = robust_correct_with_stats(model, x, y, spec)
    assert not bool(robust.any())
    assert stats["fooled_at"] == [0, 3, 0]
    # clean forward, then steps at iterates 0 and 1; fooled at iterate 1, so no final forward
    assert stats["backward_images"] == 6 and stats["forward_images"] == 9


def test_fgsm_spec_in_evaluator(fitted):
    model, x, y = fitted
    y = y.clone()
    y[:3] = (y[:3] + 1) % 10
    for spec in (AttackSpec("fgsm", 0.12), AttackSpec("fgsm-rs", 0.12)):
        gen = torch.Generator().manual_seed(5)
        robust, stats = robust_correct_with_stats(model, x, y, spec, generator=gen)
        x_adv = perturb(model, x, y, spec, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            clean = model(x).argmax(1) == y
            adv = model(x_adv).argmax(1) == y
        assert torch.equal(robust, clean & adv)
        assert 0 < int(robust.sum()) < int(clean.sum()) < x.shape[0]
    assert stats["backward_images"] == int(clean.sum())


def test_accuracy_under_attack_batches(fitted):
    model, x, y = fitted
    spec = AttackSpec("pgd", 0.12, steps=3, random_start=False)
    whole = robust_correct(model, x, y, spec).float().mean().item()
    assert 0 < whole < 1
    assert math.isclose(accuracy_under_attack(model, x, y, spec, batch_size=7), whole)
    assert accuracy_under_attack(model, x, y, AttackSpec("pgd", 0.0, steps=2)) == pytest.approx(
        (model(x).argmax(1) == y).float().mean().item()
    )


def test_trades_perturb_in_ball_and_increases_kl(fitted):
    model, x, _ = fitted
    x_adv = trades_perturb(
        model, x, 0.1, step_size=0.03, steps=5, generator=torch.Generator().manual_seed(0)
    )
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="sum")
    assert kl > 1e-3
    again = trades_perturb(
        model, x, 0.1, step_size=0.03, steps=5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(x_adv, again)


def test_autocast_bf16_runs_on_cpu():
    model = make_model(0)
    x, y = make_data(0, n=4)
    x_adv = pgd(model, x, y, 0.1, step_size=0.03, steps=2, autocast_dtype=torch.bfloat16)
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_spec_defaults_and_protocol():
    assert AttackSpec("fgsm", 0.1).resolved().step_size == pytest.approx(0.1)
    assert AttackSpec("fgsm", 0.1).resolved().random_start is False
    assert AttackSpec("fgsm-rs", 0.1).resolved().step_size == pytest.approx(0.125)
    assert AttackSpec("fgsm-rs", 0.1).resolved().random_start is True
    pgd_spec = AttackSpec("PGD", 8 / 255, steps=10)
    assert pgd_spec.name == "pgd"
    assert pgd_spec.resolved().step_size == pytest.approx(2 / 255)
    assert pgd_spec.resolved().random_start is True
    proto = AttackSpec("pgd", 0.1, steps=20, restarts=2, bn_mode="train").protocol()
    assert proto == {
        "name": "pgd",
        "norm": "Linf",
        "eps": 0.1,
        "steps": 20,
        "step_size": pytest.approx(0.025),
        "restarts": 2,
        "random_start": True,
        "bn_mode": "train",
        "implementation": "boosting_tickets",
    }
    json.dumps(AttackSpec("pgd", torch.tensor(0.1), steps=3).protocol())  # plain numbers stored
    with pytest.raises(dataclasses.FrozenInstanceError):
        pgd_spec.eps = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "pgd", "eps": -0.1},
        {"name": "pgd", "eps": 1.5},
        {"name": "pgd", "eps": float("nan")},
        {"name": "pgd", "eps": float("inf")},
        {"name": "pgd", "eps": 0.1, "steps": 0},
        {"name": "pgd", "eps": 0.1, "restarts": 0},
        {"name": "pgd", "eps": 0.1, "step_size": float("nan")},
        {"name": "pgd", "eps": 0.1, "step_size": float("inf")},
        {"name": "cw", "eps": 0.1},
        {"name": "pgd", "eps": 0.1, "bn_mode": "frozen"},
        {"name": "fgsm", "eps": 0.1, "steps": 5},
    ],
)
def test_bad_spec_raises_user_error(kwargs):
    with pytest.raises(UserError):
        AttackSpec(**kwargs)


def test_bad_function_inputs_raise_user_error():
    model = make_model(0)
    x, y = make_data(0, n=4)
    with pytest.raises(UserError):
        pgd(model, x, y, -0.1, step_size=0.01, steps=1)
    with pytest.raises(UserError):
        pgd(model, x, y, float("nan"), step_size=0.01, steps=1)
    with pytest.raises(UserError):
        pgd(model, x, y, 0.1, step_size=0.01, steps=0)
    with pytest.raises(UserError):
        fgsm(model, x, y, 2.0)
    with pytest.raises(UserError):
        fgsm(model, x, y, 0.1, bn_mode="frozen")
    with pytest.raises(UserError):
        fgsm(model, x * 255, y, 0.1)  # not in [0, 1]
    with pytest.raises(UserError):
        fgsm(model, x, y.float(), 0.1)
    with pytest.raises(UserError):
        perturb(model, x, y, "pgd")  # type: ignore[arg-type]
    with pytest.raises(UserError):
        with bn_mode(model, "frozen"):
            pass
    with pytest.raises(UserError):
        trades_perturb(model, x, 0.1, step_size=0.01, steps=1, autocast_dtype=torch.float64)


def test_fgsm_with_a_random_start_resolves_to_wongs_step_like_the_attack_takes_it():
    from boosting_tickets.adversarial.spec import AttackSpec

    spec = AttackSpec("fgsm", eps=0.1, random_start=True).resolved()
    assert spec.step_size == pytest.approx(0.125)  # 1.25 eps (Wong, Rice & Kolter 2020)
    assert AttackSpec("fgsm", eps=0.1).resolved().step_size == pytest.approx(0.1)
    assert (
        AttackSpec("fgsm", eps=0.1, random_start=True, step_size=0.05).resolved().step_size == 0.05
    )


def _bn_model():
    from boosting_tickets.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=10, in_channels=1, mean=None, std=None)
    with torch.no_grad():  # running statistics unlike any batch's, so that modes differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_bn_train_mode_evaluation_freezes_statistics_judges_in_eval_mode_and_is_never_weaker():
    """--eval-bn-mode train once let held-out data overwrite the running statistics of the model
    being trained, judged clean/FGSM in another mode than PGD, and let early exit (shrinking
    batches, hence other batch statistics) be weaker than full PGD."""
    from boosting_tickets.adversarial.evaluation import evaluate
    from boosting_tickets.adversarial.protocol import EvalProtocol

    model = _bn_model()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    protocol = EvalProtocol(eps=0.02, pgd_steps=3, step_size=0.01, bn_mode="train", seed=5)
    res = evaluate(model, x, y, protocol, batch_size=32, per_point=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "evaluation changed the model"
    assert not model.training
    with torch.no_grad():
        clean_eval = (model(x).argmax(1) == y).float().mean().item()
    assert res["clean_acc"] == pytest.approx(clean_eval)  # judged in eval mode, like PGD
    # Full PGD in train mode on the same batches and random stream, judged in eval mode.
    g = torch.Generator().manual_seed(5)
    full = []
    for s in (slice(0, 32), slice(32, 64)):
        adv = pgd(model, x[s], y[s], 0.02, step_size=0.01, steps=3, bn_mode="train", generator=g)
        with torch.no_grad():
            full.append(model(adv).argmax(1) == y[s])
    full_ok = torch.cat(full)
    ours = torch.tensor(res["per_point"]["pgd"], dtype=torch.bool)
    assert not bool((ours & ~full_ok).any()), "early exit kept a point full PGD fools"
