"""The software and hardware a number was measured on, recorded next to every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "torchattacks",
    "robustbench",
    "pyautoattack",
    "boosting-tickets",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that affect numbers (None when absent); imports nothing."""
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, with '+dirty' for local changes."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def device_description(device: Any = None) -> dict[str, Any]:
    """Device type/name, CPU thread count and processor string."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        **cpu_identity(),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def cpu_identity() -> dict[str, str]:
    """The CPU's model name and a digest of its feature flags (Linux ``/proc/cpuinfo``): float
    results are bit-reproducible only where both match, since kernels pick SIMD paths by them
    (two VMs named "x86_64" gave different training curves for one seed). Empty elsewhere."""
    import hashlib

    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    out = {}
    if fields.get("model name"):
        out["cpu_model"] = fields["model name"]
    if fields.get("flags"):
        flags = " ".join(sorted(fields["flags"].split()))
        out["cpu_flags_sha256"] = hashlib.sha256(flags.encode()).hexdigest()[:16]
    return out


def environment_info(device: Any = None) -> dict[str, Any]:
    """Everything needed to say where a number came from: versions, device, python, git commit."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_commit": (commit := git_commit()),
        "git_clean": None if commit is None else not commit.endswith("+dirty"),
        **device_description(device),
    }


def resolve_device(name: str) -> Any:
    """'auto' -> cuda when available, else cpu; otherwise the named torch device."""
    import torch

    from .errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return dev


def package_integrity(dist_name: str) -> dict[str, Any]:
    """Compare an installed distribution's files with the hashes in its RECORD.

    torchattacks 3.5.1 ships a stale top-level ``robustbench`` package; installing or uninstalling it
    after robustbench silently replaces or deletes robustbench files. Returns
    ``{"installed": bool, "version": str|None, "modified": [...], "missing": [...], "fix": str}``.
    """
    import base64
    import hashlib

    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return {"installed": False, "version": None, "modified": [], "missing": [], "fix": ""}
    modified: list[str] = []
    missing: list[str] = []
    for f in dist.files or []:
        if f.hash is None or f.hash.mode != "sha256" or not str(f).endswith(".py"):
            continue
        path = Path(str(f.locate()))
        if not path.exists():
            missing.append(str(f))
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest())
        if digest.rstrip(b"=").decode() != f.hash.value:
            modified.append(str(f))
    fix = ""
    if modified or missing:
        fix = (
            f"pip install --force-reinstall --no-deps {dist_name}=={dist.version} "
            "(torchattacks overwrote it; always install torchattacks first)"
        )
    return {
        "installed": True,
        "version": dist.version,
        "modified": modified,
        "missing": missing,
        "fix": fix,
    }
