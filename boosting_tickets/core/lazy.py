"""Lazy re-exports for package ``__init__`` modules (PEP 562).

``from boosting_tickets.models import build_model`` should work without ``import boosting_tickets``
or ``--help`` paying for torch: a package lists its public names and the submodule defining each,
and the submodule is imported on first access only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``modules`` maps a submodule path relative to
    the package (``".registry"``) to the space-separated public names it defines."""
    exports = {name: module for module, names in modules.items() for name in names.split()}

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module protocol's name
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(exports)

    return __getattr__, __dir__
