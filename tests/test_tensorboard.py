"""TensorBoard events, the first callback beyond the standard ones: written per epoch into the run
directory, read back with TensorBoard's own reader, off with --no-tensorboard."""

from __future__ import annotations

import json

import pytest
from support import small_config

from boosting_tickets.training.run import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def test_events_carry_the_metrics_rows_and_the_settings(tmp_path) -> None:
    cfg = small_config(epochs=2, objective="pgd", train_steps=1)
    result = train(cfg, tmp_path / "run")
    acc = _events(result.run_dir)
    rows = json.loads((result.run_dir / "metrics.json").read_text())["epochs"]
    for tag, key in (("train/loss", "train_loss"), ("held_out/pgd", "val_pgd"), ("lr", "lr"),
                     ("held_out/clean", "val_clean"), ("seconds/train", "train_seconds")):  # fmt: skip
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)
    text = acc.Tensors("hparams/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads((result.run_dir / "hparams.json").read_text())["hash"] in text


def test_a_resumed_run_logs_each_epoch_once(tmp_path) -> None:
    cfg = small_config(epochs=3, objective="natural")
    run_dir = tmp_path / "run"

    def stop_after_epoch_2(msg: str) -> None:
        if msg.startswith("epoch 3/3"):  # epoch 3 is trained but neither saved nor logged
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir, log=stop_after_epoch_2)
    train(cfg, run_dir)
    assert [e.step for e in _events(run_dir).Scalars("train/loss")] == [1, 2, 3]


def test_no_tensorboard_writes_no_events(tmp_path) -> None:
    cfg = small_config(epochs=1, tensorboard=False)
    result = train(cfg, tmp_path / "run")
    assert not (result.run_dir / "tensorboard").exists()
