"""The training loop: schedules, resume, idempotence, masks, divergence handling."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from support import tiny_config

from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.models.layers import prunable_parameters
from boosting_tickets.models.masks import Mask
from boosting_tickets.training import losses
from boosting_tickets.training.callbacks import TrainingFailed, detect_catastrophic_overfitting
from boosting_tickets.training.hparams import TrainConfig
from boosting_tickets.training.run import train
from boosting_tickets.training.schedule import learning_rate


def _comparable(rows):
    drop = ("train_seconds", "eval_seconds", "cum_train_seconds", "load1")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_step_schedule_with_warmup_hand_computed():
    tc = TrainConfig(epochs=10, lr=0.1, warmup_epochs=2, warmup_lr=0.01, milestones=(0.5, 0.75))
    spe = 10
    assert learning_rate(tc, 0, spe) == pytest.approx(0.01)
    assert learning_rate(tc, 10, spe) == pytest.approx(0.01 + 0.09 * 0.5)
    assert learning_rate(tc, 20, spe) == pytest.approx(0.1)
    assert learning_rate(tc, 49, spe) == pytest.approx(0.1)
    assert learning_rate(tc, 50, spe) == pytest.approx(0.01)
    assert learning_rate(tc, 79, spe) == pytest.approx(0.01)  # 75% of 10 epochs: from epoch 8
    assert learning_rate(tc, 80, spe) == pytest.approx(0.001)
    assert learning_rate(tc, 99, spe) == pytest.approx(0.001)


def test_cyclic_schedule_peaks_at_40_percent():
    tc = TrainConfig(epochs=10, lr=0.2, schedule="cyclic")
    lrs = [learning_rate(tc, s, 10) for s in range(100)]
    assert max(lrs) == pytest.approx(0.2)
    assert lrs.index(max(lrs)) == 39
    assert lrs[-1] == pytest.approx(0.0)


def test_tiny_run_writes_everything_and_rerun_does_no_work(tmp_path, tiny_cfg):
    run = tmp_path / "run"
    res = train(tiny_cfg, run)
    assert res.status == "complete" and len(res.metrics) == 2
    for name in (
        "hparams.json",
        "init.pt",
        "last.pt",
        "best.pt",
        "final.pt",
        "metrics.json",
        "test_eval.json",
    ):
        assert (run / name).exists(), name
    test = json.loads((run / "test_eval.json").read_text())
    for which in ("best", "final"):
        r = test[which]
        assert 0 <= r["pgd_acc"] <= r["clean_acc"] <= 1
        assert r["protocol"]["pgd_steps"] == 3 and r["protocol"]["bn_mode"] == "eval"
        assert len(r["per_class"]["clean"]) == 10
    mtimes = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    again = train(tiny_cfg, run)
    assert _comparable(again.metrics) == _comparable(res.metrics)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == mtimes


def test_interrupted_run_resumes_to_identical_metrics(tmp_path):
    cfg = tiny_config(epochs=3)
    ref = train(cfg, tmp_path / "a")

    def crash_in_epoch_3(msg: str) -> None:
        if msg.startswith("epoch 3/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", log=crash_in_epoch_3)
    state = safe_torch_load(tmp_path / "b" / "last.pt")
    assert state["epoch"] == 2
    resumed = train(cfg, tmp_path / "b")
    assert _comparable(resumed.metrics) == _comparable(ref.metrics)
    a = safe_torch_load(tmp_path / "a" / "final.pt")["state_dict"]
    b = safe_torch_load(tmp_path / "b" / "final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mask_and_momentum_stay_zero(tmp_path):
    cfg = tiny_config(epochs=2, objective="natural", weight_decay=5e-4, momentum=0.9)
    from boosting_tickets.models.checkpoints import build_from_arch

    probe = build_from_arch(
        {"model": "small-cnn", "num_classes": 10, "in_channels": 1, "mean": None, "std": None}
    )
    g = torch.Generator().manual_seed(0)
    mask = Mask(
        {
            n: (torch.rand(p.shape, generator=g) > 0.5).float()
            for n, p in prunable_parameters(probe).items()
        }
    )
    train(cfg, tmp_path / "m", mask=mask)
    state = safe_torch_load(tmp_path / "m" / "last.pt")
    sd = state["model"]
    names = list(dict(probe.named_parameters()))
    for name, m in mask.items():
        assert torch.all(sd[name][m == 0] == 0), name
        assert torch.any(sd[name][m == 1] != 0), name
        idx = names.index(name)
        buf = state["optimizer"]["state"][idx]["momentum_buffer"]
        assert torch.all(buf[m == 0] == 0), name
    assert state["metrics"][-1]["train_loss"] > 0


def test_divergence_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3, objective="natural")
    real = losses.natural_loss
    calls = {"n": 0}

    def nan_in_epoch_2(model, x, y, **kw):
        calls["n"] += 1
        loss, logits = real(model, x, y, **kw)
        if calls["n"] > 4:  # 4 batches per epoch: epoch 2 starts at call 5
            loss = loss * float("nan")
        return loss, logits

    monkeypatch.setattr(losses, "natural_loss", nan_in_epoch_2)
    with pytest.raises(TrainingFailed) as info:
        train(cfg, tmp_path / "d")
    msg = str(info.value)
    assert "epoch 2 step 1" in msg and "nan" in msg and "\n" not in msg
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and len(metrics["epochs"]) == 1
    assert safe_torch_load(tmp_path / "d" / "last.pt")["epoch"] == 1


def test_run_dir_with_other_settings_is_refused(tmp_path, tiny_cfg):
    train(tiny_cfg, tmp_path / "r")
    other = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, lr=0.07))
    before = (tmp_path / "r" / "hparams.json").read_bytes()
    with pytest.raises(UserError, match="other settings"):
        train(other, tmp_path / "r")
    assert (tmp_path / "r" / "hparams.json").read_bytes() == before


@pytest.mark.parametrize("objective", ["natural", "fgsm", "fgsm-rs", "trades"])
def test_every_objective_trains(tmp_path, objective):
    cfg = tiny_config(epochs=1, objective=objective)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, test_eval=False))
    res = train(cfg, tmp_path / objective)
    assert res.status == "complete" and res.metrics[0]["train_loss"] > 0


def test_catastrophic_overfitting_detector():
    healthy = [
        {"val_fgsm": 0.40, "val_pgd": 0.35},
        {"val_fgsm": 0.50, "val_pgd": 0.42},
        {"val_fgsm": 0.55, "val_pgd": 0.46},
    ]
    assert not any(detect_catastrophic_overfitting(healthy[: i + 1]) for i in range(3))
    seed_case = [{"val_fgsm": 0.89, "val_pgd": 0.004}]
    assert detect_catastrophic_overfitting(seed_case)
    collapse = [*healthy, {"val_fgsm": 0.60, "val_pgd": 0.10}]
    assert detect_catastrophic_overfitting(collapse)
    assert not detect_catastrophic_overfitting([{"val_fgsm": None, "val_pgd": None}])


def test_every_epoch_row_records_its_work_and_the_machine_load(tmp_path):
    """work_flops = objective passes x images x the model's forward FLOPs, cumulated per epoch."""
    from support import small_config

    from boosting_tickets.training.work import model_flops

    cfg = small_config(epochs=2, objective="pgd", train_steps=2)
    rows = train(cfg, tmp_path).metrics
    fwd = model_flops(cfg)
    assert fwd > 0
    for r in rows:
        assert r["images"] == 64
        assert r["work_flops"] == pytest.approx((2 * 2 + 3) * 64 * fwd)
        assert r["eval_work_flops"] == pytest.approx((4 + 2 * 1 + 1) * 16 * fwd)
        assert r["load1"] is None or r["load1"] >= 0
    assert rows[1]["cum_work_flops"] == pytest.approx(2 * rows[0]["work_flops"])


def test_divergence_names_the_setting_that_most_likely_caused_it():
    import dataclasses

    from boosting_tickets.training.callbacks import divergence_advice

    cfg = tiny_config()
    assert divergence_advice(cfg).startswith("lower --lr (now ")
    wd = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, weight_decay=0.05))
    assert divergence_advice(wd) == "lower --weight-decay (now 0.05, default 0.0001)"
    trades = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, objective="trades",
                                                                 trades_beta=50.0))  # fmt: skip
    assert divergence_advice(trades).startswith("lower --trades-beta (now 50")


def test_sigterm_keeps_the_resume_state_and_says_how_to_resume(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "boosting_tickets", "train", "--dataset", "synthetic",
            "--train-subset", "64", "--val-size", "16", "--test-subset", "16", "--batch-size",
            "16", "--model", "wrn-10-1", "--epochs", "40", "--no-progress", "--out",
            str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    for line in proc.stdout:  # wait for the first finished epoch
        if line.startswith("epoch 1/"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip() == "error: terminated (SIGTERM); rerun the same command to resume"
    assert list(tmp_path.glob("train_*/last.pt")) or list(tmp_path.glob("train_*/init.pt"))
