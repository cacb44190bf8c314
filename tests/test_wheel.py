"""Installed from a wheel, outside the source tree, the package still finds its data: the suites,
the dataset registry and the published tables ship inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The package built as a wheel from a copy of the tree and installed into a fresh target."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "boosting_tickets", src / "boosting_tickets",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    pip = [sys.executable, "-m", "pip"]
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", "dist"], src)
    assert built.returncode == 0, built.stderr
    (wheel,) = (src / "dist").glob("boosting_tickets-*.whl")
    site = root / "site"
    done = _run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], root)
    assert done.returncode == 0, done.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOSTING_TICKETS")}
    env["PYTHONPATH"] = str(site)
    return site, env


def test_the_installed_copy_is_the_one_imported(installed, tmp_path) -> None:
    site, env = installed
    where = _run([sys.executable, "-c", "import boosting_tickets; print(boosting_tickets.__file__)"],
                 tmp_path, env)  # fmt: skip
    assert where.returncode == 0 and where.stdout.strip().startswith(str(site)), where.stdout


def test_bench_list_and_dry_run_from_the_wheel(installed, tmp_path) -> None:
    _, env = installed
    listed = _run([sys.executable, "-m", "boosting_tickets", "bench", "list"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    for suite in ("quick", "paper-wrn34-10", "sweep-pruning-ratio"):
        assert f"| {suite} " in listed.stdout
    plan = _run([sys.executable, "-m", "boosting_tickets", "bench", "run", "quick", "--dry-run"],
                tmp_path, env)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "suite quick" in plan.stdout and "estimated time" in plan.stdout
    # The published reference tables are package data too.
    table = _run([sys.executable, "-m", "boosting_tickets", "bench", "run", "paper-wrn34-10",
                  "--dry-run"], tmp_path, env)  # fmt: skip
    assert table.returncode == 0 and "vs published 134,764 s" in table.stdout, table.stderr
