"""The five worked extensions of docs/extending.md, taken from the page itself, loaded as plugins
and run end to end through the CLI (a real process each) on data the tests make."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import small_config, tiny_suite

from boosting_tickets.core.paths import RunPaths
from boosting_tickets.core.storage import read_json, safe_torch_load
from boosting_tickets.tickets.ticket import load_ticket
from boosting_tickets.training.run import train

REPO = Path(__file__).resolve().parent.parent
PAGE = (REPO / "docs" / "extending.md").read_text()
BLOCKS = dict(re.findall(r"```python\n# file: (\S+)\n(.*?)```", PAGE, re.S))
SMALL = ["--train-subset", "64", "--val-size", "16", "--test-subset", "16", "--batch-size", "16",
         "--model", "wrn-10-1", "--no-progress"]  # fmt: skip


def test_the_page_has_one_example_per_axis() -> None:
    assert sorted(BLOCKS) == sorted(
        [
            "bt_mifgsm.py",
            "bt_npz_dataset.py",
            "bt_snip.py",
            "bt_sign_flipped_ticket.py",
            "bt_sparsity_table.py",
        ]  # fmt: skip
    )


def _plugin(tmp_path: Path, name: str) -> dict[str, str]:
    path = tmp_path / name
    path.write_text(BLOCKS[name])
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOSTING_TICKETS")}
    return {**env, "BOOSTING_TICKETS_PLUGINS": str(path), "PYTHONWARNINGS": "ignore"}


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "boosting_tickets", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def test_attack_plugin_is_measured_by_evaluate(tmp_path: Path) -> None:
    run = train(small_config(epochs=1, objective="pgd", train_steps=1), tmp_path / "run")
    env = _plugin(tmp_path, "bt_mifgsm.py")
    out = _cli(env, "evaluate", str(run.run_dir), "--attack", "mi-fgsm", "--steps", "3",
               "--n-examples", "16", "--json", cwd=tmp_path)  # fmt: skip
    result = json.loads(out.stdout)
    assert 0.0 <= result["attacks"]["mi-fgsm"] <= result["clean_acc"]
    spec = result["protocol"]["attacks"]["mi-fgsm"]
    assert spec["steps"] == 3 and spec["random_start"] is False
    assert spec["step_size"] == pytest.approx(0.1 * result["protocol"]["eps"])
    # Without the plugin the name is refused, listing the registry's names.
    env.pop("BOOSTING_TICKETS_PLUGINS")
    bad = subprocess.run([sys.executable, "-m", "boosting_tickets", "evaluate", str(run.run_dir),
                          "--attack", "mi-fgsm"], capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and "choose one of: fgsm, fgsm-rs, pgd" in bad.stderr


def _quadrant_npz(path: Path) -> None:
    """4 classes: a bright 6x6 block in one quadrant of a dark 12x12 image, plus noise."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 4
        x = rng.normal(40, 15, size=(n, 12, 12, 1))
        for i, c in enumerate(y):
            r, col = divmod(int(c), 2)
            x[i, 6 * r : 6 * r + 6, 6 * col : 6 * col + 6, 0] += 150
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    (xt, yt), (xs, ys) = draw(400), draw(100)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)


def test_dataset_plugin_trains_and_is_found_by_doctor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _quadrant_npz(data / "my-dataset.npz")
    env = _plugin(tmp_path, "bt_npz_dataset.py")
    args = [
        "--dataset",
        "my-npz",
        "--data-dir",
        str(data),
        "--objective",
        "natural",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--eval-steps",
        "1",
        "--out",
        str(tmp_path / "runs"),
    ]
    _cli(env, "train", *SMALL, *args, cwd=tmp_path)  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
    test = read_json(RunPaths(run_dir).test_eval)
    assert test["dataset"] == "my-npz" and test["best"]["n"] == 16
    report = json.loads(_cli(env, "doctor", "--data-dir", str(data), "--json", cwd=tmp_path).stdout)
    mine = next(d for d in report["datasets"] if d["name"] == "my-npz")
    assert mine["found"] and report["plugins"]


