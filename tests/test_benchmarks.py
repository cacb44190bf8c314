"""The speed benchmarks' helpers (FLOP counting, interleaving) and both scripts end to end, tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from boosting_tickets.models.checkpoints import arch_meta, build_from_arch, save_model

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

# The benchmarks are scripts run as files; importing them like this is what `python FILE` does.
import _common  # noqa: E402
import attack_speed  # noqa: E402
import compile_speed  # noqa: E402
import gpu_path  # noqa: E402
import sparse_kernels  # noqa: E402
import structured  # noqa: E402
import train_speed  # noqa: E402


def _script(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a benchmark as a file in a subprocess (real exit code and stderr)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def _run(command, *args: str) -> int:
    """Run a benchmark's click command in this process through its entry point; the exit code."""
    try:
        _common.run_command(command, list(args))
    except SystemExit as exc:
        return int(exc.code)
    return 0


def _small_cnn(size_channels: int = 1):
    arch = arch_meta("small-cnn", num_classes=10, in_channels=size_channels, mean=None, std=None)
    return build_from_arch(arch), arch


def test_small_cnn_forward_flops_hand_counted():
    model, _ = _small_cnn()
    flops = _common.forward_flops(model, (1, 28, 28))
    # 2 x multiply-adds: conv = H_out*W_out*C_out*C_in*9, linear = in*out.
    expected = {
        "features.0": 2 * 28 * 28 * 32 * 1 * 9,
        "features.3": 2 * 28 * 28 * 32 * 32 * 9,
        "features.7": 2 * 14 * 14 * 64 * 32 * 9,
        "features.10": 2 * 14 * 14 * 64 * 64 * 9,
        "classifier.0": 2 * 64 * 7 * 7 * 256,
        "classifier.3": 2 * 256 * 10,
    }
    assert flops == expected
    assert sum(flops.values()) == 38_189_056
    assert model.training  # the counting pass restored the mode


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    cout_mult=st.integers(1, 3),
    groups_on=st.booleans(),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    size=st.integers(6, 12),
)
def test_conv_flops_match_output_size_formula(
    cin, cout_mult, groups_on, kernel, stride, padding, size
):
    groups = cin if groups_on else 1
    cout = cin * cout_mult
    model = nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups),
        nn.Flatten(),
    )
    out = (size + 2 * padding - kernel) // stride + 1
    flops = _common.forward_flops(model, (cin, size, size))
    assert flops == {"0": 2 * out * out * cout * (cin // groups) * kernel * kernel}


def test_pgd_training_step_is_23_forwards_for_pgd10():
    assert _common.pgd_training_flops_per_image(1000, 10) == 23_000
    assert _common.pgd_training_flops_per_image(7, 1) == 35


@given(n=st.integers(1, 6), r=st.integers(0, 20))
def test_round_order_is_a_permutation_reversed_every_other_round(n, r):
    order = _common.round_order(n, r)
    assert sorted(order) == list(range(n))
    assert order == (list(range(n)) if r % 2 == 0 else list(range(n))[::-1])


def test_interleave_runs_every_arm_each_round_and_pairs_ratios():
    log: list[str] = []
    seconds = {"a": iter([1.0, 2.0, 4.0]), "b": iter([2.0, 2.0, 2.0])}

    def arm(name: str) -> _common.Arm:
        def run() -> _common.Measurement:
            log.append(name)
            return _common.Measurement(next(seconds[name]), 10.0)

        return _common.Arm(name, run, warmup=lambda: log.append(f"warm-{name}"))

    runs = _common.interleave([arm("a"), arm("b")], 3, desc="t")
    assert log == ["warm-a", "warm-b", "a", "b", "b", "a", "a", "b"]
    assert [m.rate for m in runs["a"]] == [10.0, 5.0, 2.5]
    assert _common.median_rate(runs["a"]) == 5.0
    # Paired per round: 10/5, 5/5, 2.5/5 -> median 1.0 (the ratio of medians would also be 1.0,
    # but a pairing bug would show in the spread).
    assert _common.paired_ratio(runs["a"], runs["b"]) == 1.0
    assert _common.spread(runs["a"]) == (2.5, 10.0)


def test_attack_speed_end_to_end_on_a_checkpoint(tmp_path, capsys):
    pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    model, arch = _small_cnn()
    ckpt = tmp_path / "m.pt"
    save_model(ckpt, model, arch)
    out = tmp_path / "attack.json"
    args = ["--dataset", "synthetic", "--checkpoints", f"natural={ckpt}", "--n-images", "24"]
    args += ["--batch-size", "16", "--steps", "3", "--reps", "1", "--threads", "2"]
    code = _run(attack_speed.command, *args, "--full-arm", "--json-out", str(out))
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "ratio" in printed.out and "torchattacks" in printed.out
    data = json.loads(out.read_text())
    assert data["kind"] == "boosting-tickets/benchmark" and "sha256" in data
    assert data["protocol"]["pgd_steps"] == 3 and data["protocol"]["attack"]["steps"] == 3
    (row,) = data["rows"]
    assert row["n"] == 24 and row["sha256"]
    # Same random starts: our early-exit evaluator is never weaker than torchattacks.
    assert row["points_robust_for_ours_only"] == 0
    assert row["robust_acc_ours"] <= row["robust_acc_torchattacks"]
    assert row["robust_acc_ours"] <= row["robust_acc_ours_full"] <= row["clean_acc"] + 1e-9
    assert 0 < row["gradient_work_fraction"] <= 1
    assert sum(row["fooled_at_iterate"]) + 24 * row["robust_acc_ours"] <= 24
    assert set(row["images_per_s"]) == {
        "ours", "torchattacks", "ours-full", "ours-fold", "ours-default"
    }  # fmt: skip
    # The default kernels are the kernel table's for the small CNN on the CPU, the verdict's arm.
    kernels = row["ours_default_kernels"]
    assert (kernels["channels_last"], kernels["fold_bn"], kernels["compile"]) == (True, True, False)
    assert row["ratio_verdict_arm"] == "ours-default"
    assert row["ratio_best"] == row["ratio_ours_default_vs_torchattacks"]
    assert row["points_robust_for_default_only"] == 0
    # BatchNorm folded: the same attack within float rounding, so never weaker either.
    assert row["points_robust_for_fold_only"] == 0
    assert abs(row["robust_acc_ours_fold"] - row["robust_acc_ours"]) <= 1 / 24 + 1e-9
    # The file is never overwritten without --overwrite, and the refusal is one line.
    before = out.read_bytes()
    assert _run(attack_speed.command, *args, "--json-out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before


def test_train_speed_end_to_end_counts_flops(tmp_path, capsys):
    out = tmp_path / "train.json"
    code = _run(
        train_speed.command,
        *["--dataset", "synthetic", "--n-images", "32", "--batch-size", "16", "--steps", "1"],
        *["--reps", "1", "--threads", "2", "--json-out", str(out)],
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    model, _ = _small_cnn()
    fwd = sum(_common.forward_flops(model, (1, 16, 16)).values())
    assert data["protocol"]["flops"]["forward_per_image"] == fwd
    assert data["protocol"]["flops"]["train_step_per_image"] == 5 * fwd
    rows = {r["arm"]: r for r in data["rows"]}
    assert set(rows) == {"plain", "ours", "ours-fold", "ours-default"}
    # Folding BatchNorm for the attack computes the same epoch within float rounding.
    fold, ours = rows["ours-fold"]["mean_train_loss"], rows["ours"]["mean_train_loss"]
    assert abs(fold - ours) <= 1e-4 * ours
    for r in rows.values():
        assert r["images_per_s"] > 0 and 0 < r["peak_share"]
        assert r["mean_train_loss"] > 0
    assert rows["plain"]["ratio_vs_plain"] == 1.0
    assert "ours ≥ 1.0× plain" in data["targets"] and "ours-default ≥ 1.4× plain" in data["targets"]


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [
        (attack_speed.command, ["--checkpoints", "no-equals-sign"], "NAME=PATH"),
        (attack_speed.command, ["--steps", "0"], "--steps"),
        (train_speed.command, ["--model", "wrn-11-1"], "depth"),
        (train_speed.command, ["--json-out", "."], "directory"),
        (compile_speed.command, ["--n-images", "0"], "--n-images"),
        (compile_speed.command, ["--model", "resnet-7"], "model"),
    ],
)
def test_bad_input_is_one_line_exit_2(command, args, needle, capsys):
    assert _run(command, "--dataset", "synthetic", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and err.count("\n") == 1


def test_compile_speed_times_both_arms_and_counts_the_compile_cost(tmp_path, capsys, monkeypatch):
    # Inductor itself is checked against eager training in test_kernels; here the plumbing: the
    # compiled arm's forwards go through what torch.compile returns, both arms train the same
    # seeded model on the same batches, and the first (compiling) epoch is reported apart.
    calls = []

    class Compiled(nn.Module):  # stands in for torch.compile's OptimizedModule
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    def fake_compile(model, **kw):
        calls.append(kw)
        return Compiled(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = tmp_path / "compile.json"
    code = _run(
        compile_speed.command,
        *["--dataset", "synthetic", "--model", "small-cnn", "--n-images", "24"],
        *["--batch-size", "16", "--steps", "1", "--reps", "2", "--json-out", str(out)],
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert calls == [{"dynamic": True}]  # as `train --compile` compiles
    data = json.loads(out.read_text())
    rows = {r["arm"]: r for r in data["rows"]}
    assert set(rows) == {"eager", "compile"} and rows["eager"]["ratio_vs_eager"] == 1.0
    assert rows["eager"]["epoch_losses"] == rows["compile"]["epoch_losses"]  # same computation
    assert data["loss_max_relative_difference"] == 0.0 and set(data["first_epoch_seconds"]) == {
        "eager",
        "compile",
    }
    assert list(data["targets"]) == ["compile ≥ 1.1× eager"]
    assert data["protocol"]["train_attack"]["steps"] == 1 and "compile cost" in printed.out


def test_compile_payback_counts_epochs_or_says_never():
    first = {"eager": 2.0, "compile": 32.0}
    assert compile_speed._payback(first, eager_s=10.0, compile_s=8.0) == 15.0
    assert compile_speed._payback(first, eager_s=10.0, compile_s=12.0) is None


def test_scripts_run_as_files_and_refuse_bad_input():
    res = _script("train_speed.py", "--batch-size", "zero")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error:") and "--batch-size" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1


def test_sparse_kernels_checks_every_layout_against_conv2d_then_times_it(capsys):
    args = ["--quick", "--sparsities", "0.9", "--reps", "1", "--batch", "8", "--channels", "8",
            "--size", "6"]  # fmt: skip
    assert _run(sparse_kernels.COMMAND, *args) == 0
    out = capsys.readouterr().out
    assert out.count("| 90% |") == 2 and "verdict:" in out  # forward, and forward + backward
    # The sparse convolution is the same function as F.conv2d (else nothing would be timed).
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3) * (torch.rand(4, 3, 3, 3) > 0.8)
    x = torch.rand(2, 3, 5, 5)
    got = sparse_kernels._conv_as_matmul(x, w.reshape(4, -1).to_sparse_csr(), 3, 5)
    torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, padding=1))
    assert _run(sparse_kernels.COMMAND, "--sparsities", "1.0") == 2


def test_gpu_path_dry_runs_on_the_cpu_and_refuses_without_a_gpu(capsys, tmp_path):
    out_json = tmp_path / "gpu.json"
    assert _run(gpu_path.COMMAND, "--dry-run", "--json-out", str(out_json)) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "| fp32 |" in out and "AMP check" in out
    assert "paper-wrn34-10 suite" in out and "| bf16+cl+fold" in out
    assert "north star, ticket-fgsm-40" in out and "dry run: meaningless" in out
    doc = json.loads(out_json.read_text())
    assert doc["dry_run"] is True and doc["flops_per_image_step"] > 0
    # The north star is one ticket run (finding + 40 PGD epochs), a part of the whole suite.
    star = doc["north_star"]
    assert star["arm"] == "ticket-fgsm-40" and 0 < star["flops"] < doc["paper_suite_flops"]
    assert star["flops"] == doc["run_flops"]["ticket-fgsm-40/0"]
    assert sum(doc["run_flops"].values()) == doc["paper_suite_flops"]
    if not torch.cuda.is_available():
        assert _run(gpu_path.COMMAND) == 2
        assert "no CUDA device here" in capsys.readouterr().err


def test_structured_benchmark_prints_work_and_time_ratios(capsys):
    args = ["--quick", "--models", "wrn-10-1", "--reps", "1", "--batch", "8"]
    assert _run(structured.COMMAND, *args) == 0
    out = capsys.readouterr().out
    assert "| wrn-10-1 | wrn-10-1-mid-4-8-16 | 0.2" in out and "met" in out
    assert _run(structured.COMMAND, "--models", "small-cnn", "--quick") == 2
    assert "needs a plain WideResNet" in capsys.readouterr().err
