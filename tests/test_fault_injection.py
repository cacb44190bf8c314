"""Faults survived: kill -9 at chosen moments, a full disk, an unwritable output, diverging training.

The kill/resume checks reuse the helpers of ``benchmarks/fault_injection.py`` (which runs the same
procedure over >= 20 random kills); here a few deterministic kills keep the test to about a minute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from support import cli_call, run_cli, small_config, tree_digest

from boosting_tickets.core import storage
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import atomic_torch_save, atomic_write_json, safe_torch_load
from boosting_tickets.training import losses
from boosting_tickets.training.callbacks import TrainingFailed
from boosting_tickets.training.run import train

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("fault_injection_bench", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


fi = _load_benchmark()

# Four batches an epoch of a 78k-parameter WideResNet: each run takes a second or two.
SMALL = [
    "--dataset", "synthetic", "--model", "wrn-10-1", "--train-subset", "64", "--val-size", "16",
    "--test-subset", "16", "--batch-size", "16", "--eval-steps", "1", "--no-progress",
]  # fmt: skip
TINY = [*SMALL, "--epochs", "2", "--objective", "natural"]
# The benchmark's PGD command, on less data: three epochs, so kills can land in each phase.
KILL_ARGS = ["train", *SMALL, "--epochs", "3", "--objective", "pgd", "--train-steps", "2"]


@contextlib.contextmanager
def children_threads():
    """Run in-process references with the thread count of the benchmark's child processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(fi.THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _one_line_error(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


# --- kill -9 ------------------------------------------------------------------------------------


def test_kill_9_mid_write_and_mid_epoch_then_rerun_gives_identical_metrics(tmp_path, capsys):
    with children_threads():  # the uninterrupted reference runs in this process
        code, _, err = cli_call([*KILL_ARGS, "--out", str(tmp_path / "reference")], capsys)
    assert code == 0, err
    scenario = fi.train_scenario(KILL_ARGS)
    ref = {"fingerprint": scenario.fingerprint(scenario.target(tmp_path / "reference"))}
    tally = fi.Tally()
    plans = [
        "after_tmp_write:last.pt",  # mid-checkpoint write of epoch 1
        "line:epoch 2/@0",  # right after epoch 2's log line: mid-save or early epoch 3
        "after_tmp_write:test_eval.json",  # all epochs done, mid-results write
    ]
    fi.run_trial(scenario, tmp_path / "trial", plans, ref, tally)
    assert tally.notes == []
    assert tally.kills_landed == len(plans) == tally.kills_tried
    assert tally.resumes_completed == 1 and tally.failed_commands == 0
    assert tally.files_corrupted == 0 and tally.inconsistent == 0 and tally.mismatched == 0
    assert tally.max_epochs_redone <= 1
    # The write kills really struck between temp file and rename: their temp files are left over,
    # and no reader looked at them.
    assert tally.orphaned_temp_files >= 2
    assert scenario.fingerprint(scenario.target(tmp_path / "trial" / "out")) == ref["fingerprint"]


