"""The committed quick results are reproducible: one arm of the quick suite, retrained here on
HEAD, gives the numbers committed in results/raw/quick-results.json (the CPU with fixed seeds is
deterministic; bit-for-bit only on the processor that measured them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from boosting_tickets.bench.plan import plan_suite
from boosting_tickets.bench.suites import load_suite
from boosting_tickets.core.environment import cpu_identity
from boosting_tickets.core.errors import UserError
from boosting_tickets.report.results import read_results
from boosting_tickets.training.run import train

REPO = Path(__file__).resolve().parent.parent
RAW = REPO / "results" / "raw" / "quick-results.json"


def test_the_committed_dense_seed_0_run_of_quick_reproduces_on_head(tmp_path):
    doc = read_results(RAW)
    env = doc["environment"]
    assert env.get("git_clean") is True, "committed results must come from a clean tree"
    here = cpu_identity()
    if (
        not env.get("cpu_flags_sha256")
        or env.get("cpu_flags_sha256") != here.get("cpu_flags_sha256")
        or env.get("cpu_model") != here.get("cpu_model")
    ):
        # Different CPUs (even both "x86_64") take other SIMD paths: curves differ from epoch 1.
        pytest.skip(
            f"measured on CPU {env.get('cpu_model', 'unrecorded')} (flags "
            f"{env.get('cpu_flags_sha256', 'unrecorded')}), this is {here.get('cpu_model')} "
            f"({here.get('cpu_flags_sha256')}); bitwise equality needs the same CPU"
        )
    row = next(r for r in doc["rows"] if r["arm"] == "dense" and r["seed"] == 0)
    suite = load_suite("quick")
    pr = next(p for p in plan_suite(suite, [0]) if p.arm.name == "dense")
    data = dataclasses.replace(pr.run.data, data_dir=str(REPO / "data"))
    # With the kernels the committed runs used: results are bitwise only under the same ones.
    kernels = row.get("kernels") or {"channels_last": False, "compile": False}
    cfg = dataclasses.replace(
        pr.run, data=data,
        train=dataclasses.replace(pr.run.train, progress=False,
                                  channels_last=kernels["channels_last"], compile=kernels["compile"],
                                  fold_bn=kernels.get("fold_bn") is True),
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the suite's workers ran
    try:
        res = train(cfg, tmp_path / "dense", log=lambda _: None)
    except UserError as exc:  # Fashion-MNIST is not installed here
        pytest.skip(str(exc))
    finally:
        torch.set_num_threads(threads)
    keys = ("val_clean", "val_pgd", "train_loss")
    got = [c[k] for c in res.metrics for k in keys]
    want = [c[k] for c in row["curve"] for k in keys]
    assert got == pytest.approx(want, abs=1e-6)
    best = res.test["best"]
    assert (best["clean_acc"], best["pgd_acc"]) == pytest.approx(
        (row["clean_acc"], row["pgd_acc"]), abs=1e-6
    )


def test_committed_results_come_from_a_clean_ancestor_of_head():
    import subprocess

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    raws = sorted((REPO / "results").glob("raw/*.json")) + sorted(
        (REPO / "results").glob("*/raw/**/*.json")
    )
    assert raws
    for raw in raws:
        if raw.name == "instability.json":
            from boosting_tickets.report.instability import read_instability

            env = read_instability(raw)["environment"]
        else:
            env = read_results(raw)["environment"]
        commit = str(env["git_commit"])
        assert env.get("git_clean") is True and not commit.endswith("+dirty"), raw.name
        proc = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit,
                               "HEAD"], capture_output=True)  # fmt: skip
        assert proc.returncode == 0, f"{raw.name}: {commit} is not an ancestor of HEAD"
