"""Untrusted files: a checkpoint crafted to run code when unpickled is refused without running it.

The payload's ``__reduce__`` makes unpickling call ``exec``, which would create a marker file. It is
saved as a torch zip file, as a legacy (non-zip) torch file, as a raw pickle and hidden inside an
otherwise well-formed model checkpoint; every loader of the toolkit must refuse all of them with one
line and the marker must never appear. A source scan checks that no code path loads a pickle
without ``weights_only=True``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import cli_call, small_config

from boosting_tickets.core.errors import UserError
from boosting_tickets.core.storage import atomic_write_json, read_json, safe_torch_load
from boosting_tickets.models.checkpoints import MODEL_FORMAT
from boosting_tickets.models.masks import Mask
from boosting_tickets.training.run import train

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this object runs ``exec`` on code that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


FORMATS = ("zip", "legacy", "raw-pickle", "inside-checkpoint")


def write_malicious(path: Path, marker: Path, fmt: str) -> Path:
    """Save the payload at ``path`` in one of FORMATS."""
    evil = Payload(marker)
    if fmt == "zip":
        torch.save(evil, path)
    elif fmt == "legacy":
        torch.save(evil, path, _use_new_zipfile_serialization=False)
    elif fmt == "raw-pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:  # a model checkpoint whose state_dict hides the payload next to real tensors
        arch = {"model": "small-cnn", "num_classes": 10, "in_channels": 1, "mean": None,
                "std": None, "dropout": 0.0, "dataset": "synthetic"}  # fmt: skip
        torch.save(
            {"format": MODEL_FORMAT, "version": 1, "arch": arch,
             "state_dict": {"w": torch.zeros(2), "b": evil}},
            path,
        )  # fmt: skip
    return path


def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path):
    """Control: without weights_only the files below would run the payload."""
    for fmt in ("zip", "raw-pickle"):
        marker = tmp_path / f"ran-{fmt}"
        path = write_malicious(tmp_path / f"{fmt}.pt", marker, fmt)
        if fmt == "zip":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert marker.read_text() == "code ran"


@pytest.mark.parametrize("fmt", FORMATS)
def test_safe_load_refuses_without_running_code(tmp_path, fmt):
    marker = tmp_path / "ran"
    path = write_malicious(tmp_path / "evil.pt", marker, fmt)
    with pytest.raises(UserError) as info:
        safe_torch_load(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "refused" in msg and "could run code" in msg, msg
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_evaluate_refuses_in_one_line(tmp_path, fmt, capsys):
    marker = tmp_path / "ran"
    path = write_malicious(tmp_path / "evil.pt", marker, fmt)
    code, _, err = cli_call(["evaluate", str(path), "--dataset", "synthetic"], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "refused" in err and "Traceback" not in err
    assert not marker.exists()


def test_text_pickle_is_not_even_unpickled(tmp_path):
    """Protocol-0 pickles are text: the sniff rejects them before any unpickler sees them."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=0))
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        safe_torch_load(path)
    assert not marker.exists()


