"""Kernel choices (issue #14, part 1): channels_last and torch.compile chosen by the measured table,
overridden by flags, recorded once per run and kept on resume, and never changing results beyond
float rounding (checked here on the CPU)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from support import cli_call, small_config

from boosting_tickets.core.errors import UserError
from boosting_tickets.core.paths import RunPaths
from boosting_tickets.core.storage import safe_torch_load
from boosting_tickets.training import kernels
from boosting_tickets.training.run import _kernels, train


def test_the_measured_table_chooses_and_flags_override():
    wrn = kernels.choose("cpu", "wrn-10-1", channels_last=None, compile=None)
    assert wrn.channels_last and not wrn.compile and "measured faster for wrn on cpu" in wrn.source
    small = kernels.choose("cpu", "small-cnn", channels_last=None, compile=None)
    assert (small.channels_last, small.compile, small.fold_bn) == (True, False, True)
    assert "fold_bn measured faster for small-cnn on cpu" in small.source
    assert kernels.choose("cpu", "vgg16-bn", channels_last=None, compile=None) == (
        kernels.KernelChoice(False, False, "nothing measured faster for vgg16-bn on cpu")
    )
    off = kernels.choose("cpu", "wrn-10-1", channels_last=False, compile=None)
    assert not off.channels_last and "channels_last by flag" in off.source
    assert not kernels.choose("cuda", "wrn-34-10", channels_last=None, compile=None).channels_last
    assert kernels.choose("cpu", "vgg16-bn", channels_last=None, compile=True).compile
    for entry in kernels.measured():  # every default names how it was measured
        assert entry["measured"] and entry["device"] in ("cpu", "cuda")


def test_the_kernel_table_is_validated():
    assert kernels.threshold() == 1.1
    good = {"format": kernels.KERNELS_FORMAT, "threshold": 1.1, "choices": []}
    assert kernels.parse_table(json.dumps(good)) == (1.1, ())
    entry = {"device": "cpu", "family": "wrn", "channels_last": True, "compile": False,
             "fold_bn": False, "measured": "how"}  # fmt: skip
    bad = [
        "{not json",
        json.dumps([good]),
        json.dumps({**good, "format": "other"}),
        json.dumps({**good, "threshold": 0.5}),
        json.dumps({**good, "threshold": True}),
        json.dumps({**good, "choices": [{**entry, "compile": "no"}]}),
        json.dumps({**good, "choices": [{k: v for k, v in entry.items() if k != "measured"}]}),
    ]
    for text in bad:
        with pytest.raises(UserError, match="kernels.json is unreadable"):
            kernels.parse_table(text)


def _cfg(objective: str = "natural", **train):
    cfg = small_config(epochs=1, objective=objective, train_steps=1)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def test_channels_last_changes_nothing_beyond_float_rounding(tmp_path):
    # Natural training: after an epoch (4 SGD steps with momentum, BatchNorm on batches of 16) the
    # weights agree to 1e-3; training amplifies the 1e-7 rounding differences of single ops
    # (checked below). Under PGD the attack's sign() turns a rounding difference in a gradient
    # into a different step, so PGD runs part the way two seeds of noise do.
    runs = {cl: train(_cfg(channels_last=cl), tmp_path / str(cl)) for cl in (False, True)}
    w = {cl: safe_torch_load(r.run_dir / "final.pt")["state_dict"] for cl, r in runs.items()}
    for k, v in w[False].items():
        torch.testing.assert_close(w[True][k], v, rtol=1e-3, atol=1e-3, msg=k)
    # ...and each run records what it used; the flag is no part of the hash.
    recs = {cl: json.loads((r.run_dir / "hparams.json").read_text()) for cl, r in runs.items()}
    for cl, rec in recs.items():
        assert rec["details"]["kernels"]["channels_last"] is cl
    assert recs[False]["hash"] == recs[True]["hash"]
    # One PGD attack and one update step in either format: logits and gradients agree.
    from boosting_tickets.adversarial.attacks import pgd
    from boosting_tickets.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=10, in_channels=1).eval()
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    grads, outs = [], []
    for fmt in (torch.contiguous_format, torch.channels_last):
        model.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        x_adv = pgd(model, xi, y, 0.1, step_size=0.025, steps=3, random_start=False)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
        outs.append(x_adv)
    assert float((outs[0] == outs[1]).float().mean()) > 0.99  # sign() may flip a rare tie
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_torch_compile_changes_nothing_beyond_float_rounding(tmp_path):
    pytest.importorskip("torch._dynamo")
    cfg = _cfg("pgd", channels_last=False)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, model="small-cnn"))
    eager = train(cfg, tmp_path / "eager")
    compiled = train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True)),
                     tmp_path / "compiled")  # fmt: skip
    a = safe_torch_load(eager.run_dir / "final.pt")["state_dict"]
    b = safe_torch_load(compiled.run_dir / "final.pt")["state_dict"]
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert list(b) == list(a)  # checkpoints hold the plain module's keys, no _orig_mod prefix


def test_a_run_keeps_the_kernels_it_recorded(tmp_path, capsys):
    res = train(_cfg(), tmp_path / "run")  # auto: channels_last for a WRN on the CPU
    paths = RunPaths(res.run_dir)
    assert json.loads(paths.hparams.read_text())["details"]["kernels"]["channels_last"] is True
    # Asked again with the opposite flag, the existing run keeps what it started with.
    kept = _kernels(paths, _cfg(channels_last=False), torch.device("cpu"))
    assert kept.channels_last is True
    # A run directory from before choices were recorded used its setting: NCHW by default.
    legacy = kernels.recorded(None, False)
    assert not legacy.channels_last and "before kernel choices" in legacy.source
    code, out, err = cli_call(["train", "--help"], capsys)
    assert code == 0 and "--channels-last / --no-channels-last" in out and "--compile" in out


def test_evaluate_uses_the_runs_kernels_and_equals_its_test_evaluation(tmp_path, capsys):
    cfg = _cfg("pgd")  # a WRN on the CPU: channels_last by the measured table
    res = train(cfg, tmp_path / "run")
    code, out, err = cli_call(["evaluate", str(res.run_dir), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kernels"]["channels_last"] is True and "the run's" in doc["kernels"]["source"]
    best = res.test["best"]
    assert (doc["clean_acc"], doc["pgd_acc"]) == (best["clean_acc"], best["pgd_acc"])
    code, out, _ = cli_call(["evaluate", str(res.run_dir), "--json", "--no-channels-last"], capsys)
    assert code == 0 and json.loads(out)["kernels"]["channels_last"] is False


def test_bench_rows_carry_the_kernels_of_their_runs(tmp_path, capsys):
    from support import tiny_suite

    suite = tmp_path / "s.toml"
    suite.write_text(tiny_suite('[[arms]]\nname = "dense"\nkind = "dense"\n'))
    code, _, err = cli_call(["bench", "run", str(suite), "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    (row,) = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert row["kernels"]["channels_last"] is True  # wrn-10-1 on the CPU, by the measured table


#: A small model of every family the kernel table lists (a new entry must add one here).
EXAMPLE_MODEL = {"wrn": "wrn-10-1", "small-cnn": "small-cnn"}


@pytest.mark.parametrize(
    "entry", [e for e in kernels.measured() if e["device"] == "cpu"], ids=lambda e: e["family"]
)
def test_every_measured_cpu_default_equals_plain_kernels(entry, tmp_path):
    # The defaults a user gets without flags (the table's entry) against every kernel off: an
    # epoch ends at the same weights within the tolerance of the test above (natural training;
    # under PGD, sign() turns rounding into different steps), and the held-out and test PGD
    # evaluations (folded where the entry folds) agree.
    assert entry["family"] in EXAMPLE_MODEL, f"add an example model for {entry['family']}"
    cfg = _cfg("natural", channels_last=None, compile=None, fold_bn=None)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, model=EXAMPLE_MODEL[entry["family"]])
    )
    plain = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, channels_last=False, compile=False, fold_bn=False)
    )
    runs = {"default": train(cfg, tmp_path / "default"), "plain": train(plain, tmp_path / "plain")}
    rec = json.loads((runs["default"].run_dir / "hparams.json").read_text())["details"]["kernels"]
    assert {k: rec[k] for k in kernels.KERNELS} == {k: entry[k] for k in kernels.KERNELS}
    a, b = (
        safe_torch_load(runs[k].run_dir / "final.pt")["state_dict"] for k in ("plain", "default")
    )
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-3, atol=1e-3, msg=k)
    best = {k: r.test["best"] for k, r in runs.items()}
    assert best["default"]["clean_acc"] == best["plain"]["clean_acc"]
    assert abs(best["default"]["pgd_acc"] - best["plain"]["pgd_acc"]) <= 1 / 16 + 1e-9
