"""Finding, loading and retraining tickets; rewinding; IMP levels; controls; the CLI's bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import run_cli, tree_digest

from boosting_tickets.core.config import build_config
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.models.masks import Mask
from boosting_tickets.models.registry import build_model
from boosting_tickets.tickets import controls as tickets_controls
from boosting_tickets.tickets import finding
from boosting_tickets.tickets import ticket as tickets_ticket
from boosting_tickets.tickets.config import FindConfig
from boosting_tickets.tickets.finding import find_ticket, prefix_config
from boosting_tickets.tickets.pruning import per_round_rate
from boosting_tickets.tickets.retrain import control_start, retrain_ticket
from boosting_tickets.tickets.ticket import load_ticket
from boosting_tickets.training import callbacks
from boosting_tickets.training.hparams import TrainConfig
from boosting_tickets.training.run import train
from boosting_tickets.training.schedule import learning_rate

# A finding run of a few seconds: WRN-10-1 on the synthetic 1x16x16 dataset, 2 epochs.
FLAGS = {
    "dataset": "synthetic",
    "train_subset": "128",
    "val_size": "32",
    "test_subset": "64",
    "batch_size": "64",
    "model": "wrn-10-1",
    "epochs": "2",
    "eval_steps": "2",
    "eval_batch_size": "64",
    "test_eval": False,
    "progress": False,
}


def _find_cfg(**over) -> FindConfig:
    return build_config(FindConfig, config_path=None, cli_values={**FLAGS, **over})


def _cli_flags(**over) -> list[str]:
    args: list[str] = []
    for key, value in {**FLAGS, **over}.items():
        flag = key.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            args += [f"--{flag}", value]
    return args


def _retrain_cfg(**train_over):
    cfg = _find_cfg().run_config()
    tc = dataclasses.replace(TrainConfig(), **{**_plain_train(cfg.train), **train_over})
    return dataclasses.replace(cfg, train=tc)


def _plain_train(tc) -> dict:
    return {"epochs": 1, "progress": False, "train_steps": 1, "lr": 0.05, "seed": tc.seed}


def _mtimes(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def epoch_ticket(tmp_path_factory):
    """One-shot ticket rewound to epoch 1; captures the finding run's own weights after epoch 1."""
    out = tmp_path_factory.mktemp("epoch")
    cfg = _find_cfg(rewind="epoch:1")
    captured = {}

    def log(msg: str) -> None:
        # When epoch 2 is reported, last.pt still holds the state saved after epoch 1.
        if msg.startswith("[level 0] epoch 2/2"):
            state = safe_torch_load(out / f"ticket_{_hash(cfg)}" / "level_0/train/last.pt")
            captured.update(state["model"])

    ticket = find_ticket(cfg, out, log=log)
    return ticket, cfg, out, captured


def _hash(cfg: FindConfig) -> str:
    return tickets_ticket.ticket_dir_for(cfg, ".").name.removeprefix("ticket_")