def test_criterion_plugin_finds_another_ticket(tmp_path: Path) -> None:
    env = _plugin(tmp_path, "bt_snip.py")
    common = [*SMALL, "--dataset", "synthetic", "--epochs", "1", "--eval-steps", "1"]
    _cli(env, "find-ticket", *common, "--criterion", "snip", "--out", str(tmp_path / "snip"),
         cwd=tmp_path)  # fmt: skip
    _cli(env, "find-ticket", *common, "--out", str(tmp_path / "magnitude"), cwd=tmp_path)
    (snip_dir,), (mag_dir,) = (tmp_path / "snip").iterdir(), (tmp_path / "magnitude").iterdir()
    snip, mag = load_ticket(snip_dir), load_ticket(mag_dir)
    assert read_json(snip_dir / "level_1" / "prune.json")["criterion"] == "snip"
    assert snip.mask.sparsity() == pytest.approx(0.8, abs=1e-4) == mag.mask.sparsity()
    assert snip.mask.digest() != mag.mask.digest()


SUITE = tiny_suite(
    '[[arms]]\nname = "dense"\nkind = "dense"\n'
    '[[arms]]\nname = "ticket"\nkind = "ticket"\n'
    '[[arms]]\nname = "flipped"\nkind = "sign-flipped-ticket"\nticket_of = "ticket"\n',
    "a plugin control as an arm kind",
)


def test_control_plugin_is_an_arm_kind_of_suites(tmp_path: Path) -> None:
    env = _plugin(tmp_path, "bt_sign_flipped_ticket.py")
    (tmp_path / "plug.toml").write_text(SUITE)
    out = tmp_path / "out"
    _cli(env, "bench", "run", str(tmp_path / "plug.toml"), "--out", str(out), cwd=tmp_path)
    rows = {r["arm"]: r for r in read_json(out / "results.json")["rows"]}
    assert rows["flipped"]["kind"] == "sign-flipped-ticket"
    ticket = load_ticket(out / rows["flipped"]["ticket_dir"])
    start = safe_torch_load(out / rows["flipped"]["run_dir"] / "init.pt")["state_dict"]
    flipped = 0
    for name in ticket.mask.weight_names():
        kept = ticket.mask[name].bool()
        mine, theirs = start[name][kept], ticket.rewind_state[name][kept]
        assert torch.equal(mine.abs(), theirs.abs()), name  # the same magnitudes...
        assert torch.all(start[name][~kept] == 0)  # ...on the same positions
        flipped += int((mine != theirs).sum())
    assert flipped > 0  # ...some with the other sign


def test_table_plugin_is_written_by_tables(tmp_path: Path) -> None:
    env = _plugin(tmp_path, "bt_sparsity_table.py")
    out = tmp_path / "out"
    _cli(env, "tables", str(REPO / "tests" / "fixtures" / "results"), "--out", str(out),
         "--no-figures", cwd=tmp_path)  # fmt: skip
    for ext in ("md", "csv", "tex"):
        assert (out / "tables" / f"sparsity.{ext}").is_file()
    lines = (out / "tables" / "sparsity.csv").read_text().splitlines()
    assert lines[0].startswith("suite,arm,sparsity,nonzero_params")
    assert {line.split(",")[1] for line in lines[1:]} >= {"dense", "ticket-natural", "reinit"}
    assert "## Table: sparsity" in (out / "README.md").read_text()


def test_a_broken_or_clashing_plugin_is_refused_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_anywhere\n")
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from boosting_tickets.tickets.controls import BUILTIN_CONTROLS\n"
        "CONTROLS = (BUILTIN_CONTROLS[0],)  # a second 'reinit'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOSTING_TICKETS")}
    for plugin, fragment in ((broken, "cannot be imported (ModuleNotFoundError"),
                             (clash, "two control entries are named 'reinit'"),
                             (tmp_path / "missing.py", "does not exist")):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "boosting_tickets", "train", "--control", "reinit", "--help"],
            capture_output=True, text=True, env={**env, "BOOSTING_TICKETS_PLUGINS": str(plugin)},
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
