"""Small pieces every command uses: console output next to progress bars, output-path checks,
thread counts."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError


def console_log(msg: str) -> None:
    """Print a progress line without breaking any tqdm bar that is on screen."""
    from tqdm import tqdm

    tqdm.write(msg)


def check_creatable(path: Path) -> None:
    """Refuse an --out that can never be created (a parent is a file, a name too long for the
    filesystem) before the work, not after."""
    long = next((part for part in path.parts if len(part.encode()) > 255), None)
    if long is not None:
        raise UserError(f"cannot write {path}: the name {long[:40]}... is over 255 bytes")
    ancestor = next((q for q in path.absolute().parents if q.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise UserError(f"cannot write {path}: {ancestor} is a file, not a directory")


def check_new_file(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing --out file unless --overwrite (and never a directory)."""
    check_creatable(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it or choose another --out")
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a directory; --out must name a file")


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` CPU threads (None: leave torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
