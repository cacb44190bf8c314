"""Typed configs: TOML loading, CLI overrides, validation and hashing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from boosting_tickets.core.config import (
    build_config,
    config_hash,
    from_dict,
    non_default,
    parse_cli_value,
    setting,
)
from boosting_tickets.core.errors import UserError
from boosting_tickets.training.hparams import RunConfig, TrainConfig


def test_defaults_hash_is_stable_and_changes_with_settings():
    a, b = RunConfig(), RunConfig()
    assert config_hash(a) == config_hash(b)
    c = dataclasses.replace(a, train=dataclasses.replace(a.train, epochs=3))
    assert config_hash(c) != config_hash(a)
    assert non_default(c) == {"train.epochs": 3}


def test_unhashed_settings_do_not_change_the_hash():
    a = RunConfig()
    b = dataclasses.replace(a, data=dataclasses.replace(a.data, data_dir="/elsewhere"))
    assert config_hash(a) == config_hash(b)


def test_adding_a_setting_with_its_default_keeps_old_hashes():
    @dataclass(frozen=True)
    class Old:
        x: int = setting(1, "x")

    @dataclass(frozen=True)
    class New:
        x: int = setting(1, "x")
        y: float = setting(0.5, "a new knob")

    # Same class name is part of the payload; compare the payload of non-default settings.
    assert non_default(Old(x=3)) == non_default(New(x=3))


def test_toml_and_cli_layering(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nepochs = 7\nlr = 0.05\n[data]\ndataset = "synthetic"\n')
    cfg = build_config(RunConfig, config_path=p, cli_values={"epochs": "9", "lr": None})
    assert cfg.train.epochs == 9 and cfg.train.lr == 0.05 and cfg.data.dataset == "synthetic"


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("[train]\nepochz = 3\n", "unknown config key 'epochz'"),
        ("[trian]\nepochs = 3\n", "unknown config key 'trian'"),
        ('[train]\nepochs = "ten"\n', "expects int"),
        ("[train]\nlr = true\n", "expects float"),
        ("[train\n", "not valid TOML"),
        ("train = 3\n", "must be a [train] table"),
    ],
)
def test_bad_toml_is_one_line_error(tmp_path, toml, fragment):
    p = tmp_path / "c.toml"
    p.write_text(toml)
    with pytest.raises(UserError) as info:
        build_config(RunConfig, config_path=p, cli_values={})
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("epochs", "0", "--epochs must be >= 1"),
        ("lr", "-1", "--lr must be > 0"),
        ("lr", "nan", "finite"),
        ("train_eps", "1.5", "--train-eps must be <= 1.0"),
        ("train_eps", "-0.1", "--train-eps must be >= 0.0"),
        ("objective", "adversarial", "unknown objective"),
        ("dataset", "imagenet", "unknown dataset"),
        ("model", "resnet50", "unknown model"),
        ("model", "wrn-15-2", "6n+4"),
        ("milestones", "0.75,0.5", "increasing"),
        ("epochs", "three", "expects int"),
    ],
)
def test_bad_cli_values(flag, value, fragment):
    with pytest.raises(UserError) as info:
        build_config(RunConfig, config_path=None, cli_values={flag: value})
    assert fragment in str(info.value)


def test_parse_fraction_and_none():
    assert parse_cli_value("8/255", float, "eps") == pytest.approx(8 / 255)
    assert parse_cli_value("none", int | None, "train_subset") is None
    assert parse_cli_value("0.5,0.75", tuple[float, ...], "milestones") == (0.5, 0.75)


def test_from_dict_roundtrip():
    cfg = from_dict(RunConfig, {"train": {"epochs": 4, "milestones": [0.3, 0.6]}})
    assert cfg.train.milestones == (0.3, 0.6)
    assert isinstance(cfg.train, TrainConfig)
