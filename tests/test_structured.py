"""Structured tickets (issue #14, part 3): whole inner channels of WideResNet blocks pruned, the slim
network built for real (fewer parameters and FLOPs, the same function as the full network with those
channels zeroed), θ_rewind sliced, retrained, in a suite as the arm kind structured-ticket."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from support import cli_call, small_config, tiny_suite

from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.models.registry import build_model, forward_flops
from boosting_tickets.tickets import structured as st
from boosting_tickets.tickets.config import FindConfig, PruneConfig
from boosting_tickets.tickets.finding import find_ticket
from boosting_tickets.tickets.retrain import retrain_ticket


def _random_wrn(name: str = "wrn-10-2", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, num_classes=10, in_channels=1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("criterion, scope", [("l1", "global"), ("bn-scale", "layer")])
def test_the_slim_network_is_the_full_one_with_the_pruned_channels_zeroed(criterion, scope):
    full = _random_wrn()
    state = full.state_dict()
    keep = st.select_channels(st.channel_scores(state, criterion), 0.75, scope)
    name = st.slim_name("wrn-10-2", keep)
    slim = build_model(name, num_classes=10, in_channels=1).eval()
    slim.load_state_dict(st.slim_state(state, keep), strict=True)
    zeroed = {k: v.clone() for k, v in state.items()}
    for b, idx in keep.items():
        gone = torch.ones(zeroed[f"{b}.bn2.weight"].numel(), dtype=torch.bool)
        gone[idx] = False
        for key in (f"{b}.conv1.weight", f"{b}.bn2.weight", f"{b}.bn2.bias"):
            zeroed[key][gone] = 0
    full.load_state_dict(zeroed)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(slim(x), full(x), rtol=1e-5, atol=1e-5)
    # The criterion's choice: the kept channels score at least as high as the pruned ones.
    scores = st.channel_scores(state, criterion)
    for b, idx in keep.items():
        gone = torch.ones(scores[b].numel(), dtype=torch.bool)
        gone[idx] = False
        if scope == "layer" and bool(gone.any()):
            assert float(scores[b][idx].min()) >= float(scores[b][gone].max())


def test_a_structured_ticket_really_shrinks_the_network():
    state = _random_wrn().state_dict()
    keep = st.select_channels(st.channel_scores(state, "l1"), 0.75, "layer")
    assert [len(v) for v in keep.values()] == [8, 16, 32]  # 25% of 32, 64, 128
    name = st.slim_name("wrn-10-2", keep)
    assert name == "wrn-10-2-mid-8-16-32"
    rep = st.structure_report("wrn-10-2", name, keep, (1, 28, 28), 10)
    assert rep["channel_sparsity"] == pytest.approx(0.75)
    assert rep["forward_flops"]["ratio"] < 0.5 and rep["params"]["ratio"] < 0.5
    # The cost model counts the slim network as torch's FlopCounterMode does.
    from torch.utils.flop_counter import FlopCounterMode

    slim = build_model(name, num_classes=10, in_channels=1).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        slim(torch.zeros(1, 1, 28, 28))
    assert forward_flops(name, 1, 28, 10) == pytest.approx(counter.get_total_flops(), rel=1e-6)
    # Global scope: exactly round(25% of all inner channels) survive, every block keeps one.
    glob = st.select_channels(st.channel_scores(state, "l1"), 0.95, "global")
    assert all(len(v) >= 1 for v in glob.values())
    assert sum(len(v) for v in glob.values()) >= round(0.05 * 224)


def test_slim_names_and_bad_requests_are_one_line():
    for bad in ("wrn-10-2-mid-8-16", "wrn-10-2-mid-0-16-32", "wrn-10-2-mid-33-16-32"):
        with pytest.raises(UserError, match="bad slim WideResNet"):
            build_model(bad, num_classes=10, in_channels=1)
    with pytest.raises(UserError, match="needs a plain WideResNet"):
        st.check_structured_model("small-cnn")
    with pytest.raises(UserError, match="unknown channel criterion"):
        st.channel_scores(_random_wrn().state_dict(), "taylor")
    with pytest.raises(UserError, match="--imp-rounds 1"):
        PruneConfig(structure="channels", imp_rounds=2).validate()


def _find(tmp_path, **prune):
    cfg = small_config(epochs=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, model="wrn-10-2"))
    find = FindConfig(data=cfg.data, model=cfg.model,
                      eval=dataclasses.replace(cfg.eval, test_eval=False),
                      prune=PruneConfig(structure="channels", **prune))  # fmt: skip
    find = dataclasses.replace(find, train=dataclasses.replace(find.train, epochs=1,
                                                                 progress=False))  # fmt: skip
    return cfg, find_ticket(find, tmp_path / "tickets")


def test_find_and_retrain_a_structured_ticket_from_sliced_theta0(tmp_path):
    cfg, t = _find(tmp_path, sparsity=0.75)
    meta = t.meta
    assert meta["structure"] == "channels" and meta["base_model"] == "wrn-10-2"
    assert meta["model"] == t.arch["model"] and "-mid-" in meta["model"]
    assert meta["channel_sparsity"] == pytest.approx(0.75, abs=0.01)
    prune = json.loads((t.dir / "level_1" / "prune.json").read_text())
    theta0 = safe_torch_load(t.dir / "level_0" / "train" / "init.pt")["state_dict"]
    keep = {b: torch.tensor(v) for b, v in prune["kept_channels"].items()}
    for k, v in st.slim_state(theta0, keep).items():
        assert torch.equal(t.rewind_state[k], v), k  # θ_rewind is θ0, sliced
    res = retrain_ticket(cfg, t, out=tmp_path / "runs")
    rec = json.loads((res.run_dir / "hparams.json").read_text())
    assert rec["config"]["model"]["model"] == meta["model"]
    init = safe_torch_load(res.run_dir / "init.pt")["state_dict"]
    assert all(torch.equal(init[k], v) for k, v in t.weights().items())
    # Its work per epoch is the slim network's: the FLOP ratio of the two architectures.
    from boosting_tickets.training.run import train

    dense = train(cfg, tmp_path / "dense")
    w = [json.loads((r / "metrics.json").read_text())["epochs"][0]["work_flops"]
         for r in (res.run_dir, dense.run_dir)]  # fmt: skip
    assert w[0] / w[1] == pytest.approx(meta["forward_flops"]["ratio"])
    assert w[0] / w[1] < 0.5


def test_cli_refuses_structured_pruning_it_cannot_do(tmp_path, capsys):
    base = ["find-ticket", "--dataset", "synthetic", "--train-subset", "64", "--val-size", "16",
            "--epochs", "1", "--out", str(tmp_path / "t"), "--structure", "channels"]  # fmt: skip
    for extra, msg in (
        (["--model", "small-cnn"], "needs a plain WideResNet"),
        (["--model", "wrn-10-1", "--imp-rounds", "2"], "--imp-rounds 1"),
        (["--model", "wrn-10-1", "--channel-criterion", "taylor"], "'taylor'"),
    ):
        code, _, err = cli_call([*base, *extra], capsys)
        assert code == 2 and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "t").exists()


def test_a_suite_arm_of_kind_structured_ticket(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(tiny_suite(
        '[[arms]]\nname = "dense"\nkind = "dense"\n'
        '[[arms]]\nname = "slim"\nkind = "structured-ticket"\nfind.prune.sparsity = 0.5\n'
        '[[arms]]\nname = "slim-reinit"\nkind = "reinit"\nticket_of = "slim"\n'
    ))  # fmt: skip
    code, out, err = cli_call(["bench", "run", str(suite), "--dry-run"], capsys)
    assert code == 0 and "structured tickets are costed at the dense network's FLOPs" in out
    code, _, err = cli_call(["bench", "run", str(suite), "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    rows = {r["arm"]: r for r in json.loads((tmp_path / "b" / "results.json").read_text())["rows"]}
    assert rows["slim"]["kind"] == "structured-ticket" and rows["slim-reinit"]["kind"] == "reinit"
    assert rows["slim"]["params"] < rows["dense"]["params"]
    assert rows["slim"]["work_per_epoch"] < 0.8 * rows["dense"]["work_per_epoch"]
    assert rows["slim-reinit"]["params"] == rows["slim"]["params"]