@pytest.fixture(scope="module")
def imp_ticket(tmp_path_factory):
    """Two IMP rounds (output layer at half rate), interrupted inside level 1 and resumed."""
    out = tmp_path_factory.mktemp("imp")
    cfg = _find_cfg(imp_rounds="2", output_rate="0.5", sparsity="0.8")

    def crash_in_level_1(msg: str) -> None:
        if msg.startswith("[level 1] epoch 2/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        find_ticket(cfg, out, log=crash_in_level_1)
    tdir = tickets_ticket.ticket_dir_for(cfg, out)
    before = _mtimes(tdir / "level_0")
    assert not (tdir / "ticket.json").exists()
    messages: list[str] = []
    ticket = find_ticket(cfg, out, log=messages.append)
    return ticket, cfg, out, before, messages


def test_epoch_rewind_ticket_holds_the_weights_of_epoch_1(epoch_ticket):
    ticket, cfg, _, captured = epoch_ticket
    d = ticket.dir
    for name in ("ticket.json", "mask.pt", "rewind.pt", "sparsity.json", "find_metrics.json"):
        assert (d / name).is_file(), name
    assert captured, "the epoch-1 state of the finding run was not captured"
    assert set(ticket.rewind_state) == set(captured)
    for k, v in captured.items():
        assert torch.equal(ticket.rewind_state[k], v), k
    theta0 = safe_torch_load(d / "level_0/train/init.pt")["state_dict"]
    assert not torch.equal(ticket.rewind_state["conv1.weight"], theta0["conv1.weight"])

    meta = ticket.meta
    assert meta["find_lr"] == 0.01 and meta["objective"] == "natural"  # find-ticket defaults
    assert meta["hash"] == d.name.removeprefix("ticket_")
    level0 = json.loads((d / "level_0/train/metrics.json").read_text())
    prefix = json.loads((d / "rewind_epoch_1/metrics.json").read_text())
    assert len(prefix["epochs"]) == 1
    expected = level0["epochs"][-1]["cum_train_seconds"] + prefix["epochs"][-1]["cum_train_seconds"]
    assert meta["find_train_seconds"] == pytest.approx(expected)
    assert meta["find_wall_seconds"] >= meta["find_train_seconds"] > 0
    work = level0["epochs"][-1]["cum_work_flops"] + prefix["epochs"][-1]["cum_work_flops"]
    assert meta["find_work_flops"] == pytest.approx(work) and work > 0
    # one-shot global pruning removes exactly round(0.8 * N) weights
    total, kept = ticket.mask.counts()
    assert total - kept == round(0.8 * total)
    assert meta["sparsity"] == pytest.approx(ticket.mask.sparsity())
    report = json.loads((d / "sparsity.json").read_text())
    assert report["global"]["pruned"] == total - kept and report["channels"]
    find_metrics = json.loads((d / "find_metrics.json").read_text())
    assert all("eval_protocol" in r for r in find_metrics["runs"])
    assert load_ticket(d).mask.digest() == ticket.mask.digest() == meta["mask_sha256"]


def test_rerun_does_no_work_and_touches_nothing(epoch_ticket, monkeypatch):
    ticket, cfg, out, _ = epoch_ticket
    before = tree_digest(out)
    stamps = _mtimes(out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished ticket was trained again")

    monkeypatch.setattr(finding, "train", no_training)
    again = find_ticket(cfg, out)
    assert again.mask.digest() == ticket.mask.digest()
    assert tree_digest(out) == before and _mtimes(out) == stamps


def test_cli_with_the_same_settings_finds_the_same_ticket_and_does_nothing(epoch_ticket):
    ticket, _, out, _ = epoch_ticket
    before, stamps = tree_digest(out), _mtimes(out)
    res = run_cli("find-ticket", "--out", str(out), *_cli_flags(rewind="epoch:1"))
    assert res.returncode == 0, res.stderr
    assert ticket.dir.name in res.stdout and "80.00" in res.stdout
    assert tree_digest(out) == before and _mtimes(out) == stamps


def test_imp_skips_finished_levels_resumes_the_interrupted_one_and_never_unprunes(imp_ticket):
    ticket, cfg, _, before, messages = imp_ticket
    d = ticket.dir
    assert _mtimes(d / "level_0") == before  # level 0 was not redone
    assert any("resuming after epoch 1" in m for m in messages)
    level1 = json.loads((d / "level_1/train/metrics.json").read_text())
    assert level1["status"] == "complete" and [r["epoch"] for r in level1["epochs"]] == [1, 2]

    m1, m2 = Mask.load(d / "level_1/mask.pt"), Mask.load(d / "level_2/mask.pt")
    assert m2.digest() == ticket.mask.digest()
    for n in m2:
        assert torch.all(m2[n] <= m1[n]), n
    # exact counts per round: the global pool at rate p, the output layer at p/2
    rate = per_round_rate(0.8, 2)
    out = ticket.meta["output_layer"]
    assert out == "fc.weight"
    full = Mask.for_model(build_model("wrn-10-1", num_classes=10, in_channels=1))
    pool_kept = sum(full[n].numel() for n in full if n != out)
    out_kept = full[out].numel()
    for mask in (m1, m2):
        pool_kept -= round(rate * pool_kept)
        out_kept -= round(rate * 0.5 * out_kept)
        assert sum(int(mask[n].sum()) for n in mask.weight_names() if n != out) == pool_kept
        assert int(mask[out].sum()) == out_kept
    assert [lv["level"] for lv in ticket.meta["levels"]] == [0, 1, 2]


def test_rewinding_to_init_gives_theta0_times_mask_exactly(imp_ticket):
    ticket, *_ = imp_ticket
    theta0 = safe_torch_load(ticket.dir / "level_0/train/init.pt")["state_dict"]
    weights = ticket.weights()
    for k, v in theta0.items():
        expected = v * ticket.mask[k] if k in ticket.mask else v
        assert torch.equal(weights[k], expected), k
    assert ticket.mask.channel_names  # BN channels of dead filters are masked by default


def test_retraining_starts_from_the_ticket_and_keeps_its_zeros(imp_ticket):
    ticket, _, out, *_ = imp_ticket
    cfg = _retrain_cfg(objective="pgd", warmup_epochs=1.0)
    res = retrain_ticket(cfg, ticket.dir, out=out)
    assert res.status == "complete" and res.run_dir.name.startswith("retrain_")
    init = safe_torch_load(res.run_dir / "init.pt")["state_dict"]
    for k, v in ticket.weights().items():
        assert torch.equal(init[k], v), k
    final = safe_torch_load(res.run_dir / "final.pt")["state_dict"]
    for name, m in ticket.mask.items():
        assert torch.all(final[name][m == 0] == 0), name
    assert Mask({n: (final[n] != 0).float() for n in ticket.mask.weight_names()}).counts() == (
        ticket.mask.counts()
    )
    hp = json.loads((res.run_dir / "hparams.json").read_text())
    assert hp["config"]["train"]["warmup_lr"] == 0.01  # warmup starts at the finding lr
    assert hp["extra"]["ticket"] == ticket.meta["hash"] and hp["extra"]["control"] is None

    cheap = _retrain_cfg(objective="natural", warmup_epochs=1.0)
    reinit = retrain_ticket(cheap, ticket, out=out, control="reinit")
    assert reinit.run_dir != res.run_dir
    start = safe_torch_load(reinit.run_dir / "init.pt")["state_dict"]
    kept = ticket.mask["block1.layer.0.conv1.weight"].bool()
    name = "block1.layer.0.conv1.weight"
    assert not torch.equal(start[name][kept], init[name][kept])
    assert torch.all(start[name][~kept] == 0)


def test_controls_keep_the_sparsity_they_promise(imp_ticket):
    ticket, *_ = imp_ticket
    mask, state = control_start(ticket, "reinit", seed=0)
    assert mask.digest() == ticket.mask.digest()
    assert not torch.equal(state["conv1.weight"], ticket.rewind_state["conv1.weight"])
    again = control_start(ticket, "reinit", seed=0)[1]
    assert torch.equal(again["conv1.weight"], state["conv1.weight"])  # deterministic
    layer, state = control_start(ticket, "random-mask", seed=0)
    assert state is ticket.rewind_state
    for n in ticket.mask.weight_names():
        assert int(layer[n].sum()) == int(ticket.mask[n].sum()), n
    assert layer.digest() != ticket.mask.digest()
    assert layer.channel_names == ticket.mask.channel_names  # recomputed for the new mask
    glob, _ = control_start(ticket, "random-mask-global", seed=0)
    assert glob.counts() == ticket.mask.counts()
    assert any(int(glob[n].sum()) != int(ticket.mask[n].sum()) for n in glob.weight_names())
    assert set(tickets_controls.control_names()) == {
        "reinit", "random-mask", "random-mask-global", "reinit-rescaled", "shuffled-ticket"
    }  # fmt: skip
    with pytest.raises(UserError, match="unknown control"):
        control_start(ticket, "shuffle")


def test_rescaled_reinit_is_reinit_at_the_tickets_per_layer_norm(imp_ticket):
    ticket, *_ = imp_ticket
    mask, fresh = control_start(ticket, "reinit", seed=3)
    same_mask, scaled = control_start(ticket, "reinit-rescaled", seed=3)
    assert same_mask.digest() == ticket.mask.digest() == mask.digest()
    for name in ticket.mask.weight_names():
        kept = ticket.mask[name].bool()
        want = ticket.rewind_state[name][kept].norm()
        torch.testing.assert_close(scaled[name][kept].norm(), want, rtol=1e-5, atol=0)
        # the very draw of reinit, only scaled: same direction, per layer
        ratio = scaled[name][kept] / fresh[name][kept]
        torch.testing.assert_close(
            ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-5, atol=0
        )
    others = [k for k in fresh if k not in ticket.mask.weight_names()]
    assert others and all(torch.equal(scaled[k], fresh[k]) for k in others)  # BN, biases


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_shuffled_ticket_moves_the_tickets_own_values_within_each_layer(imp_ticket, seed):
    ticket, *_ = imp_ticket
    mask, state = control_start(ticket, "shuffled-ticket", seed=seed)
    assert mask.digest() == ticket.mask.digest()
    moved = 0
    for name in ticket.mask.weight_names():
        kept = ticket.mask[name].bool()
        mine, theirs = state[name][kept], ticket.rewind_state[name][kept]
        assert torch.equal(mine.sort().values, theirs.sort().values), name  # a permutation
        assert torch.equal(state[name][~kept], ticket.rewind_state[name][~kept])  # pruned: as is
        moved += int((mine != theirs).sum())
    assert moved > 0
    assert all(torch.equal(state[k], v) for k, v in ticket.rewind_state.items()
               if k not in ticket.mask.weight_names())  # fmt: skip
    again = control_start(ticket, "shuffled-ticket", seed=seed)[1]
    assert all(torch.equal(again[k], state[k]) for k in state)  # deterministic per seed


def test_retraining_with_another_architecture_is_refused(imp_ticket, tmp_path):
    ticket, *_ = imp_ticket
    cfg = _retrain_cfg()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, model="small-cnn"))
    with pytest.raises(UserError, match="pass --model wrn-10-1"):
        retrain_ticket(cfg, ticket, out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_fgsm_found_ticket_after_catastrophic_overfitting_is_usable(tmp_path, monkeypatch):
    # The flag itself is tested on metric histories in test_training.py; here it fires on purpose
    # to check that find_ticket records it, stops the finding run and still yields a ticket.
    monkeypatch.setattr(callbacks, "detect_catastrophic_overfitting", lambda rows, **kw: True)
    cfg = _find_cfg(objective="fgsm", stop_on_overfit=True)
    messages: list[str] = []
    ticket = find_ticket(cfg, tmp_path, log=messages.append)
    level0 = ticket.meta["levels"][0]
    assert level0["status"] == "stopped_overfit" and level0["overfit_epochs"] == [1]
    assert ticket.meta["catastrophic_overfitting"] is True
    assert any("still usable" in m for m in messages)
    res = retrain_ticket(_retrain_cfg(objective="natural"), ticket, out=tmp_path)
    assert res.status == "complete" and res.metrics[0]["train_loss"] > 0


def test_rewind_to_an_external_checkpoint_starts_and_rewinds_there(tmp_path):
    torch.manual_seed(123)
    pretrained = build_model("wrn-10-1", num_classes=10, in_channels=1).state_dict()
    path = tmp_path / "pretrained.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in pretrained.items()}}, path)
    ticket = find_ticket(_find_cfg(rewind=str(path), epochs="1"), tmp_path / "out")
    init = safe_torch_load(ticket.dir / "level_0/train/init.pt")["state_dict"]
    for k, v in pretrained.items():
        assert torch.equal(init[k], v) and torch.equal(ticket.rewind_state[k], v), k
    assert ticket.meta["rewind"] == str(path)
    # another file under the same name is another ticket
    torch.save(build_model("wrn-10-1", num_classes=10, in_channels=1).state_dict(), path)
    assert tickets_ticket.ticket_dir_for(_find_cfg(rewind=str(path), epochs="1"), ".").name != (
        ticket.dir.name
    )


def test_rewind_to_an_iteration_inside_an_epoch_holds_the_weights_after_that_step(tmp_path):
    from boosting_tickets.training.loop import Callback

    # 128 images in batches of 64: 2 steps per epoch, so step 3 lies inside epoch 2.
    cfg = _find_cfg(rewind="iter:3")
    ticket = find_ticket(cfg, tmp_path / "out")
    assert (ticket.dir / "level_0/train/step_3.pt").is_file()
    assert not list(ticket.dir.glob("rewind_epoch_*"))  # no extra run: a snapshot of level 0

    class Capture(Callback):
        seen: dict = {}

        def on_step_end(self, state, step):
            if state.step == 3:
                Capture.seen = {k: v.detach().clone() for k, v in state.model.state_dict().items()}

    # The same finding schedule trained on its own, captured after step 3 in memory.
    train(cfg.run_config(), tmp_path / "plain", callbacks=[Capture()])
    assert Capture.seen and set(Capture.seen) == set(ticket.rewind_state)
    for k, v in Capture.seen.items():
        assert torch.equal(ticket.rewind_state[k], v), k
    theta0 = safe_torch_load(tmp_path / "plain/init.pt")["state_dict"]
    assert any(not torch.equal(theta0[k], v) for k, v in Capture.seen.items())
    # At an epoch's end iter:K is epoch:K/steps, the same ticket weights either way.
    by_iter = find_ticket(_find_cfg(rewind="iter:2"), tmp_path / "out")
    by_epoch = find_ticket(_find_cfg(rewind="epoch:1"), tmp_path / "out")
    assert all(torch.equal(by_iter.rewind_state[k], v) for k, v in by_epoch.rewind_state.items())
    # A lost snapshot of a finished finding run is a one-line error naming the fix.
    (ticket.dir / "level_0/train/step_3.pt").unlink()
    (ticket.dir / "ticket.json").unlink()
    with pytest.raises(UserError, match="no snapshot of step 3 .* delete"):
        find_ticket(cfg, tmp_path / "out")


def test_bad_rewind_and_ignore_list_are_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="beyond the finding run's 4 optimizer steps"):
        find_ticket(_find_cfg(rewind="iter:4"), tmp_path)
    with pytest.raises(UserError, match="matches no prunable weight"):
        find_ticket(_find_cfg(prune_ignore="block9.weight"), tmp_path)
    wrong = tmp_path.parent / f"{tmp_path.name}_wrn.pt"
    torch.save(build_model("small-cnn", num_classes=10, in_channels=1).state_dict(), wrong)
    with pytest.raises(UserError, match="another architecture"):
        find_ticket(_find_cfg(rewind=str(wrong)), tmp_path)
    assert not any(tmp_path.iterdir())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 30),
    st.data(),
    st.lists(st.floats(0.05, 0.95), min_size=0, max_size=3, unique=True),
    st.sampled_from([0.0, 0.5, 3.0]),
    st.integers(1, 7),
)
def test_a_k_epoch_prefix_run_has_the_lr_of_the_full_run(epochs, data, milestones, warmup, spe):
    k = data.draw(st.integers(1, epochs - 1))
    tc = TrainConfig(
        epochs=epochs, lr=0.1, milestones=tuple(sorted(milestones)), warmup_epochs=warmup
    )
    full = dataclasses.replace(_find_cfg().run_config(), train=tc)
    prefix = prefix_config(full, k)
    assert prefix.train.epochs == k and not prefix.eval.test_eval
    for step in range(k * spe):
        assert learning_rate(prefix.train, step, spe) == pytest.approx(
            learning_rate(tc, step, spe), rel=1e-12
        )


