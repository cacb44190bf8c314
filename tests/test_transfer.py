"""Ticket transfer (issue #13, part 5): class views of a dataset, a mask found on A retrained on B
(same class count, and another with the output layer re-pruned or kept dense), the records, the
suite that finds on A and retrains on B, and the refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from support import cli_call, small_config, tiny_suite

from boosting_tickets.bench.suites import load_suite
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.data.registry import class_view, get_spec
from boosting_tickets.data.splits import load_splits
from boosting_tickets.tickets.config import FindConfig
from boosting_tickets.tickets.finding import find_ticket
from boosting_tickets.tickets.retrain import retrain_ticket
from boosting_tickets.tickets.ticket import load_ticket
from boosting_tickets.tickets.transfer import transfer_start


def test_a_class_view_keeps_its_classes_relabelled_from_zero():
    full = load_splits("synthetic", "data", val_size=0)
    view = load_splits("synthetic:5-9", "data", val_size=0)
    spec = view.spec
    assert spec.num_classes == 5 and spec.view_of == "synthetic" and spec.classes == (5, 6, 7, 8, 9)
    assert spec.class_names == get_spec("synthetic").class_names[5:]
    assert len(view.train.labels) == spec.train_size == 1000 and len(view.test.labels) == 250
    assert set(view.train.labels.tolist()) == set(range(5))
    # The same images, in file order: the view's image i is the i-th full image of class >= 5.
    keep = full.train.labels >= 5
    assert torch.equal(view.train.images, full.train.images[keep])
    assert torch.equal(view.train.labels, full.train.labels[keep] - 5)
    assert spec.mean and spec.mean != get_spec("synthetic").mean  # measured on the view itself


def test_class_view_refuses_repeated_or_unknown_classes():
    base = get_spec("synthetic")
    with pytest.raises(UserError, match="distinct"):
        class_view(base, [1, 1], train_size=1, test_size=1)
    with pytest.raises(UserError, match="classes 0..9"):
        class_view(base, [3, 10], train_size=1, test_size=1)
    assert class_view(base, [2, 0], train_size=1, test_size=1).name == "synthetic:2,0"


def _ticket(tmp_path, dataset="synthetic:0-4"):
    cfg = small_config(epochs=1)
    find = FindConfig(
        data=dataclasses.replace(cfg.data, dataset=dataset),
        model=cfg.model,
        eval=dataclasses.replace(cfg.eval, test_eval=False),
    )
    find = dataclasses.replace(
        find, train=dataclasses.replace(find.train, epochs=1, progress=False)
    )
    return find_ticket(find, tmp_path / "tickets").dir


def _on(dataset):
    cfg = small_config(epochs=1)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))


def test_a_same_shape_transfer_keeps_the_whole_mask_and_theta_rewind(tmp_path):
    t = load_ticket(_ticket(tmp_path))
    res = retrain_ticket(_on("synthetic:5-9"), t, out=tmp_path / "runs")
    init = safe_torch_load(res.run_dir / "init.pt")["state_dict"]
    assert all(torch.equal(init[k], v) for k, v in t.weights().items())
    rec = json.loads((res.run_dir / "hparams.json").read_text())
    assert rec["extra"]["transfer"] == {"from": "synthetic:0-4", "to": "synthetic:5-9",
                                        "head": "kept"}  # fmt: skip
    assert rec["details"]["transfer"]["reinitialized"] == []
    # The head rule changes nothing here, so it must not change the run either.
    again = retrain_ticket(_on("synthetic:5-9"), t, out=tmp_path / "runs", transfer_head="dense")
    assert again.run_dir == res.run_dir


@pytest.mark.parametrize("head", ["reprune", "dense"])
def test_another_class_count_gets_a_fresh_output_layer(tmp_path, head):
    t = load_ticket(_ticket(tmp_path))
    out_w = t.meta["output_layer"]
    out_b = out_w.rpartition(".")[0] + ".bias"
    res = retrain_ticket(_on("synthetic"), t, out=tmp_path / "runs", transfer_head=head)
    init = safe_torch_load(res.run_dir / "init.pt")["state_dict"]
    assert init[out_w].shape[0] == 10 and t.rewind_state[out_w].shape[0] == 5
    for k, v in t.weights().items():  # everything but the output layer is the ticket's
        if k not in (out_w, out_b):
            assert torch.equal(init[k], v), k
    kept = init[out_w] != 0
    ticket_head = float((t.mask[out_w] == 0).float().mean())
    rec = json.loads((res.run_dir / "hparams.json").read_text())["details"]["transfer"]
    assert rec["head"] == head and set(rec["reinitialized"]) == {out_w, out_b}
    if head == "dense":
        assert bool(kept.all()) and rec["head_sparsity"] == 0
    else:  # pruned by magnitude at the ticket's own output-layer sparsity
        assert rec["head_sparsity"] == pytest.approx(ticket_head, abs=1 / kept.numel())
        assert float(init[out_w][kept].abs().min()) >= float(init[out_w][~kept].abs().max()) == 0
        final = safe_torch_load(res.run_dir / "final.pt")["state_dict"]
        assert bool((final[out_w][~kept] == 0).all())  # and it stays pruned in training


def test_transfer_refuses_another_input_shape_or_architecture(tmp_path):
    t = load_ticket(_ticket(tmp_path))
    arch = {**t.arch, "dataset": "x"}
    with pytest.raises(UserError, match=r"images \[1, 16, 16\] but this run's are \[3, 16, 16\]"):
        transfer_start(t, t.mask, t.rewind_state, arch, (3, 16, 16), head="reprune", seed=0)
    with pytest.raises(UserError, match="one architecture"):
        wide = {**arch, "model": "wrn-10-2"}
        transfer_start(t, t.mask, t.rewind_state, wide, (1, 16, 16), head="reprune", seed=0)
    with pytest.raises(UserError, match="--transfer-head must be"):
        transfer_start(t, t.mask, t.rewind_state, arch, (1, 16, 16), head="frozen", seed=0)


def test_cli_transfer_and_its_bad_input(tmp_path, capsys):
    tdir = _ticket(tmp_path)
    code, out, err = cli_call(["train", "--ticket", str(tdir), "--dataset", "synthetic",
                               "--transfer-head", "dense", "--out", str(tmp_path / "r")],
                              capsys)  # fmt: skip
    assert code == 0, err
    assert (
        "transfer: mask found on synthetic:0-4, retrained on synthetic; output layer dense" in out
    )
    for args, msg in (
        (["train", "--transfer-head", "dense"], "--transfer-head needs --ticket"),
        (["train", "--ticket", str(tdir), "--transfer-head", "frozen"], "'frozen' is not one of"),
        (["train", "--ticket", str(tdir), "--model", "wrn-10-2"], "a mask only fits"),
    ):
        code, _, err = cli_call([*args, "--out", str(tmp_path / "bad")], capsys)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()


TRANSFER_ARMS = (
    '[[arms]]\nname = "dense"\nkind = "dense"\n'
    '[[arms]]\nname = "ticket-b"\nkind = "ticket"\n'
    '[[arms]]\nname = "ticket-a"\nkind = "ticket"\nfind.data.dataset = "synthetic:0-4"\n'
    '[[arms]]\nname = "reinit-a"\nkind = "reinit"\nticket_of = "ticket-a"\n'
)


def test_a_suite_finds_on_a_and_retrains_on_b(tmp_path, capsys):
    suite = tmp_path / "transfer.toml"
    suite.write_text(tiny_suite(TRANSFER_ARMS).replace('"synthetic"', '"synthetic:5-9"'))
    out = tmp_path / "bench"
    code, _, err = cli_call(["bench", "run", str(suite), "--out", str(out)], capsys)
    assert code == 0, err
    rows = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["ticket-a"]["find_dataset"] == "synthetic:0-4" == rows["reinit-a"]["find_dataset"]
    assert rows["ticket-b"]["find_dataset"] == "synthetic:5-9"
    assert {r["dataset"] for r in rows.values()} == {"synthetic:5-9"}
    assert rows["ticket-a"]["ticket_dir"] == rows["reinit-a"]["ticket_dir"]
    assert rows["ticket-a"]["ticket_dir"] != rows["ticket-b"]["ticket_dir"]
    meta = json.loads((out / rows["ticket-a"]["ticket_dir"] / "ticket.json").read_text())
    assert meta["dataset"] == "synthetic:0-4"
    # Rerunning finds every run on disk: nothing is trained again.
    before = sorted(p.name for p in (out / "runs").iterdir())
    code, text, err = cli_call(["bench", "run", str(suite), "--out", str(out)], capsys)
    assert code == 0 and sorted(p.name for p in (out / "runs").iterdir()) == before
    assert "epoch 1/" not in text and text.count("already complete, nothing to do") == 4


@pytest.mark.parametrize(
    "arm, msg",
    [
        ("find.data.train_subset = 8", "find.data.train_subset"),
        ('find.data.dataset = "synthetic:0-4"\ntransfer_head = "frozen"', "transfer_head"),
    ],
)
def test_suite_refuses_what_a_transfer_cannot_change(tmp_path, arm, msg):
    suite = tmp_path / "bad.toml"
    suite.write_text(tiny_suite(f'[[arms]]\nname = "t"\nkind = "ticket"\n{arm}\n'))
    with pytest.raises(UserError, match=msg):
        load_suite(suite)


def test_the_transfer_suite_plans_its_finding_on_a():
    suite = load_suite("transfer-cpu")
    by = {a.template: a for a in suite.arms}
    assert suite.find_config(by["ticket-a"], 0).data.dataset == "fashion-mnist:0-4"
    assert suite.find_config(by["reinit-a"], 0).data.dataset == "fashion-mnist:0-4"
    assert suite.find_config(by["ticket-b"], 0).data.dataset == "fashion-mnist:5-9"
    assert suite.find_config(by["ticket-a-pretrained"], 0).prune.rewind == "epoch:2"