def test_mask_loader_refuses(tmp_path):
    marker = tmp_path / "ran"
    path = write_malicious(tmp_path / "mask.pt", marker, "zip")
    with pytest.raises(UserError, match="refused"):
        Mask.load(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run (config, directory) to plant files into."""
    cfg = small_config(epochs=1)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, test_eval=False))
    run = tmp_path_factory.mktemp("untrusted") / "run"
    train(cfg, run)
    return cfg, run


@pytest.mark.parametrize("name", ["last.pt", "init.pt"])
def test_resuming_refuses_a_planted_training_file(finished_run, tmp_path, name):
    cfg, run = finished_run
    victim = tmp_path / "run"
    victim.mkdir()
    for f in ("hparams.json", "init.pt", "last.pt"):
        (victim / f).write_bytes((run / f).read_bytes())
    marker = tmp_path / "ran"
    write_malicious(victim / name, marker, "zip")
    with pytest.raises(UserError, match="refused") as info:
        train(cfg, victim)
    assert "\n" not in str(info.value) and name in str(info.value)
    assert not marker.exists()


def test_ticket_and_rewind_loaders_refuse(finished_run, tmp_path, capsys):
    from boosting_tickets.tickets.ticket import TICKET_FORMAT

    _, run = finished_run
    marker = tmp_path / "ran"
    ticket = tmp_path / "ticket"
    ticket.mkdir()
    atomic_write_json(ticket / "ticket.json", {"format": TICKET_FORMAT})
    write_malicious(ticket / "rewind.pt", marker, "inside-checkpoint")
    write_malicious(ticket / "mask.pt", marker, "zip")
    args = ["--dataset", "synthetic", "--model", "wrn-10-1", "--out", str(tmp_path / "o")]
    code, _, err = cli_call(["train", "--ticket", str(ticket), *args], capsys)
    assert code == 2 and "refused" in err and err.count("\n") == 1, err
    evil = write_malicious(tmp_path / "rewind.pt", marker, "legacy")
    code, _, err = cli_call(["find-ticket", "--rewind", str(evil), "--epochs", "1", *args], capsys)
    assert code == 2 and "refused" in err and err.count("\n") == 1, err
    assert not marker.exists()


def test_zoo_checkpoint_is_refused_before_robustbench_unpickles_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    target = tmp_path / "models" / "cifar10" / "Linf" / "Standard.pt"
    target.parent.mkdir(parents=True)
    write_malicious(target, marker, "zip")
    code, _, err = cli_call(
        ["compare", "robustbench", "--models", "Standard", "--model-dir",
         str(tmp_path / "models"), "--eval-data", "synthetic", "--n-examples", "2",
         "--out", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "refused" in err and err.count("\n") == 1, err
    assert not marker.exists() and not (tmp_path / "r.json").exists()


# --- source scan --------------------------------------------------------------------------------

_PICKLE_LOADERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads",
                   "dill.load", "dill.loads", "joblib.load", "cloudpickle.load"}  # fmt: skip


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_loads(source: str) -> list[str]:
    """Calls in ``source`` that can unpickle code: ``torch.load`` without ``weights_only=True``,
    pickle-family loaders, ``numpy.load(allow_pickle=True)``, and ``from torch import load``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            if any(a.name == "load" for a in node.names):
                found.append(f"line {node.lineno}: from torch import load")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        if name.endswith("torch.load") or name == "torch.serialization.load":
            if not safe:
                found.append(f"line {node.lineno}: {name} without weights_only=True")
        elif name in _PICKLE_LOADERS:
            found.append(f"line {node.lineno}: {name}")
        elif name in ("np.load", "numpy.load"):
            allow = kw.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value:
                found.append(f"line {node.lineno}: {name}(allow_pickle=True)")
    return found


def test_the_scan_finds_unsafe_loads():
    bad = (
        "import torch, pickle, numpy as np\n"
        "a = torch.load(p)\n"
        "b = torch.load(p, map_location='cpu',\n    weights_only=False)\n"
        "c = pickle.loads(blob)\n"
        "d = np.load(f, allow_pickle=True)\n"
        "from torch import load\n"
    )
    assert len(unsafe_loads(bad)) == 5
    assert unsafe_loads("import torch\nx = torch.load(p, weights_only=True)\n") == []


def test_no_unsafe_load_in_the_source():
    files = [*(REPO / "boosting_tickets").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    files += list((REPO / "scripts").glob("*.py"))
    assert any(f.name == "storage.py" for f in files)
    problems = {
        str(f.relative_to(REPO)): bad for f in files if (bad := unsafe_loads(f.read_text()))
    }
    assert problems == {}


# --- damaged files: never read as complete ------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None)
@given(
    obj=st.dictionaries(st.text(max_size=6), _JSON, max_size=5),
    cut=st.floats(0.0, 1.0),
    flip=st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)),
)
def test_a_torn_or_flipped_checksummed_json_is_refused_or_read_intact(obj, cut, flip):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.json"
        atomic_write_json(path, obj, checksum=True)
        data = path.read_bytes()
        torn = data[: int(cut * len(data))]
        pos = min(int(flip[0] * len(data)), len(data) - 1)
        flipped = data[:pos] + bytes([data[pos] ^ flip[1]]) + data[pos + 1 :]
        for damaged in (torn, flipped):
            path.write_bytes(damaged)
            try:
                back = read_json(path, require_checksum=True)
            except UserError as exc:
                assert "\n" not in str(exc)
                continue
            assert {k: v for k, v in back.items() if k != "sha256"} == json.loads(json.dumps(obj))


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> tuple[bytes, dict]:
    """Bytes of a small model checkpoint and the object they hold."""
    g = torch.Generator().manual_seed(0)
    obj = {"format": MODEL_FORMAT, "version": 1, "epoch": 3,
           "state_dict": {"w": torch.randn(40, generator=g), "b": torch.arange(7)}}  # fmt: skip
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    torch.save(obj, path)
    return path.read_bytes(), obj


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.floats(0.0, 1.0), pos=st.floats(0.0, 1.0), xor=st.integers(1, 255))
def test_a_torn_or_flipped_checkpoint_is_refused_or_read_intact(small_checkpoint, cut, pos, xor):
    data, obj = small_checkpoint
    i = min(int(pos * len(data)), len(data) - 1)
    damaged = {
        "torn": data[: int(cut * len(data))],
        "flipped": data[:i] + bytes([data[i] ^ xor]) + data[i + 1 :],
    }
    with tempfile.TemporaryDirectory() as d:
        for how, blob in damaged.items():
            path = Path(d) / f"{how}.pt"
            path.write_bytes(blob)
            try:
                back = safe_torch_load(path)
            except UserError as exc:  # the only way a damaged file may fail
                assert "\n" not in str(exc)
                continue
            assert back.keys() == obj.keys() and back["epoch"] == obj["epoch"], how
            assert all(torch.equal(back["state_dict"][k], v) for k, v in obj["state_dict"].items())