# ------------------------------------------------------------------ CLI: one line, exit 2


def _one_line_error(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_cli_sparsity_outside_unit_interval(tmp_path):
    res = run_cli("find-ticket", "--out", str(tmp_path / "out"), "--sparsity", "1.0")
    assert "--sparsity must be in [0, 1)" in _one_line_error(res)
    assert not (tmp_path / "out").exists()
    for bad in ("-0.1", "1.5"):  # the same check, without another process
        with pytest.raises(UserError, match=r"--sparsity must be in \[0, 1\)"):
            _find_cfg(sparsity=bad)


def test_cli_ticket_dir_missing_files_and_unknown_control(epoch_ticket, tmp_path):
    ticket, *_ = epoch_ticket
    broken = tmp_path / "broken"
    shutil.copytree(ticket.dir, broken, ignore=shutil.ignore_patterns("level_*", "rewind_*"))
    (broken / "mask.pt").unlink()
    res = run_cli("train", "--ticket", str(broken), "--out", str(tmp_path / "o"), "--epochs", "1")
    assert "lacks mask.pt" in _one_line_error(res)
    res = run_cli("train", "--ticket", str(ticket.dir), "--out", str(tmp_path / "o"),
                  "--model", "wrn-10-1", "--control", "shuffled")  # fmt: skip
    assert "unknown control 'shuffled'" in _one_line_error(res)
    assert not (tmp_path / "o").exists()


def test_cli_mask_from_another_architecture(epoch_ticket, tmp_path):
    ticket, *_ = epoch_ticket
    foreign = tmp_path / "foreign"
    shutil.copytree(ticket.dir, foreign, ignore=shutil.ignore_patterns("level_*", "rewind_*"))
    Mask.for_model(build_model("small-cnn", num_classes=10, in_channels=1)).save(
        foreign / "mask.pt"
    )
    before = tree_digest(foreign)
    res = run_cli("train", "--ticket", str(foreign), "--out", str(tmp_path / "o"),
                  "--model", "wrn-10-1", "--dataset", "synthetic")  # fmt: skip
    assert "another architecture" in _one_line_error(res)
    assert tree_digest(foreign) == before and not (tmp_path / "o").exists()


def test_find_tickets_suggested_command_retrains_on_the_tickets_data(tmp_path, capsys):
    import shlex

    from support import TICKET_CLI_DATA as data
    from support import cli_call, cli_find_ticket

    _, out = cli_find_ticket(tmp_path / "t", capsys)
    line = next(x for x in out.splitlines() if x.startswith("retrain: "))
    argv = shlex.split(line.removeprefix("retrain: "))[1:]  # drop the program name
    # train --ticket takes the architecture and data settings from the ticket: pasted as printed,
    # the command retrains on the 64 synthetic images the ticket was found on.
    code, out, err = cli_call([*argv, "--no-progress", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "from the ticket: " in out and "train_subset 64" in out
    hp = json.loads(next((tmp_path / "r").glob("*/hparams.json")).read_text())
    assert hp["config"]["data"]["train_subset"] == 64 and hp["config"]["train"]["epochs"] == 1
    for flag, value in zip(data[::2], data[1::2], strict=True):
        section = "model" if flag == "--model" else "data"
        got = hp["config"][section][flag[2:].replace("-", "_")]
        assert str(got) == value, flag
    # A flag still overrides what the ticket gives; the run is then another directory.
    code, out, err = cli_call([*argv, "--no-progress", "--train-subset", "32",
                               "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 0, err
    subsets = sorted(
        json.loads(p.read_text())["config"]["data"]["train_subset"]
        for p in (tmp_path / "r").glob("*/hparams.json")
    )
    assert subsets == [32, 64]
