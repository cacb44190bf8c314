"""One run on several processes (DDP over gloo on the CPU), launched by torchrun or --nproc.

The 2-rank checks run in ``tests/ddp_checks.py`` under ``torchrun``; the single-process reference
they compare against is made here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import (
    cli_call,
    ddp_reference_config,
    ddp_reference_protocol,
    run_cli,
    small_config,
    torchrun,
    tree_digest,
)

from boosting_tickets.adversarial.evaluation import evaluate
from boosting_tickets.core.paths import RunPaths
from boosting_tickets.core.storage import read_json
from boosting_tickets.training.loop import Callback
from boosting_tickets.training.run import train

HERE = Path(__file__).parent
TINY = ["--dataset", "synthetic", "--train-subset", "64", "--val-size", "16", "--test-subset",
        "16", "--batch-size", "16", "--model", "wrn-10-1", "--objective", "pgd", "--train-steps",
        "1", "--eval-steps", "1", "--no-progress"]  # fmt: skip
ONE_THREAD = ["--threads", "1"]  # for subprocesses (in-process calls keep the tests' setting)


class _Record(Callback):
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_step_end(self, state, step) -> None:  # noqa: ANN001
        self.steps.append(
            {
                "model": {k: v.detach().clone() for k, v in state.model.state_dict().items()},
                "momentum": [
                    state.optimizer.state[p]["momentum_buffer"].detach().clone()
                    for p in state.model.parameters()
                ],
            }
        )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The 1-process reference, then the same run on 2 gloo ranks (tests/ddp_checks.py)."""
    root = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    record = _Record()
    single = train(ddp_reference_config(), root / "single" / "run", callbacks=[record])
    # The evaluation check needs a model that attacks fool on some points and not on others.
    natural = small_config(epochs=6, objective="natural", lr=0.1)
    model = train(natural, root / "natural").load_model("final")
    splits = natural.data.load()
    images, labels = splits.train.images[:40], splits.train.labels[:40]
    expected = evaluate(model, images, labels, ddp_reference_protocol(), batch_size=8,
                        num_classes=10, per_class=True, per_point=True)  # fmt: skip
    torch.save(
        {"steps": record.steps, "eval_model": model.state_dict(), "eval_images": images,
         "eval_labels": labels},
        root / "reference.pt",
    )  # fmt: skip
    proc = torchrun(str(HERE / "ddp_checks.py"), str(root / "ddp"), str(root / "reference.pt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((root / "ddp" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    return {"root": root, "single": single, "expected": expected, "ranks": ranks,
            "steps": len(record.steps)}  # fmt: skip


def test_two_ranks_of_half_batches_match_one_rank_step_by_step(ddp_run):
    for found in ddp_run["ranks"]:
        assert found["world"] == 2
        assert len(found["step_diffs"]) == ddp_run["steps"] == 8
        assert max(found["step_diffs"]) < 1e-5, found["step_diffs"]


def test_sharded_evaluation_equals_the_single_process_numbers(ddp_run):
    exp = ddp_run["expected"]
    for found in ddp_run["ranks"]:
        for key in ("clean_acc", "fgsm_acc", "pgd_acc", "per_class", "per_point"):
            assert found["eval"][key] == exp[key], key
    assert exp["clean_acc"] > exp["pgd_acc"] > 0  # random starts decided some points


def test_only_rank_0_writes_and_the_run_directory_is_a_normal_one(ddp_run):
    rank0, rank1 = ddp_run["ranks"]
    assert rank1["writes"] == []
    names = {Path(w).name for w in rank0["writes"]}
    assert {"hparams.json", "init.pt", "last.pt", "best.pt", "final.pt", "metrics.json",
            "test_eval.json", "attempts.json"} <= names  # fmt: skip
    ddp_dir, single_dir = ddp_run["root"] / "ddp" / "run", ddp_run["single"].run_dir
    listing = sorted(p.name for p in ddp_dir.iterdir())
    assert listing == sorted(p.name for p in Path(single_dir).iterdir())
    (attempt,) = read_json(RunPaths(ddp_dir).attempts)["attempts"]
    assert attempt["world"] == 2 and attempt["backend"] == "gloo" and attempt["from_epoch"] == 0
    # Same settings, same hash: the number of processes is not part of a run's identity.
    assert (
        read_json(RunPaths(ddp_dir).hparams)["hash"]
        == read_json(RunPaths(single_dir).hparams)["hash"]
    )


def test_nproc_2_trains_a_tiny_wide_resnet_through_torchrun(tmp_path):
    proc = run_cli("train", *TINY, *ONE_THREAD, "--epochs", "1", "--out", str(tmp_path),
                   "--nproc", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("status: complete") == 1  # rank 0 speaks, rank 1 does not
    (run,) = tmp_path.iterdir()
    doc = read_json(RunPaths(run).metrics)
    assert doc["status"] == "complete" and len(doc["epochs"]) == 1
    assert read_json(RunPaths(run).attempts)["attempts"][0]["world"] == 2


def test_elastic_restart_after_a_rank_is_killed_redoes_at_most_one_epoch(tmp_path):
    """torchrun --max-restarts 1: rank 1 is SIGKILLed in epoch 2; all ranks restart from
    last.pt (epoch 1) and finish."""
    args = ["-m", "boosting_tickets", "train", *TINY, *ONE_THREAD, "--epochs", "3", "--out",
            str(tmp_path)]  # fmt: skip
    proc = torchrun(*args, extra=("--max-restarts", "1"),
                    env={"BOOSTING_TICKETS_FAULT": "kill_at_step:2.2:1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    attempts = read_json(RunPaths(run).attempts)["attempts"]
    assert [a["from_epoch"] for a in attempts] == [0, 1]
    doc = read_json(RunPaths(run).metrics)
    assert doc["status"] == "complete" and [r["epoch"] for r in doc["epochs"]] == [1, 2, 3]


def test_nproc_bad_values_are_one_line_and_write_nothing(tmp_path, capsys):
    too_many = str((os.cpu_count() or 1) + 1)
    cases = [
        (["--nproc", "0"], "--nproc must be >= 1"),
        (["--nproc", too_many], f"--nproc {too_many} exceeds the"),
        (["--nproc", "2", "--batch-size", "15"], "does not split over 2 processes"),
    ]
    for extra, message in cases:
        code, _, err = cli_call(["train", *TINY, "--out", str(tmp_path / "out"), *extra], capsys)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not any(tmp_path.iterdir())


def test_a_run_claimed_by_a_live_process_is_refused_with_its_holder(tmp_path, capsys):
    """A plain train of a directory another live process trains: exit 2, holder named, nothing
    written; once the holder is dead its claim is taken over and the run trains."""
    from boosting_tickets.core.claims import Claim, claim_path

    code, _, err = cli_call(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "ref")],
                            capsys)  # fmt: skip
    assert code == 0, err
    (ref_dir,) = (tmp_path / "ref").iterdir()
    run_dir = tmp_path / "out" / ref_dir.name
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        path = claim_path(run_dir)
        path.parent.mkdir(parents=True)
        record = {**Claim(path, "training it elsewhere").record(), "pid": holder.pid}
        record["started"] = None  # any process with that pid counts as the holder
        path.write_text(json.dumps(record))
        before = tree_digest(tmp_path)
        code, _, err = cli_call(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "out")],
                                capsys)  # fmt: skip
        assert code == 2, err
        line = err.strip()
        assert line.startswith("error: ") and "\n" not in line
        assert f"pid {holder.pid}" in line and "training it elsewhere" in line
        assert tree_digest(tmp_path) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, _, err = cli_call(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "out")],
                            capsys)  # fmt: skip
    assert code == 0, err
    assert not path.exists()


def test_a_suite_with_a_ticket_runs_on_two_ranks(tmp_path):
    """bench run --nproc 2: the ticket search, the retraining and the dense arm all run as one
    2-rank group; the results and the ticket are those of a normal suite directory."""
    from support import tiny_suite

    from boosting_tickets.report.results import read_results

    suite = tmp_path / "two.toml"
    suite.write_text(
        tiny_suite(
            '[[arms]]\nname = "dense"\nkind = "dense"\n[[arms]]\nname = "ticket"\nkind = "ticket"\n'
        )  # fmt: skip
    )
    proc = run_cli("bench", "run", str(suite), "--out", str(tmp_path / "out"), "--threads", "1",
                   "--nproc", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("results:") == 1  # rank 0 speaks
    doc = read_results(tmp_path / "out" / "results.json")
    assert sorted(r["arm"] for r in doc["rows"]) == ["dense", "ticket"]
    (ticket,) = (tmp_path / "out" / "tickets").iterdir()
    assert read_json(ticket / "ticket.json")["sparsity"] > 0.7
    worlds = {a["world"] for p in (tmp_path / "out").rglob("attempts.json")
              for a in read_json(p)["attempts"]}  # fmt: skip
    assert worlds == {2}
