"""The L2 threat model (issue #13, part 7): PGD-L2 and FGM against torchattacks.PGDL2 step for
step, the ball and the box, the early-exit evaluator, the protocol and its record, default eps,
AutoAttack L2 through pyautoattack, L2 training, the RobustBench L2 rows, and the refusals."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import cli_call, small_config
from test_attacks import make_data, make_fitted, make_model
from torch import nn

from boosting_tickets.adversarial.attacks import fgm, perturb, pgd
from boosting_tickets.adversarial.evaluation import autoattack_accuracy, evaluate
from boosting_tickets.adversarial.evaluator import robust_correct, robust_correct_with_stats
from boosting_tickets.adversarial.protocol import EvalProtocol
from boosting_tickets.adversarial.spec import AttackSpec, check_eps, check_threat
from boosting_tickets.core.errors import UserError
from boosting_tickets.data.registry import get_spec
from boosting_tickets.training.hparams import EvalConfig, RunConfig, eval_protocol
from boosting_tickets.training.run import train
from boosting_tickets.zoo import compare as zoo_compare
from boosting_tickets.zoo import reference as zoo_reference


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(p=2, dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_l2_matches_torchattacks_pgdl2(seed):
    torchattacks = pytest.importorskip("torchattacks")
    model = make_model(seed)
    x, y = make_data(seed, n=10)
    eps, alpha, steps = 0.8, 0.2, 7
    torch.manual_seed(100 + seed)
    ref = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(100 + seed)
    ours = pgd(model, x, y, eps, step_size=alpha, steps=steps, norm="L2")
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
    torch.manual_seed(100 + seed)  # the same through the registry
    spec = AttackSpec("pgd-l2", eps, steps=steps, step_size=alpha)
    assert torch.allclose(perturb(model, x, y, spec), ref, atol=1e-6, rtol=0)
    # Without a random start too.
    ref0 = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours0 = pgd(model, x, y, eps, step_size=alpha, steps=steps, random_start=False, norm="L2")
    assert torch.allclose(ours0, ref0, atol=1e-6, rtol=0)


def test_fgm_is_one_pgdl2_step_of_eps_from_the_clean_input():
    torchattacks = pytest.importorskip("torchattacks")
    model = make_model(0)
    x, y = make_data(0, n=10)
    ref = torchattacks.PGDL2(model, eps=0.5, alpha=0.5, steps=1, random_start=False)(x, y)
    assert torch.allclose(fgm(model, x, y, 0.5), ref, atol=1e-6, rtol=0)
    assert torch.allclose(perturb(model, x, y, AttackSpec("fgm", 0.5)), ref, atol=1e-6, rtol=0)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["fgm", "pgd-l2"]), eps=st.floats(0.0, 3.0), steps=st.integers(1, 4),
       restarts=st.integers(1, 2), seed=st.integers(0, 2**16))  # fmt: skip
def test_l2_outputs_stay_in_the_ball_and_the_box(name, eps, steps, restarts, seed):
    model = make_model(seed % 3)
    x, y = make_data(seed, n=6)
    single = name == "fgm"
    spec = AttackSpec(name, eps, steps=1 if single else steps, restarts=1 if single else restarts)
    x_adv = perturb(model, x, y, spec, generator=torch.Generator().manual_seed(seed))
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert bool((_l2(x_adv, x) <= eps * (1 + 1e-5) + 1e-6).all())
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_early_exit_l2_is_never_weaker_than_full_pgd_l2():
    model, x, y = make_fitted(0)
    spec = AttackSpec("pgd-l2", 1.0, steps=5, restarts=2)
    robust, stats = robust_correct_with_stats(model, x, y, spec,
                                              generator=torch.Generator().manual_seed(3))  # fmt: skip
    full = pgd(model, x, y, 1.0, step_size=0.25, steps=5, restarts=2, norm="L2",
               generator=torch.Generator().manual_seed(3))  # fmt: skip
    with torch.no_grad():
        survives = model(full).argmax(1) == y
    assert bool((robust <= survives).all())  # robust here implies robust under full PGD-L2
    assert 0 < stats["clean_correct"] and stats["robust_correct"] < stats["clean_correct"]
    assert stats["forward_images"] <= stats["full_forward_images"]
    # The same random stream: a second evaluation with the same seed gives the same points.
    again = robust_correct(model, x, y, spec, generator=torch.Generator().manual_seed(3))
    assert torch.equal(robust, again)


def test_the_l2_protocol_uses_pgd_l2_and_fgm_and_records_its_norm():
    model, x, y = make_fitted(0)
    proto = EvalProtocol(eps=0.5, pgd_steps=5, norm="l2")
    assert proto.norm == "L2" and proto.pgd_spec().name == "pgd-l2"
    assert proto.fgsm_spec().name == "fgm"
    res = evaluate(model, x, y, proto)
    rec = res["protocol"]
    assert rec["threat_model"] == "L2" and rec["eps"] == 0.5
    assert rec["implementation"] == "boosting_tickets early-exit PGD-L2"
    assert res["pgd_acc"] <= res["fgsm_acc"] + 1 / len(y) and res["pgd_acc"] <= res["clean_acc"]
    # Attacks of the other norm are refused in an L2 protocol (one threat model at a time).
    with pytest.raises(UserError, match="is Linf but the protocol is L2"):
        EvalProtocol(eps=0.5, norm="L2", attacks=("pgd",))
    assert EvalProtocol(eps=0.5, norm="L2", attacks=("pgd-l2",)).attack_spec("pgd-l2").norm == "L2"


@pytest.mark.parametrize(
    "eps, norm, ok",
    [(2.0, "L2", True), (0.0, "L2", True), (-0.1, "L2", False), (math.inf, "L2", False),
     (math.nan, "L2", False), (2.0, "Linf", False), (8 / 255, "Linf", True)],
)  # fmt: skip
def test_eps_is_checked_for_its_norm(eps, norm, ok):
    if ok:
        assert check_eps(eps, norm) == eps
        return
    with pytest.raises(UserError):
        check_eps(eps, norm)


def test_threat_names():
    assert check_threat("linf") == "Linf" and check_threat("L∞") == "Linf"
    assert check_threat("l2") == "L2"
    with pytest.raises(UserError, match="unknown threat model 'L1'"):
        check_threat("L1")


def test_default_l2_eps_is_cifar10s_and_others_must_give_one():
    assert get_spec("cifar10").eps_for("L2") == 0.5
    assert get_spec("cifar10").eps_for("Linf") == pytest.approx(8 / 255)
    with pytest.raises(UserError, match="fashion-mnist has no customary L2 eps"):
        get_spec("fashion-mnist").eps_for("L2")
    cfg = RunConfig(eval=EvalConfig(threat="L2"))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="cifar10"))
    assert cfg.eval_eps == 0.5 and eval_protocol(cfg).norm == "L2"


def test_l2_training_and_evaluation_record_the_norm(tmp_path, capsys):
    cfg = small_config(epochs=1, objective="pgd-l2", train_eps=1.0, train_steps=2)
    cfg = dataclasses.replace(
        cfg, eval=dataclasses.replace(cfg.eval, threat="L2", eval_eps=1.0, eval_steps=2)
    )
    assert cfg.train_norm == "L2"
    res = train(cfg, tmp_path / "run")
    assert res.test["best"]["protocol"]["threat_model"] == "L2"
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    assert metrics["epochs"][0]["val_pgd"] is not None
    assert metrics["train_attack"]["name"] == "pgd-l2" and metrics["train_attack"]["norm"] == "L2"
    assert metrics["eval_protocol"]["threat_model"] == "L2"
    # evaluate: the run's own L2 protocol by default, L∞ on request (the dataset's eps).
    code, out, err = cli_call(["evaluate", str(res.run_dir), "--json", "--n-examples", "8"],
                              capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["protocol"]["threat_model"] == "L2" and doc["protocol"]["eps"] == 1.0
    code, out, err = cli_call(["evaluate", str(res.run_dir), "--json", "--n-examples", "8",
                               "--threat", "Linf"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["protocol"]["threat_model"] == "Linf"
    assert json.loads(out)["protocol"]["eps"] == get_spec("synthetic").default_eps


def test_autoattack_l2_breaks_exactly_the_breakable_points_and_matches_pyautoattack():
    # A linear model: a clean-correct point falls to an L2 perturbation of size
    # min_j (f_y - f_j) / ||w_y - w_j||_2 (pixels in [0.25, 0.75]: the box never binds).
    pyautoattack = pytest.importorskip("pyautoattack")
    torch.manual_seed(4)
    linear = nn.Linear(3 * 8 * 8, 10)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = 0.25 + 0.5 * torch.rand(256, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    w = linear.weight.detach()
    margin = logits.gather(1, pred[:, None]) - logits
    flip = margin / (w[pred][:, None, :] - w[None, :, :]).norm(dim=-1)
    flip[torch.arange(len(x)), pred] = float("inf")
    dist = flip.min(1).values  # from 0.001 to 0.36 for these 256 points
    eps = 0.1
    weak, strong = (dist < eps / 2).nonzero().flatten()[:4], (dist > 2 * eps).nonzero().flatten()
    assert len(weak) == 4 and len(strong) >= 2
    images = torch.cat([x[weak], x[strong[:2]]])
    labels = pred[torch.cat([weak, strong[:2]])]
    ours = autoattack_accuracy(model, images, labels, eps, batch_size=8, norm="L2")
    assert ours == pytest.approx(2 / 6)  # the 4 breakable points fall, the 2 far ones stand
    adversary = pyautoattack.AutoAttack(model, norm="L2", eps=eps, version="standard",
                                        device="cpu", seed=0)  # fmt: skip
    res = adversary.run_standard_evaluation(images, labels, batch_size=8)
    x_adv = res[0] if isinstance(res, tuple) else res
    with torch.no_grad():
        direct = float((model(x_adv).argmax(1) == labels).float().mean())
    assert ours == pytest.approx(direct)
    assert bool((_l2(x_adv, images) <= eps + 1e-4).all())


def test_robustbench_l2_rows_are_sourced_and_sane():
    doc = zoo_reference.load_reference("L2")
    assert (doc["dataset"], doc["threat_model"], doc["eps"]) == ("cifar10", "L2", "0.5")
    entries = {e["name"]: e for e in doc["entries"]}
    assert entries["Rice2020Overfitting"]["clean_acc"] == 88.67
    assert entries["Rice2020Overfitting"]["autoattack_acc"] == 67.68
    assert entries["Standard"]["autoattack_acc"] == 0.0
    for e in doc["entries"]:
        assert e["source"].startswith("https://github.com/RobustBench/robustbench/blob/")
        assert e["source"].endswith(f"/model_info/cifar10/L2/{e['name']}.json")
        assert e["eps"] == "0.5" and 0 <= e["autoattack_acc"] <= e["clean_acc"] <= 100
    from boosting_tickets.zoo.robustbench import zoo_models

    zoo = zoo_models("cifar10", "L2")  # robustbench 1.1.1's own L2 registry
    assert all(e["in_model_zoo"] == (e["name"] in zoo) for e in doc["entries"])
    assert zoo_reference.reference_entries("cifar10", "L2")["Standard"]["name"] == "Standard"
    assert "Rice2020Overfitting" in zoo_reference.reference_table("L2")
    row = zoo_reference.published_row(entries["Rice2020Overfitting"], None, "L2")
    assert "L2 eps 0.5" in row["note"] and row["autoattack_acc"] == pytest.approx(0.6768)
    # The comparison protocol under L2: PGD-20-L2 + FGM at eps 0.5.
    proto = zoo_compare.comparison_protocol("cifar10", threat="L2")
    assert (proto.norm, proto.eps, proto.pgd_steps) == ("L2", 0.5, 20)


def test_compare_list_l2(capsys):
    code, out, err = cli_call(["compare", "list", "--threat", "L2"], capsys)
    assert code == 0, err
    assert "L2 leaderboard" in out and "Rice2020Overfitting" in out
    code, _, err = cli_call(["compare", "list", "--threat", "L1"], capsys)
    assert code == 2 and "unknown threat 'L1' for --threat" in err


def test_tables_refuse_to_mix_linf_and_l2_results(tmp_path, capsys):
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "results" / "fixture-mini" / "results.json"
    from boosting_tickets.core.storage import atomic_write_json, read_json

    doc = read_json(fixture, what="results")
    doc.pop("sha256", None)
    for name, norm in (("a", "Linf"), ("b", "L2")):
        d = json.loads(json.dumps(doc))
        d["suite"] = f"suite-{name}"
        d["protocol"]["threat_model"] = norm
        atomic_write_json(tmp_path / "res" / name / "results.json", d, checksum=True)
    code, _, err = cli_call(["tables", str(tmp_path / "res"), "--out", str(tmp_path / "t")],
                            capsys)  # fmt: skip
    assert code == 2 and "different protocols" in err and "threat_model" in err


def test_bench_run_under_l2_is_its_own_suite_and_never_replaces_the_linf_results(tmp_path, capsys):
    from support import tiny_suite

    suite = tmp_path / "s.toml"
    suite.write_text(tiny_suite('[[arms]]\nname = "dense"\nkind = "dense"\n'))
    linf, l2 = tmp_path / "linf", tmp_path / "l2"
    assert cli_call(["bench", "run", str(suite), "--out", str(linf)], capsys)[0] == 0
    before = (linf / "results.json").read_bytes()
    code, _, err = cli_call(["bench", "run", str(suite), "--threat", "L2", "--eps", "1.0",
                             "--out", str(l2)], capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads((l2 / "results.json").read_text())
    assert doc["suite"] == "s-L2" and doc["protocol"]["threat_model"] == "L2"
    assert doc["protocol"]["eps"] == 1.0
    # Into the L∞ suite's directory: refused in one line, its results untouched.
    code, _, err = cli_call(["bench", "run", str(suite), "--threat", "L2", "--eps", "1.0",
                             "--out", str(linf)], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and (linf / "results.json").read_bytes() == before
    code, _, err = cli_call(["bench", "run", str(suite), "--threat", "L2", "--dry-run"], capsys)
    assert code == 2 and "synthetic has no customary L2 eps" in err
