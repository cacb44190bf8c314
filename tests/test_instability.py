"""Instability analysis (Frankle et al. 2020) under attack: the noise switch, the path, the barrier,
the command over a run and over a suite, and the figures."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import cli_call, small_config, tiny_suite
from torch import nn

from boosting_tickets.adversarial.evaluation import evaluate
from boosting_tickets.adversarial.protocol import EvalProtocol
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.instability import path as ipath
from boosting_tickets.instability.analysis import run_instability
from boosting_tickets.instability.config import InstabilityConfig
from boosting_tickets.report.instability import read_instability
from boosting_tickets.training.callbacks import StepSnapshot
from boosting_tickets.training.hparams import eval_protocol
from boosting_tickets.training.run import train


def _noise(cfg, seed, step):
    return dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, noise_seed=seed, noise_step=step)
    )


def test_copies_share_their_weights_up_to_step_k_then_part(tmp_path):
    cfg = small_config(epochs=2, objective="pgd", train_steps=1)  # 4 steps an epoch
    snaps = {}
    for name, c in (("a", cfg), ("b", _noise(cfg, 99, 5))):
        cb = [StepSnapshot(tmp_path / f"{name}{k}.pt", k) for k in (5, 6)]
        train(c, tmp_path / name, callbacks=cb)
        snaps[name] = {k: safe_torch_load(tmp_path / f"{name}{k}.pt")["state_dict"] for k in (5, 6)}
    at_k = [torch.equal(snaps["a"][5][n], snaps["b"][5][n]) for n in snaps["a"][5]]
    assert all(at_k)  # the same weights after step K = 5 ...
    after = [torch.equal(snaps["a"][6][n], snaps["b"][6][n]) for n in snaps["a"][6]]
    assert not all(after)  # ... and other noise from step 6 on
    with pytest.raises(UserError, match="--noise-step needs --noise-seed"):
        dataclasses.replace(cfg.train, noise_step=3).validate()


@settings(max_examples=20, deadline=None)
@given(alpha=st.floats(0, 1), shape=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_interpolation_is_exact_at_the_ends_and_for_equal_networks(alpha, shape):
    g = torch.Generator().manual_seed(len(shape))
    a = {"w": torch.randn(shape, generator=g), "n": torch.tensor(3)}
    b = {"w": torch.randn(shape, generator=g), "n": torch.tensor(7)}
    assert torch.equal(ipath.interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(ipath.interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.equal(ipath.interpolate(a, a, alpha)["w"], a["w"])
    assert int(ipath.interpolate(a, b, alpha)["n"]) == 3  # counters are copy 1's


def test_identical_copies_have_instability_zero(tmp_path):
    cfg = small_config(epochs=1)
    run = train(cfg, tmp_path / "a")
    state = safe_torch_load(run.run_dir / "final.pt")["state_dict"]
    from boosting_tickets.models.checkpoints import load_model

    model, _ = load_model(run.run_dir / "final.pt")
    splits = cfg.data.load()
    proto = eval_protocol(cfg)
    rows = ipath.path_errors(
        model, state, state, ipath.alphas(7),
        lambda m: evaluate(m, splits.test.images, splits.test.labels, proto),
        splits.train.images[:32].float() / 255 if splits.train.images.dtype == torch.uint8
        else splits.train.images[:32],
    )  # fmt: skip
    s = ipath.summary(rows)
    assert s["instability_clean"] == 0 and s["instability_pgd"] == 0 and s["stable_pgd"]


class _Product(nn.Module):
    """logit_0 = a·b·(x - 0.5), logit_1 = 0: correct (x > 0.5 is class 0) iff a·b > 0."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(a)), nn.Parameter(torch.tensor(b))

    def forward(self, x):
        z = self.a * self.b * (x.flatten(1).mean(1) - 0.5)
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_a_hand_built_pair_has_its_known_barrier():
    # a·b = 1 at both ends, (2 - 2.5α)(0.5 - 2.5α) < 0 for α in (0.2, 0.8): every image is
    # misclassified there, and the eps-0.1 attack cannot move x = 0.1 or 0.9 across 0.5.
    w1, w2 = _Product(2.0, 0.5).state_dict(), _Product(-0.5, -2.0).state_dict()
    x = torch.tensor([0.9, 0.1, 0.9, 0.1]).view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 0, 1])
    proto = EvalProtocol(eps=0.1, pgd_steps=5, fgsm=False)
    model = _Product(0.0, 0.0)
    rows = ipath.path_errors(model, w1, w2, ipath.alphas(10), lambda m: evaluate(m, x, y, proto))
    assert [r["clean_err"] for r in rows] == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert [r["pgd_err"] for r in rows] == [r["clean_err"] for r in rows]
    s = ipath.summary(rows)
    assert s["instability_clean"] == 1.0 == s["instability_pgd"] and not s["stable_pgd"]
    with pytest.raises(UserError, match="--alphas must be >= 3"):
        ipath.alphas(2)


def test_recomputed_bn_statistics_match_torchs_update_bn_with_dropout_kept_off():
    from torch.optim.swa_utils import update_bn

    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))

    def net(p: float) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.Dropout(p),
                             nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))  # fmt: skip

    reference, ours, dropped = net(0.0), net(0.0).eval(), net(0.9).train()
    update_bn([x[i : i + 10] for i in range(0, 64, 10)], reference)
    assert ipath.recompute_bn(ours, x, batch_size=10) and ipath.recompute_bn(dropped, x, 10)
    for i in (1, 4):
        for m in (ours, dropped):  # dropout off during the pass: the same statistics
            torch.testing.assert_close(m[i].running_mean, reference[i].running_mean)
            torch.testing.assert_close(m[i].running_var, reference[i].running_var)
            assert m[i].momentum == 0.1
    assert not ours.training and dropped.training and dropped[2].training  # modes restored
    assert not ipath.recompute_bn(nn.Linear(2, 2), x)