def test_the_integrity_checks_can_fail(tmp_path):
    """The figures are only worth something if a damaged run would be caught."""
    cfg = small_config(epochs=1)
    run = tmp_path / "run"
    train(cfg, run)
    good = fi.final_fingerprint(run)
    assert fi.check_files(run) == [] and fi.check_consistency(run, epochs=1) == []

    shutil.copy(run / "init.pt", run / "best.pt")  # another model's weights
    assert fi.final_fingerprint(run)["weights"] != good["weights"]

    data = (run / "final.pt").read_bytes()
    (run / "final.pt").write_bytes(data[: len(data) // 3])  # torn checkpoint
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["epochs"][0]["val_clean"] = 1.0  # edited number, stale checksum
    (run / "metrics.json").write_text(json.dumps(metrics))
    problems = fi.check_files(run)
    assert any(p.startswith("final.pt") for p in problems)
    assert any(p.startswith("metrics.json") and "checksum" in p for p in problems)

    (run / "last.pt").unlink()  # metrics now list an epoch no resume point holds
    metrics = json.loads((run / "metrics.json").read_text())
    atomic_write_json(run / "metrics.json", metrics, checksum=True)
    assert any("last.pt holds 0" in p for p in fi.check_consistency(run, epochs=1))


def test_fault_hook_is_off_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(storage.FAULT_ENV, raising=False)
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    monkeypatch.setenv(storage.FAULT_ENV, "enospc:other.json")
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    monkeypatch.setenv(storage.FAULT_ENV, "enospc:a.json")
    with pytest.raises(UserError, match="no space left on device"):
        atomic_write_json(tmp_path / "a.json", {"x": 3})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# --- disk full, unwritable output ---------------------------------------------------------------


def _temp_into_dev_full(monkeypatch, name: str) -> None:
    """Make the temp file of writes of ``name`` a symlink to /dev/full: the kernel's real ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available")
    real = storage._new_temp

    def fake(path: Path) -> Path:
        if path.name != name:
            return real(path)
        link = path.parent / f".{path.name}.devfull.tmp"
        link.symlink_to("/dev/full")
        return link

    monkeypatch.setattr(storage, "_new_temp", fake)


@pytest.mark.parametrize("kind", ["torch", "json"])
def test_real_enospc_is_one_clean_error_and_keeps_the_old_file(tmp_path, monkeypatch, kind):
    target = tmp_path / ("x.pt" if kind == "torch" else "x.json")
    if kind == "torch":
        atomic_torch_save({"w": torch.zeros(3)}, target)
    else:
        atomic_write_json(target, {"old": True}, checksum=True)
    before = tree_digest(tmp_path)
    _temp_into_dev_full(monkeypatch, target.name)
    with pytest.raises(UserError, match=r"no space left on device while writing .*x\.(pt|json)"):
        if kind == "torch":
            # torch's own file writer would raise an opaque RuntimeError here.
            atomic_torch_save({"w": torch.ones(100_000)}, target)
        else:
            atomic_write_json(target, {"old": False, "pad": "x" * 100_000}, checksum=True)
    assert tree_digest(tmp_path) == before  # old file intact, no temp file left


def test_disk_full_mid_training_then_rerun_matches_an_uninterrupted_run(
    tmp_path, monkeypatch, capsys
):
    code, _, err = cli_call(["train", *TINY, "--out", str(tmp_path / "ref")], capsys)
    assert code == 0, err
    (ref_dir,) = (tmp_path / "ref").iterdir()

    _temp_into_dev_full(monkeypatch, "last.pt")
    code, out, err = cli_call(["train", *TINY, "--out", str(tmp_path / "full")], capsys)
    assert code == 2 and _one_line_error(err), err
    assert "no space left on device while writing" in err and "last.pt" in err
    (run_dir,) = (tmp_path / "full").iterdir()
    names = sorted(p.name for p in run_dir.iterdir())
    # Nothing claims to be a finished epoch (tensorboard/ holds the settings, no epoch yet).
    assert names == ["attempts.json", "best.pt", "hparams.json", "init.pt", "tensorboard"]
    assert fi.check_files(run_dir) == []

    monkeypatch.undo()  # space freed
    code, out, err = cli_call(["train", *TINY, "--out", str(tmp_path / "full")], capsys)
    assert code == 0, err
    assert fi.final_fingerprint(run_dir) == fi.final_fingerprint(ref_dir)


def test_enospc_in_a_real_process_is_one_line_and_writes_nothing(tmp_path):
    cfg = small_config(epochs=1)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, test_eval=False))
    train(cfg, tmp_path / "run")
    dest = tmp_path / "out" / "eval.json"
    before = tree_digest(tmp_path)
    proc = run_cli(
        "evaluate", str(tmp_path / "run" / "best.pt"), "--n-examples", "8", "--steps", "1",
        "--out", str(dest), env={storage.FAULT_ENV: "enospc:eval.json"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"error: no space left on device while writing {dest}; free space and rerun\n"
    )
    assert not dest.exists() and not any(dest.parent.iterdir())
    assert tree_digest(tmp_path) == before


def test_output_under_a_regular_file_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    before = tree_digest(tmp_path)
    code, _, err = cli_call(["train", *TINY, "--out", str(blocker / "runs")], capsys)
    assert code == 2 and _one_line_error(err) and "not-a-dir" in err, err
    with pytest.raises(UserError, match="a parent of it is a file, not a directory"):
        atomic_write_json(blocker / "r.json", {"x": 1})
    assert tree_digest(tmp_path) == before


def test_permission_denied_names_the_fix(tmp_path, monkeypatch):
    def denied(path: Path) -> Path:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(storage, "_new_temp", denied)
    with pytest.raises(UserError, match="permission denied; choose a writable --out directory"):
        atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="permission denied"):
            atomic_write_json(ro / "r.json", {"x": 1})
    finally:
        ro.chmod(0o700)


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"x": 1})
        atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    finally:
        os.umask(old)
    # Not mkstemp's 0600: a colleague sharing the results directory can read them.
    assert {(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {0o644}


# --- training faults ----------------------------------------------------------------------------


class _NanGrad(torch.autograd.Function):
    """Identity whose backward returns NaN: a finite loss that still poisons the weights."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _all_finite(path: Path) -> bool:
    ckpt = safe_torch_load(path)
    sd = ckpt.get("state_dict", ckpt.get("model"))
    return all(bool(t.isfinite().all()) for t in sd.values() if t.is_floating_point())


def test_nan_weights_after_a_finite_loss_stop_the_run_before_any_checkpoint(tmp_path, monkeypatch):
    cfg = small_config(epochs=3)
    real = losses.natural_loss
    calls = {"n": 0}

    def poison_step_8(*args, **kw):
        calls["n"] += 1
        loss, logits = real(*args, **kw)
        return (_NanGrad.apply(loss) if calls["n"] == 8 else loss), logits

    monkeypatch.setattr(losses, "natural_loss", poison_step_8)
    with pytest.raises(TrainingFailed) as info:
        train(cfg, tmp_path / "r")
    msg = str(info.value)
    # 4 batches per epoch: the 8th is epoch 2's last; its loss was finite, its update was not.
    assert "weights became non-finite" in msg and "epoch 2 step 4" in msg, msg
    assert "last good checkpoint (epoch 1)" in msg and "\n" not in msg
    assert safe_torch_load(tmp_path / "r" / "last.pt")["epoch"] == 1
    assert all(_all_finite(p) for p in (tmp_path / "r").glob("*.pt"))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "epoch 2 step 4" in metrics["failure"]
    assert len(metrics["epochs"]) == 1


def test_divergence_through_the_cli_keeps_the_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = losses.natural_loss
    calls = {"n": 0}

    def nan_in_epoch_2(*args, **kw):
        calls["n"] += 1
        loss, logits = real(*args, **kw)
        return (loss * float("nan") if calls["n"] == 6 else loss), logits

    monkeypatch.setattr(losses, "natural_loss", nan_in_epoch_2)
    code, _, err = cli_call(["train", *TINY, "--epochs", "3", "--out", str(tmp_path)], capsys)
    # A diverged run is a runtime failure (exit 1), not bad input (exit 2).
    assert code == 1 and _one_line_error(err), err
    assert "loss became nan at epoch 2 step 2" in err and "lower --lr" in err
    (run,) = tmp_path.iterdir()
    kept = {n: (run / n).read_bytes() for n in ("last.pt", "best.pt", "init.pt")}
    assert safe_torch_load(run / "last.pt")["epoch"] == 1
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
    # The same command again diverges again (same seeds) and keeps the good files untouched.
    calls["n"] = 4  # the rerun resumes at epoch 2: keep counting steps from there
    code, _, err2 = cli_call(["train", *TINY, "--epochs", "3", "--out", str(tmp_path)], capsys)
    assert code == 1 and err2 == err
    assert {n: (run / n).read_bytes() for n in kept} == kept


def test_a_real_divergence_is_caught_at_its_step(tmp_path, capsys):
    code, _, err = cli_call(["train", *TINY, "--lr", "1e6", "--out", str(tmp_path)], capsys)
    assert code == 1 and _one_line_error(err), err
    assert "training diverged" in err and "at epoch 1 step" in err
    (run,) = tmp_path.iterdir()
    assert all(_all_finite(p) for p in run.glob("*.pt"))
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()


# --- bench run ----------------------------------------------------------------------------------

BENCH_SUITE = """description = "fault tests"
seeds = [0]
device = "cpu"
[compare]
allow_weak_stats = true
[run.data]
dataset = "synthetic"
train_subset = 64
val_size = 16
test_subset = 16
batch_size = 16
[run.model]
model = "wrn-10-1"
[run.train]
objective = "natural"
epochs = 1
progress = false
[run.eval]
eval_steps = 1
[[arms]]
name = "dense"
kind = "dense"
{extra}
"""

DIVERGING_ARM = """[[arms]]
name = "diverging"
kind = "dense"
run.train.lr = 1e6
"""


def test_bench_killed_mid_results_write_resumes_to_identical_results(tmp_path, capsys):
    suite = tmp_path / "faults.toml"
    suite.write_text(BENCH_SUITE.format(extra=""))
    scenario = fi.bench_scenario(suite)
    with children_threads():
        code, _, err = cli_call([*scenario.args, "--out", str(tmp_path / "reference")], capsys)
    assert code == 0, err
    ref = {"fingerprint": scenario.fingerprint(tmp_path / "reference")}
    tally = fi.Tally()
    fi.run_trial(scenario, tmp_path / "trial", ["after_tmp_write:results.json"], ref, tally)
    assert tally.notes == [] and tally.kills_landed == 1 and tally.resumes_completed == 1
    assert tally.files_corrupted == tally.inconsistent == tally.mismatched == 0
    assert tally.orphaned_temp_files == 1  # the killed results.json write, never read


def test_bench_reports_a_diverged_run_and_tables_leave_it_out(tmp_path, capsys):
    suite = tmp_path / "faults.toml"
    suite.write_text(BENCH_SUITE.format(extra=DIVERGING_ARM))
    out = tmp_path / "bench"
    code, stdout, err = cli_call(["bench", "run", str(suite), "--out", str(out)], capsys)
    assert code == 1 and err.count("\n") == 1 and "1 run(s) failed" in err, err
    assert "failed: diverging seed 0 (train): training diverged" in stdout
    results = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in results["rows"]] == ["dense"]
    (failure,) = results["failed"]
    assert failure["arm"] == "diverging" and "training diverged" in failure["error"]
    assert results["status"] == "complete-with-failures"
    code, stdout, err = cli_call(
        ["tables", str(out), "--out", str(tmp_path / "tables"), "--no-figures"], capsys
    )
    assert code == 0, err
    tables = "\n".join(p.read_text() for p in (tmp_path / "tables").rglob("*.md"))
    assert "diverging seed 0 failed (train) and is not tabulated: training diverged" in stdout
    assert "| dense" in tables and "| diverging" not in tables


# --- a real full disk ----------------------------------------------------------------------


def _small_fs(tmp_path):  # noqa: ANN202 - a context manager
    """A 600 KB tmpfs at tmp_path/fs when root can mount one, else None."""
    import contextlib
    import os
    import subprocess

    @contextlib.contextmanager
    def mounted():
        mnt = tmp_path / "fs"
        mnt.mkdir()
        ok = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True
        ).returncode == 0  # fmt: skip
        try:
            yield mnt if ok else None
        finally:
            if ok:
                subprocess.run(["umount", str(mnt)], capture_output=True)

    return mounted()


def test_a_real_full_disk_gives_one_line_and_leaves_no_temp_file(tmp_path):
    """A run whose checkpoints do not fit on a 600 KB filesystem (or, without root, under a
    600 KB file-size limit): one line, exit 2, no partial or temporary file."""
    import resource
    import subprocess
    import sys

    args = [sys.executable, "-m", "boosting_tickets", "train", "--dataset", "synthetic",
            "--train-subset", "64", "--val-size", "16", "--test-subset", "16", "--batch-size",
            "16", "--model", "wrn-10-2", "--epochs", "1", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with _small_fs(tmp_path) as fs:
        if fs is not None:
            proc = subprocess.run([*args, "--out", str(fs)], capture_output=True, text=True,
                                  env=env)  # fmt: skip
            where = fs
        else:

            def limit() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))

            where = tmp_path / "out"
            proc = subprocess.run([*args, "--out", str(where)], capture_output=True, text=True,
                                  env=env, preexec_fn=limit)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "no space left on device" in proc.stderr or "file too large" in proc.stderr
        leftovers = [p.name for p in where.rglob("*") if ".tmp" in p.name]
        assert not leftovers, leftovers
