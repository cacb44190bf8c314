"""The Python API: the example that opens docs/api.md runs as written, and the top-level exports
are the documented ones, loaded lazily."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import boosting_tickets as bt

REPO = Path(__file__).resolve().parent.parent
EXPORTS = ("train", "find_ticket", "retrain_ticket", "run_suite", "evaluate", "evaluate_checkpoint",
           "load_model", "load_ticket", "load_suite", "regenerate_tables", "RunConfig",
           "DataConfig", "ModelConfig", "TrainConfig", "EvalConfig", "FindConfig",
           "FindTrainConfig", "PruneConfig", "EvalProtocol", "UserError")  # fmt: skip


def test_top_level_exports() -> None:
    assert set(EXPORTS) <= set(dir(bt))
    for name in EXPORTS:
        assert getattr(bt, name) is not None


def test_the_docs_example_runs(tmp_path: Path) -> None:
    page = (REPO / "docs" / "api.md").read_text()
    example = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    assert len(example.strip().splitlines()) <= 12
    proc = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["dense", "ticket"]
    assert all(ln.split()[1] == "wrn-10-1" for ln in lines)
    assert all(abs(float(ln.split()[3]) - 0.8) < 1e-4 for ln in lines)
    made = sorted(p.name.split("_")[0] for p in (tmp_path / "runs").iterdir())
    assert made == ["retrain", "ticket", "train"]
    # Run again: everything is found, nothing is trained.
    again = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)  # fmt: skip
    assert again.stdout == proc.stdout
