"""The train / evaluate / doctor commands end to end, and the one-line answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import run_cli, tree_digest

from boosting_tickets.cli import main

TINY = [
    "--dataset", "synthetic", "--model", "small-cnn", "--train-subset", "200", "--val-size", "50",
    "--test-subset", "50", "--epochs", "1", "--train-steps", "2", "--eval-steps", "2",
    "--batch-size", "50", "--no-progress",
]  # fmt: skip


def call(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    proc = run_cli("train", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| best" in proc.stdout and "PGD-2 %" in proc.stdout
    (run,) = out.glob("train_*")
    return run


def test_train_then_evaluate_writes_json_with_protocol(trained, tmp_path, capsys):
    dest = tmp_path / "eval.json"
    code, out, err = call(
        ["evaluate", str(trained), "--dataset", "synthetic", "--steps", "3", "--out", str(dest)],
        capsys,
    )
    assert code == 0, err
    res = json.loads(dest.read_text())
    assert res["protocol"]["pgd_steps"] == 3 and res["protocol"]["bn_mode"] == "eval"
    # A run's checkpoint is evaluated on the run's own test subset by default (not all 500).
    assert res["protocol"]["eps"] == pytest.approx(0.1) and res["n"] == 50
    assert set(res["protocol"]["packages"]) >= {"torch", "torchvision"}
    assert 0 <= res["pgd_acc"] <= res["clean_acc"] <= 1
    # Evaluating on the run's own held-out split reproduces the split the run selected on.
    code, out, err = call(["evaluate", str(trained / "best.pt"), "--split", "val"], capsys)
    assert code == 0, err
    assert "| 50 " in out


def test_rerunning_train_does_no_work(trained, capsys):
    before = tree_digest(trained)
    code, out, err = call(["train", *TINY, "--out", str(trained.parent)], capsys)
    assert code == 0, err
    assert tree_digest(trained) == before


def _bad_checkpoints(root: Path, trained: Path) -> dict[str, Path]:
    html = root / "html.pt"
    html.write_text("<!DOCTYPE html><html><body>Google Drive quota exceeded</body></html>")
    truncated = root / "truncated.pt"
    data = (trained / "best.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = root / "foreign.pt"
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    ckpt["arch"]["model"] = "wrn-10-1"  # weights of a small-cnn claimed as a WideResNet
    torch.save(ckpt, foreign)
    empty = root / "empty.pt"
    empty.write_bytes(b"")
    return {"html": html, "truncated": truncated, "foreign": foreign, "empty": empty}


BAD_TRAIN = [
    (["--train-eps", "-0.1"], "--train-eps must be >= 0.0"),
    (["--eval-eps", "1.5"], "--eval-eps must be <= 1.0"),
    (["--eval-steps", "0"], "--eval-steps must be >= 1"),
    (["--train-steps", "0"], "--train-steps must be >= 1"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--model", "resnet50"], "unknown model 'resnet50'"),
    (["--objective", "free"], "unknown objective 'free'"),
    (["--lr", "inf"], "finite"),
    (["--epochs", "2.5"], "--epochs expects int"),
    (["--bogus-flag", "1"], "No such option"),
    (["--control", "reinit"], "--control needs --ticket"),
]


@pytest.mark.parametrize("args, fragment", BAD_TRAIN)
def test_bad_train_input_is_one_line(args, fragment, tmp_path, capsys):
    code, out, err = call(["train", *TINY, "--out", str(tmp_path), *args], capsys)
    assert code == 2
    assert fragment in err and err.startswith("error: ") and err.count("\n") == 1
    assert not any(tmp_path.iterdir()), "a refused command wrote files"


def test_bad_config_key_and_missing_data(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepoks = 3\n")
    code, _, err = call(["train", "--config", str(cfg), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown config key 'epoks'" in err
    code, _, err = call(
        ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nodata"),
         "--out", str(tmp_path / "o")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "cifar10" in err and str(tmp_path / "nodata") in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "which, fragment",
    [
        ("html", "HTML page"),
        ("truncated", "truncated or corrupted"),
        ("foreign", "does not fit architecture wrn-10-1"),
        ("empty", "empty"),
    ],
)
def test_bad_checkpoints_are_refused(which, fragment, trained, tmp_path, capsys):
    path = _bad_checkpoints(tmp_path, trained)[which]
    before = tree_digest(tmp_path)
    code, _, err = call(["evaluate", str(path), "--dataset", "synthetic"], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--eps", "-1"], "eps"),
        (["--eps", "2"], "eps"),
        (["--steps", "0"], "steps"),
        (["--bn-mode", "weird"], "bn"),
        (["--n-examples", "0"], "--n-examples must be >= 1"),
    ],
)
def test_bad_evaluate_numbers(args, fragment, trained, capsys):
    code, _, err = call(["evaluate", str(trained), "--dataset", "synthetic", *args], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def test_evaluate_never_overwrites_results(trained, tmp_path, capsys):
    dest = tmp_path / "keep.json"
    dest.write_text('{"precious": true}')
    code, _, err = call(["evaluate", str(trained), "--out", str(dest)], capsys)
    assert code == 2 and "exists" in err
    assert dest.read_text() == '{"precious": true}'


def test_no_traceback_in_a_real_process(tmp_path):
    proc = run_cli("evaluate", str(tmp_path / "missing.pt"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.pt'}"
    assert "Traceback" not in proc.stderr


def test_doctor_reports(capsys):
    code, out, err = call(["doctor", "--json"], capsys)
    report = json.loads(out)
    assert {d["name"] for d in report["datasets"]} >= {"fashion-mnist", "cifar10", "synthetic"}
    assert report["environment"]["packages"]["torch"]
    assert code == (1 if "problem:" in err else 0)


def test_evaluate_of_a_run_reproduces_its_test_eval_exactly(tmp_path, capsys):
    """``evaluate RUN`` once took the whole test set (10,000 images where the run used 16) and
    PGD-20 where the run used PGD-1; by default it now evaluates the run's own split under the
    run's protocol, and equals test_eval.json."""
    import json

    from support import cli_call, small_config

    from boosting_tickets.training.run import train

    res = train(small_config(epochs=1, objective="pgd"), tmp_path / "run")
    code, out, err = cli_call(["evaluate", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    want = res.test["best"]
    assert got["n"] == want["n"] == 16
    assert got["protocol"]["pgd_steps"] == want["protocol"]["pgd_steps"] == 1
    for k in ("clean_acc", "fgsm_acc", "pgd_acc"):
        assert got[k] == want[k], k
    # A flag still overrides the run's protocol.
    code, out, _ = cli_call(["evaluate", str(tmp_path / "run"), "--json", "--steps", "3"], capsys)
    assert code == 0 and json.loads(out)["protocol"]["pgd_steps"] == 3
