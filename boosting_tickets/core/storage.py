"""Atomic writes and safe checkpoint loading.

Every file the toolkit writes goes through a temporary file in the same directory, is flushed and
fsynced, then renamed over the target, so a crash leaves either the old file or the new one, never half
of one. Every checkpoint is read with ``torch.load(..., weights_only=True)`` after a cheap sniff that turns
HTML pages (failed downloads), empty and truncated files into one-line errors.

Fault injection (tests and ``benchmarks/fault_injection.py`` only; off unless the variable is set):
``BOOSTING_TICKETS_FAULT=POINT:FILENAME`` acts on atomic writes of files named FILENAME.
``after_tmp_write`` SIGKILLs the process at the first such write, once its temporary file is complete
and fsynced but before the rename (a crash in the middle of a checkpoint or results write);
``enospc`` makes every such write fail as on a full disk. (``kill_at_step:EPOCH.STEP:RANK``, a
crash mid-epoch, is read by ``training.callbacks.KillAtStep``.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import pickle
import secrets
import signal
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

FAULT_ENV = "BOOSTING_TICKETS_FAULT"


def _inject_fault(point: str, path: Path) -> None:
    """Test-only crash/full-disk injection at ``point`` of the write of ``path`` (see module doc)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec != f"{point}:{path.name}":
        return
    if point == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _new_temp(path: Path) -> Path:
    """Create an empty hidden temp file next to ``path``.

    Unlike ``tempfile.mkstemp`` (always mode 0600) the mode follows the umask, like any other file
    the user creates, so results in a shared directory stay readable by the group.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        os.close(fd)
        return tmp


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp(path)
    try:
        _inject_fault("enospc", path)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _inject_fault("after_tmp_write", path)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(path: Path, exc: OSError) -> UserError:
    if exc.errno == errno.ENOSPC:
        return UserError(f"no space left on device while writing {path}; free space and rerun")
    if exc.errno == errno.EFBIG:
        return UserError(
            f"cannot write {path}: file too large (a file-size limit, 'ulimit -f'?); raise the "
            "limit or write elsewhere"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(
            f"cannot write {path}: permission denied; choose a writable --out directory"
        )
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # mkdir of a parent that is a file
        return UserError(f"cannot write {path}: a parent of it is a file, not a directory")
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    p = Path(path)
    try:
        with _atomic_target(p) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise _os_error(p, exc) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    # NaN/inf are not JSON; record them as strings rather than writing invalid files.
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any, *, checksum: bool = False) -> None:
    """Write ``obj`` as indented JSON atomically.

    With ``checksum=True`` the object (a dict) gains a ``"sha256"`` field over its canonical JSON
    without that field, which :func:`read_json` verifies.
    """
    obj = _json_safe(obj)
    if checksum:
        body = {k: v for k, v in obj.items() if k != "sha256"}
        obj = {**body, "sha256": _digest(body)}
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _digest(body: Any) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def check_regular(path: Path, what: str) -> None:
    """A one-line UserError for a FIFO, socket or device where a file is expected: opening one
    would block forever or read without end. A missing path passes (the caller reports it)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        return  # the caller says what a directory means here
    if not stat.S_ISREG(mode):
        raise UserError(f"{what} {path} is not a regular file (a FIFO, socket or device?)")


def read_json(
    path: str | Path, *, what: str = "file", verify: bool = True, require_checksum: bool = False
) -> Any:
    """Read JSON; a missing, malformed or checksum-mismatched file raises a one-line UserError.

    ``require_checksum=True`` (for files always written with ``checksum=True``) also refuses a file
    without its ``"sha256"`` field, so that damage to the field's own name cannot skip the check.
    """
    p = Path(path)
    check_regular(p, what)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {p}: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {p} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if require_checksum and not (isinstance(obj, dict) and "sha256" in obj):
        raise UserError(f"{what} {p} has no checksum (damaged?); regenerate it")
    if verify and isinstance(obj, dict) and "sha256" in obj:
        body = {k: v for k, v in obj.items() if k != "sha256"}
        if _digest(body) != obj["sha256"]:
            raise UserError(f"{what} {p} fails its checksum (edited or corrupted); regenerate it")
    return obj


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file, fsync, rename: a crash never leaves a partial checkpoint.

    The checkpoint is serialized in memory first and written with plain file writes: torch's
    own zip writer turns a full disk into an opaque ``RuntimeError`` ("unexpected pos ...") on a
    real filesystem, while a plain write raises ``OSError(ENOSPC)``, which becomes one line.
    """
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


def sniff_checkpoint(path: Path, what: str) -> None:
    """Reject files that cannot be a torch checkpoint before unpickling anything."""
    check_regular(path, what)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(512)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, expected a .pt file") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if size == 0:
        raise UserError(f"{what} {path} is empty (0 bytes); re-create or re-download it")
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<")):
        raise UserError(
            f"{what} {path} is an HTML page, not a checkpoint (a failed download?); "
            "delete it and download the weights again"
        )
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except Exception:  # noqa: BLE001 - a damaged archive trips zipfile in many ways
            # (BadZipFile, EOFError, zlib.error, NotImplementedError or RuntimeError for flipped
            # flag bits): all of them mean the file cannot be trusted.
            raise UserError(
                f"{what} {path} is truncated or corrupted (not a complete zip archive); "
                "re-create or re-download it"
            ) from None
        if bad is not None:
            raise UserError(f"{what} {path} is corrupted (bad member {bad}); re-create it")
    elif not head.startswith(b"\x80"):
        raise UserError(f"{what} {path} is not a PyTorch checkpoint (unknown file format)")


def safe_torch_load(path: str | Path, *, what: str = "checkpoint") -> Any:
    """Load a checkpoint with ``weights_only=True`` on the CPU, with one-line errors.

    Files that would need arbitrary code to unpickle are refused without running it.
    """
    import torch

    p = Path(path)
    sniff_checkpoint(p, what)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UserError(
                f"{what} {p} was refused: it contains Python objects that could run code "
                "(weights_only=True load failed); only load files you trust by converting them"
            ) from None
        raise UserError(f"{what} {p} is corrupted: {first}") from None
    except MemoryError:
        raise  # a big checkpoint on a small machine is not a damaged file
    except Exception:  # noqa: BLE001 - corrupted bytes raise anything from the unpickler
        raise UserError(
            f"{what} {p} is truncated or corrupted; re-create or re-download it"
        ) from None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