def test_the_endpoints_reproduce_the_endpoint_models_accuracies_exactly(tmp_path):
    cfg = small_config(epochs=2, objective="pgd", train_steps=1)
    run = train(cfg, tmp_path / "runs" / "a")
    icfg = InstabilityConfig(steps=(0, 3), alphas=5, bn_images=0, progress=False)
    path, rows = run_instability(run.run_dir, icfg, tmp_path / "out")
    assert [r["rewind_step"] for r in rows] == [0, 3]
    from boosting_tickets.models.checkpoints import load_model

    splits = cfg.data.load()
    proto = dataclasses.replace(eval_protocol(cfg), fgsm=False)
    for r in rows:
        ends = [run.run_dir / "final.pt", tmp_path / "out" / r["copy_run"] / "final.pt"]
        for i, ckpt in zip((0, -1), ends, strict=True):
            acc = evaluate(load_model(ckpt)[0], splits.test.images, splits.test.labels, proto)
            assert (
                r["clean_err"][i] == 1 - acc["clean_acc"] and r["pgd_err"][i] == 1 - acc["pgd_acc"]
            )
        assert r["protocol"]["n"] == 16 and r["protocol"]["bn_recomputed"] is False
        assert r["protocol"]["eps"] == cfg.eval_eps and r["protocol"]["norm"] == "Linf"
    # A rerun measures nothing; more K only adds rows.
    before = path.read_bytes()
    assert run_instability(run.run_dir, icfg, tmp_path / "out")[0].read_bytes() == before
    more = dataclasses.replace(icfg, steps=(0, 3, 5))
    assert [r["rewind_step"] for r in run_instability(run.run_dir, more, tmp_path / "out")[1]] == [
        0, 3, 5
    ]  # fmt: skip
    with pytest.raises(UserError, match="has no state at step 8: it took 8 optimizer steps"):
        run_instability(run.run_dir, dataclasses.replace(icfg, steps=(8,)), tmp_path / "out")


def test_a_suite_directory_measures_dense_ticket_and_control_and_tables_draw_it(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(tiny_suite(
        '[[arms]]\nname = "dense"\nkind = "dense"\n'
        '[[arms]]\nname = "ticket"\nkind = "ticket"\n'
        '[[arms]]\nname = "reinit"\nkind = "reinit"\nticket_of = "ticket"\n'
    ))  # fmt: skip
    out = tmp_path / "bench"
    code, _, err = cli_call(["bench", "run", str(suite), "--out", str(out)], capsys)
    assert code == 0, err
    code, text, err = cli_call(["instability", str(out), "--steps", "0,2", "--alphas", "3",
                                "--bn-images", "16", "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    doc = read_instability(out / "instability" / "instability.json")
    assert {(r["kind"], r["rewind_step"]) for r in doc["rows"]} == {
        (k, s) for k in ("dense", "ticket", "reinit") for s in (0, 2)
    }
    # The copies of the ticket and the control keep its mask: pruned weights stay zero.
    for r in doc["rows"]:
        w = safe_torch_load(out / "instability" / r["copy_run"] / "final.pt")["state_dict"]
        zeros = sum(int((v == 0).sum()) for k, v in w.items() if k.endswith("conv1.weight"))
        assert (zeros > 0) == (r["kind"] != "dense"), r["arm"]
    code, _, err = cli_call(["tables", str(out), "--out", str(tmp_path / "t")], capsys)
    assert code == 0, err
    table = (tmp_path / "t" / "tables" / "instability.md").read_text()
    assert "| ticket | ticket | 2 | 1 |" in table and "Frankle et al. 2020" in table
    for name in ("instability_path_K0.png", "instability_path_K2.png", "instability_vs_k.png"):
        assert (tmp_path / "t" / "figures" / name).read_bytes()[:4] == b"\x89PNG"


def test_bad_instability_files_are_refused_in_one_line(tmp_path):
    from boosting_tickets.core.storage import atomic_write_json

    good = {"arm": "dense", "kind": "dense", "seed": 0, "rewind_step": 0, "alphas": [0, 0.5, 1],
            "clean_err": [0.1, 0.2, 0.1], "pgd_err": [0.5, 0.6, 0.5], "instability_clean": 0.1,
            "instability_pgd": 0.1, "protocol": {"eps": 0.1}}  # fmt: skip
    for change, fragment in (
        ({"arm": "../x"}, "arm"),
        ({"clean_err": [0.1, 2.0, 0.1]}, r"errors lie in \[0, 1\]"),
        ({"alphas": [0, 1]}, "length >= 3"),
        ({"rewind_step": -1}, "rewind_step"),
        ({"protocol": {}}, "protocol"),
    ):
        p = tmp_path / "instability.json"
        atomic_write_json(p, {"format": "boosting-tickets/instability", "schema": 1,
                              "rows": [{**good, **change}]}, checksum=True)  # fmt: skip
        with pytest.raises(UserError, match=fragment):
            read_instability(p)
    p.write_text(json.dumps({"format": "boosting-tickets/instability", "schema": 1, "rows": []}))
    with pytest.raises(UserError, match="checksum"):
        read_instability(p)


def test_tables_order_k_as_numbers_not_text():
    from boosting_tickets.report.instability import _by

    rows = [{"arm": a, "rewind_step": k} for a in ("ticket", "dense") for k in (48, 4, 16, 0)]
    assert list(_by(rows, "arm", "rewind_step")) == [
        (a, k) for a in ("dense", "ticket") for k in (0, 4, 16, 48)
    ]
