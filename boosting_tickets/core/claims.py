"""Claims on work: which live process is training a run, finding a ticket or writing a results file.

A claim is a small JSON file beside what it guards (``.claims/<run dir name>.claim`` in the same
parent directory; the ``.claims`` directory goes when its last claim is released), created
atomically with ``O_EXCL``, so of several processes (on one machine, or on many sharing a
filesystem) exactly one holds it. It records who holds it (host, pid, process start time, a
token) and a heartbeat the holder renews every :data:`HEARTBEAT_S` seconds from a background
thread. A claim dies with its holder:

* on the same host, at once: the holder's pid is gone (or now belongs to another process);
* from another host, when its heartbeat is older than :data:`LEASE_TIMEOUT_S` (default 120 s;
  ``BOOSTING_TICKETS_LEASE_TIMEOUT`` changes it). The holder renews every 10 s, so a live holder
  is never taken for dead unless its machine stalls for two minutes.

A dead holder's claim is taken over: under a short ``flock`` on ``.claims/.lock`` the taker checks
again that the holder is dead, removes its file and claims anew, so two workers noticing the same
dead holder never remove each other's fresh claim. Holding a claim needs no lock (only a takeover
does, for milliseconds), so claims work on filesystems whose locks are unreliable (NFS, many
cluster filesystems); there only a takeover race within those milliseconds is unguarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

HEARTBEAT_S = 10.0
LEASE_TIMEOUT_S = 120.0
TIMEOUT_ENV = "BOOSTING_TICKETS_LEASE_TIMEOUT"
SUFFIX = ".claim"
CLAIMS_DIR = ".claims"


class ClaimBusy(UserError):
    """What is asked for is claimed by another live process (its holder is in ``holder``)."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


def claim_path(target: Path) -> Path:
    """Where the claim on ``target`` (a run directory, a ticket directory, a file) lives."""
    return target.parent / CLAIMS_DIR / (target.name + SUFFIX)


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux /proc), to tell it from a later one with its pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)


def lease_timeout() -> float:
    """Seconds without a heartbeat after which another host's claim counts as dead."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return LEASE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise UserError(f"{TIMEOUT_ENV} must be > 0 seconds, got {value}")
    return value


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as recorded in its file."""

    host: str
    pid: int
    started: str | None
    token: str
    what: str
    since: float
    heartbeat: float

    def alive(self) -> bool:
        """Whether the holder still runs (same host: its process; else: a recent heartbeat)."""
        if self.host == socket.gethostname():
            return _alive(self.pid, self.started)
        return time.time() - self.heartbeat < lease_timeout()

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} ({self.what}, since {since})"


def live_holder(target: Path) -> Holder | None:
    """The live process holding a claim on ``target``, if any (reads only; takes nothing over)."""
    holder = read_holder(claim_path(target))
    return holder if holder is not None and holder.alive() else None


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in claim file ``path`` (None: no claim, or a half-written one)."""
    try:
        doc = json.loads(path.read_text())
        return Holder(
            doc["host"], int(doc["pid"]), doc.get("started"), doc["token"], doc.get("what", ""),
            float(doc["since"]), float(doc["heartbeat"]),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Claim:
    """A claim held by this process; renewed in the background until :meth:`release`."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.token = secrets.token_hex(8)
        self.since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "host": socket.gethostname(),
            "pid": pid,
            "started": _start_time(pid),
            "token": self.token,
            "what": self.what,
            "since": self.since,
            "heartbeat": time.time(),
        }

    def _create(self) -> bool:
        """Create the claim file if nobody has one; True when it is ours."""
        for attempt in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                break
            except FileExistsError:
                return False
            except FileNotFoundError:  # .claims was just removed by a releasing holder
                if attempt == 4:
                    raise
                self.path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.record(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = read_holder(self.path)
            if holder is None or holder.token != self.token:
                return  # taken over (we were thought dead): stop renewing theirs
            tmp = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
            with contextlib.suppress(OSError):
                tmp.write_text(json.dumps(self.record()))
                os.replace(tmp, self.path)

    def start(self) -> Claim:
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"claim {self.what}")
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop renewing and remove the claim file, if it is still ours."""
        self._stop.set()
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):  # not empty: other claims, or a takeover's lock
                self.path.parent.rmdir()


def try_claim(target: Path, what: str) -> tuple[Claim | None, Holder | None]:
    """Claim ``target``: ``(claim, None)`` when this process now holds it, ``(None, holder)`` when
    a live process does. A dead holder's claim is taken over."""
    path = claim_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent}: {exc.strerror}") from None
    claim = Claim(path, what)
    for _ in range(3):
        if claim._create():
            return claim.start(), None
        holder = read_holder(path)
        if holder is None and path.exists() and time.time() - path.stat().st_mtime < 5:
            time.sleep(0.05)  # being written right now
            continue
        if holder is not None and holder.alive():
            return None, holder
        _take_over(path, holder)
    holder = read_holder(path)
    if holder is None:
        raise UserError(f"cannot claim {target}: {path} keeps changing; retry")
    return None, holder


def _take_over(path: Path, dead: Holder | None) -> None:
    """Move the dead claim ``path`` aside, if it is still the one found dead."""
    with open(path.with_name(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            now = read_holder(path)
            if (now is None) != (dead is None) or (now and dead and now.token != dead.token):
                return  # someone else took it over meanwhile: look again
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def holding(target: Path, what: str, *, wait: float | None = None) -> Iterator[Claim]:
    """Hold the claim on ``target`` for the block. A live holder elsewhere is a one-line
    UserError naming it; with ``wait`` seconds, this process waits for it first (polling)."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        claim, holder = try_claim(target, what)
        if claim is not None:
            break
        assert holder is not None
        if deadline is None or time.monotonic() > deadline:
            raise ClaimBusy(
                f"{target} is claimed by {holder.describe()}; wait for it to finish or stop it "
                f"(a claim of a dead process is taken over: at once on its own host, after "
                f"{lease_timeout():.0f} s without heartbeat from another)",
                holder,
            )
        time.sleep(0.2)
    try:
        yield claim
    finally:
        claim.release()
