"""Importing robustbench safely, and its model registry.

robustbench 1.1.1 is imported lazily, behind the ``autoattack`` -> ``pyautoattack`` alias, and only
after checking that no other package overwrote its files (torchattacks ships a stale copy).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core.errors import UserError
from .config import ZOO_DATASETS, ZOO_THREATS, check_model_name


def check_robustbench_integrity() -> None:
    """Raise a one-line UserError when robustbench is absent or another package changed its files.

    torchattacks 3.5.1 ships a stale top-level ``robustbench``: installed after robustbench it
    overwrites robustbench's files, uninstalled it deletes some. Uses
    :func:`environment.package_integrity` (the RECORD hashes), imports nothing.
    """
    from ..core.environment import package_integrity

    info = package_integrity("robustbench")
    if not info["installed"]:
        raise UserError(
            "robustbench is not installed; install the zoo extra: pip install -e '.[zoo]' "
            "(or run 'make setup')"
        )
    changed = list(info["modified"]) + list(info["missing"])
    if changed:
        raise UserError(
            f"robustbench {info['version']} files were changed by another package "
            f"({len(info['modified'])} modified, {len(info['missing'])} missing, e.g. {changed[0]}); "
            f"fix: {info['fix']}"
        )


def import_robustbench() -> ModuleType:
    """Check robustbench's files, alias ``autoattack`` to pyautoattack, import robustbench.

    robustbench 1.1.1 does ``from autoattack import AutoAttack`` but its dependency installs the
    module ``pyautoattack``; the alias is set only when no real ``autoattack`` is installed.
    It also imports ``pkg_resources`` (setuptools < 81).
    """
    check_robustbench_integrity()
    with warnings.catch_warnings():
        # robustbench's imports warn about pkg_resources and torch.jit; none of it concerns users.
        warnings.simplefilter("ignore")
        if "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None:
            try:
                sys.modules["autoattack"] = importlib.import_module("pyautoattack")
            except ImportError:
                raise UserError(
                    "robustbench needs AutoAttack, installed as the pyautoattack package; "
                    "fix: pip install pyautoattack"
                ) from None
        try:
            robustbench = importlib.import_module("robustbench")
            importlib.import_module("robustbench.utils")
            importlib.import_module("robustbench.model_zoo")
        except Exception as exc:  # noqa: BLE001 - a damaged install fails in many ways
            if isinstance(exc, ImportError) and "pkg_resources" in str(exc):
                raise UserError(
                    "robustbench imports pkg_resources, which setuptools 81 removed; "
                    "fix: pip install 'setuptools>=77,<81'"
                ) from None
            detail = " ".join(str(exc).split())[:200]
            raise UserError(
                f"robustbench cannot be imported ({type(exc).__name__}: {detail}); "
                "fix: pip install --force-reinstall --no-deps robustbench==1.1.1"
            ) from None
    return robustbench


def zoo_models(dataset: str = "cifar10", threat: str = "Linf") -> Mapping[str, Any]:
    """robustbench's registry for ``dataset``/``threat``: zoo name -> entry (constructor, ids)."""
    check_zoo_target(dataset, threat)
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]


def check_zoo_target(dataset: str, threat: str) -> None:
    """Raise UserError unless ``dataset``/``threat`` is a zoo section our harness can score."""
    if dataset not in ZOO_DATASETS:
        raise UserError(
            f"unknown RobustBench dataset '{dataset}'; choose one of: {', '.join(ZOO_DATASETS)}"
        )
    if threat not in ZOO_THREATS:
        raise UserError(
            f"threat model '{threat}' is not supported; use one of {', '.join(ZOO_THREATS)}"
        )


def zoo_entry(name: str, dataset: str = "cifar10", threat: str = "Linf") -> Mapping[str, Any]:
    """robustbench's entry for ``name``; unknown names raise UserError with close matches."""
    check_model_name(name)
    models = zoo_models(dataset, threat)
    if name not in models:
        close = difflib.get_close_matches(name, [str(k) for k in models], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"'{name}' is not in robustbench's {dataset}/{threat} model zoo{hint} "
            "(see 'boosting-tickets compare list')"
        )
    entry = models[name]
    if not isinstance(entry, Mapping) or "model" not in entry:
        raise UserError(f"robustbench's zoo entry for '{name}' is incomplete; choose another model")
    return entry


def zoo_checkpoint_path(
    model_dir: str | os.PathLike[str], name: str, dataset: str = "cifar10", threat: str = "Linf"
) -> Path:
    """``<model_dir>/<dataset>/<threat>/<name>.pt``: where ``robustbench.load_model`` looks."""
    return Path(model_dir) / dataset / threat / f"{check_model_name(name)}.pt"


def entry_files(path: Path, entry: Mapping[str, Any]) -> list[Path]:
    # Ensembles (a list of Google-Drive ids) are stored as <name>.pt_m0.pt, <name>.pt_m1.pt, ...
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return [Path(f"{path}_m{i}.pt") for i in range(len(ids))]
    return [path]
