"""Where suite files are found: a path, the user's suite directories, then the packaged suites.

The packaged suites (``boosting_tickets/suites/*.toml``) ship inside the wheel. A user adds their
own by passing a path to a ``.toml`` file, by ``--suite-dir DIR`` on ``bench`` commands, or by the
environment variable ``BOOSTING_TICKETS_SUITES`` (directories separated by ``os.pathsep``). A name
is looked up in the user's directories first, so a user's ``quick.toml`` shadows the packaged one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import UserError

PACKAGE_SUITES = Path(__file__).resolve().parent.parent / "suites"
ENV = "BOOSTING_TICKETS_SUITES"


def suite_dirs(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """The directories searched for suite names, in order: ``extra``, the env variable, package."""
    env = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    return (*(Path(p) for p in extra), *(Path(p) for p in env), PACKAGE_SUITES)


def suite_files(dirs: Sequence[Path]) -> dict[str, Path]:
    """Suite name -> file, the first directory holding a name winning; sorted by name."""
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def suite_names(directory: Path | Sequence[Path] | None = None) -> list[str]:
    """Names of the suites in ``directory`` (default: every searched directory)."""
    return list(suite_files(_dirs(directory)))


def resolve_suite_path(name_or_path: str, directory: Path | Sequence[Path] | None = None) -> Path:
    """A suite name in the searched directories, or a path to a .toml file -> the file's path."""
    text = str(name_or_path)
    candidate = Path(text)
    if text.endswith(".toml") or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"suite file not found: {candidate}")
        return candidate
    files = suite_files(_dirs(directory))
    if text in files:
        return files[text]
    listing = ", ".join(files) if files else "none found"
    raise UserError(f"unknown suite '{text}'; known suites: {listing} (or pass a path to a .toml)")


def _dirs(directory: Path | Sequence[Path] | None) -> tuple[Path, ...]:
    if directory is None:
        return suite_dirs()
    if isinstance(directory, str | Path):
        return (Path(directory),)
    return tuple(Path(d) for d in directory)
