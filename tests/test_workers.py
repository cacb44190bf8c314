"""A suite spread over workers: claims, dead workers, static shards, launchers (local, submitit).

Every run records each process that trained it in ``attempts.json`` (the marker a run writes when
it starts training), so "trained exactly once" is counted from the disk.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import cli_call, run_cli, tiny_suite

from boosting_tickets.bench.schedule import Task, simulate
from boosting_tickets.core.claims import Claim, claim_path, holding, try_claim
from boosting_tickets.core.errors import UserError
from boosting_tickets.core.paths import RunPaths
from boosting_tickets.core.storage import read_json
from boosting_tickets.report.results import read_results

ARMS = (
    '[[arms]]\nname = "dense"\nkind = "dense"\n'
    '[[arms]]\nname = "ticket"\nkind = "ticket"\n'
    '[[arms]]\nname = "reinit"\nkind = "reinit"\nticket_of = "ticket"\n'
)
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def suite(tmp_path) -> Path:
    path = tmp_path / "six.toml"
    path.write_text(tiny_suite(ARMS, "3 arms x 2 seeds"))
    return path


def _worker(suite: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "boosting_tickets", "bench", "run", str(suite), "--out", str(out),
           "--seeds", "2", "--threads", "1", *extra]  # fmt: skip
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **ENV, **(env or {})}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env)  # fmt: skip


def _attempts(out: Path) -> dict[str, list[dict]]:
    """Every training run under ``out`` (suite runs and ticket-finding runs) -> its attempts."""
    found = {}
    for path in sorted(out.rglob("attempts.json")):
        found[str(path.parent.relative_to(out))] = read_json(path)["attempts"]
    return found


def test_three_concurrent_workers_train_every_run_exactly_once(suite, tmp_path):
    out = tmp_path / "out"
    procs = [_worker(suite, out) for _ in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    attempts = _attempts(out)
    # 6 suite runs (dense, ticket, reinit x 2 seeds) and 2 ticket searches (one per seed).
    assert sum(k.startswith("runs/") for k in attempts) == 6
    assert sum(k.startswith("tickets/") for k in attempts) == 2
    assert all(len(a) == 1 for a in attempts.values()), attempts
    doc = read_results(out / "results.json")
    assert doc["status"] == "complete" and doc["running"] == [] and doc["failed"] == []
    assert sorted((r["arm"], r["seed"]) for r in doc["rows"]) == sorted(
        (a, s) for a in ("dense", "ticket", "reinit") for s in (0, 1)
    )
    pids = {a[0]["pid"] for a in attempts.values()}
    assert len(pids) >= 2, "one worker did all the work: the others never claimed a run"
    assert not list(out.rglob("*.claim")), "claims outlived their workers"


def test_a_killed_workers_run_is_picked_up_by_another_worker(suite, tmp_path):
    out = tmp_path / "out"
    doomed = _worker(suite, out, env={"BOOSTING_TICKETS_FAULT": "kill_at_step:1.2:0"})
    doomed.communicate(timeout=600)
    assert doomed.returncode == -9  # SIGKILL mid-epoch, holding the claim on its first run
    (held,) = [c for c in out.rglob("*.claim")]
    survivor = _worker(suite, out)
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    attempts = _attempts(out)
    twice = {k: v for k, v in attempts.items() if len(v) == 2}
    assert len(twice) == 1 and all(len(v) == 1 for k, v in attempts.items() if k not in twice)
    (first, second), = twice.values()  # fmt: skip
    assert first["pid"] == doomed.pid and second["pid"] == survivor.pid
    assert len(read_results(out / "results.json")["rows"]) == 6
    assert not held.exists()


def test_fewer_seeds_after_more_keeps_every_row(tmp_path, capsys):
    out = tmp_path / "out"
    dense_only = tmp_path / "dense.toml"
    dense_only.write_text(tiny_suite('[[arms]]\nname = "dense"\nkind = "dense"\n'))
    for seeds in ("2", "1"):
        code, _, err = cli_call(["bench", "run", str(dense_only), "--out", str(out), "--seeds",
                                 seeds], capsys)  # fmt: skip
        assert code == 0, err
    doc = read_results(out / "results.json")
    assert sorted(r["seed"] for r in doc["rows"]) == [0, 1] and doc["seeds"] == [0, 1]
    assert doc["status"] == "complete"


def test_static_shards_split_the_runs_and_together_cover_the_suite(tmp_path, capsys):
    out = tmp_path / "out"
    dense_only = tmp_path / "dense.toml"
    dense_only.write_text(tiny_suite('[[arms]]\nname = "dense"\nkind = "dense"\n'))
    base = ["bench", "run", str(dense_only), "--out", str(out), "--seeds", "3"]
    code, _, err = cli_call([*base, "--shard", "1/2"], capsys)
    assert code == 0, err
    doc = read_results(out / "results.json")
    assert [r["seed"] for r in doc["rows"]] == [1] and doc["status"] == "running"
    code, _, err = cli_call([*base, "--shard", "0/2"], capsys)
    assert code == 0, err
    doc = read_results(out / "results.json")
    assert sorted(r["seed"] for r in doc["rows"]) == [0, 1, 2] and doc["status"] == "complete"


@pytest.mark.parametrize("shard", ["2/2", "-1/2", "1", "a/b", "0/0", "1/2/3"])
def test_bad_shard_is_one_line_and_writes_nothing(suite, tmp_path, shard, capsys):
    code, _, err = cli_call(
        ["bench", "run", str(suite), "--out", str(tmp_path / "out"), "--shard", shard], capsys
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --shard"), lines
    assert not (tmp_path / "out").exists()


def test_local_launcher_runs_workers_with_their_own_threads(suite, tmp_path):
    """The launch settings come from the suite's [launch] table; the workers must not read it
    again and launch workers of their own (they once did, without end)."""
    suite.write_text(suite.read_text() + '\n[launch]\nlauncher = "local"\nworkers = 2\n')
    out = tmp_path / "out"
    proc = run_cli("bench", "run", str(suite), "--out", str(out), "--seeds", "2", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "[worker 0]" in proc.stdout and "[worker 1]" in proc.stdout
    assert proc.stdout.count("2 local workers") == 1, "a worker launched workers"
    assert len(read_results(out / "results.json")["rows"]) == 6
    assert all(len(a) == 1 for a in _attempts(out).values())


def test_a_two_worker_submitit_local_array_completes_the_suite(suite, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    proc = run_cli("bench", "run", str(suite), "--out", str(out), "--seeds", "2",
                   "--launcher", "submitit-local", "--workers", "2", env=ENV)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "submitted 2 worker job(s)" in proc.stdout
    doc = read_results(out / "results.json")
    assert len(doc["rows"]) == 6 and doc["status"] == "complete"
    attempts = _attempts(out)
    assert all(len(a) == 1 for a in attempts.values())
    assert len({a[0]["pid"] for a in attempts.values()}) >= 1
    assert list((out / ".submitit").rglob("*_result.pkl")), "submitit kept no job results"


def test_slurm_launcher_submits_one_array_with_the_requested_resources(suite, tmp_path):
    """No SLURM here: a stand-in ``sbatch`` records the script submitit generates."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh 2>/dev/null || cat > {tmp_path}/submitted.sh\n'
        'echo "Submitted batch job 4242"\n'
    )
    sbatch.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it
    (bin_dir / "srun").chmod(0o755)
    env = {**ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = run_cli("bench", "run", str(suite), "--out", str(tmp_path / "out"), "--launcher",
                   "slurm", "--workers", "3", "--slurm-partition", "gpu", "--gpus-per-run", "2",
                   "--cpus-per-run", "8", "--time", "90", "--max-parallel", "2", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "submitted 3 worker job(s)" in proc.stdout and "4242" in proc.stdout
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=90"):  # fmt: skip
        assert line in script, script


def test_slurm_on_a_machine_without_slurm_is_one_line(suite, tmp_path):
    pytest.importorskip("submitit")
    env = {**ENV, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    proc = run_cli("bench", "run", str(suite), "--out", str(tmp_path / "out"), "--launcher",
                   "slurm", env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --launcher slurm:") and "srun" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_slurm_without_submitit_says_how_to_install_it(suite, tmp_path):
    fake = tmp_path / "fake"
    (fake / "submitit").mkdir(parents=True)
    (fake / "submitit" / "__init__.py").write_text("raise ImportError('not here')\n")
    env = {**ENV, "PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = run_cli("bench", "run", str(suite), "--out", str(tmp_path / "out"), "--launcher",
                   "slurm", env=env)  # fmt: skip
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("error: --launcher slurm needs submitit") and "pip install" in line
    assert "\n" not in line and not (tmp_path / "out").exists()


def test_launch_settings_come_from_the_suite_file_and_flags_override_them(suite, tmp_path):
    text = (
        suite.read_text() + '\n[launch]\nlauncher = "slurm"\nworkers = 4\nslurm_partition = "a"\n'
    )
    suite.write_text(text)
    proc = run_cli("bench", "run", str(suite), "--dry-run", "--slurm-partition", "b")
    assert proc.returncode == 0, proc.stderr
    assert "slurm job array of 4 worker(s)" in proc.stdout and "slurm_partition=b" in proc.stdout
    suite.write_text(text.replace("workers = 4", "workers = 0"))
    proc = run_cli("bench", "run", str(suite), "--dry-run")
    assert proc.returncode == 2 and "workers" in proc.stderr


# --- claims ----------------------------------------------------------------------------------


def _claim_in_child(target: str, queue) -> None:  # noqa: ANN001
    claim, _ = try_claim(Path(target), "racing")
    queue.put(claim is not None)
    time.sleep(1.0 if claim is not None else 0)  # hold it while the others try


@pytest.mark.parametrize("dead_holder_first", [False, True])
def test_of_many_racing_processes_exactly_one_claims(tmp_path, dead_holder_first):
    import multiprocessing as mp

    target = tmp_path / "run"
    if dead_holder_first:  # every racer sees a dead holder and tries to take it over
        path = claim_path(target)
        path.parent.mkdir(parents=True)
        record = Claim(path, "dead").record() | {"pid": _dead_pid(), "started": None}
        path.write_text(json.dumps(record))
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_child, args=(str(target), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    wins = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert sum(wins) == 1


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_another_hosts_claim_lives_until_its_heartbeat_is_stale(tmp_path, monkeypatch):
    target = tmp_path / "run"
    path = claim_path(target)
    path.parent.mkdir(parents=True)
    record = Claim(path, "elsewhere").record() | {"host": "node-17." + socket.gethostname()}
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"claimed by pid \d+ on node-17.*120 s without heartbeat"):
        with holding(target, "here"):
            pass
    monkeypatch.setenv("BOOSTING_TICKETS_LEASE_TIMEOUT", "0.5")
    time.sleep(0.6)
    with holding(target, "here") as claim:  # stale: taken over
        assert read_json(path)["token"] == claim.token
    assert not path.exists()


def test_train_refuses_a_held_run_or_waits_for_it_with_wait(tmp_path):
    import threading

    from support import small_config

    from boosting_tickets.training.run import train

    cfg = small_config()
    run_dir = tmp_path / "run"
    claim, _ = try_claim(run_dir, "someone")
    assert claim is not None
    with pytest.raises(UserError, match="claimed by"):
        train(cfg, run_dir)
    assert not run_dir.exists()
    threading.Timer(1.0, claim.release).start()
    t0 = time.monotonic()
    result = train(cfg, run_dir, wait=30.0)
    assert time.monotonic() - t0 >= 1.0 and result.status == "complete"
    assert read_json(RunPaths(run_dir).attempts)["attempts"][0]["from_epoch"] == 0


# --- wall-time estimates ---------------------------------------------------------------------

_tasks = st.lists(
    st.tuples(st.floats(0.1, 100), st.sampled_from([None, "a", "b"]), st.floats(0.1, 50)),
    min_size=1,
    max_size=12,
)


@given(_tasks, st.integers(1, 6))
def test_simulated_wall_time_is_bounded_by_the_work_and_the_longest_chain(raw, workers):
    finds: dict[str, float] = {}
    tasks = []
    for seconds, key, find in raw:
        find = finds.setdefault(key, find) if key else 0.0
        tasks.append(Task(seconds, key, find))
    total = sum(t.seconds for t in tasks) + sum(finds.values())
    sched = simulate(tasks, workers)
    assert sched.wall_seconds >= total / workers - 1e-9
    assert sched.wall_seconds >= sched.critical_seconds - 1e-9
    assert sched.wall_seconds <= total + 1e-9
    assert 0 < sched.busy_fraction <= 1 + 1e-9
    if workers == 1:
        assert abs(sched.wall_seconds - total) < 1e-6


def test_a_worker_never_reads_the_suites_launch_table_again():
    from boosting_tickets.bench.launch import worker_argv

    argv = worker_argv("quick", suite_dirs=(), seeds=None, out="o", data_dir=None, device=None,
                       threads=1)  # fmt: skip
    assert argv[argv.index("--launcher") + 1] == "here"
